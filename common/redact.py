"""Keep secrets out of everything Parley writes: log lines, tracebacks and printed errors.

Libraries log what they see: each Telegram request URL is logged at DEBUG
(adapters/telegram_http.py) and the Bot API puts the token in the path (``/bot123:ABC/getMe``);
python-telegram-bot logs its base URL at DEBUG. So redaction happens where lines leave the
process, on the root handlers, with every known secret value (settings' ``SecretStr`` fields,
the Hugging Face token, the admin token the bot made) plus the token shapes a secret takes
inside URLs and payloads.

One ``Redactor`` per process (``REDACTOR``): the log filter and ``redact()`` for printed
errors share its secrets, so one added late (a generated admin token) covers both.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

MASK = "***"
# Shorter values are not masked by value: ADMIN_TOKEN=wrong would turn every "wrong" in every
# line into ***. Real tokens are far longer (Telegram ~46, Discord ~70, HF 37, generated 43).
MIN_LENGTH = 8
# Environment variables that hold secrets even when no setting reads them (the engine and
# huggingface_hub read HF_TOKEN themselves).
SECRET_VARIABLES = (
    "DISCORD_TOKEN", "TELEGRAM_TOKEN", "ADMIN_TOKEN", "ENGINE_API_KEY", "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
)  # fmt: skip

# Token shapes, for secrets Parley was never told (another bot's token in a proxy URL, a
# Discord interaction token): the Bot API's /bot<token>/ and /file/bot<token>/ paths, Discord's
# /webhooks/<app>/<token> and /interactions/<id>/<token>, user:password@ in URLs, and a
# "token" key in a logged payload (discord.py logs whole gateway events at DEBUG).
_PATTERNS = (
    (re.compile(r"(/bot)\d+:[\w-]+"), rf"\1{MASK}"),
    (re.compile(r"(/(?:webhooks|interactions)/\d+/)[\w.-]+"), rf"\1{MASK}"),
    (re.compile(r"(\w://)[^/\s:@]*:[^/\s@]+@"), rf"\1{MASK}@"),
    (re.compile(r"""(['"](?:token|access_token)['"]\s*:\s*['"])[^'"]+"""), rf"\1{MASK}"),
)


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class Redactor(logging.Filter):
    """A log filter that rewrites each record with every secret masked. Thread-safe."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def add(self, *values: str | _Secret | None) -> None:
        """Remember secret values (plain or ``SecretStr``); ones under MIN_LENGTH are ignored."""
        found = [v if isinstance(v, str) else v.get_secret_value() for v in values if v]
        with self._lock:
            known = set(self._secrets) | {v.strip() for v in found if len(v.strip()) >= MIN_LENGTH}
            # Longest first, so a secret that contains another is masked whole.
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message now (args may hold a URL), then mask it and the traceback."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what it had, masked
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


REDACTOR = Redactor()


def redact(text: str) -> str:
    """``text`` with every secret this process knows masked: for errors printed or shown."""
    return REDACTOR.redact(text)


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Secret values from the environment and huggingface_hub's saved token."""
    env = os.environ if environ is None else environ
    values = [env.get(name, "") for name in SECRET_VARIABLES]
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    hf_home = Path(env.get("HF_HOME") or cache / "huggingface")
    token_file = Path(env.get("HF_TOKEN_PATH") or hf_home / "token")
    with contextlib.suppress(OSError, UnicodeDecodeError):
        values.append(token_file.read_text(encoding="utf-8").strip())
    return [v for v in values if v]


def settings_secrets(settings: Any) -> list[str]:
    """Every ``SecretStr`` field of a pydantic settings object that is set."""
    values = (getattr(settings, name) for name in type(settings).model_fields)
    return [v.get_secret_value() for v in values if hasattr(v, "get_secret_value")]


def install(secrets: Iterable[str | _Secret | None] = ()) -> Redactor:
    """Mask ``secrets`` (and the environment's) on every root handler, the last-resort
    handler and uncaught tracebacks. Call again after adding handlers; it never doubles up."""
    REDACTOR.add(*environment_secrets(), *secrets)
    handlers = [*logging.getLogger().handlers, logging.lastResort]
    for handler in handlers:
        if handler is not None and REDACTOR not in handler.filters:
            handler.addFilter(REDACTOR)
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _excepthook
    return REDACTOR


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """An uncaught exception's traceback, masked (its message may quote a URL)."""
    sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))
