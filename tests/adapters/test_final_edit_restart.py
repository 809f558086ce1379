"""An answer is done for good only once Telegram confirmed its final text. Here the final
edit meets a flood-control wait of a minute, and the bot is stopped (SIGTERM) or killed
(SIGKILL) while it waits: the answer is stored, not shown, and the next start shows the
stored text in the same message, without writing it again. The real bot processes, the Bot
API emulator, the real engine process and SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.chat.workers import DELIVERY_GRACE
from tests.adapters.bot_process import folded, kill_bot, start_bot, stop_bot
from tests.adapters.telegram_harness import ALICE, is_final, plain
from tests.adapters.test_console import base_env
from tests.emulators.telegram_api import TelegramEmulator
from tests.engine_process import EngineProcess

pytestmark = pytest.mark.model


def _job(database: Path) -> tuple[str, int, int]:
    """(status, shown, attempts) of the one job."""
    with sqlite3.connect(database) as db:
        return db.execute("SELECT status, shown, attempts FROM jobs").fetchone()  # type: ignore[no-any-return]


def _answer(database: Path) -> str:
    with sqlite3.connect(database) as db:
        (content,) = db.execute("SELECT content FROM messages WHERE role = 'assistant'").fetchone()
    return str(content)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
async def test_a_final_edit_held_by_flood_control_is_shown_after_a_restart(
    engine: EngineProcess, tmp_path: Path, how: str
) -> None:
    database = tmp_path / "parley.db"
    async with TelegramEmulator() as emu:
        env = {
            **base_env(tmp_path), "TELEGRAM_TOKEN": emu.token,
            "TELEGRAM_API_BASE_URL": emu.base_url, "ENGINE_URLS": engine.url,
            "MAX_TOKENS": "12", "TEMPERATURE": "0",
        }  # fmt: skip
        bot = await start_bot(env, tmp_path, "Telegram")
        try:
            emu.fail_next("editMessageText", "429", retry_after=60)
            asked = await emu.user_says("Tell me about the sea.", chat_id=ALICE, user_id=ALICE)
            await emu.wait_for(
                lambda: any(c.fault == "429" for c in emu.calls("editMessageText")) or None, 60
            )
            await emu.wait_for(lambda: _job(database)[0] == "done" or None, 30)
            assert _job(database)[:2] == ("done", 0)  # stored, not yet shown
            (reply,) = emu.bot_messages(ALICE)
            assert not is_final(reply)  # the user still sees the half-written message
            if how == "SIGTERM":
                assert await stop_bot(bot) == 0  # within the grace for final texts
            else:
                await kill_bot(bot)
        finally:
            if bot.returncode is None:
                await kill_bot(bot)
        assert _job(database)[:2] == ("done", 0)
        bot = await start_bot(env, tmp_path, "Telegram")
        try:
            await emu.wait_for(lambda: _job(database)[1] == 1 or None, 30)
        finally:
            assert await stop_bot(bot) == 0
        replies = [m for m in emu.bot_messages(ALICE) if m.reply_to_message_id == asked]
        assert [m.message_id for m in replies] == [reply.message_id]  # the same message
        assert is_final(replies[0])
        assert folded(plain(replies[0].text)) == folded(_answer(database))
        assert _job(database) == ("done", 1, 1)  # shown from the store, not written again
        assert DELIVERY_GRACE < 60  # the stop did not wait out the minute
