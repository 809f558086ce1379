"""Bot benchmark: the whole bot pipeline on Telegram with a scripted stand-in engine.

``parley run`` runs as a subprocess against the Telegram Bot API emulator and ``ScriptedEngine``
(the engine's HTTP contract, a fixed answer at a fixed token rate), both hosted by this process.
Prints a Markdown table and writes bench/results/bot.json. Phases:

- **overhead**: 8 users at once, each sending its next message when the last answer is final
  (Telegram pacing allows one call a second per chat, so a reply takes 2-3 s whatever the
  engine does, and one user at a time would be too slow); 13 messages each, then 8 fresh
  users the same way (208 messages: the p99 is the third largest). Per message, overhead =
  (engine request received - update handed out by getUpdates) + (final edit received -
  engine's final event sent): everything but inference, long-poll wait and pacing. The engine
  holds its final event until the whole answer is shown and a pacing interval has passed, so
  the final edit is never held back by pacing. The users start 2.5 s / 8 apart. Each user's
  first message finds the bot (and this process) idle for a while, where every later one
  comes right after the bot sent that user's last final edit: the first messages' mean
  against the later ones' is shown, as they are where the p99 comes from (the floor's too).
- **length**: the same at 32, 200 and 400-token answers; bot CPU per message (from /proc) and
  the CPU per extra token between lengths (a later slope no larger than the first: no
  per-token work that grows with the answer's length).
- **load**: 1,000 messages from 200 users (5 each) in one burst, in an order where FIFO is
  unfair: 40 "heavy" users send all 5 first, then the other 160 send one each, five times.
  Every message must get exactly one final reply with the scripted text within
  ``LOAD_DEADLINE``; those that did not are counted by their job's state in the bot's
  database, and "lost" if it failed or was cancelled. Queue wait = engine request received -
  message sent. Fairness: the wait of each user's *first* message, its max over users and its
  spread (max - min), next to a FIFO estimate: the same job start instants handed out in
  arrival order (the k-th message to arrive gets the k-th start).
- **memory**: the bot's VmHWM (peak RSS) after the load, with 200+ users in its database.

Timings on a shared machine are noisy; the ratios (fair vs FIFO, slope vs slope) are the
robust figures. Usage: python bench/bot.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bot_floor  # noqa: E402
from bench.bot_load import (  # noqa: E402
    BotProcess,
    Calls,
    Key,
    Sent,
    conversations,
    conversations_in_rounds,
    first_means,
    hold_until_paced,
    is_final,
    job_states,
    percentile,
    replies,
    say,
    serve,
    start_bot,
    tag_of,
    user_rounds,
    wait_answered,
    words,
)
from bench.phases import phase  # noqa: E402
from tests.emulators.scripted_engine import Run, ScriptedEngine  # noqa: E402
from tests.emulators.telegram_api import TelegramEmulator  # noqa: E402

SLOTS = 8  # the engine's parallel slots (ENGINE_PARALLEL's default): the bot runs 8 workers
TIMED_USERS, TIMED_EACH = 8, 13  # a round of 104 messages
TIMED_ROUNDS = 2  # of fresh users, same mix: p99 is the third largest of 208, not the
# second of 104 (its spread between runs was 4.4-7.8 ms; the floor's 2.8-6.0)
LENGTHS = (32, 200, 400)
LOAD_USERS, LOAD_EACH, HEAVY = 200, 5, 40
LOAD_ANSWER, LOAD_RATE = 16, 100.0  # tokens, tokens/s per stream: 8 slots need >= 20 s
LOAD_DEADLINE = 60.0  # seconds after the burst
TARGET_P99_MS, TARGET_RSS_MB = 5.0, 150.0


def collect(quick: bool = False) -> dict[str, Any]:
    """Run every phase against a fresh bot; JSON-able results."""
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # the bot's exit resets
    return asyncio.run(_collect(quick))


async def _collect(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    engine = ScriptedEngine(words(LENGTHS[0]), tokens_per_second=1000, slots=SLOTS)
    results: dict[str, Any] = {"config": {
        "engine_slots": SLOTS, "timed_users": TIMED_USERS, "lengths": LENGTHS,
        "load_each": LOAD_EACH, "load_answer_tokens": LOAD_ANSWER,
        "load_tokens_per_second": LOAD_RATE, "load_deadline_s": LOAD_DEADLINE,
    }}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        async with TelegramEmulator() as emu, serve(engine.app()) as engine_url:
            spawned = time.perf_counter()
            bot = await start_bot(
                emu, engine_url, Path(tmp), max_pending_per_user=LOAD_EACH,
                max_pending_total=LOAD_USERS * LOAD_EACH, max_tokens=1000, log_level="warning",
                rate_limit_per_minute=0,  # the pipeline is measured here, not the limiter
            )  # fmt: skip
            try:
                results["startup_s"] = time.perf_counter() - spawned
                results["memory_after_start_mb"] = bot.memory_mb()
                await _phases(emu, engine, bot, Path(tmp) / "parley.db", results, quick)
                results["memory_after_load_mb"] = bot.memory_mb()
            finally:
                await bot.stop()
            count = TIMED_EACH // (3 if quick else 1)
            rounds = 1 if quick else TIMED_ROUNDS  # as the overhead phase
            floor_users = user_rounds(900, rounds, TIMED_USERS)
            results["floor"] = await bot_floor.measure(
                emu, engine, engine_url, Path(tmp), floor_users, count, LENGTHS[0]
            )
    results["wall_s"] = time.perf_counter() - started
    return results


async def _phases(
    emu: TelegramEmulator, engine: ScriptedEngine, bot: BotProcess, database: Path,
    results: dict[str, Any], quick: bool,
) -> None:  # fmt: skip
    calls = Calls(emu)
    await conversations(emu, range(1, 5), 1, 0.2)  # warm-up: first-call costs
    lengths: dict[str, Any] = {}
    for i, tokens in enumerate(LENGTHS):
        count = (TIMED_EACH if i == 0 else 3) // (3 if quick else 1)
        rounds = TIMED_ROUNDS if i == 0 and not quick else 1
        users = user_rounds(100 + i * 100, rounds, TIMED_USERS)  # fresh conversations
        with phase(f"bot: {tokens}-token answers, {TIMED_USERS} users at once"):
            lengths[str(tokens)] = await _timed(emu, engine, bot, calls, users, count, tokens)
    results["lengths"] = lengths
    results["overhead"] = lengths[str(LENGTHS[0])]
    cpu = [lengths[str(n)]["cpu_ms_per_message"] for n in LENGTHS]
    results["cpu_us_per_token"] = [
        (b - a) / (m - n) * 1000
        for (a, b), (n, m) in zip(itertools.pairwise(cpu), itertools.pairwise(LENGTHS), strict=True)
    ]
    people, heavy = (40, 8) if quick else (LOAD_USERS, HEAVY)
    load = range(10_000, 10_000 + people)
    with phase(f"bot: a burst from {people} users"):
        results["load"] = await _load(emu, engine, bot, calls, database, load, heavy)


async def _timed(
    emu: TelegramEmulator, engine: ScriptedEngine, bot: BotProcess, calls: Calls,
    rounds: list[range], count: int, tokens: int,
) -> dict[str, Any]:  # fmt: skip
    """Per round, ``count`` messages from each of its users at once; overhead per message."""
    engine.answer = words(tokens)
    engine.tokens_per_second = 1000
    engine.before_finish = hold_until_paced(calls, engine.answer)
    first_run, cpu = len(engine.runs), bot.cpu_s()
    began = time.perf_counter()
    sent = await conversations_in_rounds(emu, rounds, count)
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
    first, later = first_means(sent, total)
    return {
        "tokens": tokens, "messages": len(sent), "wall_s": elapsed,
        "total_ms": _stats(total), "ingress_ms": _stats(ingress), "egress_ms": _stats(egress),
        "first_mean_ms": first, "later_mean_ms": later,
        "cpu_ms_per_message": cpu * 1000 / len(sent),
    }  # fmt: skip


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values),
        "mean": statistics.fmean(values),
    }  # fmt: skip


async def _load(
    emu: TelegramEmulator, engine: ScriptedEngine, bot: BotProcess, calls: Calls,
    database: Path, users: range, heavy: int,
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
    burst = time.perf_counter()
    await wait_answered(emu, sent, burst + LOAD_DEADLINE)
    ended = time.perf_counter()
    cpu = bot.cpu_s() - cpu
    calls.update()
    runs = engine.runs[first_run:]
    calls_made = emu.requests[first_call:]
    status_edits = sum(
        1
        for c in calls_made
        if c.method == "editMessageText" and str(c.params.get("text", "")).startswith("⏳")
    )
    return {
        "users": len(users), "messages": len(order), "cpu_ms_per_message": cpu * 1000 / len(order),
        "api_calls_per_message": len(calls_made) / len(order),
        "status_edits_per_message": status_edits / len(order),
        **_delivery(emu, calls, sent, job_states(database), engine.answer, runs),
        "fairness": _fairness(order, sent, runs),
        "engine_slot_use": _slot_use(runs, SLOTS, burst, ended),
    }  # fmt: skip


def _delivery(
    emu: TelegramEmulator, calls: Calls, sent: dict[Key, Sent], jobs: dict[Key, str],
    answer: str, runs: list[Run],
) -> dict[str, Any]:  # fmt: skip
    """Exactly one reply message per user message, final, with the scripted answer. One not
    answered by the deadline is "unanswered", by its job's state in the bot's database ("none":
    not stored yet; "done": stored, not shown yet), or "lost" when its job failed or was
    cancelled (only a finished run can show that nothing else was lost)."""
    found = replies(emu)
    count = dict.fromkeys(("answered", "wrong", "lost", "duplicated"), 0)
    unanswered: dict[str, int] = {}
    last_final = 0.0
    for key, message in sent.items():
        mine = found.get((key[0], message.message_id), [])
        count["duplicated"] += len(mine) > 1
        right = [m for m in mine if is_final(m) and m.text.split() == answer.split()]
        state = jobs.get(key, "none")
        if right:
            count["answered"] += 1
            edit = calls.last_edit.get((key[0], right[0].message_id))
            last_final = max(last_final, edit.at if edit else 0.0)
        elif any(map(is_final, mine)):
            count["wrong"] += 1  # a refusal or an error
        elif state in ("failed", "cancelled"):
            count["lost"] += 1
        else:
            unanswered[state] = unanswered.get(state, 0) + 1
    tags = [tag_of(run) for run in runs]
    first_sent = min(s.at for s in sent.values())
    return {
        **count, "unanswered": unanswered, "engine_requests": len(tags),
        "engine_repeats": len(tags) - len(set(tags)),
        "wall_s": last_final - first_sent if count["answered"] == len(sent) else None,
    }  # fmt: skip


def _fairness(order: list[Key], sent: dict[Key, Sent], runs: list[Run]) -> dict[str, Any] | None:
    """First-message queue waits, fair queue vs FIFO estimate (see the module docstring);
    None when too few jobs started for either."""
    started = {tag_of(run): run.received for run in runs}
    firsts = [(rank, key) for rank, key in enumerate(order) if key[1] == 0]
    if any(key not in started for _, key in firsts) or len(started) <= firsts[-1][0]:
        return None
    starts = sorted(started.values())
    fair = [started[key] - sent[key].at for _, key in firsts]
    fifo = [starts[rank] - sent[key].at for rank, key in firsts]

    def summary(waits: list[float]) -> dict[str, float]:
        return {"max_s": max(waits), "spread_s": max(waits) - min(waits),
                "p50_s": percentile(waits, 50)}  # fmt: skip

    return {"fair": summary(fair), "fifo_estimate": summary(fifo)}


def _slot_use(runs: list[Run], slots: int, start: float, end: float) -> float:
    """Busy slot-seconds over the slot-seconds from the burst to the end of the load."""
    busy = sum((run.finish or end) - run.received for run in runs)
    return busy / (slots * (end - start))


def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, target or ratio) for a Markdown table."""
    over = results["overhead"]
    total, ingress, egress = over["total_ms"], over["ingress_ms"], over["egress_ms"]
    out = [
        ("bot: start → polling", f"{results['startup_s']:.1f} s", ""),
        (f"bot: overhead per message p50 / p99 ({over['messages']} msgs, {TIMED_USERS} at once)",
         f"{total['p50']:.1f} / {total['p99']:.1f} ms",
         f"p99 < {TARGET_P99_MS:g} ms {_mark(total['p99'] < TARGET_P99_MS)}"),
        (f"bot floor: a bare PTB relay, same load, p50 / p99 ({results['floor']['messages']} msgs)",
         f"{results['floor']['p50']:.1f} / {results['floor']['p99']:.1f} ms",
         f"Parley ÷ floor: {total['p50'] / results['floor']['p50']:.2f} / "
         f"{total['p99'] / results['floor']['p99']:.2f}"),
        ("bot: … update → engine request p50 / p99",
         f"{ingress['p50']:.1f} / {ingress['p99']:.1f} ms",
         f"floor p50 {results['floor']['ingress_p50']:.1f} ms"),
        ("bot: … final token → final edit p50 / p99",
         f"{egress['p50']:.1f} / {egress['p99']:.1f} ms",
         f"floor p50 {results['floor']['egress_p50']:.1f} ms"),
        ("bot: … mean, each user's first message / the later ones",
         f"{over['first_mean_ms']:.1f} / {over['later_mean_ms']:.1f} ms",
         f"{over['first_mean_ms'] / over['later_mean_ms']:.2f} × "
         f"(floor {results['floor']['first_ratio']:.2f} ×)"),
    ]  # fmt: skip
    lengths = results["lengths"]
    cpu = " / ".join(f"{lengths[str(n)]['cpu_ms_per_message']:.0f}" for n in LENGTHS)
    out.append((f"bot: CPU per message, {' / '.join(map(str, LENGTHS))}-token answers",
                f"{cpu} ms", ""))  # fmt: skip
    short, long = lengths[str(LENGTHS[0])]["egress_ms"], lengths[str(LENGTHS[-1])]["egress_ms"]
    ratio = f"{long['p50'] / short['p50']:.2f} × at {LENGTHS[0]} tokens"
    out.append((f"bot: final token → final edit p50, {LENGTHS[-1]} tokens",
                f"{long['p50']:.1f} ms", ratio))  # fmt: skip
    slopes = results["cpu_us_per_token"]
    label = " / ".join(f"{a}→{b}" for a, b in itertools.pairwise(LENGTHS))
    growth = f"{slopes[-1] / slopes[0]:.2f} (≤ ~1: not growing)" if slopes[0] > 0 else ""
    out.append((f"bot: CPU per extra token ({label} tokens)",
                " / ".join(f"{s:.0f}" for s in slopes) + " µs", growth))  # fmt: skip
    out += _load_rows(results["load"])
    peak = results["memory_after_load_mb"]["VmHWM"]
    start = results["memory_after_start_mb"]["VmHWM"]
    target = f"≤ {TARGET_RSS_MB:g} MB {_mark(peak <= TARGET_RSS_MB)}; {peak / start:.2f} × at start"
    out.append((f"bot: peak RSS (VmHWM) after the load, {results['load']['users']}+ users",
                f"{peak:.0f} MB", target))  # fmt: skip
    out.append(("bot: bench wall time", f"{results['wall_s']:.0f} s", ""))
    return out


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"  # as bench/engine.py marks its targets


