"""The moving parts of bench/bot.py: the bot as a subprocess, scripted users, and the records.

The bot runs as ``parley run`` in its own process, so its CPU time and memory are its own (read
from /proc). This process hosts the Telegram emulator and the scripted engine on one event loop,
so every timestamp used (``ApiCall.at``, ``handed_out``, ``Run.received``/``finish``) is this
process's ``time.perf_counter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import sqlite3
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters.telegram_surface import EDIT_INTERVAL  # noqa: E402
from bot.settings import Settings  # noqa: E402
from tests.emulators.scripted_engine import Run  # noqa: E402
from tests.emulators.telegram_api import TelegramEmulator  # noqa: E402
from tests.emulators.telegram_models import ApiCall, BotMessage  # noqa: E402

CURSOR = "▌"
PACED = frozenset({"sendMessage", "editMessageText", "editMessageReplyMarkup"})  # per-chat pacer
TAG = re.compile(r"u(\d+) m(\d+):")
Key = tuple[int, int]  # (user, index of the user's message); a user's private chat id is the user


def words(count: int) -> str:
    """An answer of ``count`` scripted tokens (words); plain, so its HTML is the same text."""
    return " ".join(f"word{i}" for i in range(count))


def ask(user: int, index: int) -> str:
    return f"u{user} m{index}: please answer"


def tag_of(run: Run) -> Key:
    """Which user message an engine request answers (the last turn is the current message)."""
    match = TAG.match(run.body["messages"][-1]["content"])
    if match is None:
        raise ValueError(f"untagged request: {run.body['messages'][-1]['content']!r}")
    return int(match[1]), int(match[2])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100): an observed value, never interpolated."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(len(ordered) * q / 100) - 1))]


def first_means(keys: Iterable[Key], totals: list[float]) -> tuple[float, float]:
    """Mean of the users' first messages (each arriving at a bot idle for a while) and of the
    later ones (each right after the user's last answer); ``keys`` in the order of ``totals``."""
    first: list[float] = []
    later: list[float] = []
    for (_, index), total in zip(keys, totals, strict=True):
        (first if index == 0 else later).append(total)
    return statistics.fmean(first), statistics.fmean(later) if later else math.nan


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """An aiohttp app on 127.0.0.1 in this event loop; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


# -- the bot process ----------------------------------------------------------------------------


@dataclass
class BotProcess:
    process: asyncio.subprocess.Process
    log: Path

    def cpu_s(self) -> float:
        """User + system CPU seconds of the bot so far (all its threads)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (peak) in MB of 10^6 bytes."""
        found = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(rest.split()[0]) * 1024 / 1e6
        return found

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_bot(
    emu: TelegramEmulator, engine_url: str, workdir: Path, command: list[str] | None = None,
    **settings: object,
) -> BotProcess:  # fmt: skip
    """``parley run`` (or ``command``, e.g. under a profiler) against the emulator and the
    scripted engine; returns once it polls."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update({
        "TELEGRAM_TOKEN": emu.token, "TELEGRAM_API_BASE_URL": emu.base_url,
        "ENGINE_URLS": engine_url, "DATABASE_PATH": str(workdir / "parley.db"),
        "ADMIN_SOCKET": str(workdir / "admin.sock"), "MODELS_DIR": str(workdir / "models"),
        "XDG_DATA_HOME": str(workdir), "PYTHONPATH": str(ROOT),
        **{key.upper(): str(value) for key, value in settings.items()},
    })  # fmt: skip
    if command is None:
        parley = Path(sys.executable).with_name("parley")
        command = [str(parley)] if parley.exists() else [sys.executable, "-m", "parley"]
        command.append("run")
    log = workdir / "bot.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=workdir, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    bot = BotProcess(process, log)
    deadline = time.perf_counter() + 60
    while not any(call.method == "getUpdates" for call in emu.requests):
        if process.returncode is not None or time.perf_counter() > deadline:
            await bot.stop()
            raise RuntimeError(f"the bot did not start polling:\n{bot.log_tail()}")
        await asyncio.sleep(0.01)
    return bot


# -- reading the emulator's records -------------------------------------------------------------


def is_final(message: BotMessage) -> bool:
    text = message.text
    return (
        message.reply_markup is None
        and CURSOR not in text
        and text != "…"
        and (not text.startswith("⏳"))
    )


def replies(emu: TelegramEmulator) -> dict[tuple[int, int], list[BotMessage]]:
    """The bot's messages by the (chat, user message) they reply to."""
    found: dict[tuple[int, int], list[BotMessage]] = defaultdict(list)
    for message in emu.messages.values():
        if message.reply_to_message_id is not None:
            found[(message.chat_id, message.reply_to_message_id)].append(message)
    return found


