"""``parley engine``'s event loop: uvloop where it is installed."""

from __future__ import annotations

import asyncio

import pytest

from engine.cli import run_event_loop


def test_the_engine_serves_on_uvloop_where_it_is_installed() -> None:
    pytest.importorskip("uvloop")  # not on Windows: asyncio's own loop there
    seen: list[str] = []

    async def record_loop() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    run_event_loop(record_loop())
    assert len(seen) == 1 and seen[0].startswith("uvloop")
