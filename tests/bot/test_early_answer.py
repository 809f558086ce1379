"""A message in a known conversation that can start at once asks the engine before it is
stored (bot/early_answer.py); nothing is shown before it is stored, and what is answered is
what was stored. Another connection holding the database's write lock (a backup, an
operator's sqlite3 shell) makes the store wait, which shows what waits for it and what not."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bot.incoming import Incoming
from bot.service import ChatService
from tests.bot.scripted_service import ANSWER, ask, scripted
from tests.bot.test_placeholder import Stamped
from tests.emulators.scripted_engine import ScriptedEngine

__all__ = ["scripted"]  # the fixture


@contextlib.contextmanager
def store_held(service: ChatService) -> Iterator[sqlite3.Connection]:
    """Another connection holding the write lock, as a backup does; committed on exit."""
    assert service.store.path is not None
    db = sqlite3.connect(service.store.path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    finally:
        db.execute("COMMIT")
        db.close()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def stored(path: Path | None) -> list[tuple[str, str]]:
    assert path is not None
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()


def says(name: str, text: str, sink: Stamped) -> Incoming:
    return Incoming("test", "chat-1", name.lower(), name, text, sink)


async def test_a_known_conversation_asks_the_engine_before_its_message_is_stored(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    engine, service = scripted
    await ask(service, "warm up")  # Alice and her conversation exist
    sink = Stamped([], "hello")
    with store_held(service):
        handling = asyncio.create_task(service.handle(says("Alice", "hello", sink)))
        await until(lambda: len(engine.runs) == 2)  # asked while the store waits
        await asyncio.sleep(0.2)
        assert len(stored(service.store.path)) == 2  # "hello" is not stored yet
        assert sink.accepted_at is None and sink.text == ""  # and nothing is shown
    released = time.perf_counter()
    await handling
    await asyncio.wait_for(sink.done.wait(), 10)
    assert sink.accepted_at is not None and sink.accepted_at > released
    assert sink.text == ANSWER
    sent = engine.requests[-1]["messages"]
    assert [m["content"] for m in sent[1:]] == ["warm up", ANSWER, "hello"]
    await until(lambda: len(stored(service.store.path)) == 4)
    assert stored(service.store.path)[2:] == [("user", "hello"), ("assistant", ANSWER)]


async def test_a_new_conversation_is_stored_before_its_engine_request(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    engine, service = scripted
    sink = Stamped([], "hello")
    with store_held(service):
        handling = asyncio.create_task(service.handle(says("Bob", "hello", sink)))
        await asyncio.sleep(0.3)
        assert engine.runs == []  # Bob's user and conversation rows come first
    await handling
    await asyncio.wait_for(sink.done.wait(), 10)
    assert sink.text == ANSWER and len(engine.runs) == 1


async def test_a_history_changed_before_the_message_is_stored_is_asked_again(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    engine, service = scripted
    await ask(service, "warm up")
    sink = Stamped([], "hello")
    with store_held(service) as db:
        handling = asyncio.create_task(service.handle(says("Alice", "hello", sink)))
        await until(lambda: len(engine.runs) == 2)
        (conversation,) = db.execute("SELECT id FROM conversations").fetchone()
        db.execute(
            "INSERT INTO messages (conversation_id, role, content, status, created_at,"
            " updated_at) VALUES (?, 'user', 'a late note', 'complete', ?, ?)",
            (conversation, "2026-12-05T00:00:00+00:00", "2026-12-05T00:00:00+00:00"),
        )  # stored by someone else in between
    await handling
    await asyncio.wait_for(sink.done.wait(), 10)
    assert sink.text == ANSWER and len(engine.runs) == 3  # asked again
    sent = [m["content"] for m in engine.requests[-1]["messages"][1:]]
    assert sent == ["warm up", ANSWER, "a late note", "hello"]


async def test_a_second_message_waits_for_the_first_to_be_stored(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    engine, service = scripted
    await ask(service, "warm up")
    engine.tokens_per_second = 100  # the first answer is still being written meanwhile
    first, second = Stamped([], "one"), Stamped([], "two")
    await asyncio.gather(
        service.handle(says("Alice", "one", first)), service.handle(says("Alice", "two", second))
    )
    await asyncio.wait_for(asyncio.gather(first.done.wait(), second.done.wait()), 10)
    assert first.text == second.text == ANSWER
    assert len(engine.runs) == 3  # none asked twice: "two" was read with "one" stored
    assert [m["content"] for m in engine.requests[-1]["messages"][1:]] == [
        "warm up", ANSWER, "one", "two",
    ]  # fmt: skip
    users = [content for role, content in stored(service.store.path) if role == "user"]
    assert users == ["warm up", "one", "two"]
