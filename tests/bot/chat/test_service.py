"""The chat service with a real engine process and a real SQLite file: limits, fairness,
positions, cancellation, reset, per-user system prompts."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from bot.chat.service import ChatService
from bot.engines.client import Sampling
from bot.incoming import Incoming, Outcome
from bot.store.database import Store
from tests.bot.pools import started_pool
from tests.conftest import store_settled
from tests.engine_process import EngineProcess

pytestmark = pytest.mark.model


@dataclass
class Recorder:
    """A reply sink that remembers everything it was shown."""

    log: list[str]
    name: str = ""
    notices: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    text: str = ""
    outcome: Outcome | None = None
    started_at: float | None = None
    restarts: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    first_delta: asyncio.Event = field(default_factory=asyncio.Event)

    async def notice(self, text: str) -> None:
        self.notices.append(text)
        self.done.set()

    async def accepted(self, position: int | None) -> None:
        if position is not None:
            self.positions.append(position)

    async def queued(self, position: int) -> None:
        self.positions.append(position)

    async def started(self) -> None:
        self.started_at = time.monotonic()

    def delta(self, text: str) -> None:
        self.text += text
        self.first_delta.set()

    def reference(self) -> str | None:
        return None

    async def restarted(self) -> None:
        self.restarts += 1
        self.text = ""

    async def finished(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.log.append(self.name)
        self.done.set()


@pytest.fixture
async def service(engine: EngineProcess, tmp_path: Path) -> AsyncIterator[ChatService]:
    async with aiohttp.ClientSession() as session:
        store = await Store.open(tmp_path / "bot.db")
        chat = ChatService(
            store, await started_pool(engine.url, session),
            sampling=Sampling(max_tokens=8, temperature=0), system_prompt="Be brief.",
            max_pending_per_user=3, max_pending_total=10, position_every=0.1,
        )  # fmt: skip
        chat.start(workers=1)
        yield chat
        await chat.stop()
        await chat.engines.stop()
        await store.close()


def say(user: str, text: str, log: list[str], name: str = "") -> tuple[Incoming, Recorder]:
    sink = Recorder(log, name or text)
    return Incoming("test", "chat-1", user, user.title(), text, sink), sink


async def test_a_flooding_user_cannot_push_another_user_back(service: ChatService) -> None:
    log: list[str] = []
    sinks = []
    for i in range(3):
        incoming, sink = say("alice", f"alice {i}", log)
        await service.handle(incoming)
        sinks.append(sink)
    incoming, bob = say("bob", "bob 0", log)
    await service.handle(incoming)
    await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in [*sinks, bob])), 120)
    assert log == ["alice 0", "bob 0", "alice 1", "alice 2"]
    assert all(s.outcome and s.outcome.state == "done" for s in [*sinks, bob])


async def test_past_the_per_user_limit_the_user_is_told_and_nothing_is_stored(
    service: ChatService, tmp_path: Path
) -> None:
    log: list[str] = []
    sinks = []
    for i in range(4):
        incoming, sink = say("alice", f"message {i}", log)
        await service.handle(incoming)
        sinks.append(sink)
    assert "already have 3" in sinks[3].notices[0]
    await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in sinks)), 120)
    with sqlite3.connect(tmp_path / "bot.db") as db:
        contents = [r[0] for r in db.execute("SELECT content FROM messages WHERE role='user'")]
    assert contents == ["message 0", "message 1", "message 2"]


async def test_waiting_users_see_their_place_in_the_queue_move_up(service: ChatService) -> None:
    service.sampling = Sampling(max_tokens=48, temperature=0)  # long enough to see a move
    log: list[str] = []
    first, _ = say("alice", "first", log)
    await service.handle(first)
    waiting = []
    for user in ("bob", "carol"):
        incoming, sink = say(user, f"{user} waits", log)
        await service.handle(incoming)
        waiting.append(sink)
    bob, carol = waiting
    assert bob.positions[0] == 1 and carol.positions[0] == 2
    await asyncio.wait_for(carol.done.wait(), 120)
    assert 1 in carol.positions[1:]  # moved up when bob's turn came
    assert bob.started_at is not None and carol.started_at is not None
    assert bob.started_at < carol.started_at


async def test_only_the_front_of_a_long_queue_gets_position_updates(
    service: ChatService,
) -> None:
    service.sampling = Sampling(max_tokens=48, temperature=0)
    service.workers.positions_shown = 1
    log: list[str] = []
    first, _ = say("alice", "first", log)
    await service.handle(first)
    waiting = []
    for user in ("bob", "carol", "dave"):
        incoming, sink = say(user, f"{user} waits", log)
        await service.handle(incoming)
        waiting.append(sink)
    bob, carol, dave = waiting
    await asyncio.wait_for(dave.done.wait(), 120)
    assert (bob.positions, carol.positions) == ([1], [2, 1])  # carol: updated at the front
    assert dave.positions == [3, 1]  # not told of 2nd place: not the front


async def test_stop_cancels_a_running_answer_and_keeps_the_partial_text(
    service: ChatService, engine: EngineProcess, tmp_path: Path
) -> None:
    service.sampling = Sampling(max_tokens=300, temperature=0.8)
    log: list[str] = []
    incoming, sink = say("alice", "Write a very long story.", log)
    await service.handle(incoming)
    await asyncio.wait_for(sink.first_delta.wait(), 60)
    assert await service.cancel("test", "chat-1", "alice") == 1
    await asyncio.wait_for(sink.done.wait(), 10)
    assert sink.outcome is not None and sink.outcome.state == "stopped"
    for _ in range(100):
        if engine.get("/health")["slots_busy"] == 0:
            break
        await asyncio.sleep(0.02)
    assert engine.get("/health")["slots_busy"] == 0
    await store_settled(service.store)
    with sqlite3.connect(tmp_path / "bot.db") as db:
        content, status = db.execute(
            "SELECT content, status FROM messages WHERE role='assistant'"
        ).fetchone()
        job_status = db.execute("SELECT status FROM jobs").fetchone()[0]
    assert status == "cancelled" and content and sink.text.startswith(content[:5])
    assert job_status == "cancelled"


async def test_stop_also_cancels_queued_answers(service: ChatService, tmp_path: Path) -> None:
    service.sampling = Sampling(max_tokens=200, temperature=0.8)
    log: list[str] = []
    running, running_sink = say("alice", "long one", log)
    queued, queued_sink = say("alice", "queued one", log)
    await service.handle(running)
    await service.handle(queued)
    await asyncio.wait_for(running_sink.first_delta.wait(), 60)
    assert await service.cancel("test", "chat-1", "alice") == 2
    await asyncio.wait_for(asyncio.gather(running_sink.done.wait(), queued_sink.done.wait()), 10)
    assert queued_sink.text == "" and queued_sink.outcome is not None
    assert queued_sink.outcome.state == "stopped"
    await store_settled(service.store)
    with sqlite3.connect(tmp_path / "bot.db") as db:
        statuses = [r[0] for r in db.execute("SELECT status FROM jobs ORDER BY id")]
    assert statuses == ["cancelled", "cancelled"]


async def test_reset_forgets_and_system_prompts_are_per_user(service: ChatService) -> None:
    log: list[str] = []

    async def prompt_tokens(user: str, text: str) -> int:
        incoming, sink = say(user, text, log)
        await service.handle(incoming)
        await asyncio.wait_for(sink.done.wait(), 60)
        assert sink.outcome is not None and sink.outcome.usage is not None
        return sink.outcome.usage.prompt_tokens

    alone = await prompt_tokens("alice", "Hello")
    remembered = await prompt_tokens("alice", "Hello")
    await service.reset("test", "chat-1", "alice", "Alice")
    assert await prompt_tokens("alice", "Hello") == alone < remembered
    await service.set_system_prompt("test", "bob", "Bob", "You are a pirate. " * 10)
    assert await service.system_prompt_for("test", "bob", "Bob") == "You are a pirate. " * 10
    assert await prompt_tokens("bob", "Hello") > alone + 30
    await service.set_system_prompt("test", "bob", "Bob", None)
    assert await service.system_prompt_for("test", "bob", "Bob") == "Be brief."


async def test_empty_text_and_banned_users_are_not_queued(
    service: ChatService, tmp_path: Path
) -> None:
    log: list[str] = []
    incoming, sink = say("alice", "   \n ", log)
    await service.handle(incoming)
    assert sink.notices and "text" in sink.notices[0]
    await service.store.ban("test", "mallory")
    incoming, sink = say("mallory", "hello", log)
    await service.handle(incoming)
    await asyncio.sleep(0.2)
    assert not sink.notices and sink.outcome is None
    with sqlite3.connect(tmp_path / "bot.db") as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


async def test_old_turns_are_dropped_to_fit_and_the_reply_says_so(service: ChatService) -> None:
    service.sampling = Sampling(max_tokens=64, temperature=0)
    log: list[str] = []
    outcome = None
    for i in range(6):
        incoming, sink = say("alice", f"Message {i}: " + "blah " * 60, log)
        await service.handle(incoming)
        await asyncio.wait_for(sink.done.wait(), 60)
        outcome = sink.outcome
    assert outcome is not None and outcome.state == "done" and outcome.dropped > 0


async def test_a_slow_platform_does_not_hold_the_worker(service: ChatService) -> None:
    """The final edit waiting out a 429 must not keep the (only) worker from the next job."""
    release = asyncio.Event()

    class SlowPlatform(Recorder):
        async def finished(self, outcome: Outcome) -> None:
            await release.wait()
            await super().finished(outcome)

    log: list[str] = []
    slow = SlowPlatform(log, "slow")
    await service.handle(Incoming("test", "chat-1", "alice", "Alice", "first", slow))
    incoming, bob = say("bob", "second", log)
    await service.handle(incoming)
    await asyncio.wait_for(bob.done.wait(), 60)  # answered while alice's reply is still shown
    assert not slow.done.is_set()
    release.set()
    await asyncio.wait_for(slow.done.wait(), 10)
    assert log == ["second", "slow"]


async def test_an_old_job_whose_placeholder_was_never_posted_is_told_in_a_new_one(
    service: ChatService,
) -> None:
    """After a restart: no message to edit, too old to answer; the user still hears why."""
    from bot.chat.resume import TOO_OLD, resume_jobs
    from bot.replies.platform import PlatformReply
    from bot.store.jobs import accept_message
    from tests.bot.replies.test_platform_reply import Surface

    await accept_message(service.store, "test", "alice", "Alice", "chat-1", "hello?")
    surface = Surface()
    resumed = await resume_jobs(
        service,
        "test",
        lambda *_: PlatformReply(surface),
        max_age=0,  # type: ignore[arg-type]
    )
    assert (resumed.queued, resumed.failed) == (0, 1)
    await asyncio.wait_for(_shown(surface, TOO_OLD), 10)


async def _shown(surface: object, text: str) -> None:
    while not any(text in m[-1] for m in getattr(surface, "messages", {}).values()):
        await asyncio.sleep(0.02)


async def test_a_messages_request_id_reaches_the_engine_log(
    service: ChatService, engine: EngineProcess
) -> None:
    sink = Recorder([], "traced")
    incoming = Incoming("test", "chat-9", "trace", "Trace", "Hello", sink, request_id="rid0a1b2c3d")
    await service.handle(incoming)
    await asyncio.wait_for(sink.done.wait(), 60)
    deadline = time.monotonic() + 10

    def traced() -> list[str]:
        return [line for line in engine.logs().splitlines() if "rid0a1b2c3d" in line]

    while not any("chat completion" in line for line in traced()):
        assert time.monotonic() < deadline, engine.logs()[-2000:]
        await asyncio.sleep(0.05)  # the engine logs a completion after its last byte
    lines = traced()
    assert any("chat completion" in line for line in lines), lines
    assert any("/tokenize" in line for line in lines), lines  # fitting is traced too
