"""The platform reply sink: nothing posted before acceptance, early deltas kept, queue
position shown, Stop-button hooks around the final edit, typing until done."""

from __future__ import annotations

import asyncio

from bot.incoming import Outcome
from bot.replies.platform import PlatformReply


class Surface:
    limit = 200
    min_edit_interval = 0.0

    def __init__(self) -> None:
        self.messages: dict[str, list[str]] = {}
        self.events: list[str] = []

    async def send(self, text: str) -> str:
        await asyncio.sleep(0.01)  # the platform takes a moment
        message_id = str(len(self.messages) + 1)
        self.messages[message_id] = [text]
        self.events.append(f"send {text}")
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        self.messages[message_id].append(text)
        self.events.append(f"edit {text}")


async def test_a_refusal_is_one_message_and_nothing_else() -> None:
    surface = Surface()
    reply = PlatformReply(surface)
    await reply.notice("busy")
    assert surface.messages == {"1": ["busy"]}


async def test_deltas_before_the_placeholder_exists_are_not_lost() -> None:
    surface = Surface()
    reply = PlatformReply(surface)
    accepting = asyncio.create_task(reply.accepted(None))
    await asyncio.sleep(0)
    reply.delta("Hello")
    reply.delta(" world")
    await accepting
    await reply.finished(Outcome("done", "Hello world"))
    assert surface.messages["1"][0] == "…"
    assert surface.messages["1"][-1] == "Hello world"


async def test_a_queued_reply_shows_and_updates_its_position() -> None:
    surface = Surface()
    reply = PlatformReply(surface)
    await reply.accepted(3)
    await reply.queued(2)
    await asyncio.sleep(0.05)
    reply.delta("Hi")
    await reply.finished(Outcome("done", "Hi"))
    assert surface.messages["1"][0] == "⏳ queued (#3)"
    assert "⏳ queued (#2)" in surface.messages["1"]
    assert surface.messages["1"][-1] == "Hi"


async def test_a_queued_reply_types_only_once_a_worker_takes_it() -> None:
    surface = Surface()
    typed: list[int] = []

    async def typing() -> None:
        typed.append(1)

    reply = PlatformReply(surface, typing=typing, typing_after=0)
    await reply.accepted(4)
    await asyncio.sleep(0.05)
    assert typed == []  # waiting in the queue: no "typing…" for nothing
    await reply.started()
    await asyncio.sleep(0.05)
    assert typed == [1]
    assert surface.messages["1"] == ["⏳ queued (#4)", "…"]  # the position goes away
    reply.delta("Hi")
    await reply.finished(Outcome("done", "Hi"))
    assert surface.messages["1"][-1] == "Hi"


async def test_an_answer_done_before_typing_would_start_sends_no_typing() -> None:
    surface = Surface()
    typed: list[int] = []

    async def typing() -> None:
        typed.append(1)

    quick = PlatformReply(surface, typing=typing, typing_after=0.2)
    await quick.accepted(None)
    quick.delta("Hi")
    await quick.finished(Outcome("done", "Hi"))
    slow = PlatformReply(surface, typing=typing, typing_after=0.2)
    await slow.accepted(None)
    await asyncio.sleep(0.1)
    assert typed == []  # the placeholder alone shows the bot is on it
    await asyncio.sleep(0.2)
    assert typed == [1]  # still writing: now it types
    await slow.finished(Outcome("done", ""))


async def test_hooks_wrap_the_final_edit_and_typing_stops() -> None:
    surface = Surface()
    typed: list[int] = []

    async def typing() -> None:
        typed.append(1)

    async def done() -> None:
        surface.events.append("done")

    reply = PlatformReply(
        surface, typing=typing, before_finish=lambda: surface.events.append("finishing"),
        on_done=done, typing_after=0,
    )  # fmt: skip
    await reply.accepted(None)
    reply.delta("partial")
    await asyncio.sleep(0.01)  # typing has begun
    await reply.finished(Outcome("stopped", "partial"))
    assert surface.events[-3:] == ["finishing", "edit partial\n\n⏹ stopped", "done"]
    count = len(typed)
    await asyncio.sleep(0.05)
    assert count >= 1 and len(typed) == count


async def test_dropped_history_is_mentioned_and_errors_are_shown() -> None:
    surface = Surface()
    reply = PlatformReply(surface)
    await reply.accepted(None)
    reply.delta("ok")
    await reply.finished(Outcome("done", "ok", dropped=4))
    assert "older messages were left out" in surface.messages["1"][-1]
    failing = PlatformReply(surface)
    await failing.accepted(None)
    await failing.finished(Outcome("error", "", error="the engine failed"))
    assert surface.messages["2"][-1].endswith("⚠ error: the engine failed")


async def test_a_rate_limited_placeholder_is_posted_after_the_wait() -> None:
    from bot.replies.streamed_edits import RateLimited

    class Limited(Surface):
        def __init__(self) -> None:
            super().__init__()
            self.refusals = 2

        async def send(self, text: str) -> str:
            if self.refusals:
                self.refusals -= 1
                raise RateLimited(0.01)
            return await super().send(text)

    surface = Limited()
    reply = PlatformReply(surface)
    await reply.accepted(None)
    reply.delta("fine")
    await reply.finished(Outcome("done", "fine"))
    assert surface.refusals == 0 and surface.messages["1"][-1] == "fine"
