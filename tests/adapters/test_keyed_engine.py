"""The bot with ENGINE_API_KEY: the engine it starts wants the key (anyone else on the machine
is refused), the bot sends it and answers, and the key is never written to the engine's log.
The same run shows that what the bot creates is private: a new data folder 700, the database
and engine.log 600. Real ``parley chat`` on the demo model; ENGINE_URLS entries without their
own ``;api_key=`` take ENGINE_API_KEY."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.engines.spec import parse_engine_spec, with_default_key
from tests.adapters.test_console import base_env, stats

KEY = "sk-parley-test-key-5bd1c0ffee"
READY = re.compile(r"ready: (http://127\.0\.0\.1:\d+)")


def _status(url: str, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as error:
        return error.code


def _engine_url(log: Path, chat: subprocess.Popen[str], timeout: float = 180) -> str:
    """The local engine's URL, from its 'ready' line in engine.log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert chat.poll() is None, "parley chat ended before its engine was ready"
        if log.exists() and (found := READY.search(log.read_text(errors="replace"))):
            return found.group(1)
        time.sleep(0.2)
    raise AssertionError(f"no 'ready' line in {log}")


@pytest.mark.model
def test_the_bot_starts_its_engine_with_the_key_and_answers_through_it(tmp_path: Path) -> None:
    data = tmp_path / "new-data-folder"
    env = {**base_env(tmp_path), "DATABASE_PATH": str(data / "parley.db"), "ENGINE_API_KEY": KEY}
    env["LOG_LEVEL"] = "info"  # the engine's "ready: URL" line, and every request logged
    chat = subprocess.Popen(
        [sys.executable, "-m", "parley", "chat", "-n", "4"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    try:
        url = _engine_url(data / "engine.log", chat)
        assert _status(url + "/v1/models", None) == 401  # anyone else on the machine
        assert _status(url + "/v1/models", "not-the-key-at-all") == 401
        assert _status(url + "/v1/models", KEY) == 200
        assert _status(url + "/health", None) == 200
        out, err = chat.communicate("Hello\n", timeout=180)
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
    assert chat.returncode == 0, err
    assert len(stats(out)) == 1, out  # answered, through the keyed engine
    log = (data / "engine.log").read_text(errors="replace")
    assert "chat completion:" in log and KEY not in log and KEY not in out + err
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("parley.db", "engine.log"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name


def test_engine_urls_entries_take_engine_api_key_unless_they_have_their_own() -> None:
    key = SecretStr(KEY)
    assert with_default_key(parse_engine_spec("http://gpu:8080"), key).api_key == KEY
    own = parse_engine_spec("http://gpu:8080;api_key=sk-own-key")
    assert with_default_key(own, key).api_key == "sk-own-key"
    assert with_default_key(parse_engine_spec("http://gpu:8080"), None).api_key is None
    assert KEY not in repr(with_default_key(parse_engine_spec("http://gpu:8080"), key))
