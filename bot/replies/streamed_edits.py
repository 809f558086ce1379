"""Reply delivery for chat platforms: streamed edits paced to the platform, long answers split.

Platforms cap a message's length (Discord 2000, Telegram 4096 characters) and throttle edits
(about one a second per message), while the engine streams many small deltas a second. Neither
problem depends on the platform, so both are solved here (the splitting in
``bot.replies.split``); an adapter implements ``ReplySurface``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from bot.metrics import METRICS
from bot.replies.split import (
    MIN_LIMIT,
    Fence,
    Length,
    characters,
    fit,
    live_text,
    split_parts,
    visible,
)

log = logging.getLogger(__name__)

NO_ANSWER = "(no answer)"

FinishState = Literal["done", "stopped", "error"]


def final_text(text: str, state: FinishState, note: str | None = None) -> str:
    """What a finished reply shows: the answer plus how it ended; never empty or blank."""
    if state == "done":
        return text if text.strip() else text + NO_ANSWER
    if state == "stopped":
        tag = f"⏹ {note}" if note else "⏹ stopped"
    elif state == "error":
        tag = f"⚠ error: {note}" if note else "⚠ error"
    else:
        raise ValueError(f"unknown finish state {state!r}")
    return f"{text}\n\n{tag}" if text.strip() else text + tag


def platform_of(surface: object) -> str:
    return str(getattr(surface, "platform", "other"))


class RateLimited(Exception):
    """Raised by a surface when the platform says slow down (HTTP 429 / RetryAfter)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after:g} s")
        self.retry_after = retry_after


class ReplySurface(Protocol):
    """What an adapter implements for one reply (one user message being answered).

    The first message (the placeholder) is created by the adapter before the reply starts.
    A surface may also have ``length``, a ``bot.replies.split.Length``: how the platform
    measures ``limit`` (Telegram: UTF-16 units); without one, characters (code points).
    """

    @property
    def limit(self) -> int:
        """The longest message the platform takes, measured by the surface's ``length``."""

    @property
    def min_edit_interval(self) -> float:
        """Seconds to leave between two edits of one message."""

    async def send(self, text: str) -> str:
        """Post a new message (a continuation after a split); return its id."""

    async def edit(self, message_id: str, text: str) -> None:
        """Replace a message's text; may raise ``RateLimited``."""


