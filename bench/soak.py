"""Soak: the real bot and engine under steady users for 10 minutes (``make soak``, not in tests).

``parley run`` (bench/bot_load.py's ``start_bot``) runs against the Telegram emulator hosted
here and spawns its own engine on Gemma 3 270M, a base model that writes every answer to
``--max-tokens`` (the instruct demo model would stop after a few dozen tokens and take far longer
to fill a context). The context is small (``--n-ctx`` 2048, ``--max-tokens`` 128), so
conversations pass its limit within minutes: where long chats got 20x
slower (issue 33). Each user sends a message, waits for the final answer, sends the next. Each
minute one row: answers, answer time p50/p95 (sent -> final text seen), bot and engine VmRSS and
open fds (/proc), conversations at the limit (a prompt within ``max_tokens`` of the budget
``n_ctx - max_tokens``, from the jobs' prompt_tokens), prompt tokens the engine took from its
cache (engine.log). Exit status 1 unless:

- **throughput**: answers in the last minute >= 0.8x the first minute's (short chats);
- **steady**: every conversation reaches the limit before the last minute;
- **flat**: from that minute (before it, KV pages are touched for the first time: RSS grows by
  design) to the last, RSS grows at most ``RSS_SLACK`` and fds at most ``FD_SLACK``, and the
  engine is never restarted;
- **nothing lost**: every message got exactly one reply (deleted strays aside), final; after a
  graceful stop the database holds each message once, with one job, done (and shown).

``python -m bench.soak [--minutes 10] [--users 6]`` writes bench/results/soak.json and leaves the
database, bot.log and engine.log in bench/results/soak/ for a post-mortem.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.bot_load import BotProcess, is_final, job_states, percentile, replies, start_bot
from tests.emulators.telegram_api import TelegramEmulator
from tests.emulators.telegram_models import BotMessage

RESULTS = Path(__file__).resolve().parent / "results"
ANSWER_TIMEOUT = 300.0  # seconds one answer may take before its user gives up (and it counts lost)
POLL = 0.05  # seconds between a user's checks for its final answer
THROUGHPUT_TARGET = 0.8
# Flat = growth from the steady minute to the last within these. 10% leaves room for allocator
# noise and KV pages touched late, and still catches leaks: ~500 answers in 7 steady minutes
# trip the bot's (~67 MiB) at 14 KB an answer, and the engine's (~700 MiB) at two leaked
# 2,048-token sequences (36 MiB each). 4 fds: pooled connections come and go; a leak is hundreds.
RSS_SLACK = 0.10
FD_SLACK = 4
FIRST_USER = 1001
ASKS = (  # each user's messages go round these: asks for long answers, to fill the context
    "Tell me a long story about a dragon who bakes bread.", "Explain in detail how rain forms.",
    "Describe your favourite city in a long letter.", "Tell me the history of the bicycle.",
)  # fmt: skip
ENGINE_LINE = re.compile(r"(\d+) prompt tokens \((\d+) cached\)")


@dataclass
class Turn:
    user: int
    index: int
    message_id: int
    sent: float
    answered: float | None = None


@dataclass
class Row:
    minute: int
    answers: int
    p50_s: float | None
    p95_s: float | None
    bot_rss_mib: float
    bot_fds: int
    engine_pid: int | None
    engine_rss_mib: float
    engine_fds: int
    full: int  # conversations that have reached the context limit so far
    cached_pct: float | None  # prompt tokens served from the engine's cache this minute


# -- /proc, the database and the engine's log ----------------------------------------------------


def usage(pid: int | None) -> tuple[float, int]:
    """VmRSS in MiB and open fds of a process; zeros for none (not found, or gone)."""
    with contextlib.suppress(OSError):
        if pid is not None:
            status = Path(f"/proc/{pid}/status").read_text()
            kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
            return int(kib) / 1024, len(os.listdir(f"/proc/{pid}/fd"))
    return 0.0, 0


def engine_pid(bot_pid: int) -> int | None:
    """The bot's ``python -m engine`` child (a new pid means the engine was restarted)."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError):
            if (
                entry.name.isdigit()
                and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == bot_pid
                and b"engine" in (entry / "cmdline").read_bytes()
            ):
                return int(entry.name)
    return None


@contextlib.contextmanager
def read_only(database: Path) -> Iterator[sqlite3.Connection]:
    """The bot's SQLite file, read beside it (WAL: readers do not block the bot)."""
    with contextlib.closing(
        sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    ) as db:
        yield db


def full_conversations(database: Path, at_limit: int) -> int:
    with read_only(database) as db:
        return int(db.execute(
            "SELECT COUNT(*) FROM (SELECT user_id FROM jobs GROUP BY user_id"
            " HAVING MAX(prompt_tokens) >= ?)", (at_limit,),
        ).fetchone()[0])  # fmt: skip


