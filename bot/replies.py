"""Reply delivery for chat platforms: splitting long messages and pacing streamed edits.

Platforms cap a message's length (Discord 2000, Telegram 4096 characters) and throttle edits
(about one a second per message), while the engine streams many small deltas a second. Neither
problem depends on the platform, so both are solved here; an adapter implements ``ReplySurface``.

Splitting is greedy: each chunk is as long as the limit allows and is cut at the nicest boundary
in its second half (paragraph, line, sentence, word), else at the nicest one anywhere, else
anywhere. Each platform message is rendered on its own, so a Markdown code fence open at a cut
is closed at the end of the chunk and reopened, with the same info string, at the next one.
Fences follow CommonMark: a line of at most three spaces, three or more backticks and an info
string without backticks opens one; a line of at least as many backticks and nothing else closes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from bot.metrics import METRICS

log = logging.getLogger(__name__)

MIN_LIMIT = 64
CURSOR = " ▌"  # shown after the text while the answer is still being generated
NO_ANSWER = "(no answer)"
BLANK = "…"  # stands in for a whitespace-only message, which platforms reject

FinishState = Literal["done", "stopped", "error"]

_FENCE_LINE = re.compile(r" {0,3}(`{3,})(.*)")
_FENCE_START = re.compile(r" {0,3}```")
_AWKWARD = 9  # rank of a cut that leaves an empty code block or breaks a fence line


class Fence(NamedTuple):
    """An open code fence: the backtick run that opened it and its info string (language)."""

    marker: str
    info: str


def _step(fence: Fence | None, line: str) -> Fence | None:
    """The fence open after ``line`` (given without its newline)."""
    match = _FENCE_LINE.fullmatch(line)
    if match is None:
        return fence
    run, info = match.groups()
    if fence is None:
        return None if "`" in info else Fence(run, info.strip())
    if len(run) >= len(fence.marker) and not info.strip():
        return None
    return fence


def _scan(fence: Fence | None, text: str) -> Fence | None:
    for line in text.split("\n"):
        fence = _step(fence, line)
    return fence


def _reopener(fence: Fence | None, limit: int) -> tuple[str, Fence | None]:
    """The line that reopens ``fence`` at the top of a chunk, and the fence it opens."""
    if fence is None:
        return "", None
    if 2 * len(fence.marker) + len(fence.info) + 2 > limit // 4:
        fence = Fence("```", "")  # an absurdly long fence line would crowd out the text
    return f"{fence.marker}{fence.info}\n", fence


def _closer(fence: Fence | None, before: str) -> str:
    """The text that closes ``fence`` after ``before`` (only its last character matters)."""
    if fence is None:
        return ""
    return fence.marker if before.endswith("\n") else "\n" + fence.marker


@dataclass(frozen=True)
class Chunk:
    """One platform message. ``body`` is a slice of the original text; ``head`` and ``tail`` are
    the fence reopener and closer added around it ("" when none is needed)."""

    head: str
    body: str
    tail: str

    @property
    def text(self) -> str:
        return self.head + self.body + self.tail


def split_chunks(text: str, limit: int) -> list[Chunk]:
    """Split ``text`` into non-empty chunks whose ``text`` is at most ``limit`` characters.

    Exact: ``"".join(c.body for c in chunks) == text`` (whitespace at a cut stays at the end of
    the earlier chunk). Every chunk's fences are balanced. Empty text gives no chunks.
    """
    if limit < MIN_LIMIT:
        raise ValueError(f"message limit must be at least {MIN_LIMIT} characters, got {limit}")
    return [chunk for chunk, _ in _split(text, limit, None)]


def split_message(text: str, limit: int) -> list[str]:
    """The texts of ``split_chunks(text, limit)``: what to post, in order."""
    return [chunk.text for chunk in split_chunks(text, limit)]


def _split(text: str, limit: int, fence: Fence | None) -> list[tuple[Chunk, Fence | None]]:
    """Chunks of ``text``, which starts inside ``fence``, each with the fence open after it."""
    out: list[tuple[Chunk, Fence | None]] = []
    pos = 0
    while pos < len(text):
        head, fence = _reopener(fence, limit)
        size, after = _cut(text[pos:], limit - len(head), fence)
        body = text[pos : pos + size]
        out.append((Chunk(head, body, _closer(after, body)), after))
        pos += size
        fence = after
    return out


def _cut(rest: str, room: int, fence: Fence | None) -> tuple[int, Fence | None]:
    """The length of the next chunk's body (its closer must fit in ``room`` too) and the fence
    open after it."""
    if len(rest) <= room:
        after = _scan(fence, rest)
        if len(rest) + len(_closer(after, rest)) <= room:
            return len(rest), after
    window = _Window(rest, room, fence)
    best, best_rank, best_after = 0, _AWKWARD + 1, fence
    line = len(window.starts) - 1
    for end in range(window.size, 0, -1):
        if end < window.half and best_rank <= 3:
            break  # nothing in the first half beats a boundary in the second
        while window.starts[line] > end:
            line -= 1
        rank = window.rank(end, line)
        if rank >= best_rank:
            continue
        after = window.state_at(end, line)
        if end + len(_closer(after, rest[end - 1])) > room:
            continue
        best, best_rank, best_after = end, rank, after
        if rank == 0:
            break
    assert best > 0, "a one-character body always fits"
    return best, best_after


class _Window:
    """The text one chunk may take, with the fence open at each line start, to choose a cut."""

    def __init__(self, rest: str, room: int, fence: Fence | None) -> None:
        self.rest = rest
        self.size = min(room, len(rest))
        self.half = room // 2
        self.starts: list[int] = []
        self.states: list[Fence | None] = []  # the fence open at the start of each line
        offset = 0
        for line in rest[: self.size].split("\n"):
            self.starts.append(offset)
            self.states.append(fence)
            fence = _step(fence, line)
            offset += len(line) + 1

    def state_at(self, end: int, line: int) -> Fence | None:
        """The fence open after ``rest[:end]``, which ends in (or right before) ``line``."""
        start = self.starts[line]
        if end == start or not _FENCE_START.match(self.rest, start):
            return self.states[line]
        return _step(self.states[line], self.rest[start:end])

    def rank(self, end: int, line: int) -> int:
        """How nice a cut before ``rest[end]`` is, lower is nicer: paragraph, line, sentence,
        word (0-3 in the second half, 4-7 in the first), anywhere (8), awkward (9)."""
        rest, start = self.rest, self.starts[line]
        if end == start:
            before, fence = self.states[line - 1], self.states[line]
            stop = rest.find("\n", start)
            whole = rest[start:] if stop < 0 else rest[start:stop]
            opened = before is None and fence is not None
            closes = fence is not None and _step(fence, whole) is None
            if opened or closes:
                return _AWKWARD  # the cut would leave an empty code block on one side
            kind = 0 if end >= 2 and rest[end - 2] == "\n" else 1
        elif _FENCE_START.match(rest, start):
            return _AWKWARD  # inside a fence line: its halves would mean something else
        elif rest[end - 1] == " ":
            kind = 2 if end >= 2 and rest[end - 2] in ".!?" else 3
        else:
            return 8
        return kind if end >= self.half else kind + 4


def _visible(text: str) -> str:
    return text if text.strip() else BLANK


def _live(chunk: Chunk, after: Fence | None, limit: int) -> str:
    """A chunk still being written, with the cursor; without it where it would not fit or would
    turn a fence line into something else. A fence open at the end is closed after the cursor."""
    live = chunk.head + chunk.body + CURSOR + _closer(after, CURSOR)
    if len(live) > limit or _FENCE_START.match(chunk.body, chunk.body.rfind("\n") + 1):
        return chunk.text
    return live


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
    """

    @property
    def limit(self) -> int:
        """Most characters (code points: leave a margin where the platform counts UTF-16
        units) in one platform message."""

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
                await self._show(_visible(self._status[: self._limit]))
            return
        full = text if final is None else final
        parts = _split(full[self._base :], self._limit, self._fence)
        for index, (chunk, after) in enumerate(parts):
            if index == len(parts) - 1:
                shown = chunk.text if final is not None else _live(chunk, after, self._limit)
                await self._show(_visible(shown))
                return
            await self._show(_visible(chunk.text))
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
