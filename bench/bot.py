"""Bot benchmark: the whole bot pipeline on Telegram with a scripted stand-in engine.

``parley run`` runs as a subprocess against the Telegram Bot API emulator and ``ScriptedEngine``
(the engine's HTTP contract, a fixed answer at a fixed token rate), both hosted by this process.
Prints a Markdown table and writes bench/results/bot.json. Phases:

- **overhead**: 8 users in parallel, each sending its next message when the last answer is
  final (Telegram pacing allows one call a second per chat, so one user alone would take 2-3 s
  a message). Per message, overhead = (engine request received - update handed out by
  getUpdates) + (final edit received - engine's final event sent): everything but inference,
  long-poll wait and pacing. The engine holds its final event until the whole answer is shown
  and a pacing interval has passed, so the final edit is never held back by pacing.
- **length**: the same at 32, 200 and 400-token answers; bot CPU per message from /proc, and
  the CPU per extra token between lengths (equal slopes: no per-token work that grows with
  the answer's length).
- **load**: 1,000 messages from 200 users (5 each) in one burst, in an order where FIFO is
  unfair: 40 "heavy" users send all 5 first, then the other 160 send one each, five times.
  Every message must get exactly one final answer with the scripted text. Queue wait of a
  message = engine request received - sent. Fairness: the wait of each user's *first*
  message, its max over users and its spread (max - min), next to a FIFO estimate: the same
  job start instants handed out in arrival order (the k-th job to arrive gets the k-th start).
- **memory**: the bot's VmHWM (peak RSS) after the load, with 200+ users in its database.

Timings on a shared machine are noisy; the ratios (fair vs FIFO, slope vs slope) are the
robust figures. Usage: python bench/bot.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bot_load import (  # noqa: E402
    BotProcess,
    Calls,
    Key,
    Sent,
    conversations,
    hold_until_paced,
    is_final,
    percentile,
    replies,
    say,
    serve,
    start_bot,
    tag_of,
    wait_answered,
    words,
)
from tests.emulators.scripted_engine import Run, ScriptedEngine  # noqa: E402
from tests.emulators.telegram_api import TelegramEmulator  # noqa: E402

SLOTS = 8  # the engine's parallel slots (ENGINE_PARALLEL's default): the bot runs 8 workers
TIMED_USERS = 8
LENGTHS = (32, 200, 400)
LOAD_USERS, LOAD_EACH, HEAVY = 200, 5, 40
LOAD_ANSWER, LOAD_RATE = 16, 50.0  # tokens, tokens/s per stream
TARGET_P99_MS, TARGET_RSS_MB = 5.0, 150.0


def collect(quick: bool = False) -> dict[str, Any]:
    """Run every phase against a fresh bot; JSON-able results."""
    return asyncio.run(_collect(quick))


async def _collect(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    engine = ScriptedEngine(words(LENGTHS[0]), tokens_per_second=1000, slots=SLOTS)
    results: dict[str, Any] = {"config": {
        "engine_slots": SLOTS, "timed_users": TIMED_USERS, "lengths": LENGTHS,
        "load_users": LOAD_USERS, "load_each": LOAD_EACH, "heavy_users": HEAVY,
        "load_answer_tokens": LOAD_ANSWER, "load_tokens_per_second": LOAD_RATE,
    }}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        async with TelegramEmulator() as emu, serve(engine.app()) as engine_url:
            spawned = time.perf_counter()
            bot = await start_bot(
                emu, engine_url, Path(tmp), max_pending_per_user=LOAD_EACH,
                max_pending_total=LOAD_USERS * LOAD_EACH, max_tokens=1000, log_level="warning",
            )  # fmt: skip
            try:
                results["startup_s"] = time.perf_counter() - spawned
                results["memory_after_start_mb"] = bot.memory_mb()
                await _phases(emu, engine, bot, results, quick)
                results["memory_after_load_mb"] = bot.memory_mb()
                results["bot_log_tail"] = bot.log_tail()[-500:]
            finally:
                await bot.stop()
    results["wall_s"] = time.perf_counter() - started
    return results


async def _phases(
    emu: TelegramEmulator, engine: ScriptedEngine, bot: BotProcess, results: dict[str, Any],
    quick: bool,
) -> None:  # fmt: skip
    calls = Calls(emu)
    user = 1
    await conversations(emu, range(user, user + 4), 1, 0.2)  # warm-up: first-call costs
    user += 4
    lengths: dict[str, Any] = {}
    for tokens in LENGTHS:
        count = (4 if quick else 12) if tokens == LENGTHS[0] else (2 if quick else 3)
        users = range(user, user + TIMED_USERS)
        user += TIMED_USERS
        lengths[str(tokens)] = await _timed(emu, engine, bot, calls, users, count, tokens)
    results["lengths"] = lengths
    results["overhead"] = lengths[str(LENGTHS[0])]
    cpu = [lengths[str(n)]["cpu_ms_per_message"] for n in LENGTHS]
    slopes = [
        (cpu[i + 1] - cpu[i]) / (LENGTHS[i + 1] - LENGTHS[i]) * 1000 for i in range(len(cpu) - 1)
    ]
    results["cpu_us_per_token"] = slopes
    load_users, heavy = (40, 8) if quick else (LOAD_USERS, HEAVY)
    load = range(10_000, 10_000 + load_users)
    results["load"] = await _load(emu, engine, bot, calls, load, heavy)


async def _timed(
    emu: TelegramEmulator, engine: ScriptedEngine, bot: BotProcess, calls: Calls,
    users: range, count: int, tokens: int,
) -> dict[str, Any]:  # fmt: skip
    """``count`` messages from each of ``users`` in parallel; overhead per message."""
    engine.answer = words(tokens)
    engine.tokens_per_second = 1000
    engine.before_finish = hold_until_paced(calls, engine.answer)
    first_run, cpu = len(engine.runs), bot.cpu_s()
    began = time.perf_counter()
    sent = await conversations(emu, users, count, 2.5)
    elapsed = time.perf_counter() - began
    cpu = bot.cpu_s() - cpu
    engine.before_finish = None
    calls.update()
    runs = {tag_of(run): run for run in engine.runs[first_run:]}
    found = replies(emu)
    ingress, egress = [], []
    for (user, index), message in sent.items():
        run = runs[(user, index)]
        reply = next(m for m in found[(user, message.message_id)] if is_final(m))
        final = calls.last_edit[(user, reply.message_id)]
        assert run.finish is not None
        ingress.append((run.received - emu.handed_out[(user, message.message_id)]) * 1000)
        egress.append((final.at - run.finish) * 1000)
    total = [a + b for a, b in zip(ingress, egress, strict=True)]
    return {
        "tokens": tokens, "messages": len(sent), "wall_s": elapsed,
        "total_ms": _stats(total), "ingress_ms": _stats(ingress), "egress_ms": _stats(egress),
        "cpu_ms_per_message": cpu * 1000 / len(sent),
    }  # fmt: skip


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values),
        "mean": statistics.fmean(values),
    }  # fmt: skip


async def _load(
    emu: TelegramEmulator, engine: ScriptedEngine, bot: BotProcess, calls: Calls,
    users: range, heavy: int,
) -> dict[str, Any]:  # fmt: skip
    """One burst: ``heavy`` users send all their messages first, then the rest take turns."""
    engine.answer = words(LOAD_ANSWER)
    engine.tokens_per_second = LOAD_RATE
    order = [(u, k) for u in users[:heavy] for k in range(LOAD_EACH)]
    order += [(u, k) for k in range(LOAD_EACH) for u in users[heavy:]]
    first_run, first_call, cpu = len(engine.runs), len(emu.requests), bot.cpu_s()
    sent: dict[Key, Sent] = {}
    for user, index in order:  # one burst: nothing here yields to the event loop
        sent[(user, index)] = await say(emu, user, index)
    await wait_answered(emu, sent)
    cpu = bot.cpu_s() - cpu
    calls.update()
    load_runs = engine.runs[first_run:]
    return {
        "users": len(users), "messages": len(order), "cpu_ms_per_message": cpu * 1000 / len(order),
        "api_calls_per_message": (len(emu.requests) - first_call) / len(order),
        **_delivery(emu, calls, sent, engine.answer, load_runs),
        **_fairness(order, sent, load_runs),
        "engine_slot_use": _slot_use(load_runs, SLOTS),
    }  # fmt: skip


def _delivery(
    emu: TelegramEmulator, calls: Calls, sent: dict[Key, Sent], answer: str, runs: list[Run]
) -> dict[str, Any]:
    """Exactly one reply message per user message, final, with the scripted answer."""
    found = replies(emu)
    answered = lost = duplicated = other = 0
    last_final = 0.0
    for (user, _), message in sent.items():
        mine = found.get((user, message.message_id), [])
        if len(mine) > 1:
            duplicated += 1
        right = [m for m in mine if is_final(m) and m.text.split() == answer.split()]
        if right:
            answered += 1
            edit = calls.last_edit.get((user, right[0].message_id))
            last_final = max(last_final, edit.at if edit else 0.0)
        elif mine:
            other += 1  # a refusal, an error, or an answer that never became final
        else:
            lost += 1
    tags = [tag_of(run) for run in runs]
    first_sent = min(s.at for s in sent.values())
    return {
        "answered": answered, "lost": lost, "duplicated": duplicated, "not_the_answer": other,
        "engine_requests": len(tags), "engine_repeats": len(tags) - len(set(tags)),
        "wall_s": last_final - first_sent,
    }  # fmt: skip


def _fairness(order: list[Key], sent: dict[Key, Sent], runs: list[Run]) -> dict[str, Any]:
    """First-message queue waits, fair queue vs FIFO estimate (see the module docstring)."""
    started = {tag_of(run): run.received for run in runs}
    if len(started) < len(order):
        return {"fairness": None}
    starts = sorted(started.values())
    fair = {key: started[key] - sent[key].at for key in order}
    fifo = {key: starts[rank] - sent[key].at for rank, key in enumerate(order)}
    firsts = [key for key in order if key[1] == 0]

    def summary(waits: dict[Key, float]) -> dict[str, float]:
        first = [waits[key] for key in firsts]
        return {
            "first_max_s": max(first), "first_spread_s": max(first) - min(first),
            "first_p50_s": percentile(first, 50), "all_max_s": max(waits.values()),
        }  # fmt: skip

    return {"fair": summary(fair), "fifo_estimate": summary(fifo)}


def _slot_use(runs: list[Run], slots: int) -> float:
    """Busy slot-seconds over available slot-seconds while the load was being answered."""
    finished = [run for run in runs if run.finish is not None]
    if not finished:
        return 0.0
    busy = sum(run.finish - run.received for run in finished if run.finish is not None)
    span = max(r.finish for r in finished if r.finish is not None) - min(r.received for r in runs)
    return busy / (slots * span)


def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, target or ratio) for a Markdown table."""
    over = results["overhead"]
    total, ingress, egress = over["total_ms"], over["ingress_ms"], over["egress_ms"]
    p99_ok = "✓" if total["p99"] < TARGET_P99_MS else "✗"
    out = [
        ("bot start → polling", f"{results['startup_s']:.1f} s", ""),
        (f"overhead per message p50 / p99 ({over['messages']} msgs, {TIMED_USERS} users)",
         f"{total['p50']:.1f} / {total['p99']:.1f} ms", f"p99 < {TARGET_P99_MS:g} ms {p99_ok}"),
        ("… update → engine request p50 / p99", f"{ingress['p50']:.1f} / {ingress['p99']:.1f} ms",
         ""),
        ("… final token → final edit p50 / p99", f"{egress['p50']:.1f} / {egress['p99']:.1f} ms",
         ""),
    ]  # fmt: skip
    lengths = results["lengths"]
    for tokens, row in lengths.items():
        out.append((f"bot CPU per message, {tokens}-token answer",
                    f"{row['cpu_ms_per_message']:.1f} ms", ""))  # fmt: skip
    short, long = lengths[str(LENGTHS[0])], lengths[str(LENGTHS[-1])]
    ratio = long["egress_ms"]["p50"] / short["egress_ms"]["p50"]
    out.append((f"final token → final edit p50, {LENGTHS[-1]} vs {LENGTHS[0]} tokens",
                f"{long['egress_ms']['p50']:.1f} ms", f"{ratio:.2f} × short"))  # fmt: skip
    slopes = results["cpu_us_per_token"]
    label = " / ".join(f"{a}→{b}" for a, b in itertools.pairwise(LENGTHS))
    growth = f"{slopes[-1] / slopes[0]:.2f} (≈1: not growing)" if slopes[0] > 0 else ""
    out.append((f"bot CPU per extra token ({label} tokens)",
                " / ".join(f"{s:.0f}" for s in slopes) + " µs", growth))  # fmt: skip
    out += _load_rows(results["load"])
    peak = results["memory_after_load_mb"]["VmHWM"]
    start = results["memory_after_start_mb"]["VmHWM"]
    ok = "✓" if peak <= TARGET_RSS_MB else "✗"
    target = f"≤ {TARGET_RSS_MB:g} MB {ok}; {peak / start:.2f} × at start"
    out.append((f"bot peak RSS (VmHWM) after the load, {results['load']['users']}+ users",
                f"{peak:.0f} MB", target))  # fmt: skip
    out.append(("bench wall time", f"{results['wall_s']:.0f} s", ""))
    return out


