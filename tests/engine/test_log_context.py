"""The engine's request ids and log formats: a client's ``X-Request-Id`` is on the lines
logged for its request (the completion line and aiohttp's access line) and echoed back, an
unusable one is replaced, and ``--log-format``/``--log-level`` follow the bot's variables."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.log_context import REQUEST_ID, REQUEST_ID_FILTER, JsonFormatter, TextFormatter
from common.redact import Redactor
from engine.cli import build_parser
from engine.log_context import valid_request_id
from engine.requests import GenerationRequest, SamplingParams
from tests.engine.fuzz_engine import Engine, serve_engine, user
from tests.engine_process import ROOT

ADMIN = "engine-admin-secret-value"
ACCESS = "aiohttp.access"
COMPLETION = {"messages": [user("hi")], "max_tokens": 3}


class Records(logging.Handler):
    """Every record the engine's and aiohttp's access loggers emit, stamped as the engine's
    own handler stamps them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(REQUEST_ID_FILTER)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self, *request_ids: str) -> list[logging.LogRecord]:
        """What was logged so far, once the access lines of ``request_ids`` are in: aiohttp
        writes them after the response's last byte, so the client can be faster."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done = {getattr(r, "request_id", None) for r in self.records if r.name == ACCESS}
            if done >= set(request_ids):
                break
            time.sleep(0.01)
        records, self.records = self.records, []
        return records


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with serve_engine() as served:
        yield served


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("engine", ACCESS)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def completion_lines(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.getMessage().startswith("chat completion: ")]


@pytest.mark.parametrize("stream", [False, True])
def test_a_requests_id_is_on_its_completion_and_access_lines_and_echoed(
    engine: Engine, records: Records, stream: bool
) -> None:
    reply = engine.post(
        "/v1/chat/completions", {**COMPLETION, "stream": stream}, {"X-Request-Id": "abc123"}
    )
    assert reply.status == 200 and reply.headers["X-Request-Id"] == "abc123"
    logged = records.take("abc123")
    (line,) = completion_lines(logged)
    assert line.request_id == "abc123", line.__dict__  # type: ignore[attr-defined]
    assert "3 generated, finish=length" in line.getMessage()
    access = [r for r in logged if r.name == ACCESS]
    assert access and all(r.request_id == "abc123" for r in access)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "header", ["", "a" * 65, "abc 123", "abc\u00e9", "a/b", "id;drop", "x\\ny"]
)
def test_an_unusable_request_id_is_replaced_by_a_new_one(
    engine: Engine, records: Records, header: str
) -> None:
    headers: dict[str, str | bytes] = {"X-Request-Id": header.encode("utf-8")}
    reply = engine.post("/v1/chat/completions", COMPLETION, headers)
    assert reply.status == 200
    echoed = reply.headers["X-Request-Id"]
    assert echoed != header and re.fullmatch(r"[0-9a-f]{12}", echoed), echoed
    (line,) = completion_lines(records.take(echoed))
    assert line.request_id == echoed  # type: ignore[attr-defined]


def test_requests_without_an_id_get_their_own_and_errors_carry_it(
    engine: Engine, records: Records
) -> None:
    first = engine.post("/v1/chat/completions", COMPLETION).headers["X-Request-Id"]
    second = engine.post("/v1/chat/completions", COMPLETION).headers["X-Request-Id"]
    assert first != second
    refused = engine.post("/v1/chat/completions", {"messages": []}, {"X-Request-Id": "bad-1"})
    assert refused.status == 400 and refused.headers["X-Request-Id"] == "bad-1"
    missing = engine.request("GET", "/nowhere", headers={"X-Request-Id": "lost.2"})
    assert missing.status == 404 and missing.headers["X-Request-Id"] == "lost.2"
    logged = records.take(first, second, "bad-1", "lost.2")
    ids = {r.request_id for r in logged}  # type: ignore[attr-defined]
    assert {first, second, "bad-1", "lost.2"} <= ids and None not in ids


def test_valid_request_ids() -> None:
    assert valid_request_id("Ab-9._x") == "Ab-9._x"
    assert valid_request_id("a" * 64) == "a" * 64
    for bad in (None, "", "a" * 65, "a b", "a\nb", "ü"):
        assert valid_request_id(bad) is None


def test_the_scheduler_logs_under_the_id_a_request_was_prepared_with() -> None:
    """The scheduler thread serves every request: the id travels with the request."""
    token = REQUEST_ID.set("abc123")
    try:
        made = GenerationRequest(prompt=[10], params=SamplingParams(), sink=lambda _: None)
    finally:
        REQUEST_ID.reset(token)
    assert made.request_id == "abc123"
    assert GenerationRequest([10], SamplingParams(), lambda _: None).request_id is None
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    handler.addFilter(REQUEST_ID_FILTER)
    logger = logging.getLogger("engine.test_scheduler")
    logger.addHandler(handler)
    try:
        logger.warning("preempting", extra={"request_id": made.request_id})
        logger.warning("no id")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines()[0].endswith(" engine.test_scheduler [abc123]: preempting")
    assert stream.getvalue().splitlines()[1].endswith(" engine.test_scheduler: no id")


def test_json_lines_mask_the_engines_secrets() -> None:
    secrets = Redactor()  # what the engine's setup_logging installs for ADMIN_TOKEN
    secrets.add(ADMIN)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(secrets.redact))
    handler.addFilter(secrets)
    handler.addFilter(REQUEST_ID_FILTER)
    logger = logging.getLogger("engine.test_json")
    logger.addHandler(handler)
    try:
        logger.warning("token %s", ADMIN, extra={"auth": f"Bearer {ADMIN}"})
        try:
            raise RuntimeError(ADMIN)
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert ADMIN not in stream.getvalue()
    warned, failed = (json.loads(line) for line in stream.getvalue().splitlines())
    assert warned["message"] == "token ***" and warned["auth"] == "Bearer ***"
    assert "request_id" not in warned and "RuntimeError: ***" in failed["exc"]


def test_log_options_default_to_the_bots_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    args = build_parser().parse_args([])
    assert (args.log_level, args.log_format) == ("info", "text")
    assert build_parser().parse_args(["--log-format", "json"]).log_format == "json"
    monkeypatch.setenv("LOG_LEVEL", "warning")
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    args = build_parser().parse_args([])
    assert (args.log_level, args.log_format) == ("warning", "json")
    args = build_parser().parse_args(["--log-level", "debug", "--log-format", "text"])
    assert (args.log_level, args.log_format) == ("debug", "text")


def test_a_bad_log_variable_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    assert "LOG_FORMAT" in capsys.readouterr().err
    monkeypatch.delenv("LOG_FORMAT")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--log-level", "loud"])


def test_the_engine_process_logs_json_lines_with_secrets_masked(tmp_path: Path) -> None:
    """``python -m engine`` as the bot starts it: ``LOG_FORMAT``/``LOG_LEVEL`` inherited."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ADMIN_TOKEN": ADMIN, "LOG_FORMAT": "json",
           "LOG_LEVEL": "debug"}  # fmt: skip
    code = (
        "import logging, os, sys\n"
        "from engine.cli import build_parser, setup_logging\n"
        "args = build_parser().parse_args([])\n"
        "setup_logging(args.log_level, log_format=args.log_format)\n"
        "logging.getLogger('engine').debug('token %s', os.environ['ADMIN_TOKEN'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (entry,) = (json.loads(line) for line in result.stderr.splitlines())
    assert entry["message"] == "token ***" and entry["level"] == "DEBUG"
    assert ADMIN not in result.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "engine", "--help"], capture_output=True, text=True, cwd=ROOT,
        timeout=60,
    ).stdout  # fmt: skip
    assert "--log-format {text,json}" in help_text
