"""A stop that cannot hang: once the bot is told to stop, a thread ends the process if
stopping overruns its deadline, having written where it was stuck.

Every part of a stop is bounded on its own (answers get a grace, final texts a grace, the
engine a grace before SIGKILL), but a library's close that never returns, a task that never
hears its cancellation, or a thread that is never told to end would keep ``parley run`` alive
until a service manager's SIGKILL, with nothing said. This thread is outside the event loop,
so it also sees a loop that stopped turning, and the interpreter's own exit.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import threading
import time
from types import FrameType
from typing import Any, TextIO

EXIT_STUCK = 70  # EX_SOFTWARE: the stop did not finish by itself


class StopWatchdog:
    """``arm()`` when stopping begins; the process exits with EXIT_STUCK ``deadline`` s later
    unless it has exited by then (the thread is a daemon: a finished process never waits)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self) -> None:
        """Start counting; call from the event loop's thread, whose tasks are then reported."""
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._watch, name="parley-stop-watchdog", daemon=True).start()

    def _watch(self) -> None:
        time.sleep(self.deadline)
        self.report(sys.stderr)
        os._exit(EXIT_STUCK)

    def report(self, out: TextIO) -> None:
        """Say that the stop is stuck, with every thread's stack and every task's."""
        print(f"parley: stopping took over {self.deadline:g} s; exiting now. "
              "Where it was stuck:", file=out, flush=True)  # fmt: skip
        faulthandler.dump_traceback(file=out, all_threads=True)
        for task in _tasks(self._loop):  # read from this thread: a best-effort snapshot
            print(f"task {task.get_name()}:", file=out)
            for frame in _awaiting(task.get_coro()):
                code = frame.f_code
                print(f"  {code.co_filename}:{frame.f_lineno} in {code.co_name}", file=out)
        out.flush()


def _awaiting(awaitable: object, depth: int = 30) -> list[FrameType]:
    """The frames of ``awaitable`` and of what it awaits, and so on, outermost first
    (``Task.get_stack`` gives only the outermost)."""
    frames: list[FrameType] = []
    while len(frames) < depth:
        frame = _first(awaitable, "cr_frame", "gi_frame", "ag_frame")
        if frame is None:
            break
        frames.append(frame)
        awaitable = _first(awaitable, "cr_await", "gi_yieldfrom", "ag_await")
    return frames


def _first(thing: object, *names: str) -> Any:
    """The first of these attributes that ``thing`` has and is not None (coroutines,
    generators and async generators name the same things differently)."""
    return next((v for n in names if (v := getattr(thing, n, None)) is not None), None)


def _tasks(loop: asyncio.AbstractEventLoop | None) -> list[asyncio.Task[object]]:
    if loop is None or loop.is_closed():
        return []
    try:
        return list(asyncio.all_tasks(loop))
    except RuntimeError:  # the set changed size meanwhile, every try
        return []