def _load_rows(load: dict[str, Any]) -> list[tuple[str, str, str]]:
    n = load["messages"]
    ok = load["answered"] == n and not load["duplicated"]
    wall = load["wall_s"]
    out = [
        (f"bot load: {n} msgs from {load['users']} users, answered in {LOAD_DEADLINE:g} s",
         f"{load['answered']} / {n}", f"all {_mark(ok)}"),
        ("bot load: lost / duplicated / wrong / repeated engine requests",
         f"{load['lost']} / {load['duplicated']} / {load['wrong']} / {load['engine_repeats']}",
         "0 / 0 / 0 / 0"),
        ("bot load: burst → last final answer",
         f"{wall:.1f} s" if wall else f"> {LOAD_DEADLINE:g} s",
         f"{n / wall:.1f} msgs/s" if wall else ""),
        ("bot load: engine slot use", f"{load['engine_slot_use'] * 100:.0f} %", ""),
        ("bot load: CPU / Bot API calls / status edits per message",
         f"{load['cpu_ms_per_message']:.0f} ms / {load['api_calls_per_message']:.1f} / "
         f"{load['status_edits_per_message']:.1f}", ""),
    ]  # fmt: skip
    if load["unanswered"]:
        states = ", ".join(f"{n} {state}" for state, n in sorted(load["unanswered"].items()))
        out.append(("bot load: unanswered at the deadline, by job state in the bot's DB",
                    f"{n - load['answered'] - load['wrong'] - load['lost']}", states))  # fmt: skip
    fair = load["fairness"]
    if fair is None:
        out.append(("bot load: queue fairness", "n/a: too few jobs started", ""))
        return out
    mine, fifo = fair["fair"], fair["fifo_estimate"]
    for label, field in (("max", "max_s"), ("max wait spread (max − min)", "spread_s")):
        out.append((f"bot load: queue wait of users' first message, {label}",
                    f"{mine[field]:.1f} s (FIFO ≈ {fifo[field]:.1f} s)",
                    f"{mine[field] / fifo[field]:.2f} × FIFO"))  # fmt: skip
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
