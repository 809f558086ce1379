"""The route one Telegram message takes through Parley's files, from update to final edit.

Runs the real adapter, python-telegram-bot, chat service and SQLite file against the Bot API
emulator and a scripted engine (no model), warms up with one message, then records every call
into Parley's own modules (parley/, common/, bot/, adapters/) while a second message is answered,
on the loop's thread and aiosqlite's. Consecutive calls in one file count as one visit, so
``re-entries`` counts how often the route comes back to a file it had left (streaming edits
come back by design: one per edit); the file pairs that call each other both ways are the
route's detours. The layout issue (#28) asked for each file once, in one direction: the
route is one-way when the files can be put in an order every call goes forward in, and that
order, printed with what each file calls, is the route with each file once.

A reading aid for the layout, not a benchmark. Usage: python -m bench.trace_route
"""

from __future__ import annotations

import asyncio
import collections
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OWN = tuple(str(ROOT / package) + "/" for package in ("parley", "common", "bot", "adapters"))


def route_of_one_message() -> tuple[list[str], collections.Counter[tuple[str, str]]]:
    from tests.adapters.discord_harness import serve
    from tests.adapters.telegram_harness import ALICE, telegram_bot
    from tests.emulators.scripted_engine import ScriptedEngine

    visits: list[str] = []
    calls: collections.Counter[tuple[str, str]] = collections.Counter()
    lock = threading.Lock()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        name = frame.f_code.co_filename
        if name.startswith(OWN):
            callee = name.removeprefix(str(ROOT) + "/")
            caller = frame.f_back.f_code.co_filename if frame.f_back else ""
            with lock:
                visits.append(callee)
                if caller.startswith(OWN) and caller != name:
                    calls[caller.removeprefix(str(ROOT) + "/"), callee] += 1

    async def main() -> None:
        scripted = ScriptedEngine("Hello there, friend", tokens_per_second=200)
        with tempfile.TemporaryDirectory() as folder:
            database = Path(folder) / "bot.db"
            async with serve(scripted.app()) as url, telegram_bot(url, database) as bot:
                first = await bot.emu.user_says("Hi", chat_id=ALICE, user_id=ALICE)
                await bot.answer_to(first, ALICE)
                threading.setprofile(profile)
                sys.setprofile(profile)
                try:
                    asked = await bot.emu.user_says("Hi again", chat_id=ALICE, user_id=ALICE)
                    await bot.answer_to(asked, ALICE)
                finally:
                    sys.setprofile(None)
                    threading.setprofile(None)  # type: ignore[arg-type]

    asyncio.run(main())
    return [name for i, name in enumerate(visits) if i == 0 or visits[i - 1] != name], calls


def one_way_order(
    route: list[str], calls: collections.Counter[tuple[str, str]]
) -> tuple[list[str], list[str]]:
    """The files in an order every call goes forward in (callers before callees, ties by first
    visit), and the files caught in a cycle of calls (none when the route is one-way)."""
    first = {name: i for i, name in reversed(list(enumerate(route)))}
    callers: dict[str, set[str]] = {name: set() for name in first}
    for caller, callee in calls:
        callers.setdefault(callee, set()).add(caller)
        callers.setdefault(caller, set())
    order: list[str] = []
    left = dict(callers)
    while left:
        ready = [name for name, before in left.items() if not before & left.keys()]
        if not ready:  # what is left that both calls and is called within what is left
            return order, sorted(_in_cycles({n: b & left.keys() for n, b in left.items()}))
        name = min(ready, key=lambda n: first.get(n, len(route)))
        order.append(name)
        del left[name]
    return order, []


def _in_cycles(callers: dict[str, set[str]]) -> set[str]:
    """The files of ``callers`` (file -> its callers) on a cycle: drop callees nothing calls
    onward to, until none is left to drop."""
    left = {name: set(before) for name, before in callers.items()}
    while sinks := [n for n in left if not any(n in before for before in left.values())]:
        for name in sinks:
            del left[name]
        for before in left.values():
            before.difference_update(sinks)
    return set(left)


def main() -> None:
    route, calls = route_of_one_message()
    seen = collections.Counter(route)
    both_ways = sorted({tuple(sorted(pair)) for pair in calls if pair[::-1] in calls})
    print(f"{len(route)} visits to {len(seen)} files; re-entries: {len(route) - len(seen)}")
    print(f"{len(calls)} caller -> callee file pairs; {len(both_ways)} call each other both ways:")
    for a, b in both_ways:
        print(f"      {a} <-> {b} ({calls[a, b]} / {calls[b, a]} calls)")
    order, cycle = one_way_order(route, calls)
    if cycle:
        print(f"not one-way: {len(cycle)} files call around in a cycle: {', '.join(cycle)}")
    else:
        print(f"one-way: every call goes forward through these {len(order)} files, each once:")
        for step, name in enumerate(order, 1):
            called = sorted({callee for caller, callee in calls if caller == name})
            onward = f"  -> {', '.join(called)}" if called else ""
            print(f"  {step:2d}. {name}{onward}")
    print("visits per file:")
    for name, count in seen.most_common():
        print(f"{count:4d}  {name}")
    asked = next((i for i, name in enumerate(route) if name.endswith("engines/client.py")), 0)
    print(f"ingress, update to engine request ({asked} visits):")
    print("  " + " -> ".join(route[: asked + 1]))


if __name__ == "__main__":
    main()