class EngineLog:
    """Prompt and cached tokens of the completions logged since the last ``read``."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> tuple[int, int]:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as log:
            if log.seek(0, os.SEEK_END) < self.offset:  # rotated
                self.offset = 0
            log.seek(self.offset)
            data = log.read()
            data = data[: data.rfind(b"\n") + 1]  # whole lines only: the last may be half written
            self.offset += len(data)
            found = ENGINE_LINE.findall(data.decode(errors="replace"))
            return sum(int(a) for a, _ in found), sum(int(b) for _, b in found)
        return 0, 0


# -- users ---------------------------------------------------------------------------------------


def shown(message: BotMessage) -> bool:
    """A final answer the user sees (a stray message the bot deleted is not one)."""
    return is_final(message) and not message.deleted


def replies_to(emu: TelegramEmulator, turn: Turn) -> list[BotMessage]:
    """The bot's messages answering ``turn``: in its chat, numbered right after it."""
    found, message_id = [], turn.message_id + 1
    while (message := emu.messages.get((turn.user, message_id))) is not None:
        if message.reply_to_message_id == turn.message_id:
            found.append(message)
        message_id += 1
    return found


async def converse(emu: TelegramEmulator, user: int, end: float, turns: list[Turn]) -> None:
    """One user's messages, each sent once the last is answered, until ``end``; a message not
    answered within ``ANSWER_TIMEOUT`` ends the conversation (and is reported lost)."""
    for index in range(int(end - time.perf_counter()) + 1):  # an answer takes >= 1 s (pacing)
        if time.perf_counter() >= end:
            return
        ask = f"u{user} m{index}: {ASKS[(user + index) % len(ASKS)]}"
        message_id = await emu.user_says(ask, chat_id=user, user_id=user, first_name=f"U{user}")
        turn = Turn(user, index, message_id, time.perf_counter())
        turns.append(turn)
        deadline = turn.sent + ANSWER_TIMEOUT
        while not any(map(shown, replies_to(emu, turn))):
            if time.perf_counter() > deadline:
                return
            await asyncio.sleep(POLL)
        turn.answered = time.perf_counter()


# -- the minutes ---------------------------------------------------------------------------------


