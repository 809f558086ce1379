"""Request ids on log lines, and the log formats (``LOG_FORMAT=text|json``).

One id follows a user message from the adapter (``Incoming.request_id``) through the queue
and the worker to the engine (the ``X-Request-Id`` header), so one grep finds every line
about it in the bot's and the engine's logs. The id lives in a ``ContextVar``: asyncio tasks
and ``asyncio.to_thread`` copy it, so code that logs needs no id parameter.

Both processes use this module (the bot's ``parley run``, the engine's ``parley engine``);
the engine adds its HTTP side (``engine/log_context.py``: the header, the access log).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("parley_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"
FORMATS = ("text", "json")


def new_request_id() -> str:
    """12 hex characters: short enough to read in a log line, unique enough for a day's
    messages (48 random bits)."""
    return secrets.token_hex(6)


def bind_request_id(request_id: str | None) -> Token[str | None]:
    """Make ``request_id`` the current one for this task (and tasks/threads it starts).
    Keep the token and pass it to ``reset_request_id`` when the work is done."""
    return REQUEST_ID.set(request_id)


def reset_request_id(token: Token[str | None]) -> None:
    REQUEST_ID.reset(token)


@contextmanager
def request_id_bound(request_id: str | None) -> Iterator[None]:
    """``with request_id_bound(item.incoming.request_id):`` around one message's work."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


def current_request_id() -> str | None:
    """The id bound in this context, e.g. for an outgoing ``X-Request-Id`` header."""
    return REQUEST_ID.get()


def _record_id(record: logging.LogRecord) -> str | None:
    """An id passed with ``extra={"request_id": ...}`` wins over the context's."""
    given = getattr(record, "request_id", None)
    return given if isinstance(given, str) and given else REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` (None when there is none). A handler filter, so it runs
    for records of every logger, in the thread or task that logged them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _record_id(record)
        return True


REQUEST_ID_FILTER = RequestIdFilter()  # one instance: addFilter then never doubles it


class TextFormatter(logging.Formatter):
    """Today's line, with ``[request id]`` after the logger name when there is one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        request_id = _record_id(record)
        record.request_tag = f" [{request_id}]" if request_id else ""
        return super().format(record)


# Attributes every LogRecord has; the rest came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "request_id", "request_tag", "taskName",
}  # fmt: skip


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, exc, and the
    JSON-serialisable ``extra=`` fields.

    Message and traceback arrive already masked by the handler's redaction filter (filters
    run before formatting); ``redact`` masks them again plus every ``extra`` string, which
    no filter sees.
    """

    def __init__(self, redact: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self._redact = redact or (lambda text: text)

    def format(self, record: logging.LogRecord) -> str:
        clean = self._redact
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "ts": f"{created}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": clean(record.getMessage()),
        }
        request_id = _record_id(record)
        if request_id:
            entry["request_id"] = clean(request_id)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = clean(record.exc_text)
        if record.stack_info:
            entry["stack"] = clean(record.stack_info)
        for key, value in vars(record).items():
            if key in _STANDARD or key in entry:
                continue
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):  # not JSON: left out rather than repr'd
                continue
            entry[key] = _scrub(value, clean)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _scrub(value: Any, clean: Callable[[str], str]) -> Any:
    """``value`` with every string in it (keys too) masked."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): _scrub(v, clean) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, clean) for v in value]
    return value


def formatter(log_format: str, redact: Callable[[str], str] | None = None) -> logging.Formatter:
    """The formatter for ``LOG_FORMAT`` (``text`` or ``json``)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be text or json, got {log_format!r}")
    return JsonFormatter(redact) if log_format == "json" else TextFormatter()


def setup_logging(
    level: str, log_format: str = "text", redact: Callable[[str], str] | None = None
) -> logging.Handler | None:
    """A stderr root handler (as ``logging.basicConfig``: none if the root has one) with the
    format and request ids. Returns the handler it added; install redaction after this."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format, redact))
    handler.addFilter(REQUEST_ID_FILTER)
    logging.basicConfig(level=level.upper(), handlers=[handler])
    return handler if handler in logging.getLogger().handlers else None
