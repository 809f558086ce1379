"""Per-user limits: messages a minute and tokens a day, admins exempt, with a reply that says
when the user can continue; and one user's flood does not hold another back."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from bot.chat.limits import UserLimits
from bot.chat.service import ChatService
from bot.engines.client import Sampling
from bot.store.database import Store
from bot.store.job_writes import Reply
from bot.store.jobs import accept_message, finish_job
from tests.adapters.telegram_harness import ADMIN, ALICE, BOB, plain, telegram_bot
from tests.bot.chat.test_service import say
from tests.bot.pools import started_pool
from tests.engine_process import EngineProcess


async def test_the_rate_limit_counts_the_last_minute_and_says_when_to_retry(
    store: Store,
) -> None:
    now = [1000.0]
    limits = UserLimits(per_minute=2, daily_tokens=0, exempt=frozenset({"telegram:1"}),
                        clock=lambda: now[0])  # fmt: skip
    assert await limits.refusal(store, "telegram", "7") is None
    now[0] += 10
    assert await limits.refusal(store, "telegram", "7") is None
    now[0] += 5
    refused = await limits.refusal(store, "telegram", "7")
    assert refused is not None and "in 45 s" in refused  # the first one leaves the window
    assert await limits.refusal(store, "telegram", "8") is None  # per person
    for _ in range(5):
        assert await limits.refusal(store, "telegram", "1") is None  # an admin
    now[0] += 45
    assert await limits.refusal(store, "telegram", "7") is None
    assert await limits.refusal(store, "console", "me") is None


async def test_people_who_stopped_writing_are_forgotten(store: Store) -> None:
    now = [0.0]
    limits = UserLimits(per_minute=5, daily_tokens=0, clock=lambda: now[0])
    for user in range(10_001):
        assert await limits.refusal(store, "telegram", str(user)) is None
    now[0] += 61
    assert await limits.refusal(store, "telegram", "new") is None
    assert list(limits._sent) == ["telegram:new"]  # memory stays bounded by active people


async def test_the_daily_quota_counts_todays_stored_usage(store: Store) -> None:
    today = datetime.now(UTC)
    accepted = await accept_message(store, "discord", "5", "Eve", "dm", "hi")
    assert accepted is not None
    limits = UserLimits(per_minute=0, daily_tokens=100, now=lambda: today)
    assert await limits.refusal(store, "discord", "5") is None
    reply = Reply("hello", "complete", "demo", prompt_tokens=80, completion_tokens=20)
    await finish_job(store, accepted.job, "done", reply, None)
    refused = await limits.refusal(store, "discord", "5")
    assert refused is not None and "100 tokens for today" in refused
    assert "midnight UTC" in refused
    tomorrow = UserLimits(per_minute=0, daily_tokens=100,
                          now=lambda: today.replace(year=today.year + 1))  # fmt: skip
    assert await tomorrow.refusal(store, "discord", "5") is None


@pytest.mark.model
async def test_limited_telegram_users_are_told_and_nothing_is_stored(
    engine: EngineProcess, tmp_path: Path
) -> None:
    settings = {"rate_limit_per_minute": 2, "daily_token_quota": 0, "max_tokens": 8}
    async with telegram_bot(engine, tmp_path / "bot.db", **settings) as bot:
        for i in range(2):
            asked = await bot.emu.user_says(f"hi {i}", chat_id=ALICE, user_id=ALICE)
            await bot.answer_to(asked, ALICE)
        third = await bot.emu.user_says("hi 2", chat_id=ALICE, user_id=ALICE)
        refusal = plain((await bot.answer_to(third, ALICE)).text)
        assert "faster than 2 a minute" in refusal and "next one in" in refusal
        for i in range(3):  # the admin is exempt
            asked = await bot.emu.user_says(f"admin {i}", chat_id=ADMIN, user_id=ADMIN)
            assert "faster" not in plain((await bot.answer_to(asked, ADMIN)).text)
        with sqlite3.connect(bot.database) as db:
            rows = db.execute("SELECT content FROM messages WHERE role = 'user'").fetchall()
        assert ("hi 2",) not in rows and ("hi 1",) in rows


@pytest.mark.model
async def test_a_user_over_the_quota_is_told_when_they_can_continue(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with telegram_bot(engine, tmp_path / "bot.db", daily_token_quota=20) as bot:
        first = await bot.emu.user_says("Hello", chat_id=BOB, user_id=BOB)
        await bot.answer_to(first, BOB)  # a prompt and answer well over 20 tokens
        second = await bot.emu.user_says("More", chat_id=BOB, user_id=BOB)
        refusal = plain((await bot.answer_to(second, BOB)).text)
        assert "20 tokens for today" in refusal and "midnight UTC" in refusal


@pytest.mark.model
async def test_a_flood_of_50_delays_another_user_by_at_most_one_job(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as session:
        store = await Store.open(tmp_path / "bot.db")
        service = ChatService(
            store, await started_pool(engine.url, session),
            sampling=Sampling(max_tokens=8, temperature=0), system_prompt="Be brief.",
            max_pending_per_user=50, max_pending_total=100,
        )  # fmt: skip
        service.start(workers=1)
        try:
            order: list[str] = []
            flood = [say("alice", f"flood {i}", order, name=f"alice {i}") for i in range(50)]
            for incoming, _ in flood:
                await service.handle(incoming)
            incoming, bob = say("bob", "just one question", order, name="bob")
            await service.handle(incoming)
            await asyncio.wait_for(bob.done.wait(), 120)
            assert order.index("bob") <= 1  # after at most alice's first (already running)
            assert bob.outcome is not None and bob.outcome.state == "done"
        finally:
            await service.stop()
            await service.engines.stop()
            await store.close()
