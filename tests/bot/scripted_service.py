"""A ``ChatService`` answering from the scripted engine over loopback HTTP, with a real
SQLite store: for tests of what the service does around the engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from bot.chat.service import ChatService
from bot.engines.client import Sampling
from bot.incoming import Incoming
from bot.store.database import Store
from tests.adapters.discord_harness import serve
from tests.bot.chat.test_service import Recorder
from tests.bot.pools import started_pool
from tests.emulators.scripted_engine import ScriptedEngine

ANSWER = " ".join(f"word{i}" for i in range(40))  # 40 tokens, ~300 bytes


@asynccontextmanager
async def scripted_service(database: Path) -> AsyncIterator[tuple[ScriptedEngine, ChatService]]:
    """A started service on a store at ``database``, answering ``ANSWER`` quickly."""
    engine = ScriptedEngine(ANSWER, tokens_per_second=2000, n_ctx=1000)
    async with serve(engine.app()) as url, aiohttp.ClientSession() as session:
        store = await Store.open(database)
        service = ChatService(
            store, await started_pool(url, session), sampling=Sampling(max_tokens=60),
            system_prompt="Be brief.", max_pending_per_user=3, max_pending_total=10,
        )  # fmt: skip
        service.start()
        try:
            yield engine, service
        finally:
            await service.stop()
            await service.engines.stop()
            await store.close()


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[tuple[ScriptedEngine, ChatService]]:
    async with scripted_service(tmp_path / "bot.db") as pair:
        yield pair


async def ask(service: ChatService, text: str, sink: Recorder | None = None) -> Recorder:
    """``text`` from Alice, once its answer is shown (to ``sink``, if given)."""
    sink = sink or Recorder([], text)
    await service.handle(Incoming("test", "chat-1", "alice", "Alice", text, sink))
    await asyncio.wait_for(sink.done.wait(), 30)
    assert sink.outcome is not None and sink.outcome.state == "done", sink.outcome
    return sink
