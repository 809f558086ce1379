"""One bot, several engines: three Parley engines on loopback (demo model, small context)
and a scripted llama-server stand-in. Follow-up turns go back to the engine holding their
cache; load spreads over every engine; killing one mid-answer loses no reply."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bot.chat.service import ChatService
from bot.engines.client import Sampling
from bot.store.database import Store
from tests.adapters.discord_harness import serve
from tests.adapters.telegram_harness import is_final, telegram_bot
from tests.bot.chat.test_service import Recorder, say
from tests.bot.pools import started_pool
from tests.emulators.openai_engine import OpenAIStandIn
from tests.engine_process import EngineProcess, start_engine

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engines() -> Iterator[list[EngineProcess]]:
    """Three engines with 1, 2 and 1 slots."""
    started = [
        start_engine("--model", "demo", "--n-ctx", "512", "--parallel", str(slots))
        for slots in (1, 2, 1)
    ]
    yield started
    for engine in started:
        engine.stop()


async def _answer(chat: ChatService, user: str, text: str) -> Recorder:
    incoming, sink = say(user, text, [])
    await chat.handle(incoming)
    await asyncio.wait_for(sink.done.wait(), 60)
    assert sink.outcome is not None and sink.outcome.state == "done", sink.outcome
    return sink


async def test_follow_ups_go_back_to_the_engine_that_holds_their_cache(
    engines: list[EngineProcess], tmp_path: Path
) -> None:
    first, _, third = engines
    async with aiohttp.ClientSession() as session:
        pool = await started_pool(f"{first.url},{third.url}", session)
        store = await Store.open(tmp_path / "bot.db")
        chat = ChatService(
            store, pool, sampling=Sampling(max_tokens=8, temperature=0),
            system_prompt="Be brief.", max_pending_per_user=3, max_pending_total=10,
        )  # fmt: skip
        chat.start()
        try:
            # both at once: alice's answer takes the first engine, bob's the other
            turns = await asyncio.gather(
                _answer(chat, "alice", "Name a colour."), _answer(chat, "bob", "Name a fruit.")
            )
            assert [row["jobs"] for row in pool.describe()] == [1, 1]
            for round_ in range(2):  # one at a time: both engines idle, each goes home
                for index, (user, text) in enumerate((("alice", "And another?"),
                                                      ("bob", "One more?"))):  # fmt: skip
                    before = turns[index].outcome
                    after = await _answer(chat, user, text)
                    assert before is not None and before.usage is not None
                    assert after.outcome is not None and after.outcome.usage is not None
                    # the whole earlier prompt was still in that engine's cache
                    assert after.outcome.usage.cached_tokens >= before.usage.prompt_tokens
                    turns[index] = after
                assert [row["jobs"] for row in pool.describe()] == [2 + round_, 2 + round_]
        finally:
            await chat.stop()
            await pool.stop()
            await store.close()


async def _generating(engine: EngineProcess, timeout: float = 60) -> None:
    """Until ``engine`` reports an answer being written."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(engine.url + "/health") as response:
                if (await response.json())["slots_busy"] > 0:
                    return
            await asyncio.sleep(0.02)
    raise AssertionError("the engine never started an answer")


async def test_load_spreads_over_every_engine_and_a_killed_one_loses_no_reply(
    engines: list[EngineProcess], tmp_path: Path
) -> None:
    first, second, third = engines
    stand_in = OpenAIStandIn(
        "Sure, here is a short answer for you.", flavour="llama-server", slots=2,
        tokens_per_second=20,
    )  # fmt: skip
    users = list(range(2001, 2017))
    async with serve(stand_in.app()) as stand_url:
        urls = ",".join([first.url, second.url, third.url, stand_url])
        async with telegram_bot(
            first, tmp_path / "bot.db", engine_urls=urls, max_tokens=16, max_pending_total=100
        ) as bot:
            asked = {
                user: await bot.emu.user_says(
                    f"Tell me about the number {user}.", chat_id=user, user_id=user
                )
                for user in users
            }
            await _generating(second)
            second.proc.kill()  # mid-answer: its answers must be written elsewhere
            for user, message_id in asked.items():
                await bot.answer_to(message_id, user, timeout=120)
            rows = {row["url"]: row for row in bot.service.engines.describe()}
            statuses = _job_statuses(bot.database)

    for user, message_id in asked.items():
        replies = bot.replies_to(message_id, user)
        assert len(replies) == 1 and is_final(replies[0])  # one message, finished
    assert statuses == ["done"] * len(users)
    assert not rows[second.url]["up"] and rows[second.url]["failures"] >= 1
    for url in (first.url, third.url, stand_url):
        assert rows[url]["up"] and rows[url]["jobs"] >= 1, rows
    # the killed engine's answers were leased again: more leases than messages
    assert sum(int(str(row["jobs"])) for row in rows.values()) > len(users)
    assert stand_in.peak_busy == 2  # filled to its capacity, never beyond


def _job_statuses(database: Path) -> list[str]:
    with sqlite3.connect(database) as db:
        return [status for (status,) in db.execute("SELECT status FROM jobs ORDER BY id")]
