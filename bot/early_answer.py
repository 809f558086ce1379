"""A message that can start at once asks the engine before it is stored.

Storing the message and its job, then queueing and dispatching it, came first and took about
0.9 ms of the bot's time between a message and its engine request (bench/trace_ingress.py,
p50), while the engine sat idle. An early request reads what the prompt needs (on the loop's
thread, no write), takes an engine slot and sends the request; the message is stored while
the engine reads the prompt, and nothing is shown before it is (bot/service.py). The job then
answers from this request if what was stored matches what was read, else asks again
(``EarlyRequest.matches``). A new user or conversation, which needs writes first, takes the
ordinary path. Update to engine request, p50, later messages of a conversation: 2.35 -> 1.76
ms (two A/B pairs of bench/bot.py's overhead load, 96 messages each).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bot.conversation import FittedConversation, Turn, fit_conversation
from bot.engine_client import Sampling, StreamEnd
from bot.engine_pool import Engine, EnginePool
from bot.incoming import Incoming
from bot.prompt_sizes import PromptSizes
from bot.store import Store
from bot.store_jobs import Begun, Seen, see_conversation

Piece = str | StreamEnd
# Loop turns the caller waits at most for the request to be written before storing the
# message (two when the connection is open: the stream task's first step, then aiohttp's body
# write, a task of its own on Python 3.11); a new connection takes longer, and is not awaited.
REQUEST_TURNS = 20


@dataclass
class EarlyRequest:
    """An engine request under way for a message not yet stored: its slot, its prompt (and
    what that was made of), the stream, and the task reading the stream's first piece."""

    engine: Engine
    fitted: FittedConversation
    conversation_id: int
    history_ids: list[int]
    system: str
    stream: AsyncIterator[Piece]
    first: asyncio.Task[Piece]
    started: asyncio.Event = field(default_factory=asyncio.Event)  # the engine has it

    def matches(self, conversation_id: int, begun: Begun, system: str) -> bool:
        """The stored message's prompt is the one asked for: same conversation, system
        prompt and earlier messages (a /reset, a wipe or a reply stored meanwhile differ)."""
        earlier = [message.id for message in begun.history[:-1]]
        return (conversation_id, earlier, system) == (
            self.conversation_id, self.history_ids, self.system,
        )  # fmt: skip

    def pieces(self) -> AsyncIterator[Piece]:
        """The whole stream, from its first piece."""
        return _from_first(self.first, self.stream)

    async def drop(self, engines: EnginePool) -> None:
        """Close the request and give its slot back: it will not be answered from."""
        await self.discard()
        engines.release(self.engine)

    async def discard(self) -> None:
        """Close the request (the engine frees its sequence); the slot stays leased."""
        self.first.cancel()
        await asyncio.wait([self.first])
        if not self.first.cancelled():
            self.first.exception()  # retrieved: an engine error here is nobody's to report
        with contextlib.suppress(Exception):
            await self.stream.aclose()  # type: ignore[attr-defined]


class Storing:
    """Users whose early-asked message is still being stored: their next message waits for
    it, so messages are stored in the order they came."""

    def __init__(self) -> None:
        self._users: dict[str, asyncio.Event] = {}

    async def wait_turn(self, user: str) -> None:
        while (earlier := self._users.get(user)) is not None:
            await earlier.wait()

    def begin(self, user: str) -> None:
        self._users[user] = asyncio.Event()

    def end(self, user: str) -> None:
        self._users.pop(user).set()


async def ask_early(
    store: Store, engines: EnginePool, sizes: PromptSizes, sampling: Sampling,
    default_system: str, incoming: Incoming, setting: str, storing: Storing, user: str,
) -> EarlyRequest | None:  # fmt: skip
    """Send ``incoming``'s engine request now, on a slot leased for it; None if it cannot go
    early (a new user or conversation, no room, the store busy, a prompt that does not fit):
    the message then takes the ordinary path, which says what went wrong if anything did.
    Until the caller ends it in ``storing``, ``user``'s next message waits."""
    seen = see_conversation(
        store, incoming.platform, incoming.user_id, incoming.user_name, incoming.chat_id, setting
    )
    if seen is None:
        return None
    key = f"conversation-{seen.conversation.id}"
    engine = engines.lease(key)
    if engine is None:
        return None
    storing.begin(user)
    try:
        early = await _ask(engines, engine, sizes, sampling, default_system, incoming, seen)
    except BaseException:
        storing.end(user)
        raise
    if early is None:
        storing.end(user)
    return early


async def _ask(
    engines: EnginePool, engine: Engine, sizes: PromptSizes, sampling: Sampling,
    default_system: str, incoming: Incoming, seen: Seen,
) -> EarlyRequest | None:  # fmt: skip
    """The request for ``seen`` and ``incoming``, on ``engine``'s leased slot (given back when
    there is none)."""
    key = f"conversation-{seen.conversation.id}"
    system = default_system if seen.system_prompt is None else seen.system_prompt
    ids = [message.id for message in seen.history]
    turns = [Turn(m.role, m.content) for m in seen.history] + [Turn("user", incoming.text)]
    try:
        fitted = await fit_conversation(
            system, turns, n_ctx=engine.n_ctx, max_tokens=sampling.max_tokens,
            count_tokens=engine.client.count_tokens, bound=await engines.scaffold_bound(engine),
            known=sizes.known(seen.conversation.id, engine.model, system, ids),
        )  # fmt: skip
    except BaseException as exc:
        engines.release(engine)
        if isinstance(exc, Exception):
            return None
        raise
    started, sent = asyncio.Event(), asyncio.Event()
    stream = engine.client.stream_chat(
        fitted.messages, sampling, cache_key=key, started=started, sent=sent
    )
    first = asyncio.create_task(_first_piece(stream), name=f"parley-early-{key}")
    early = EarlyRequest(engine, fitted, seen.conversation.id, ids, system, stream, first, started)
    try:
        for _ in range(REQUEST_TURNS):  # on the wire before the caller's writes hold the loop
            if sent.is_set() or first.done():
                break
            await asyncio.sleep(0)
    except BaseException:  # cancelled (the bot stopping): nobody will answer from it
        await early.drop(engines)
        raise
    return early


async def _first_piece(stream: AsyncIterator[Piece]) -> Piece:
    return await anext(stream)


async def _from_first(
    first: asyncio.Task[Piece], stream: AsyncIterator[Piece]
) -> AsyncIterator[Piece]:
    yield await first
    async for piece in stream:
        yield piece
