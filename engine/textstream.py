"""Incremental detokenization with stop strings, in constant work per token.

Token pieces arrive as bytes; a multi-byte character may be split across tokens, so bytes go
through an incremental UTF-8 decoder that holds incomplete sequences back. Stop strings may
also be split across tokens: text that could still be the start of a stop string is held back
until it either completes the stop (which ends generation; the stop text is never emitted)
or cannot anymore.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    """Feed token bytes in, get safe-to-show text out. Not thread-safe (one per request)."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stop if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that is now safe to emit (maybe empty).

        After a stop string completes, ``stopped`` is True and later input is ignored.
        """
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(piece)
        if not self._stops:
            self._held = ""
            return text
        cut = self._find_stop(text)
        if cut is not None:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._partial_stop_suffix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """Generation ended for another reason: release anything held back."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _find_stop(self, text: str) -> int | None:
        # Only the held text plus the new piece can contain a new match; both are bounded.
        positions = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        return min(positions) if positions else None

    def _partial_stop_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        for size in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-size:]
            if any(s.startswith(tail) for s in self._stops):
                return size
        return 0
