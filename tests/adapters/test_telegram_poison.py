"""What python-telegram-bot cannot read does not stop the bot (adapters/telegram_updates.py).

An update PTB cannot parse is skipped with one WARNING naming its update id and confirmed by the
next poll, and the updates with it are answered; a getUpdates answer that is not the Bot API's
``{"ok": true, "result": [...]}`` is asked again with backoff, and polling recovers once answers
are well-formed. Before, both made the bot ask again at once, for ever: hundreds of getUpdates
a second and nothing answered. The bounds below are counts over a second or more, loose enough
for a busy machine and hundreds of times below a spinning poller."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from bot.metrics import METRICS
from tests.adapters.discord_harness import serve
from tests.adapters.telegram_harness import ALICE, BOB, TelegramBot, telegram_bot
from tests.emulators.scripted_engine import ScriptedEngine
from tests.emulators.telegram_api import TelegramEmulator

# A message PTB cannot turn into a Message: no ``chat``, no ``date``.
SENDER = {"id": BOB, "is_bot": False, "first_name": "Bob"}
POISON = {"message": {"message_id": 77, "text": "hi", "from": SENDER}}
LOGGER = "adapters.telegram_updates"


def polls(emu: TelegramEmulator) -> int:
    return len(emu.calls("getUpdates"))


def warnings_from_polling(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING
    ]


def skipped_total() -> float:
    return sum(METRICS.counters["parley_telegram_updates_skipped_total"].values())


async def polls_in(bot: TelegramBot, seconds: float) -> int:
    """How many getUpdates the bot makes in ``seconds`` (a spinning one: hundreds a second)."""
    before = polls(bot.emu)
    await asyncio.sleep(seconds)
    return polls(bot.emu) - before


async def malformed_from_the_next_poll(bot: TelegramBot, body: Any) -> None:
    """Every getUpdates after the long poll now waiting gets ``body``; a message ends that
    poll with a good answer."""
    await bot.emu.wait_for(lambda: polls(bot.emu) >= 1, 10)  # the first poll is waiting
    bot.emu.answer_raw("getUpdates", body, times=100_000)


async def test_an_update_that_cannot_be_parsed_is_skipped_and_the_next_one_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = ScriptedEngine("one two three", tokens_per_second=100)
    skipped_before = skipped_total()
    async with serve(engine.app()) as url, telegram_bot(url, tmp_path / "bot.db") as bot:
        poison = bot.emu.push_raw_update(POISON)
        good = await bot.emu.user_says("hello", chat_id=ALICE, user_id=ALICE)  # same batch
        answer = await bot.answer_to(good, ALICE, timeout=30)
        assert answer.text.strip()
        await bot.emu.wait_for(lambda: bot.emu.pending_updates == 0, 10)  # both confirmed
        assert await polls_in(bot, 1.0) <= 5
    warnings = warnings_from_polling(caplog)
    assert len(warnings) == 1 and f"update {poison}," in warnings[0]
    assert skipped_total() == skipped_before + 1


async def test_an_unparsable_update_last_in_its_batch_is_confirmed_and_not_fetched_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = ScriptedEngine("one two three", tokens_per_second=100)
    async with serve(engine.app()) as url, telegram_bot(url, tmp_path / "bot.db") as bot:
        poison = bot.emu.push_raw_update(POISON)
        # The Updater confirms only updates it was given: the bot must move the offset itself.
        await bot.emu.wait_for(lambda: bot.emu.pending_updates == 0, 10)
        assert await polls_in(bot, 1.0) <= 5
        good = await bot.emu.user_says("hello", chat_id=ALICE, user_id=ALICE)
        await bot.answer_to(good, ALICE, timeout=30)
    assert sum(f"update {poison}," in m for m in warnings_from_polling(caplog)) == 1


@pytest.mark.parametrize(
    "body",
    [[{"update_id": 1}], {"ok": True}, {"ok": True, "result": None}],
    ids=["json-array", "no-result", "null-result"],
)
async def test_a_malformed_answer_is_asked_again_with_backoff_and_polling_recovers(
    body: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    engine = ScriptedEngine("one two three", tokens_per_second=100)
    async with serve(engine.app()) as url, telegram_bot(url, tmp_path / "bot.db") as bot:
        await malformed_from_the_next_poll(bot, body)
        first = await bot.emu.user_says("hello", chat_id=ALICE, user_id=ALICE)
        await bot.emu.wait_for(lambda: any(c.fault == "raw" for c in bot.emu.requests), 10)
        # Backoff: 0.5 s, 1 s, 2 s... between requests, where the old code made ~940 a second.
        assert await polls_in(bot, 3.0) <= 6
        bot.emu.answer_raw("getUpdates", None, times=0)  # well-formed answers again
        again = await bot.emu.user_says("again", chat_id=BOB, user_id=BOB)
        await bot.answer_to(first, ALICE, timeout=30)
        await bot.answer_to(again, BOB, timeout=40)
    assert len([m for m in warnings_from_polling(caplog) if "malformed" in m]) == 1  # per streak
    recovered = [r for r in caplog.records if r.name == LOGGER and "well-formed again" in r.msg]
    assert len(recovered) == 1


async def test_stopping_during_a_long_backoff_does_not_wait_it_out(tmp_path: Path) -> None:
    engine = ScriptedEngine("one two three", tokens_per_second=100)
    async with serve(engine.app()) as url, telegram_bot(url, tmp_path / "bot.db") as bot:
        await malformed_from_the_next_poll(bot, [])  # [] where {"ok", "result"} belongs
        first = await bot.emu.user_says("hello", chat_id=ALICE, user_id=ALICE)
        await bot.answer_to(first, ALICE, timeout=30)
        # Four malformed answers: the next request waits 4 s (0.5 + 1 + 2 s to get here).
        await bot.emu.wait_for(lambda: sum(c.fault == "raw" for c in bot.emu.requests) >= 4, 20)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await bot.adapter.stop()  # its last getUpdates (confirming the offset) does not wait
        assert loop.time() - started < 3.0


async def test_a_handler_that_fails_is_logged_once_with_its_update_and_the_next_is_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The placeholder's sendMessage gets an answer without its result: nothing the bot
    foresaw, so the error handler logs it (not PTB's "No error handlers are registered")."""
    engine = ScriptedEngine("one two three", tokens_per_second=100)
    async with serve(engine.app()) as url, telegram_bot(url, tmp_path / "bot.db") as bot:
        bot.emu.answer_raw("sendMessage", {"ok": True})
        await bot.emu.user_says("hello", chat_id=ALICE, user_id=ALICE)
        await bot.emu.wait_for(lambda: any(failed_updates(caplog)) or None, 10)
        again = await bot.emu.user_says("again", chat_id=ALICE, user_id=ALICE)
        await bot.answer_to(again, ALICE, timeout=30)
    (failed,) = failed_updates(caplog)
    assert failed.exc_info is not None and isinstance(failed.exc_info[1], KeyError)
    assert not any("No error handlers" in r.getMessage() for r in caplog.records)


def failed_updates(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "handling Telegram update" in r.getMessage()]
