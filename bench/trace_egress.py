"""Where the bot's egress time goes: the engine's final event → the final edit, split into steps.

The other half of bench/trace_ingress.py, on the same overhead load (8 users × 13 messages a
round, the engine's final event held until pacing allows the final edit). ``parley run`` runs
under stamps (``time.perf_counter``, comparable across processes) and this prints p50/p90/max of:

- event → stream end: the final SSE event read and parsed, ``stream_answer`` back in its job
- stream end → store: the job's own code until ``Workers.finish`` starts
- store → finished: the reply stored and the job closed, the delivery task reached
- finished → edit: the final text built, the Telegram edit started
- edit → emulator: rendered, sent by python-telegram-bot, received by the emulator

A profiling aid, not a benchmark. Usage: python bench/trace_egress.py [rounds].
"""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = (
    "event → stream end", "stream end → store", "store → finished", "finished → edit",
    "edit → emulator",
)  # fmt: skip


def traced_bot(out: Path) -> int:
    """``parley run`` with stamps (time, step, chat) on the reply path, written at exit."""
    import adapters.telegram_surface as surface
    import bot.chat.workers as workers
    import bot.replies.platform as platform_reply
    from parley.cli import main

    events: list[tuple[float, str, str]] = []

    def stamp(owner: Any, name: str, chat_of: Callable[..., str]) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        async def stamped(*args: Any, **kwargs: Any) -> Any:
            try:
                return await original(*args, **kwargs)
            finally:
                events.append((time.perf_counter(), name, chat_of(*args)))

        @functools.wraps(original)
        async def entered(*args: Any, **kwargs: Any) -> Any:
            events.append((time.perf_counter(), name, chat_of(*args)))
            return await original(*args, **kwargs)

        setattr(owner, name, stamped if name == "stream_answer" else entered)

    stamp(workers, "stream_answer", lambda _c, _s, job, _m: job.payload.incoming.chat_id)
    stamp(workers.Workers, "finish", lambda _self, item, _o: item.incoming.chat_id)
    stamp(platform_reply.PlatformReply, "finished", lambda self, _o: str(self.surface.chat_id))
    stamp(surface.TelegramSurface, "edit", lambda self, _m, _t: str(self.chat_id))
    atexit.register(lambda: out.write_text(json.dumps(events)))
    return main(["run"])


async def drive(rounds: int, workdir: Path) -> dict[str, list[float]]:
    from bench.bot_load import (
        Calls,
        conversations,
        conversations_in_rounds,
        hold_until_paced,
        is_final,
        replies,
        serve,
        start_bot,
        tag_of,
        user_rounds,
        words,
    )  # fmt: skip
    from tests.emulators.scripted_engine import ScriptedEngine
    from tests.emulators.telegram_api import TelegramEmulator

    out = workdir / "events.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--bot", str(out)]
    engine = ScriptedEngine(words(32), tokens_per_second=1000, slots=8)
    async with TelegramEmulator() as emu, serve(engine.app()) as engine_url:
        bot = await start_bot(
            emu, engine_url, workdir, command=command, max_pending_per_user=5,
            max_tokens=1000, log_level="warning", rate_limit_per_minute=0,
        )  # fmt: skip
        calls = Calls(emu)
        try:
            await conversations(emu, range(1, 5), 1, 0.2)  # warm-up
            engine.before_finish = hold_until_paced(calls, engine.answer)
            sent = await conversations_in_rounds(emu, user_rounds(100, rounds), 13)
        finally:
            await bot.stop()
    calls.update()
    events = json.loads(out.read_text())
    runs = {tag_of(run): run for run in engine.runs}
    found = replies(emu)
    steps: dict[str, list[float]] = {step: [] for step in STEPS}
    for (user, index), message in sent.items():
        run = runs[(user, index)]
        assert run.finish is not None
        reply = next(m for m in found[(user, message.message_id)] if is_final(m))
        final = calls.last_edit[(user, reply.message_id)]
        mine = [(at, name) for at, name, chat in events if chat == str(user)]
        first: dict[str, float] = {}  # each step's first stamp after the final event
        for at, name in mine:
            if at >= run.finish:
                first.setdefault(name, at)
        last_edit = max(at for at, name in mine if name == "edit" and at <= final.at)
        points = [
            run.finish, first["stream_answer"], first["finish"], first["finished"], last_edit,
            final.at,
        ]  # fmt: skip
        for step, (a, b) in zip(STEPS, itertools.pairwise(points), strict=True):
            steps[step].append((b - a) * 1000)
    return steps


if __name__ == "__main__":
    from bench.trace_ingress import run_tracer

    run_tracer(traced_bot, drive)
