"""A stop that hangs ends the process by its deadline, saying where it was stuck; one that
finishes is not held up by the watchdog."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from parley.stop_watchdog import EXIT_STUCK
from tests.engine_process import ROOT


def run(body: str) -> tuple[int, str, float]:
    """``body`` (inside ``async def main``) run in a fresh interpreter: exit code, stderr,
    seconds taken."""
    script = "import asyncio, time\nfrom parley.stop_watchdog import StopWatchdog\n\n" + body
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stderr, time.monotonic() - began


def test_a_stop_stuck_on_an_await_ends_with_the_stuck_task_named() -> None:
    code, err, took = run(
        textwrap.dedent("""
        async def close_that_never_returns():
            await asyncio.Event().wait()

        async def main():
            asyncio.create_task(close_that_never_returns(), name="closing-the-platform")
            StopWatchdog(0.5).arm()
            await asyncio.sleep(30)

        asyncio.run(main())
    """)
    )
    assert code == EXIT_STUCK and took < 20
    assert "parley: stopping took over 0.5 s; exiting now" in err
    assert "task closing-the-platform:" in err and "in close_that_never_returns" in err


def test_a_stop_that_blocks_the_event_loop_still_ends_with_its_stack() -> None:
    code, err, took = run(
        textwrap.dedent("""
        def close_that_blocks_the_loop():
            time.sleep(30)

        async def main():
            StopWatchdog(0.5).arm()
            close_that_blocks_the_loop()

        asyncio.run(main())
    """)
    )
    assert code == EXIT_STUCK and took < 20
    assert "stopping took over 0.5 s" in err
    assert "close_that_blocks_the_loop" in err  # the loop thread's stack, from faulthandler


def test_a_stop_that_finishes_exits_at_once_with_its_own_code() -> None:
    code, err, took = run(
        textwrap.dedent("""
        async def main():
            StopWatchdog(30).arm()
            await asyncio.sleep(0.1)

        asyncio.run(main())
    """)
    )
    assert (code, err) == (0, "") and took < 10
