"""Which KV sequence serves a request: prefix reuse and LRU eviction, as pure bookkeeping.

Each slot mirrors one llama.cpp sequence: the tokens whose KV it holds, the conversation
(``prompt_cache_key``) that put them there, and when it was last used. Idle slots keep their
KV so the conversation's next turn only evaluates new tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field


@dataclass
class Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)
    cache_key: str | None = None
    last_used: float = 0.0
    busy: bool = False


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SlotTable:
    """Slot choice and KV accounting. Scheduler-thread only."""

    def __init__(self, n_seq: int) -> None:
        self.slots = [Slot(i) for i in range(n_seq)]

    def choose(self, cache_key: str | None, prompt: Sequence[int]) -> Slot | None:
        """The idle slot that best serves ``prompt``; None when every slot is busy.

        Same conversation first; then an empty slot (nothing evicted); then the slot sharing
        the longest prefix (e.g. a common system prompt), least recently used on ties.
        """
        idle = [s for s in self.slots if not s.busy]
        if not idle:
            return None
        if cache_key is not None:
            for slot in idle:
                if slot.cache_key == cache_key:
                    return slot
        for slot in idle:
            if not slot.tokens:
                return slot
        return max(idle, key=lambda s: (common_prefix(s.tokens, prompt), -s.last_used))

    def used_cells(self) -> int:
        return sum(len(s.tokens) for s in self.slots)

    def eviction_order(self, keep: Slot | None = None) -> Iterator[Slot]:
        """Idle slots holding KV, least recently used first."""
        idle = [s for s in self.slots if not s.busy and s.tokens and s is not keep]
        yield from sorted(idle, key=lambda s: s.last_used)

    def busy_count(self) -> int:
        return sum(1 for s in self.slots if s.busy)

    def reset(self) -> None:
        for slot in self.slots:
            slot.tokens.clear()
            slot.cache_key = None
            slot.busy = False
