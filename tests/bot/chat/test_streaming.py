"""``stream_answer`` reads the engine's stream in the job's own task: a stop ends it there
(the request closed, the partial text kept, the task not left cancelled), while a
cancellation from elsewhere, as at shutdown, still goes through. Real HTTP on loopback to the
scripted engine, and a real SQLite store for the job's rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import aiohttp
import pytest

from bot.chat.queue import QueuedJob
from bot.chat.streaming import stream_answer
from bot.chat.work import WorkItem
from bot.engines.client import EngineClient, Sampling
from bot.incoming import Incoming, Outcome
from bot.store.database import Store
from bot.store.jobs import accept_message
from tests.adapters.discord_harness import serve
from tests.emulators.scripted_engine import ScriptedEngine

ANSWER = " ".join(f"word{i}" for i in range(400))
ASK = [{"role": "user", "content": "a long story"}]
T = TypeVar("T")


class Deltas:
    """A reply sink that only keeps the text (the rest is the platforms' business)."""

    def __init__(self) -> None:
        self.text = ""
        self.first = asyncio.Event()

    async def notice(self, text: str) -> None: ...

    async def accepted(self, position: int | None) -> None: ...

    async def queued(self, position: int) -> None: ...

    async def started(self) -> None: ...

    def delta(self, text: str) -> None:
        self.text += text
        self.first.set()

    async def restarted(self) -> None: ...

    async def finished(self, outcome: Outcome) -> None: ...

    def reference(self) -> str | None:
        return None


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedEngine, EngineClient]]:
    engine = ScriptedEngine(ANSWER, tokens_per_second=200)
    async with serve(engine.app()) as url, aiohttp.ClientSession() as session:
        yield engine, EngineClient(url, session)


async def _job(store: Store, sink: Deltas) -> QueuedJob[WorkItem]:
    accepted = await accept_message(store, "test", "alice", "Alice", "chat", "a long story")
    assert accepted is not None
    incoming = Incoming("test", "chat", "alice", "Alice", "a long story", sink)
    item = WorkItem(incoming, accepted.user, accepted.conversation, accepted.message, accepted.job)
    return QueuedJob(1, item.key, item)


async def _streaming(
    store: Store, answer: Callable[[QueuedJob[WorkItem]], Awaitable[T]]
) -> tuple[QueuedJob[WorkItem], Deltas, asyncio.Future[T]]:
    """A job, its sink, and ``answer(job)`` running in a task of its own, once the first
    text has reached the sink."""
    sink = Deltas()
    job = await _job(store, sink)
    streaming = asyncio.ensure_future(answer(job))
    await asyncio.wait_for(sink.first.wait(), 10)
    return job, sink, streaming


async def _engine_saw_cancel(engine: ScriptedEngine) -> None:
    for _ in range(200):
        if engine.cancelled == 1 and engine.busy == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the engine never saw the request closed")


async def test_a_stop_ends_the_stream_in_the_jobs_own_task(
    scripted: tuple[ScriptedEngine, EngineClient], store: Store
) -> None:
    engine, client = scripted

    async def the_job(job: QueuedJob[WorkItem]) -> tuple[object, int]:
        result = await stream_answer(client, Sampling(max_tokens=400), job, ASK)
        current = asyncio.current_task()
        assert current is not None
        await asyncio.sleep(0.05)  # the job's task goes on awaiting (to store the answer)
        return result, current.cancelling()

    job, sink, streaming = await _streaming(store, the_job)
    job.cancelled.set()
    result, cancelling = await asyncio.wait_for(streaming, 5)
    assert result == ("stopped", None, None)
    assert cancelling == 0  # the stop's cancellation was taken back, none left pending
    assert sink.text and ANSWER.startswith(sink.text) and len(sink.text) < len(ANSWER)
    assert "".join(job.payload.reply_text) == sink.text  # the partial text, kept
    await _engine_saw_cancel(engine)


async def test_a_job_stopped_before_it_streams_sends_no_request(
    scripted: tuple[ScriptedEngine, EngineClient], store: Store
) -> None:
    engine, client = scripted
    job = await _job(store, Deltas())
    job.cancelled.set()
    assert await stream_answer(client, Sampling(), job, ASK) == ("stopped", None, None)
    assert engine.requests == []


async def test_a_cancellation_from_elsewhere_is_not_swallowed(
    scripted: tuple[ScriptedEngine, EngineClient], store: Store
) -> None:
    engine, client = scripted
    job, _, streaming = await _streaming(
        store, lambda job: stream_answer(client, Sampling(max_tokens=400), job, ASK)
    )
    streaming.cancel()  # as asyncio does to every task at shutdown
    with pytest.raises(asyncio.CancelledError):
        await streaming
    await _engine_saw_cancel(engine)
    job.cancelled.set()  # a stop after the task ended touches nothing
    await asyncio.sleep(0.05)
