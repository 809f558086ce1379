"""Parley's long polling (adapters/telegram_poll.py). The next poll waits until the updates
the last one brought are handled (the message stored, with the engine and its placeholder
posted), so it does not take the CPU from them; but never longer than ``POLL_HOLD``, so a slow
handler does not stop the bot from fetching. Flood control and API failures are waited out, a
revoked token stops polling with an error, stopping confirms what was fetched, and the backlog
is answered or dropped as TELEGRAM_ANSWER_BACKLOG says."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from adapters.telegram_poll import POLL_HOLD, REVOKED
from tests.adapters.discord_harness import serve
from tests.adapters.telegram_harness import ALICE, BOB, telegram_bot
from tests.emulators.scripted_engine import Run, ScriptedEngine
from tests.emulators.telegram_api import TelegramEmulator


def polls(emu: TelegramEmulator) -> list[float]:
    """When each getUpdates arrived."""
    return [c.at for c in emu.requests if c.method == "getUpdates"]


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


@pytest.mark.parametrize(("fault", "waits"), [("429", [2.0]), ("502", [1.0, 1.5])])
async def test_flood_control_and_api_failures_are_waited_out(
    fault: str, waits: list[float], tmp_path: Path
) -> None:
    engine = ScriptedEngine("one two three", tokens_per_second=100)
    async with TelegramEmulator() as emu, serve(engine.app()) as url:
        emu.fail_next("getUpdates", fault, times=len(waits), retry_after=2)  # type: ignore[arg-type]
        async with telegram_bot(url, tmp_path / "bot.db", emu=emu) as bot:
            message_id = await emu.user_says("hello", chat_id=ALICE, user_id=ALICE)
            await bot.answer_to(message_id, ALICE, timeout=10)
            faulted = [c.at for c in emu.requests if c.method == "getUpdates" and c.fault]
            after = [min(t for t in polls(emu) if t > at) for at in faulted]
            gaps = [b - a for a, b in zip(faulted, after, strict=True)]
            assert len(gaps) == len(waits)
            assert all(w <= gap < w + 0.5 for gap, w in zip(gaps, waits, strict=True)), gaps


async def test_a_revoked_token_stops_polling_with_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = ScriptedEngine("one two three", tokens_per_second=100)
    caplog.set_level(logging.WARNING, logger="adapters.telegram_poll")
    async with serve(engine.app()) as url, telegram_bot(url, tmp_path / "bot.db") as bot:
        bot.emu.token = "999:revoked"  # every call of the bot's is now refused (401)
        await bot.emu.user_says("hello", chat_id=ALICE, user_id=ALICE)  # ends the long poll
        await bot.emu.wait_for(lambda: REVOKED in caplog.text or None)
        seen = len(polls(bot.emu))
        await asyncio.sleep(1.2)  # a retrying poller would have polled again by now
        assert len(polls(bot.emu)) == seen


async def test_stopping_confirms_the_updates_fetched(tmp_path: Path) -> None:
    engine = ScriptedEngine("one two three", tokens_per_second=100)
    async with TelegramEmulator() as emu, serve(engine.app()) as url:
        async with telegram_bot(url, tmp_path / "bot.db", emu=emu) as bot:
            message_id = await emu.user_says("hello", chat_id=ALICE, user_id=ALICE)
            await bot.answer_to(message_id, ALICE)
        last = next(c for c in reversed(emu.requests) if c.method == "getUpdates")
        assert (last.params["timeout"], last.params["offset"]) == (0, 2)  # the update was id 1


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
