"""`parley run` on Telegram killed with SIGKILL mid-reply: the database is intact, and the next
run finishes every unfinished answer in the message the first run posted, once; answers too
old to write are ended there with a note. The real bot processes, the Bot API emulator, the
real engine process and SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from bot.chat.resume import TOO_OLD
from bot.chat.workers import PAUSED
from parley.app import SHUTDOWN_GRACE
from tests.adapters.bot_process import folded, kill_bot, start_bot, stop_bot
from tests.adapters.telegram_harness import ALICE, is_final, plain
from tests.adapters.test_console import base_env
from tests.emulators.telegram_api import TelegramEmulator
from tests.emulators.telegram_models import BotMessage
from tests.engine_process import EngineProcess

pytestmark = pytest.mark.model

USERS = [ALICE + i for i in range(6)]  # more than the engine's 4 slots: some wait


def _env(
    emu: TelegramEmulator, engine: EngineProcess, tmp_path: Path, **more: str
) -> dict[str, str]:
    return {
        **base_env(tmp_path), "TELEGRAM_TOKEN": emu.token,
        "TELEGRAM_API_BASE_URL": emu.base_url, "ENGINE_URLS": engine.url, **more,
    }  # fmt: skip


def _replies(emu: TelegramEmulator, user: int, asked: int) -> list[BotMessage]:
    return [r for r in emu.bot_messages(user) if r.reply_to_message_id == asked]


async def _wait_all_final(emu: TelegramEmulator, asked: dict[int, int], timeout: float) -> None:
    """Until every user's reply is final, without the restart note."""
    for user, message_id in asked.items():

        def done(u: int = user, m: int = message_id) -> bool:
            shown = [r for r in _replies(emu, u, m) if not r.deleted]
            return bool(shown) and all(is_final(r) and PAUSED not in plain(r.text) for r in shown)

        await emu.wait_for(lambda: done() or None, timeout)


async def _killed_mid_reply(
    emu: TelegramEmulator, env: dict[str, str], cwd: Path
) -> dict[int, int]:
    """Start the bot, have every user ask, SIGKILL it while answers stream; the asked ids."""
    bot = await start_bot(env, cwd, "Telegram")
    try:
        asked = {
            user: await emu.user_says("Tell me about the sea.", chat_id=user, user_id=user)
            for user in USERS
        }
        await emu.wait_for(lambda: any("▌" in m.text for m in emu.bot_messages()) or None, 60)
        await emu.wait_for(lambda: len(emu.bot_messages()) == len(USERS) or None, 30)
    finally:
        await kill_bot(bot)
    return asked


def _jobs(database: Path) -> list[str]:
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [row[0] for row in db.execute("SELECT status FROM jobs ORDER BY id")]


async def test_a_killed_bot_finishes_every_answer_in_the_same_message(
    engine: EngineProcess, tmp_path: Path
) -> None:
    """...or in a new reply, for the user who deleted the half-written one meanwhile."""
    async with TelegramEmulator() as emu:
        env = _env(emu, engine, tmp_path, MAX_TOKENS="60", TEMPERATURE="0")
        asked = await _killed_mid_reply(emu, env, tmp_path)
        database = tmp_path / "parley.db"
        left = _jobs(database)
        assert "running" in left and set(left) <= {"queued", "running", "done"}
        unfinished = [u for u, m in asked.items() if not all(map(is_final, _replies(emu, u, m)))]
        deleter = unfinished[0]
        (placeholder,) = _replies(emu, deleter, asked[deleter])
        emu.user_deletes(deleter, placeholder.message_id)
        bot = await start_bot(env, tmp_path, "Telegram")
        try:
            await _wait_all_final(emu, asked, 120)
        finally:
            assert await stop_bot(bot) == 0
        assert _jobs(database) == ["done"] * len(USERS)
        with sqlite3.connect(database) as db:
            rows = db.execute("SELECT content FROM messages WHERE role = 'assistant'")
            stored = [folded(row[0]) for row in rows]
        for user, message_id in asked.items():
            replies = [r for r in _replies(emu, user, message_id) if not r.deleted]
            assert len(replies) == 1  # the first run's placeholder, finished; nothing twice
            if user == deleter:
                assert replies[0].message_id != placeholder.message_id  # a new reply instead
            shown = folded(plain(replies[0].text))
            assert len(shown) > 20 and shown in stored