def _load_rows(load: dict[str, Any]) -> list[tuple[str, str, str]]:
    n = load["messages"]
    lost_ok = "✓" if load["answered"] == n and not load["duplicated"] else "✗"
    out = [
        (f"load: {n} msgs from {load['users']} users answered", f"{load['answered']} / {n}",
         f"all, none lost {lost_ok}"),
        ("load: lost / duplicated / other replies / repeated engine requests",
         f"{load['lost']} / {load['duplicated']} / {load['not_the_answer']} / "
         f"{load['engine_repeats']}", "0 / 0 / 0 / 0"),
        ("load: burst → last final answer", f"{load['wall_s']:.1f} s",
         f"{n / load['wall_s']:.1f} msgs/s"),
        ("load: engine slot use", f"{load['engine_slot_use'] * 100:.0f} %", ""),
        ("load: bot CPU per message / Bot API calls per message",
         f"{load['cpu_ms_per_message']:.1f} ms / {load['api_calls_per_message']:.1f}", ""),
    ]  # fmt: skip
    fair, fifo = load.get("fair"), load.get("fifo_estimate")
    if fair and fifo:
        out.append(("load: queue wait of users' first message, max",
                    f"{fair['first_max_s']:.1f} s (FIFO ≈ {fifo['first_max_s']:.1f} s)",
                    f"{fair['first_max_s'] / fifo['first_max_s']:.2f} × FIFO"))  # fmt: skip
        out.append(("load: max wait spread (first messages, max − min)",
                    f"{fair['first_spread_s']:.1f} s (FIFO ≈ {fifo['first_spread_s']:.1f} s)",
                    f"{fair['first_spread_s'] / fifo['first_spread_s']:.2f} × FIFO"))  # fmt: skip
    return out


def table(results: dict[str, Any]) -> str:
    lines = ["| measure | value | target |", "|---|---:|---|"]
    lines += [f"| {m} | {v} | {t} |" for m, v, t in rows(results)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages (a smoke run)")
    args = parser.parse_args()
    results = collect(args.quick)
    print(table(results))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "bot.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
