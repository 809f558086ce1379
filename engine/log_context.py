"""Request ids on the engine's log lines, and its log formats (``--log-format text|json``).

A client may name its request with an ``X-Request-Id`` header (the bot sends the id of the
user message it answers); ``request_id_middleware`` binds it to ``REQUEST_ID`` for the
request's task (and echoes it in the response), so every line logged while serving it,
aiohttp's access line included, carries it. Work the scheduler thread does for a request
logs the id it was submitted with (``GenerationRequest.request_id``) through ``extra=``.

The bot has its own copy (``bot/log_context.py``): the engine imports nothing from it.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from aiohttp import web
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

REQUEST_ID: ContextVar[str | None] = ContextVar("engine_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"
FORMATS = ("text", "json")
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
# What a client's id may be: short, and nothing that could forge or break a log line.
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def new_request_id() -> str:
    """12 hex characters, for a request that came without a usable id."""
    return secrets.token_hex(6)


def valid_request_id(value: str | None) -> str | None:
    """``value`` if it is a usable id (at most 64 of ``A-Z a-z 0-9 . _ -``), else None."""
    return value if value is not None and _VALID_ID.fullmatch(value) else None


def current_request_id() -> str | None:
    return REQUEST_ID.get()


@web.middleware
async def request_id_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Bind the client's ``X-Request-Id`` (or a new id, when it has none or an unusable one)
    for this request. aiohttp runs each request in its own task, so the binding is not reset
    here on purpose: it lasts to the task's end, and the access line aiohttp logs after the
    handler returns carries it too; the next request on the connection starts clean."""
    request_id = valid_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
    request[REQUEST_ID_KEY] = request_id
    REQUEST_ID.set(request_id)
    response: web.StreamResponse = await handler(request)
    return response


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: every response names the id its lines were logged
    under (streams too: this runs before their headers go out)."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


def _record_id(record: logging.LogRecord) -> str | None:
    """An id passed with ``extra={"request_id": ...}`` wins over the context's."""
    given = getattr(record, "request_id", None)
    return given if isinstance(given, str) and given else REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` (None when there is none) on every record a handler
    sees, in the thread or task that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _record_id(record)
        return True


REQUEST_ID_FILTER = RequestIdFilter()  # one instance: addFilter then never doubles it


class TextFormatter(logging.Formatter):
    """The engine's usual line, with ``[request id]`` after the logger name when set."""

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
    JSON-serialisable ``extra=`` fields (aiohttp's access line brings its parts).

    The handler's ``SecretFilter`` masks message and traceback before this runs; ``redact``
    masks them again and every ``extra`` string, which the filter does not see.
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
    """The formatter for ``--log-format`` (``text`` or ``json``)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be text or json, got {log_format!r}")
    return JsonFormatter(redact) if log_format == "json" else TextFormatter()


QUIET_PATHS = frozenset({"/health", "/metrics"})  # polled every few seconds by the bot


class QuietAccessLogger(AccessLogger):
    """aiohttp's access line, except for successful health and metrics polls: a supervised
    engine is polled twice a second, which would add ~200,000 lines a day to its log."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.path in QUIET_PATHS and response.status < 400:
            return
        super().log(request, response, time)