async def test_answers_too_old_to_write_end_with_a_note_on_the_same_message(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with TelegramEmulator() as emu:
        env = _env(emu, engine, tmp_path, MAX_TOKENS="60")
        asked = await _killed_mid_reply(emu, env, tmp_path)
        bot = await start_bot({**env, "RESUME_MAX_AGE": "0"}, tmp_path, "Telegram")
        try:
            await emu.wait_for(lambda: all(is_final(m) for m in emu.bot_messages()) or None, 60)
            await asyncio.sleep(1.5)  # nothing else arrives
        finally:
            assert await stop_bot(bot) == 0
        assert set(_jobs(tmp_path / "parley.db")) <= {"done", "failed"}
        for user, message_id in asked.items():
            replies = _replies(emu, user, message_id)
            assert len(replies) == 1
            text = plain(replies[0].text)
            assert TOO_OLD in text or "▌" not in text  # told, or it had finished before the kill
        told = [m for m in emu.bot_messages() if TOO_OLD in plain(m.text)]
        assert told  # the ones the kill interrupted


async def test_a_stopped_bot_notes_the_interruption_and_the_next_start_finishes_it(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with TelegramEmulator() as emu:
        env = _env(emu, engine, tmp_path, MAX_TOKENS="200", TEMPERATURE="0")
        bot = await start_bot(env, tmp_path, "Telegram")
        asked = {
            user: await emu.user_says("Tell me about the sea.", chat_id=user, user_id=user)
            for user in USERS
        }
        await emu.wait_for(lambda: any("▌" in m.text for m in emu.bot_messages()) or None, 60)
        stopping = time.monotonic()
        assert await stop_bot(bot) == 0
        assert time.monotonic() - stopping < SHUTDOWN_GRACE + 10  # bounded
        noted = [m for m in emu.bot_messages() if PAUSED in plain(m.text)]
        assert noted and all("▌" not in plain(m.text) for m in emu.bot_messages())
        left = _jobs(tmp_path / "parley.db")
        assert "running" not in left and "queued" in left
        bot = await start_bot(env, tmp_path, "Telegram")
        try:
            await _wait_all_final(emu, asked, 180)
        finally:
            assert await stop_bot(bot) == 0
        assert _jobs(tmp_path / "parley.db") == ["done"] * len(USERS)
        for user, message_id in asked.items():
            assert len(_replies(emu, user, message_id)) == 1


async def test_ctrl_c_in_a_terminal_lets_the_local_engine_finish_the_answers(
    tmp_path: Path,
) -> None:
    """SIGINT to the whole process group, as Ctrl-C sends it: only the bot hears it, so the
    engine it started is neither stopped nor restarted mid-answer."""
    async with TelegramEmulator() as emu:
        env = {
            **base_env(tmp_path), "TELEGRAM_TOKEN": emu.token,
            "TELEGRAM_API_BASE_URL": emu.base_url, "MODEL": "demo", "ENGINE_N_CTX": "512",
            "ENGINE_PARALLEL": "2", "MAX_TOKENS": "24", "TEMPERATURE": "0", "LOG_LEVEL": "info",
        }  # fmt: skip
        env.pop("ENGINE_URLS", None)
        bot_log = tmp_path / "bot.log"
        bot = await start_bot(env, tmp_path, "Telegram", own_group=True, log=bot_log)
        try:
            for user in USERS[:2]:
                await emu.user_says("Tell me about the sea.", chat_id=user, user_id=user)
            await emu.wait_for(lambda: any("▌" in m.text for m in emu.bot_messages()) or None, 60)
            os.killpg(bot.pid, signal.SIGINT)
            assert await asyncio.wait_for(bot.wait(), 60) == 0
        finally:
            if bot.returncode is None:
                os.killpg(bot.pid, signal.SIGKILL)
        assert _jobs(tmp_path / "parley.db") == ["done", "done"]  # written within the grace
        engine_log = (tmp_path / "engine.log").read_text()
        assert engine_log.count("ready: http://") == 1, engine_log
        assert "restarting" not in bot_log.read_text()  # the engine never stopped early
