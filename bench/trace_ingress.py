"""Where the bot's ingress time goes: update handed out → engine request, split into steps.

bench/bot.py measures the whole of it; this runs the same overhead load with ``parley run``
started under a tracer that timestamps the message path's steps (``time.perf_counter``, the
system-wide monotonic clock, so the bot's and this process's stamps compare), and prints
p50/p90/max of each step:

- handed → handle: the getUpdates answer parsed by python-telegram-bot, the handler reached
- handle → accept: the checks before the store (limits, queue room)
- accept: the message and its job committed (on the loop, or one aiosqlite round trip)
- accept → stream: queued, dispatched, the job begun (history read) and fitted
- stream → engine: the engine request sent and received by the scripted engine

A profiling aid, not a benchmark: the wrappers add a few µs a step. Usage:
python bench/trace_ingress.py [rounds] (8 users × 13 messages a round).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import itertools
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = ("handed → handle", "handle → accept", "accept", "accept → stream", "stream → engine")


def traced_bot(out: Path) -> int:
    """``parley run`` with stamps around the message path, written to ``out`` at exit."""
    import bot.chat.service as service
    from parley.cli import main

    events: list[tuple[float, str, str]] = []

    def wrap(owner: Any, name: str, text_of: Callable[..., str]) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        async def stamped(*args: Any, **kwargs: Any) -> Any:
            text = text_of(*args)
            events.append((time.perf_counter(), name + ">", text))
            try:
                return await original(*args, **kwargs)
            finally:
                events.append((time.perf_counter(), name + "<", text))

        setattr(owner, name, stamped)

    wrap(service.ChatService, "handle", lambda _self, incoming: incoming.text)
    wrap(service, "accept_message", lambda *args: args[5])
    wrap(service, "stream_answer", lambda _client, _sampling, job, _m: job.payload.incoming.text)
    atexit.register(lambda: out.write_text(json.dumps(events)))
    return main(["run"])


async def drive(rounds: int, workdir: Path) -> dict[str, list[float]]:
    from bench.bot_load import (
        ask,
        conversations,
        conversations_in_rounds,
        serve,
        start_bot,
        tag_of,
        user_rounds,
        words,
    )
    from tests.emulators.scripted_engine import ScriptedEngine
    from tests.emulators.telegram_api import TelegramEmulator

    events = workdir / "events.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--bot", str(events)]
    engine = ScriptedEngine(words(32), tokens_per_second=1000, slots=8)
    async with TelegramEmulator() as emu, serve(engine.app()) as engine_url:
        bot = await start_bot(
            emu, engine_url, workdir, command=command, max_pending_per_user=5,
            max_tokens=1000, log_level="warning", rate_limit_per_minute=0,
        )  # fmt: skip
        try:
            await conversations(emu, range(1, 5), 1, 0.2)  # warm-up
            sent = await conversations_in_rounds(emu, user_rounds(100, rounds), 13)
        finally:
            await bot.stop()
    stamps: dict[tuple[str, str], float] = {}
    for at, name, text in json.loads(events.read_text()):
        stamps.setdefault((name, text), at)  # the first attempt's
    steps: dict[str, list[float]] = {step: [] for step in STEPS}
    runs = {tag_of(run): run for run in engine.runs}
    for (user, index), message in sent.items():
        text = ask(user, index)
        points = [
            emu.handed_out[(user, message.message_id)], stamps[("handle>", text)],
            stamps[("accept_message>", text)], stamps[("accept_message<", text)],
            stamps[("stream_answer>", text)], runs[(user, index)].received,
        ]  # fmt: skip
        for step, (a, b) in zip(STEPS, itertools.pairwise(points), strict=True):
            steps[step].append((b - a) * 1000)
    return steps


def run_tracer(
    traced: Callable[[Path], int],
    drive: Callable[[int, Path], Coroutine[Any, Any, dict[str, list[float]]]],
) -> None:
    """A tracer's command line: ``--bot OUT`` is the traced bot (``traced``); else ``drive`` the
    load for ``[rounds]`` and print each step's p50/p90/max (shared with bench/trace_egress.py)."""
    if sys.argv[1:2] == ["--bot"]:
        sys.exit(traced(Path(sys.argv[2])))
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with tempfile.TemporaryDirectory(prefix="parley-trace-") as tmp:
        steps = asyncio.run(drive(rounds, Path(tmp)))
    print("| step | p50 ms | p90 ms | max ms |\n|---|---:|---:|---:|")
    for step, values in steps.items():
        ordered = sorted(values)
        print(f"| {step} | {statistics.median(ordered):.2f} | "
              f"{ordered[int(len(ordered) * 0.9)]:.2f} | {ordered[-1]:.2f} |")  # fmt: skip
    print(f"({len(next(iter(steps.values())))} messages)")


if __name__ == "__main__":
    run_tracer(traced_bot, drive)
