"""``ReplySink`` for chat platforms: a placeholder message, then paced streamed edits.

Nothing is posted until the chat service accepts the message (a banned user gets no stray
placeholder); then the placeholder shows "…" or the queue position, and the answer streams
into it through ``StreamedReply``. Refusals ("busy", "text only") are plain messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.incoming import Outcome
from bot.metrics import METRICS
from bot.replies.streamed_edits import RateLimited, ReplySurface, StreamedReply, platform_of

log = logging.getLogger(__name__)

PLACEHOLDER = "…"
RESTARTED = "↻ the engine restarted; writing the answer again…"
DROPPED_NOTE = "\n\n(older messages were left out to fit the model's context)"
TYPING_EVERY = 4.0  # seconds; platforms show "typing" for about 5 s per call
# Not at once: the "…" placeholder already shows the bot is on it, the call stays out of the
# burst of work that starts an answer (bot overhead p99 9.1 → 7.8 ms in two A/B pairs), and
# an answer done sooner sends none.
TYPING_AFTER = 1.0  # seconds into the answer


def queued_text(position: int) -> str:
    return f"⏳ queued (#{position})"


class PlatformReply:
    def __init__(
        self,
        surface: ReplySurface,
        *,
        typing: Callable[[], Awaitable[None]] | None = None,
        before_finish: Callable[[], None] | None = None,
        on_done: Callable[[], Awaitable[None]] | None = None,
        typing_after: float = TYPING_AFTER,
    ) -> None:
        """``typing`` shows a typing indicator (from ``typing_after`` seconds into the answer,
        repeated until done); ``before_finish`` runs before the final edits (e.g. to drop a
        Stop button); ``on_done`` after them."""
        self.surface = surface
        self.reply: StreamedReply | None = None
        self.done = asyncio.Event()
        self._started = asyncio.Event()
        self._early: list[str] = []  # deltas that arrived while the placeholder was posted
        self._typing = typing
        self._typing_task: asyncio.Task[None] | None = None
        self._typing_after = typing_after
        self._began = False  # a worker has taken the request
        self._before_finish = before_finish
        self._on_done = on_done
        self._first_id: str | None = None

    def resume_in(self, message_id: str) -> None:
        """Write into ``message_id``, a placeholder an earlier run of the bot posted, as if
        never interrupted (instead of posting a new one when accepted)."""
        self.reply = StreamedReply(self.surface, message_id)
        self._first_id = message_id
        self._started.set()

    def reference(self) -> str | None:
        return self._first_id

    async def accepted(self, position: int | None) -> None:
        placeholder = PLACEHOLDER if position is None else queued_text(position)
        try:
            first = await _send_patiently(self.surface, placeholder)
        except Exception:
            self._started.set()  # finished() must not wait forever; it will fail loudly
            raise
        self.reply = StreamedReply(self.surface, first, first_text=placeholder)
        self._first_id = first
        for text in self._early:
            self.reply.append(text)
        self._early.clear()
        self._started.set()
        if position is None or self._began:
            await self.started()

    async def notice(self, text: str) -> None:
        """A refusal or command result: its own message (nothing was posted before it), with
        nothing to stop (no Stop button)."""
        if self._before_finish is not None:
            self._before_finish()
        await _send_patiently(self.surface, text)
        self.done.set()

    async def queued(self, position: int) -> None:
        if self.reply is not None:
            await self.reply.set_status(queued_text(position))

    async def started(self) -> None:
        """The answer is being written: drop the queue position, soon show "typing" until done.
        (Not while queued: a thousand queued replies would send a thousand typing calls
        every few seconds for nothing.)"""
        self._began = True
        if self.reply is None:
            return  # accepted() comes back here once the placeholder is posted
        await self.reply.set_status(PLACEHOLDER)
        if self._typing is not None and self._typing_task is None:
            self._typing_task = asyncio.create_task(self._keep_typing(self._typing))

    def delta(self, text: str) -> None:
        if self.reply is None:
            self._early.append(text)
        else:
            self.reply.append(text)

    async def restarted(self) -> None:
        if self.reply is None:
            self._early.clear()
        else:
            self.reply.restart(RESTARTED)

    async def finished(self, outcome: Outcome) -> None:
        await self._started.wait()
        if self.reply is None:
            raise RuntimeError("the reply's placeholder could not be posted")
        if not self.reply.text and not self._early:  # nothing streamed here: an answer an
            self.reply.append(outcome.text)  # earlier run wrote, shown from the store
        if outcome.dropped and outcome.state == "done":
            self.reply.append(DROPPED_NOTE)
        if self._before_finish is not None:
            self._before_finish()
        try:
            await self.reply.finish(outcome.state, outcome.error)
        finally:
            if self._typing_task is not None:
                self._typing_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._typing_task
            if self._on_done is not None:
                await self._on_done()
            self.done.set()

    async def _keep_typing(self, typing: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(self._typing_after)
        while True:
            try:
                await typing()
            except Exception as exc:  # a typing indicator is never worth failing a reply
                log.debug("typing indicator failed: %s", exc)
            await asyncio.sleep(TYPING_EVERY)


async def _send_patiently(surface: ReplySurface, text: str, attempts: int = 10) -> str:
    """Post a message, waiting out rate limits (the controller does the same for edits)."""
    for _ in range(attempts - 1):
        try:
            return await surface.send(text)
        except RateLimited as exc:
            METRICS.count("parley_rate_limited_total", platform=platform_of(surface))
            log.info("rate limited posting a reply; retrying in %.1f s", exc.retry_after)
            await asyncio.sleep(max(exc.retry_after, 0.0))
    return await surface.send(text)
