"""`parley run` on Discord killed with SIGKILL while answering DMs: the next run finishes each
answer in the reply message the first run posted, once. The real bot processes, the Discord
emulator (REST and gateway), the real engine process and SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.adapters.bot_process import folded, kill_bot, start_bot, stop_bot
from tests.adapters.test_console import base_env
from tests.emulators.discord_api import DiscordEmulator, MessageRecord
from tests.engine_process import EngineProcess

pytestmark = pytest.mark.model

USERS = [2001 + i for i in range(6)]  # more than the engine's 4 slots: some wait


def _env(emu: DiscordEmulator, engine: EngineProcess, tmp_path: Path) -> dict[str, str]:
    return {
        **base_env(tmp_path), "DISCORD_TOKEN": emu.token,
        "DISCORD_API_BASE_URL": f"{emu.base_url}/api/v10",
        "DISCORD_GATEWAY_URL": emu.gateway_url, "ENGINE_URLS": engine.url,
        "MAX_TOKENS": "60", "TEMPERATURE": "0",
    }  # fmt: skip


def _replies(emu: DiscordEmulator, asked: int) -> list[MessageRecord]:
    return [m for m in emu.bot_messages() if m.reference_id == asked]


def _answered(emu: DiscordEmulator, asked: int) -> bool:
    replies = _replies(emu, asked)
    return bool(replies) and all(map(_final, replies))


def _final(message: MessageRecord) -> bool:
    text = message.content
    return bool(text) and not message.components and "▌" not in text and text != "…"


async def test_a_killed_bot_finishes_every_dm_answer_in_the_same_message(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with DiscordEmulator() as emu:
        env = _env(emu, engine, tmp_path)
        bot = await start_bot(env, tmp_path, "Discord")
        try:
            asked = {user: await emu.send_dm(user, "Tell me about the sea.") for user in USERS}
            await emu.wait_for(
                lambda: any("▌" in m.content for m in emu.bot_messages()) or None, 60
            )
            await emu.wait_for(lambda: len(emu.bot_messages()) >= len(USERS) or None, 30)
        finally:
            await kill_bot(bot)
        with sqlite3.connect(tmp_path / "parley.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            left = {row[0] for row in db.execute("SELECT status FROM jobs")}
        assert "running" in left
        bot = await start_bot(env, tmp_path, "Discord")
        try:
            for message_id in asked.values():
                await emu.wait_for(lambda m=message_id: _answered(emu, m) or None, 120)  # type: ignore[misc]
        finally:
            assert await stop_bot(bot) == 0
        with sqlite3.connect(tmp_path / "parley.db") as db:
            assert {row[0] for row in db.execute("SELECT status FROM jobs")} == {"done"}
            rows = db.execute("SELECT content FROM messages WHERE role = 'assistant'")
            stored = [folded(row[0]) for row in rows]
        for message_id in asked.values():
            replies = _replies(emu, message_id)
            assert len(replies) == 1  # the first run's reply, finished; nothing twice
            assert folded(replies[0].content) in stored


async def test_a_chat_command_answer_cut_by_a_kill_is_finished_in_its_own_message(
    engine: EngineProcess, tmp_path: Path
) -> None:
    """The /chat interaction token dies with the bot, but its response is the bot's own
    message: the next run edits it as a channel message, Stop button gone. If the user deleted
    it meanwhile, the answer comes as a new message in that channel, mentioning them."""
    async with DiscordEmulator() as emu:
        env = _env(emu, engine, tmp_path)
        long_answers = {**env, "MAX_TOKENS": "400"}  # both still being written at the kill
        bot = await start_bot(long_answers, tmp_path, "Discord")
        try:
            runs = [
                await emu.run_slash_command("chat", {"prompt": "The sea"}, user_id=user)
                for user in USERS[:2]
            ]
            await emu.wait_for(lambda: all(
                r.original_id and "▌" in emu.messages[r.original_id].content for r in runs
            ) or None, 60)  # fmt: skip
        finally:
            await kill_bot(bot)
        kept, deleted = (emu.messages[r.original_id or 0] for r in runs)
        assert not _final(kept) and not _final(deleted)
        deleted.deleted = True  # the second user deleted the half-written answer
        bot = await start_bot(env, tmp_path, "Discord")

        def fresh(user: int) -> MessageRecord | None:
            for m in emu.bot_messages():
                if m.source == "channel" and m.history and m.history[0].startswith(f"<@{user}>"):
                    return m if _final(m) else None
            return None

        try:
            await emu.wait_for(lambda: _final(kept) or None, 120)
            again = await emu.wait_for(lambda: fresh(USERS[1]), 120)
        finally:
            assert await stop_bot(bot) == 0
        assert fresh(USERS[0]) is None  # finished in place: nothing posted twice
        assert again is not None and len(again.content) > 20
        with sqlite3.connect(tmp_path / "parley.db") as db:
            assert {row[0] for row in db.execute("SELECT status FROM jobs")} == {"done"}
            rows = db.execute("SELECT content FROM messages WHERE role = 'assistant'")
            stored = [folded(row[0]) for row in rows]
        assert folded(kept.content) in stored
        assert folded(again.content.removeprefix(f"<@{USERS[1]}> ")) in stored
