"""``parley``'s entry point: the event loop it runs the bot on, its version and license."""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys

import pytest

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