def show(row: Row) -> str:
    def num(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    return (
        f"| {row.minute} | {row.answers} | {num(row.p50_s)} | {num(row.p95_s)} "
        f"| {row.bot_rss_mib:.0f} | {row.bot_fds} | {row.engine_rss_mib:.0f} | {row.engine_fds} "
        f"| {row.full} | {num(row.cached_pct, 0)} |"
    )


HEADER = (
    "| min | answers | p50 s | p95 s | bot MiB | bot fds | engine MiB | engine fds | at limit "
    "| cached % |\n|---|---|---|---|---|---|---|---|---|---|"
)


def answer_times(turns: list[Turn], since: float, until: float) -> list[float]:
    """Send-to-final seconds of the answers seen in [since, until)."""
    return [t.answered - t.sent for t in turns if t.answered and since <= t.answered < until]


async def minutes(
    bot: BotProcess, workdir: Path, turns: list[Turn], start: float, count: int, at_limit: int
) -> list[Row]:  # fmt: skip
    """One row at the end of each minute, printed as it comes."""
    log, rows = EngineLog(workdir / "engine.log"), []
    print(HEADER, flush=True)
    for minute in range(1, count + 1):
        await asyncio.sleep(max(0.0, start + 60 * minute - time.perf_counter()))
        times = answer_times(turns, start + 60 * (minute - 1), start + 60 * minute)
        engine = engine_pid(bot.process.pid)
        prompt, cached = log.read()
        rows.append(Row(
            minute, len(times), percentile(times, 50) if times else None,
            percentile(times, 95) if times else None, *usage(bot.process.pid), engine,
            *usage(engine), full_conversations(workdir / "parley.db", at_limit),
            100 * cached / prompt if prompt else None,
        ))  # fmt: skip
        print(show(rows[-1]), flush=True)
    return rows


# -- verdicts ------------------------------------------------------------------------------------


def delivery(emu: TelegramEmulator, turns: list[Turn], database: Path) -> dict[str, Any]:
    """What reached the users and what the database holds, after the bot stopped."""
    found = {key: [m for m in mine if not m.deleted] for key, mine in replies(emu).items()}
    one_final = sum(
        len(mine := found.get((t.user, t.message_id), [])) == 1 and shown(mine[0]) for t in turns
    )
    states = job_states(database)
    with read_only(database) as db:
        jobs = dict(db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
        stored = db.execute("SELECT COUNT(*) FROM messages WHERE role = 'user'").fetchone()[0]
        has_shown = {row[1] for row in db.execute("PRAGMA table_info(jobs)")} >= {"shown"}
        unshown = (  # the column comes with migration 0004
            db.execute("SELECT COUNT(*) FROM jobs WHERE shown = 0").fetchone()[0]
            if has_shown
            else 0
        )
    done = sum(states.get((t.user, t.index)) == "done" for t in turns)
    return {
        "sent": len(turns), "one_final_reply": one_final, "stored_user_messages": stored,
        "done_jobs_for_sent": done, "jobs_by_status": jobs, "unshown_jobs": unshown,
    }  # fmt: skip


FLAT = (  # (label, Row field)
    ("bot RSS MiB", "bot_rss_mib"), ("engine RSS MiB", "engine_rss_mib"),
    ("bot fds", "bot_fds"), ("engine fds", "engine_fds"),
)  # fmt: skip


def verdicts(rows: list[Row], users: int, lost: dict[str, Any]) -> list[tuple[str, bool]]:
    """(what was measured against which target, met)."""
    first, last = rows[0], rows[-1]
    # The steady state: from the first minute with every conversation at the limit, if a later
    # minute follows to compare with; without one, growth over the whole run (the run fails).
    steady = next((r for r in rows[:-1] if r.full >= users), None)
    base = steady or first
    ratio = last.answers / first.answers if first.answers else 0.0
    checks = [
        (f"answers last/first minute: {last.answers}/{first.answers} = {ratio:.2f} "
         f"(target >= {THROUGHPUT_TARGET})", ratio >= THROUGHPUT_TARGET),
        (f"all {users} conversations at the context limit before the last minute: "
         f"{f'by minute {steady.minute}' if steady else 'no'}", steady is not None),
    ]  # fmt: skip
    for label, field in FLAT:
        was, before, after = (getattr(row, field) for row in (first, base, last))
        slack = before * RSS_SLACK if "rss" in field else FD_SLACK
        checks.append((
            f"{label}: minute 1 {was:.0f}, minute {base.minute} {before:.0f}, last {after:.0f} "
            f"(flat from minute {base.minute}: at most +{slack:.0f})", after - before <= slack,
        ))  # fmt: skip
    pids = sorted({row.engine_pid or 0 for row in rows})
    checks.append((f"engine pid {pids} (never restarted)", len(pids) == 1 and pids[0] != 0))
    sent, jobs = lost["sent"], lost["jobs_by_status"]
    checks.append((
        f"nothing lost: {sent} sent, {lost['one_final_reply']} with exactly one reply (final), "
        f"{lost['stored_user_messages']} stored, {lost['done_jobs_for_sent']} with a done job; "
        f"jobs {jobs}, {lost['unshown_jobs']} not shown",
        sent == lost["one_final_reply"] == lost["stored_user_messages"]
        == lost["done_jobs_for_sent"] == sum(jobs.values()) == jobs.get("done", 0)
        and lost["unshown_jobs"] == 0,
    ))  # fmt: skip
    return checks


# -- main ----------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM ends the soak as Ctrl-C does: through the finally below, so the bot (and the
    # engine it would restart) stops with it instead of running on
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    workdir = RESULTS / "soak"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    users = range(FIRST_USER, FIRST_USER + args.users)
    at_limit = args.n_ctx - 2 * args.max_tokens
    turns: list[Turn] = []
    async with TelegramEmulator() as emu:
        bot = await start_bot(
            emu, "", workdir, model="gemma3-270m", engine_n_ctx=args.n_ctx,
            max_tokens=args.max_tokens,
            rate_limit_per_minute=0,  # steady users, not a flood: the limiter is not measured
            **({"engine_threads": args.engine_threads} if args.engine_threads else {}),
        )  # fmt: skip
        print(
            f"soak: {args.users} users for {args.minutes} min; bot pid {bot.process.pid}, engine "
            f"pid {engine_pid(bot.process.pid)}; n_ctx {args.n_ctx}, max_tokens "
            f"{args.max_tokens}: at the limit = a prompt of >= {at_limit} tokens",
            flush=True,
        )
        start = time.perf_counter()
        end = start + 60 * args.minutes
        talk = asyncio.gather(*[converse(emu, u, end, turns) for u in users])
        try:
            rows = await minutes(bot, workdir, turns, start, args.minutes, at_limit)
            await talk  # the answers still in flight at the end, within ANSWER_TIMEOUT
        finally:
            talk.cancel()  # nothing left to cancel unless the sampling failed
            await bot.stop()
        lost = delivery(emu, turns, workdir / "parley.db")
    checks = verdicts(rows, args.users, lost)
    return {
        "config": vars(args) | {"at_limit_prompt_tokens": at_limit},
        "rows": [asdict(r) for r in rows], "delivery": lost, "bot_exit": bot.process.returncode,
        "checks": [{"check": text, "ok": ok} for text, ok in checks],
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument("--users", type=int, default=6)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--engine-threads", type=int, help="ENGINE_THREADS (default: the engine's)")
    args = p.parse_args()
    results = asyncio.run(soak(args))
    print(f"\nbot exit code after SIGTERM: {results['bot_exit']}")
    for check in results["checks"]:
        print(f"{'✅' if check['ok'] else '❌'} {check['check']}")
    (RESULTS / "soak.json").write_text(json.dumps(results, indent=2))
    print(f"(bench/results/soak.json; database and logs in {RESULTS / 'soak'})")
    sys.exit(0 if all(c["ok"] for c in results["checks"]) else 1)


if __name__ == "__main__":
    main()
