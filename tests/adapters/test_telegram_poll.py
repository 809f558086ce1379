"""The next long poll waits until the updates the last one brought are handled (the message
stored, with the engine and its placeholder posted), so it does not take the CPU from them;
but never longer than ``POLL_HOLD``, so a slow handler does not stop the bot from fetching.
Messages sent while the bot was down are answered or dropped as TELEGRAM_ANSWER_BACKLOG says."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.telegram import POLL_HOLD
from tests.adapters.discord_harness import serve
from tests.adapters.telegram_harness import ALICE, BOB, telegram_bot
from tests.emulators.scripted_engine import Run, ScriptedEngine
from tests.emulators.telegram_api import TelegramEmulator


def next_poll_after(emu: TelegramEmulator, chat_id: int, message_id: int) -> float:
    """When the poll after the one that handed the message out arrived."""
    handed = emu.handed_out[(chat_id, message_id)]
    return min(c.at for c in emu.requests if c.method == "getUpdates" and c.at > handed)


async def test_the_next_poll_waits_until_the_message_is_handled(tmp_path: Path) -> None:
    engine = ScriptedEngine("one two three", tokens_per_second=100)
    async with serve(engine.app()) as url, telegram_bot(url, tmp_path / "bot.db") as bot:
        for user in (ALICE, BOB):  # two chats: a chat's second placeholder would be paced
            message_id = await bot.emu.user_says("hello", chat_id=user, user_id=user)
            await bot.answer_to(message_id, user)
            placeholder = next(
                c
                for c in bot.emu.requests
                if c.method == "sendMessage" and c.params["chat_id"] == user
            )  # its first message in the chat
            polled = next_poll_after(bot.emu, user, message_id)
            assert engine.runs[-1].received < placeholder.at < polled


async def test_a_slow_handler_holds_the_next_poll_back_only_briefly(tmp_path: Path) -> None:
    engine = ScriptedEngine("one two three", tokens_per_second=100)

    async def slow(run: Run) -> None:
        await asyncio.sleep(0.5)  # the placeholder waits for this (up to ASKING_WAIT, 0.25 s)

    engine.before_headers = slow
    async with serve(engine.app()) as url, telegram_bot(url, tmp_path / "bot.db") as bot:
        message_id = await bot.emu.user_says("hello", chat_id=ALICE, user_id=ALICE)
        await bot.answer_to(message_id, ALICE)
        polled = next_poll_after(bot.emu, ALICE, message_id)
        waited = polled - bot.emu.handed_out[(ALICE, message_id)]
        assert POLL_HOLD <= waited < POLL_HOLD + 0.15


@pytest.mark.parametrize("answer_backlog", [True, False])
async def test_messages_sent_while_the_bot_was_down_follow_the_backlog_setting(
    answer_backlog: bool, tmp_path: Path
) -> None:
    engine = ScriptedEngine("one two three", tokens_per_second=100)
    async with TelegramEmulator() as emu, serve(engine.app()) as url:
        early = await emu.user_says("while you were away", chat_id=ALICE, user_id=ALICE)
        settings = {"telegram_answer_backlog": answer_backlog}
        async with telegram_bot(url, tmp_path / "bot.db", emu=emu, **settings) as bot:
            later = await emu.user_says("hello", chat_id=BOB, user_id=BOB)
            await bot.answer_to(later, BOB)
            if answer_backlog:
                await bot.answer_to(early, ALICE)
            assert bool(bot.replies_to(early, ALICE)) == answer_backlog
