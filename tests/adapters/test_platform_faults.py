"""Platforms misbehaving while Parley answers: flood control (429), 5xx and dropped
connections on sends and edits, a failing long poll (Telegram), and 5xx/drops on Discord's
webhook edits. Every reply's final text lands, equals the answer stored for it, and nothing
is sent twice. The real adapters and libraries against the emulators; the real engine."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.adapters.discord_harness import ALICE as DISCORD_ALICE
from tests.adapters.discord_harness import discord_bot
from tests.adapters.telegram_harness import ALICE, BOB, plain, telegram_bot
from tests.engine_process import EngineProcess

pytestmark = pytest.mark.model

TELEGRAM_STORM = [  # (method, fault, times): about two faults of each kind per answer
    ("sendMessage", "502", 1), ("sendMessage", "drop", 1), ("sendMessage", "429", 1),
    ("editMessageText", "502", 2), ("editMessageText", "drop", 2),
    ("editMessageText", "429", 2), ("getUpdates", "502", 2), ("getUpdates", "drop", 1),
]  # fmt: skip


def _stored_answer(database: Path, user_id: int, source_ref: int | None) -> str:
    """The answer stored for one user message: the reply its own job wrote. ``source_ref`` is
    the message's id on its platform (None for a Discord /chat). Keyed by user alone, a user's
    first answer was overwritten by their second, and Alice's shown text could pass by Bob's."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT r.content FROM jobs j JOIN users u ON u.id = j.user_id"
            " JOIN messages r ON r.id = j.reply_message_id"
            " WHERE u.platform_user_id = ? AND j.source_ref IS ?",
            (str(user_id), None if source_ref is None else str(source_ref)),
        ).fetchall()
    assert len(rows) == 1, f"{len(rows)} answers stored for message {source_ref} of {user_id}"
    return str(rows[0][0]).strip()


async def test_a_telegram_fault_storm_loses_and_repeats_nothing(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with telegram_bot(engine, tmp_path / "bot.db", max_tokens=60, seed=3) as bot:
        for method, kind, times in TELEGRAM_STORM:
            bot.emu.fail_next(method, kind, times=times, retry_after=1)  # type: ignore[arg-type]
        asked = {
            user: await bot.emu.user_says("Describe the sea", chat_id=user, user_id=user)
            for user in (ALICE, BOB)
        }
        shown = {user: plain((await bot.answer_to(m, user, 90)).text) for user, m in asked.items()}
        late = await bot.emu.user_says("And the sky?", chat_id=ALICE, user_id=ALICE)
        await bot.answer_to(late, ALICE, 90)  # the long poll still works after its failures
        for user, message_id in asked.items():
            assert len(bot.replies_to(message_id, user)) == 1  # never sent twice
            stored = _stored_answer(bot.database, user, message_id)
            assert len(shown[user]) > 40 and shown[user].strip() == stored
        injected = sum(times for _, _, times in TELEGRAM_STORM)
        assert len([c for c in bot.emu.requests if c.fault]) == injected


async def test_a_placeholder_telegram_posts_but_answers_late_is_used_not_sent_again(
    engine: EngineProcess, tmp_path: Path
) -> None:
    """sendMessage carried out, its answer 7 s late (past the 5 s other calls wait): the bot
    waits for it instead of sending again, so no stray "…" is left behind."""
    async with telegram_bot(engine, tmp_path / "bot.db", max_tokens=24) as bot:
        bot.emu.fail_next("sendMessage", "late", retry_after=7)
        asked = await bot.emu.user_says("Describe the sea", chat_id=ALICE, user_id=ALICE)
        answer = plain((await bot.answer_to(asked, ALICE, 90)).text)
        assert len(bot.replies_to(asked, ALICE)) == 1  # no stray placeholder beside it
        assert answer.strip() == _stored_answer(bot.database, ALICE, asked)
        assert [c.fault for c in bot.emu.calls("sendMessage")] == ["late"]  # sent once


async def test_discord_5xx_and_dropped_edits_still_end_in_the_stored_text(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with discord_bot(engine.url, tmp_path / "bot.db", max_tokens=60, seed=5) as bot:
        bot.emu.fail_next("PATCH", "/webhooks/*", "500", times=2)
        bot.emu.fail_next("PATCH", "/webhooks/*", "drop", times=2)
        run = await bot.emu.run_slash_command("chat", {"prompt": "The sea"}, user_id=DISCORD_ALICE)
        final = await bot.final(await bot.emu.wait_for(lambda: run.original_id), 90)
        stored = _stored_answer(bot.database, DISCORD_ALICE, None)  # a /chat has no source
        assert len(final.content) > 40 and final.content.strip() == stored
        assert len([r for r in bot.emu.requests if r.fault]) == 4
