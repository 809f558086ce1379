"""``parley``'s entry point: the event loop it runs the bot on."""

from __future__ import annotations

import asyncio

import pytest

from parley.cli import run_loop


def test_the_bot_runs_on_uvloop_where_it_is_installed() -> None:
    pytest.importorskip("uvloop")  # not on Windows: asyncio's own loop there

    async def loop_kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_loop(loop_kind()).startswith("uvloop")
