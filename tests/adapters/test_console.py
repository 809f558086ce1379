"""``parley chat`` and ``parley run`` end to end: real engine, real SQLite file, piped stdin."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.console import startup_lines
from bot.engines.client import ModelCard, Sampling
from bot.errors import EX_CONFIG
from tests.engine_process import ROOT

pytestmark = pytest.mark.model

STATS = re.compile(r"prompt: (\d+) tokens \((\d+) cached\).*tok/s\ngenerated: (\d+) tokens in")


def parley(
    *args: str, stdin: str, tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parley", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
        env={**base_env(tmp_path), **(env or {})},
    )


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
    env.update(
        PYTHONPATH=str(ROOT), DATABASE_PATH=str(tmp_path / "parley.db"), MODEL="demo",
        ENGINE_N_CTX="1024", ENGINE_PARALLEL="2", LOG_LEVEL="warning",
    )  # fmt: skip
    return env


def stats(output: str) -> list[tuple[int, int, int]]:
    return [tuple(map(int, m.groups())) for m in STATS.finditer(output)]  # type: ignore[misc]


def test_a_folder_named_engine_in_the_working_directory_cannot_replace_parleys(
    tmp_path: Path,
) -> None:
    """The bot starts its engine with ``python -m engine``; from a folder holding a hostile
    ``engine/__main__.py`` that module must not run (issue 29)."""
    hostile = tmp_path / "engine"
    hostile.mkdir()
    (hostile / "__init__.py").write_text("")
    ran = tmp_path / "hostile-ran"
    (hostile / "__main__.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    result = parley("chat", "-n", "4", stdin="Hello\n", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(stats(result.stdout)) == 1 and not ran.exists()


def test_piped_chat_answers_prints_speeds_and_remembers_the_first_turn(tmp_path: Path) -> None:
    result = parley("chat", "-n", "16", "--temperature", "0", stdin="Hello there\nAnd again\n",
                    tmp_path=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    turns = stats(result.stdout)
    assert len(turns) == 2, result.stdout
    (prompt1, _, generated1), (prompt2, cached2, _) = turns
    assert 0 < generated1 <= 16
    # the seed's start-up lines, before the first prompt (on stderr: stdout is the chat)
    assert re.search(r"^model: demo \(\w+, \w+, [\d.]+ MiB, \d+ tensors\), loaded in [\d.]+ s$",
                     result.stderr, re.M), result.stderr  # fmt: skip
    start = result.stderr
    assert "context: 1024 tokens (trained on " in start and "chat template: " in start
    assert re.search(r"^CPU: \w+", start, re.M)
    assert "sampling: temperature 0.0, top_p 0.95" in start and "up to 16 tokens" in start
    assert prompt2 > prompt1 + 3  # the second prompt carries the first exchange...
    assert cached2 >= prompt1  # ...and reuses its cache
    with sqlite3.connect(tmp_path / "parley.db") as db:
        rows = db.execute("SELECT role, content, status FROM messages ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["user", "assistant", "user", "assistant"]
    assert rows[0][1] == "Hello there" and rows[1][2] == "complete"
    assert rows[1][1] and rows[1][1] in result.stdout


def test_history_survives_a_restart_and_reset_starts_afresh(tmp_path: Path) -> None:
    first = parley("chat", "-n", "8", stdin="My name is Ada.\n", tmp_path=tmp_path)
    again = parley("chat", "-n", "8", stdin="What is my name?\n", tmp_path=tmp_path)
    fresh = parley("chat", "-n", "8", stdin="/reset\nWhat is my name?\n", tmp_path=tmp_path)
    assert first.returncode == again.returncode == fresh.returncode == 0
    ((remembered, _, _),) = stats(again.stdout)
    ((forgotten, _, _),) = stats(fresh.stdout)
    assert "Started a new conversation." in fresh.stdout
    assert remembered > forgotten + 5


def test_sampling_flags_reach_the_model(tmp_path: Path) -> None:
    short = parley("chat", "-n", "3", "--seed", "1", "--repeat-penalty", "1.3",
                   "--repeat-last-n", "16", "--top-p", "0.9", stdin="Tell me a story\n",
                   tmp_path=tmp_path)  # fmt: skip
    ((_, _, generated),) = stats(short.stdout)
    assert generated <= 3
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = parley("chat", "-n", "1", stdin="Hi\n", tmp_path=tmp_path / "a")
    long_system = parley("chat", "-n", "1", "--system", "You are a pirate. " * 10,
                         stdin="Hi\n", tmp_path=tmp_path / "b")  # fmt: skip
    assert stats(long_system.stdout)[0][0] > stats(plain.stdout)[0][0] + 30


def test_run_without_platform_tokens_says_so_and_opens_the_terminal_chat(tmp_path: Path) -> None:
    result = parley("run", "-n", "4", stdin="Hello\n", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("No DISCORD_TOKEN or TELEGRAM_TOKEN set")
    assert "Input is not a terminal: the chat ends with it" in result.stdout  # a container's log
    assert len(stats(result.stdout)) == 1


def test_a_service_run_without_tokens_fails_at_once_as_a_configuration_error(
    tmp_path: Path,
) -> None:
    # a container's or systemd's stdin is /dev/null: the chat could never begin, so say why and
    # end with EX_CONFIG (which the unit does not restart) instead of loading the model for
    # nothing and exiting 0 into a restart loop
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "parley", "run"], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, cwd=tmp_path, timeout=60, env=base_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == EX_CONFIG == 78
    assert result.stderr.startswith("parley: nothing to run: set TELEGRAM_TOKEN or DISCORD_TOKEN")
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert time.monotonic() - started < 20  # no model was loaded
    assert not (tmp_path / "engine.log").exists()


def test_invalid_settings_fail_with_one_line_each(tmp_path: Path) -> None:
    result = parley("chat", stdin="", tmp_path=tmp_path,
                    env={"MAX_PENDING_PER_USER": "0", "TELEGRAM_ALLOWED_USERS": "bob"})  # fmt: skip
    assert result.returncode == EX_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr
    assert any("MAX_PENDING_PER_USER" in line for line in lines)


def test_an_unreachable_default_model_falls_back_to_demo(tmp_path: Path) -> None:
    env = {"MODEL": "", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env_without_model = {k: v for k, v in {**base_env(tmp_path), **env}.items() if k != "MODEL"}
    result = subprocess.run(
        [sys.executable, "-m", "parley", "chat", "-n", "96", "--temperature", "0"],
        input="Hi! Who are you?\n", capture_output=True, text=True, cwd=tmp_path, timeout=180,
        env=env_without_model,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Qwen2.5-1.5B-Instruct-GGUF" in result.stderr
    assert "using the demo model instead" in result.stderr
    said, _, start_up = result.stderr.partition("\nmodel: demo (llama, Q4_1,")
    assert "\n" not in said and start_up.count("\n") == 4  # one line, then the start-up lines
    ((_, _, generated),) = stats(result.stdout)
    assert generated < 96  # an instruct model: it answers, then stops at <|im_end|> by itself
    assert "You are Parley" not in result.stdout  # the system prompt is not repeated back


def engines_with(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"engine" in cmdline and marker.encode() in cmdline:
                pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_no_engine_is_left_behind_after_exit_or_kill(tmp_path: Path) -> None:
    marker = "1088"  # an ENGINE_N_CTX nobody else uses
    env = {**base_env(tmp_path), "ENGINE_N_CTX": marker}
    result = subprocess.run(
        [sys.executable, "-m", "parley", "chat", "-n", "2"],
        input="Hi\n", capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0 and engines_with(marker) == []
    bot = subprocess.Popen([sys.executable, "-m", "parley", "chat"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, cwd=tmp_path, env=env)  # fmt: skip
    deadline = time.monotonic() + 60
    while not engines_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engines_with(marker)
    bot.send_signal(signal.SIGKILL)
    bot.wait()
    deadline = time.monotonic() + 5
    while engines_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engines_with(marker) == []


def test_start_up_lines_say_what_a_remote_engine_says_and_no_more() -> None:
    """An OpenAI server other than Parley's names the model and maybe its context only."""
    lines = startup_lines(ModelCard("qwen", 8192, {"id": "qwen"}), Sampling(seed=7))
    assert lines[:2] == ["model: qwen", "context: 8192 tokens"]
    assert lines[2].startswith("sampling: temperature 0.7") and lines[2].endswith("seed 7")
    assert startup_lines(ModelCard("x", 0), Sampling())[1] == "context: unknown"
