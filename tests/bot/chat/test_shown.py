"""A job counts as shown only once the platform confirmed its final text: a bot that stops
while the final edit waits out a 429 leaves it unshown, and the next start shows the stored
text in the same message, without asking the engine again."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

from bot.chat.resume import resume_jobs
from bot.chat.service import ChatService
from bot.incoming import Incoming
from bot.replies.platform import PlatformReply
from bot.replies.streamed_edits import RateLimited
from bot.store.database import Store
from bot.store.jobs import accept_message
from tests.bot.replies.test_platform_reply import Surface
from tests.bot.scripted_service import ANSWER, scripted
from tests.emulators.scripted_engine import ScriptedEngine

__all__ = ["scripted"]  # the fixture


class FloodedSurface(Surface):
    """Refuses every edit that would show the final text (no cursor) with a long 429."""

    limit = 1000  # the answer fits one message

    def __init__(self) -> None:
        super().__init__()
        self.flooded = True
        self.refused = asyncio.Event()

    async def edit(self, message_id: str, text: str) -> None:
        if self.flooded and "▌" not in text and text != "…":
            self.refused.set()
            raise RateLimited(60)
        await super().edit(message_id, text)


def _jobs(store: Store) -> list[tuple[str, int]]:
    assert store.path is not None
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        return db.execute("SELECT status, shown FROM jobs ORDER BY id").fetchall()


async def _until_jobs(store: Store, expected: list[tuple[str, int]]) -> None:
    """Wait (5 s at most) until the jobs read ``expected``; assert they do."""
    for _ in range(500):
        if _jobs(store) == expected:
            break
        await asyncio.sleep(0.01)
    assert _jobs(store) == expected


async def _stopped_while_flooded(service: ChatService) -> FloodedSurface:
    """Alice asks; her final edit meets a 429 of a minute; the answer is stored, not shown,
    and the service stops (a restart) without waiting that minute out."""
    surface = FloodedSurface()
    reply = PlatformReply(surface)
    await service.handle(Incoming("test", "chat-1", "alice", "Alice", "hello", reply))
    await asyncio.wait_for(surface.refused.wait(), 30)
    await _until_jobs(service.store, [("done", 0)])  # stored, not shown
    service.workers.delivery_grace = 0.2
    await service.stop(resumable=True)  # the stop gives up on the 429's minute
    return surface


async def test_a_final_text_held_by_a_429_is_shown_by_the_next_start(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    engine, service = scripted
    surface = await _stopped_while_flooded(service)
    (message_id,) = surface.messages
    assert surface.messages[message_id][-1] != ANSWER  # the user never saw the answer
    assert _jobs(service.store) == [("done", 0)]

    asked = len(engine.requests)
    surface.flooded = False
    service.start()  # the next start, on the same store
    resumed = await resume_jobs(
        service, "test", lambda *_: _resumed(surface, message_id), max_age=3600
    )
    assert (resumed.queued, resumed.shown) == (0, 1)
    await _until_jobs(service.store, [("done", 1)])
    assert list(surface.messages) == [message_id]  # the same message, nothing new posted
    assert surface.messages[message_id][-1] == ANSWER
    assert len(engine.requests) == asked  # shown from the store, not written again


async def test_an_answer_the_platform_confirmed_is_not_shown_again(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    _, service = scripted
    surface = Surface()
    reply = PlatformReply(surface)
    await service.handle(Incoming("test", "chat-1", "alice", "Alice", "hello", reply))
    await asyncio.wait_for(reply.done.wait(), 30)
    await _until_jobs(service.store, [("done", 1)])
    resumed = await resume_jobs(service, "test", lambda *_: PlatformReply(surface), 3600)
    assert resumed == type(resumed)(0, 0, 0, 0)


def _resumed(surface: Surface, message_id: str) -> PlatformReply:
    reply = PlatformReply(surface)
    reply.resume_in(message_id)
    return reply


async def test_a_reply_posted_by_a_restart_is_recorded_before_it_is_answered(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    """A job whose placeholder was never recorded gets a new one at the next start; that one
    is recorded at once, so a bot killed again writes into it, not into a third."""
    _, service = scripted
    await accept_message(service.store, "test", "alice", "Alice", "chat-1", "hello?", "7")
    surface = FloodedSurface()
    surface.flooded = False
    reply = PlatformReply(surface)
    resumed = await resume_jobs(service, "test", lambda *_: reply, max_age=3600)
    assert resumed.queued == 1
    refs = await service.store.query("SELECT reply_ref FROM jobs", ())
    assert refs == [(reply.reference(),)] and reply.reference() is not None
    await asyncio.wait_for(reply.done.wait(), 30)
    assert list(surface.messages) == [reply.reference()]


class GoneSurface(Surface):
    """A chat the bot can no longer write to (blocked, deleted): every call fails."""

    async def send(self, text: str) -> str:
        raise RuntimeError("Forbidden: bot was blocked by the user")

    async def edit(self, message_id: str, text: str) -> None:
        raise RuntimeError("Forbidden: bot was blocked by the user")


async def test_a_final_text_the_platform_refuses_again_is_tried_once_not_at_every_start(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    _, service = scripted
    await _stopped_while_flooded(service)
    assert _jobs(service.store) == [("done", 0)]
    service.start()
    gone = GoneSurface()
    resumed = await resume_jobs(service, "test", lambda *_: _resumed(gone, "1"), 3600)
    assert resumed.shown == 1
    await _until_jobs(service.store, [("done", 1)])  # given up after this one try
    assert (await resume_jobs(service, "test", lambda *_: _resumed(gone, "1"), 3600)).shown == 0
