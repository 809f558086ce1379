"""The bot's log formats and request ids: JSON lines that parse, ids on the lines of the
message they belong to and on no others, and secrets masked in JSON mode as in text."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.errors import ConfigError
from bot.incoming import Incoming
from bot.settings import load_settings
from common.log_context import (
    REQUEST_ID_FILTER,
    JsonFormatter,
    TextFormatter,
    bind_request_id,
    current_request_id,
    new_request_id,
    request_id_bound,
    reset_request_id,
)
from common.redact import MASK, Redactor
from tests.engine_process import ROOT

TOKEN = "424242:AAEsecretTelegramTokenValue_x"
ADMIN = "admin-secret-Q9zW-long"


class Capture:
    """A logger whose one handler is set up as the bot's root handler: request ids, the
    redaction filter, then the formatter."""

    def __init__(self, formatter: logging.Formatter, redactor: Redactor) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)
        self.handler.addFilter(REQUEST_ID_FILTER)
        self.handler.addFilter(redactor)
        self.logger = logging.getLogger(f"parley.test.{id(self)}")
        self.logger.addHandler(self.handler)
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def redactor() -> Redactor:
    made = Redactor()
    made.add(ADMIN)
    return made


@pytest.fixture
def json_log(redactor: Redactor) -> Iterator[Capture]:
    capture = Capture(JsonFormatter(redactor.redact), redactor)
    yield capture
    capture.logger.removeHandler(capture.handler)


@pytest.fixture
def text_log(redactor: Redactor) -> Iterator[Capture]:
    capture = Capture(TextFormatter(), redactor)
    yield capture
    capture.logger.removeHandler(capture.handler)


def test_a_json_line_has_the_fields_and_the_request_id_only_when_one_is_bound(
    json_log: Capture,
) -> None:
    json_log.logger.info("before %d", 1)
    with request_id_bound("abc123"):
        json_log.logger.warning("during", extra={"chat": "c-1", "n": 3, "obj": object()})
    json_log.logger.info("after")
    before, during, after = json_log.objects()
    assert set(before) == {"ts", "level", "logger", "message"}
    assert before["message"] == "before 1" and before["level"] == "INFO"
    assert before["logger"] == json_log.logger.name
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", before["ts"]), before["ts"]
    assert during["request_id"] == "abc123" and during["level"] == "WARNING"
    assert during["chat"] == "c-1" and during["n"] == 3 and "obj" not in during  # not JSON
    assert "request_id" not in after


def test_a_json_line_carries_the_traceback(json_log: Capture) -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        json_log.logger.exception("failed")
    (entry,) = json_log.objects()
    assert entry["message"] == "failed" and entry["level"] == "ERROR"
    assert entry["exc"].startswith("Traceback") and "ValueError: broken" in entry["exc"]


def test_secrets_are_masked_in_json_lines_message_traceback_and_extras(
    json_log: Capture,
) -> None:
    json_log.logger.info("GET https://api.telegram.org/bot%s/getMe", TOKEN)
    json_log.logger.info("admin %s", ADMIN, extra={"header": f"Bearer {ADMIN}", "l": [ADMIN]})
    try:
        raise RuntimeError(f"refused {ADMIN}")
    except RuntimeError:
        json_log.logger.exception("boom")
    text = json_log.stream.getvalue()
    assert TOKEN not in text and ADMIN not in text and "AAEsecret" not in text
    url, admin, boom = json_log.objects()
    assert url["message"] == f"GET https://api.telegram.org/bot{MASK}/getMe"
    assert admin["message"] == f"admin {MASK}"
    assert admin["header"] == f"Bearer {MASK}" and admin["l"] == [MASK]
    assert f"RuntimeError: refused {MASK}" in boom["exc"]


def test_text_lines_show_the_request_id_after_the_logger_name_only_when_set(
    text_log: Capture,
) -> None:
    text_log.logger.info("plain")
    token = bind_request_id("abc123")
    try:
        text_log.logger.info("admin %s", ADMIN)
        text_log.logger.info("explicit", extra={"request_id": "given1"})
    finally:
        reset_request_id(token)
    plain, bound, explicit = text_log.lines()
    name = text_log.logger.name
    assert plain.endswith(f" INFO {name}: plain"), plain
    assert bound.endswith(f" INFO {name} [abc123]: admin {MASK}"), bound
    assert explicit.endswith(f" INFO {name} [given1]: explicit"), explicit


async def test_the_request_id_follows_tasks_and_threads_and_stays_in_its_own() -> None:
    async def job(request_id: str) -> tuple[str | None, str | None]:
        with request_id_bound(request_id):
            await asyncio.sleep(0)
            in_thread = await asyncio.to_thread(current_request_id)
            return current_request_id(), in_thread

    assert await asyncio.gather(job("a1"), job("b2")) == [("a1", "a1"), ("b2", "b2")]
    assert current_request_id() is None


def test_each_incoming_message_gets_its_own_short_request_id() -> None:
    first = Incoming("test", "chat", "u", "U", "hi", reply=None)  # type: ignore[arg-type]
    second = Incoming("test", "chat", "u", "U", "hi", None, "m-1")  # type: ignore[arg-type]
    assert re.fullmatch(r"[0-9a-f]{12}", first.request_id)
    assert first.request_id != second.request_id and second.source_ref == "m-1"
    assert len({new_request_id() for _ in range(1000)}) == 1000


def test_log_format_is_text_by_default_and_only_text_or_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    db = tmp_path / "bot.db"
    assert load_settings(model="demo", database_path=db).log_format == "text"
    assert load_settings(model="demo", database_path=db, log_format="json").log_format == "json"
    with pytest.raises(ConfigError):
        load_settings(model="demo", database_path=db, log_format="xml")


def test_parley_logs_json_lines_with_request_ids_and_secrets_masked(tmp_path: Path) -> None:
    """The set-up ``parley run`` does: the JSON handler first, then ``redact.install``."""
    code = (
        "import logging, os\n"
        "from common import log_context, redact\n"
        "redact.install()\n"
        "log_context.setup_logging('info', 'json', redact.redact)\n"
        "redact.install([os.environ['SECRET']])\n"
        "log = logging.getLogger('httpx')\n"
        "with log_context.request_id_bound('abc123'):\n"
        "    log.info('POST https://api.telegram.org/bot%s/sendMessage', os.environ['TOKEN'])\n"
        "log.info('secret %s', os.environ['SECRET'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKEN": TOKEN, "SECRET": ADMIN}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stderr and ADMIN not in result.stderr
    sent, secret = (json.loads(line) for line in result.stderr.splitlines())
    assert sent["request_id"] == "abc123" and sent["logger"] == "httpx"
    assert sent["message"] == f"POST https://api.telegram.org/bot{MASK}/sendMessage"
    assert secret == {**secret, "message": f"secret {MASK}"} and "request_id" not in secret