class Calls:
    """The emulator's requests by chat and message, indexed as they come (append-only)."""

    def __init__(self, emu: TelegramEmulator) -> None:
        self.emu = emu
        self._seen = 0
        self.last_paced: dict[int, ApiCall] = {}  # per chat
        self.last_edit: dict[tuple[int, int], ApiCall] = {}  # per (chat, bot message)

    def update(self) -> None:
        for call in self.emu.requests[self._seen :]:
            if call.method in PACED and "chat_id" in call.params:
                chat = int(call.params["chat_id"])
                self.last_paced[chat] = call
                if call.method == "editMessageText":
                    self.last_edit[(chat, int(call.params["message_id"]))] = call
        self._seen = len(self.emu.requests)


PACED_AFTER = EDIT_INTERVAL + 0.02  # a chat's pacing interval and a margin: the next edit may go
HOLD_POLL = 0.005  # seconds between a hold's checks


def hold_until_paced(calls: Calls, answer: str) -> Callable[[Run], Awaitable[None]]:
    """A ``before_finish`` hook: send the final event only once the whole answer is shown and a
    pacing interval has passed since the chat's last paced call, so the final edit is not held
    back by pacing and (final edit - final event) is the bot's own time."""
    shown = answer.split()

    async def hold(run: Run) -> None:
        chat, _ = tag_of(run)
        deadline = time.perf_counter() + 10 * EDIT_INTERVAL
        while time.perf_counter() < deadline:
            calls.update()
            last = calls.last_paced.get(chat)
            text = str(last.params.get("text", "")) if last is not None else ""
            if (
                last is not None
                and text.endswith(CURSOR)
                and text.removesuffix(CURSOR).split() == shown
                and time.perf_counter() - last.at > PACED_AFTER
            ):
                return
            await asyncio.sleep(HOLD_POLL)

    return hold


def hold_idle() -> Callable[[Run], Awaitable[None]]:
    """A ``before_finish`` hook for the floor's relay, which shows nothing until the end: hold
    the final event as long as ``hold_until_paced`` holds Parley's (a pacing interval and
    its margin), polling as it does, so the relay too meets it after a second of idling."""

    async def hold(run: Run) -> None:
        deadline = time.perf_counter() + PACED_AFTER
        while time.perf_counter() < deadline:
            await asyncio.sleep(HOLD_POLL)

    return hold


# -- users ---------------------------------------------------------------------------------------


@dataclass
class Sent:
    message_id: int
    at: float


async def say(emu: TelegramEmulator, user: int, index: int) -> Sent:
    message_id = await emu.user_says(
        ask(user, index), chat_id=user, user_id=user, first_name=f"User {user}"
    )
    return Sent(message_id, time.perf_counter())


async def converse(
    emu: TelegramEmulator, user: int, count: int, delay: float, sent: dict[Key, Sent]
) -> None:
    """One user's messages, each sent once the answer to the previous one is final."""
    await asyncio.sleep(delay)
    for index in range(count):
        sent[(user, index)] = message = await say(emu, user, index)

        def answered(message_id: int = message.message_id) -> bool:
            return any(
                is_final(m)
                for m in emu.messages.values()
                if m.chat_id == user and m.reply_to_message_id == message_id
            )

        await emu.wait_for(answered, timeout=30)


async def conversations(
    emu: TelegramEmulator, users: Iterable[int], count: int, cycle: float
) -> dict[Key, Sent]:
    """Users talking at once, their starts spread over ``cycle`` seconds."""
    chosen = list(users)
    sent: dict[Key, Sent] = {}
    await asyncio.gather(*[
        converse(emu, user, count, cycle * i / len(chosen), sent) for i, user in enumerate(chosen)
    ])  # fmt: skip
    return sent


def user_rounds(first_user: int, rounds: int, users: int = 8) -> list[range]:
    """``rounds`` groups of ``users`` fresh user ids, from ``first_user`` on."""
    return [range(first_user + r * users, first_user + (r + 1) * users) for r in range(rounds)]


async def conversations_in_rounds(
    emu: TelegramEmulator, rounds: Iterable[Iterable[int]], count: int
) -> dict[Key, Sent]:
    """``conversations`` of each round's users in turn, ``count`` messages each, starts spread
    over 2.5 s (the overhead phase and the floor: the same rounds, so the same mix)."""
    sent: dict[Key, Sent] = {}
    for users in rounds:
        sent.update(await conversations(emu, users, count, 2.5))
    return sent


async def wait_answered(emu: TelegramEmulator, sent: dict[Key, Sent], deadline: float) -> None:
    """Until every sent message has a final reply, or ``deadline`` (``perf_counter`` time)."""
    wanted = {(user, s.message_id) for (user, _), s in sent.items()}
    while time.perf_counter() < deadline:
        found = replies(emu)
        if all(any(map(is_final, found.get(key, []))) for key in wanted):
            return
        await asyncio.sleep(0.2)


def job_states(database: Path) -> dict[Key, str]:
    """The bot's job status for each tagged user message, from its SQLite file (WAL mode:
    reading does not block the bot)."""
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as db:
        rows = db.execute(
            "SELECT m.content, j.status FROM jobs j JOIN messages m ON m.id = j.message_id"
        ).fetchall()
    found = {}
    for content, status in rows:
        if match := TAG.match(content):
            found[(int(match[1]), int(match[2]))] = str(status)
    return found