class StreamedReply:
    """Turns a stream of text deltas into paced edits of one or more platform messages.

    Not thread-safe: use it from the event loop the adapter runs on. A single background task,
    started by the first ``set_status`` or ``append``, does all sends and edits, so they never
    race; ``finish`` hands it the final text and waits for it, so nothing can arrive after the
    final edit. Always call ``finish`` (with "error" when generation failed), or the task is
    left waiting for deltas.
    """

    def __init__(
        self,
        surface: ReplySurface,
        first_message_id: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        first_text: str | None = None,
    ) -> None:
        """``first_text`` is what the placeholder shows, so an equal status is not re-sent."""
        if surface.limit < MIN_LIMIT:
            raise ValueError(f"message limit must be at least {MIN_LIMIT}, got {surface.limit}")
        self._surface = surface
        self._limit = surface.limit
        self._length: Length = getattr(surface, "length", characters)
        self._clock = clock
        self._sleep = sleep
        self._deltas: list[str] = []
        self._status: str | None = None
        self._final: str | None = None
        # Everything before _base is in finalized messages, which are never edited again.
        self._base = 0
        self._fence: Fence | None = None  # open at _base
        self._message_id: str | None = first_message_id  # None: the next chunk needs a send
        self._last_sent = first_text
        self._last_edit = -math.inf  # when the current message was last sent or edited
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def text(self) -> str:
        """The answer so far, as appended: no status, cursor, fences or end marker."""
        if len(self._deltas) > 1:
            self._deltas[:] = ["".join(self._deltas)]
        return self._deltas[0] if self._deltas else ""

    async def set_status(self, text: str) -> None:
        """Show ``text`` (e.g. "queued (#3)") until the first delta. Returns without waiting
        for the edit, which is paced like any other; a status equal to the last is not sent."""
        if self._final is not None or self._deltas or text == self._status:
            return
        self._status = text
        self._kick()

    def append(self, delta: str) -> None:
        """Add generated text; never blocks or raises (failed edits are logged and retried)."""
        if not delta:
            return
        if self._final is not None:
            log.warning("reply delta after finish() ignored")
            return
        self._deltas.append(delta)
        self._kick()

    def restart(self, status: str) -> None:
        """Drop the answer so far (it is being written again): the current message shows
        ``status`` until new text comes; messages already filled stay as they are."""
        if self._final is None:
            kept = self.text[: self._base]
            self._deltas[:] = [kept] if kept else []
            self._status = status
            self._kick()

    async def finish(self, state: FinishState, note: str | None = None) -> str:
        """Make the final text land (retrying rate limits for as long as it takes) and return
        it: the answer plus how it ended, as ``final_text`` builds it. Errors other than
        ``RateLimited`` from the final send or edit propagate; cancelling stops the task."""
        if self._final is not None:
            raise RuntimeError("finish() was already called for this reply")
        final = final_text(self.text, state, note)
        self._final = final
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pump())
        self._wake.set()
        await self._task
        return final

    def _kick(self) -> None:
        try:
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._pump())
            self._wake.set()
        except RuntimeError:
            log.exception("reply update could not be scheduled (no running event loop)")

    async def _pump(self) -> None:
        """The only writer: wait for news, wait for the pace, show the newest text."""
        while True:
            if self._final is None:
                await self._wake.wait()
            await self._wait_for_pace()
            self._wake.clear()
            finishing = self._final is not None
            try:
                await self._sync()
            except RateLimited as exc:
                METRICS.count("parley_rate_limited_total", platform=platform_of(self._surface))
                log.info("reply update rate limited; retrying in %.1f s", exc.retry_after)
                await self._sleep(max(exc.retry_after, 0.0))
                self._wake.set()
            except Exception:
                if finishing:
                    raise
                log.exception("reply update failed; retrying with the next delta")
            else:
                if finishing:
                    return

    async def _wait_for_pace(self) -> None:
        if self._message_id is None:
            return  # the next call is a send: nothing to pace
        delay = self._last_edit + self._surface.min_edit_interval - self._clock()
        if delay > 0:
            await self._sleep(delay)

    async def _sync(self) -> None:
        """Bring the platform up to date with the newest text; raises what the surface raises.

        State advances only after a call succeeds, so calling again after a failure is safe.
        """
        final, text = self._final, self.text
        if final is None and len(text) <= self._base:
            if self._status is not None:
                status = self._status[: fit(self._status, self._limit, self._length)]
                await self._show(visible(status))
            return
        full = text if final is None else final
        parts = split_parts(full[self._base :], self._limit, self._fence, self._length)
        for index, (chunk, after) in enumerate(parts):
            if index == len(parts) - 1:
                shown = chunk.text
                if final is None:
                    shown = live_text(chunk, after, self._limit, self._length)
                await self._show(visible(shown))
                return
            await self._show(visible(chunk.text))
            self._base += len(chunk.body)
            self._fence = after
            self._message_id = None
            self._last_sent = None

    async def _show(self, text: str) -> None:
        platform = platform_of(self._surface)
        if self._message_id is None:
            METRICS.count("parley_messages_sent_total", platform=platform)
            self._message_id = await self._surface.send(text)
            self._last_edit = self._clock()
            self._last_sent = text
        elif text != self._last_sent:
            self._last_edit = self._clock()  # a refused edit counts too: pace from the attempt
            METRICS.count("parley_edits_sent_total", platform=platform)
            await self._surface.edit(self._message_id, text)
            self._last_sent = text
