"""A finished answer's final text is handed to the platform first; the answer is stored
right after, on the event loop's thread (not aiosqlite's, where it fought the final edit for
the GIL), before anything the person sends after seeing it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

from bot.chat.service import ChatService
from bot.incoming import Outcome
from tests.bot.chat.test_service import Recorder
from tests.bot.scripted_service import ask, scripted
from tests.emulators.scripted_engine import ScriptedEngine

__all__ = ["scripted"]  # the fixture


class Watching(Recorder):
    """Notes, when the final text comes, what the database holds of the newest job (read on
    a connection of its own: what is committed, right then)."""

    statuses_when_shown: list[str]

    async def finished(self, outcome: Outcome) -> None:
        path = self.service.store.path
        assert path is not None
        with contextlib.closing(sqlite3.connect(path)) as db:
            (status,) = db.execute("SELECT status FROM jobs ORDER BY id DESC LIMIT 1").fetchone()
        self.statuses_when_shown.append(status)
        await super().finished(outcome)


async def test_the_final_text_goes_out_first_and_the_answer_is_stored_on_the_loop(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    _, service = scripted
    store = service.store
    await ask(service, "warm up")  # the template's size measured, the user stored
    await stored(service)  # shown, and stored right after
    before, on_loop = store._commits.batches, store._commits.on_loop
    sink = Watching([], "hello")
    sink.service, sink.statuses_when_shown = service, []
    await ask(service, "hello", sink)
    assert sink.statuses_when_shown == ["running"]  # the answer is not stored yet
    await stored(service)
    assert store._commits.batches == before + 3  # the accept, the answer, then "shown"
    assert store._commits.on_loop == on_loop + 2  # the accept, then the answer
    await ask(service, "and after seeing it?")
    await stored(service)
    history = await store.query("SELECT role, content FROM messages ORDER BY id", ())
    assert [role for role, _ in history] == ["user", "assistant"] * 3


async def stored(service: ChatService) -> None:
    """Wait until every job is closed, its answer stored and shown (first letting the store
    write due now go ahead: a query holding the connection would send it to aiosqlite's
    thread)."""
    await asyncio.sleep(0.05)
    for _ in range(500):
        rows = await service.store.query("SELECT status, reply_message_id, shown FROM jobs", ())
        if all(status == "done" and reply is not None and shown for status, reply, shown in rows):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"jobs still open: {rows}")
