"""Splitting a reply into platform messages: chunks within the length limit, code fences kept.

Splitting is greedy: each chunk is as long as the limit allows and is cut at the nicest boundary
in its second half (paragraph, line, sentence, word), else at the nicest one anywhere, else
anywhere. Each platform message is rendered on its own, so a Markdown code fence open at a cut
is closed at the end of the chunk and reopened, with the same info string, at the next one.
Fences follow CommonMark: a line of at most three spaces, three or more backticks and an info
string without backticks opens one; a line of at least as many backticks and nothing else closes.

Lengths are measured the way the platform counts them (``Length``): Discord counts characters
(code points, ``characters``), Telegram UTF-16 code units (``utf16_units``: an emoji outside the
BMP is two). The measure is a parameter of every function here, so one splitter serves both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

Length = Callable[[str], int]  # how a platform measures a message's length
MIN_LIMIT = 64  # length units: room for a fence line, its closer and some text
CURSOR = " ▌"  # shown after the text while the answer is still being generated
BLANK = "…"  # stands in for a whitespace-only message, which platforms reject

_FENCE_LINE = re.compile(r" {0,3}(`{3,})(.*)")
_FENCE_START = re.compile(r" {0,3}```")
_AWKWARD = 9  # rank of a cut that leaves an empty code block or breaks a fence line


def characters(text: str) -> int:
    """Length in code points (Discord, terminals)."""
    return len(text)


def utf16_units(text: str) -> int:
    """Length in UTF-16 code units, as Telegram counts it."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def fit(text: str, room: int, length: Length) -> int:
    """The most code points of ``text`` whose length is at most ``room``."""
    if length(text) <= room:
        return len(text)
    low, high = 0, min(len(text), room)  # no measure here counts a code point as less than 1
    while low < high:
        middle = (low + high + 1) // 2
        if length(text[:middle]) <= room:
            low = middle
        else:
            high = middle - 1
    return low


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


def _reopener(fence: Fence | None, limit: int, length: Length) -> tuple[str, Fence | None]:
    """The line that reopens ``fence`` at the top of a chunk, and the fence it opens."""
    if fence is None:
        return "", None
    if 2 * len(fence.marker) + length(fence.info) + 2 > limit // 4:
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


def split_chunks(text: str, limit: int, length: Length = characters) -> list[Chunk]:
    """Split ``text`` into non-empty chunks whose ``text`` has at most ``limit`` ``length``.

    Exact: ``"".join(c.body for c in chunks) == text`` (whitespace at a cut stays at the end of
    the earlier chunk). Every chunk's fences are balanced. Empty text gives no chunks.
    """
    if limit < MIN_LIMIT:
        raise ValueError(f"message limit must be at least {MIN_LIMIT}, got {limit}")
    return [chunk for chunk, _ in split_parts(text, limit, None, length)]


def split_message(text: str, limit: int, length: Length = characters) -> list[str]:
    """The texts of ``split_chunks(text, limit, length)``: what to post, in order."""
    return [chunk.text for chunk in split_chunks(text, limit, length)]


def split_parts(
    text: str, limit: int, fence: Fence | None, length: Length = characters
) -> list[tuple[Chunk, Fence | None]]:
    """Chunks of ``text``, which starts inside ``fence``, each with the fence open after it."""
    out: list[tuple[Chunk, Fence | None]] = []
    pos = 0
    while pos < len(text):
        head, fence = _reopener(fence, limit, length)
        size, after = _cut(text[pos:], limit - length(head), fence, length)
        body = text[pos : pos + size]
        out.append((Chunk(head, body, _closer(after, body)), after))
        pos += size
        fence = after
    return out


def _cut(rest: str, room: int, fence: Fence | None, length: Length) -> tuple[int, Fence | None]:
    """The size (in code points) of the next chunk's body, whose length with its closer fits
    in ``room``, and the fence open after it."""
    size = fit(rest, room, length)
    if size == len(rest):
        after = _scan(fence, rest)
        if length(rest) + len(_closer(after, rest)) <= room:
            return len(rest), after
    window = _Window(rest, size, fit(rest, room // 2, length), fence)
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
        if length(rest[:end]) + len(_closer(after, rest[end - 1])) > room:
            continue
        best, best_rank, best_after = end, rank, after
        if rank == 0:
            break
    assert best > 0, "a one-character body always fits"
    return best, best_after


class _Window:
    """The text one chunk may take, with the fence open at each line start, to choose a cut."""

    def __init__(self, rest: str, size: int, half: int, fence: Fence | None) -> None:
        """``size``: the most code points the chunk may take; ``half``: half of its room."""
        self.rest = rest
        self.size = size
        self.half = half
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


def visible(text: str) -> str:
    return text if text.strip() else BLANK


def live_text(chunk: Chunk, after: Fence | None, limit: int, length: Length = characters) -> str:
    """A chunk still being written, with the cursor; without it where it would not fit or would
    turn a fence line into something else. A fence open at the end is closed after the cursor."""
    live = chunk.head + chunk.body + CURSOR + _closer(after, CURSOR)
    if length(live) > limit or _FENCE_START.match(chunk.body, chunk.body.rfind("\n") + 1):
        return chunk.text
    return live
