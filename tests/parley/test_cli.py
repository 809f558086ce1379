"""``parley``'s entry point: the event loop it runs the bot on, its version and license."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.errors import EX_CONFIG
from parley.cli import run_loop
from tests.engine_process import ROOT


def test_the_bot_runs_on_uvloop_where_it_is_installed() -> None:
    pytest.importorskip("uvloop")  # not on Windows: asyncio's own loop there

    async def loop_kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_loop(loop_kind()).startswith("uvloop")


@pytest.mark.parametrize("command", [["--version"], ["-V"], ["engine", "--version"]])
def test_version_names_the_installed_distribution(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "parley", *command], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == importlib.metadata.version("parley")


def test_the_distribution_says_its_license() -> None:
    metadata = importlib.metadata.metadata("parley")
    assert metadata["License-Expression"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_a_container_waits_after_a_configuration_error_instead_of_exiting(tmp_path: Path) -> None:
    """With PARLEY_ON_CONFIG_ERROR=wait (set in the Docker image) ``parley run`` with nothing to
    run says so once and waits for a stop, then exits 78; Docker's ``unless-stopped`` would
    otherwise start it into the same error for ever."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
    env.update(DATABASE_PATH=str(tmp_path / "parley.db"), PARLEY_ON_CONFIG_ERROR="wait")
    bot = subprocess.Popen(
        [sys.executable, "-m", "parley", "run"], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    try:
        assert bot.stderr is not None
        assert "nothing to run" in bot.stderr.readline()
        assert "waiting for a stop" in bot.stderr.readline()
        time.sleep(0.5)
        assert bot.poll() is None  # still up
        bot.send_signal(signal.SIGTERM)
        assert bot.wait(timeout=30) == EX_CONFIG
    finally:
        bot.kill()
        bot.wait()


def test_without_the_hold_a_configuration_error_exits_at_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
    env.update(DATABASE_PATH=str(tmp_path / "parley.db"))
    env.pop("PARLEY_ON_CONFIG_ERROR", None)
    result = subprocess.run(
        [sys.executable, "-m", "parley", "run"], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, cwd=tmp_path, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == EX_CONFIG and "waiting" not in result.stderr
