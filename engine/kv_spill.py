"""Idle conversations' KV kept in RAM, so a returning conversation is restored, not recomputed.

The KV cache holds only ``parallel`` sequences, and in a unified cache every idle one makes
each batch attend over its cells. So the scheduler copies an idle sequence out
(``llama_state_seq_get_data``) and frees its cells; when the conversation's next turn arrives
it copies the bytes back (``set_data``), which costs milliseconds where re-evaluating a long
history costs seconds. Entries are keyed by ``prompt_cache_key`` and evicted least recently
used first within a byte budget (``--kv-cache-ram-mb``). Scheduler-thread only.
"""

from __future__ import annotations

import ctypes
import sys
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Spilled:
    tokens: tuple[int, ...]  # the tokens whose KV ``data`` holds, in order
    data: bytearray


class SpillCache:
    """An LRU map from conversation key to its spilled KV, bounded by ``budget_bytes``."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = max(budget_bytes, 0)
        self._entries: OrderedDict[str, Spilled] = OrderedDict()
        self.used_bytes = 0
        self.spills = 0
        self.restores = 0
        self.dropped = 0  # entries evicted to make room (their next turn recomputes)

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def put(self, key: str, tokens: tuple[int, ...], data: bytearray) -> bool:
        """Keep ``data`` for ``key``, evicting older entries; False if it can never fit."""
        self.discard(key)
        if len(data) > self.budget_bytes:
            return False
        while self.used_bytes + len(data) > self.budget_bytes:
            _, oldest = self._entries.popitem(last=False)
            self.used_bytes -= len(oldest.data)
            self.dropped += 1
        self._entries[key] = Spilled(tokens, data)
        self.used_bytes += len(data)
        self.spills += 1
        return True

    def peek(self, key: str | None) -> Spilled | None:
        return self._entries.get(key) if key is not None else None

    def take(self, key: str) -> Spilled | None:
        """Remove and return ``key``'s entry: once restored, the KV cache is its home again."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.used_bytes -= len(entry.data)
            self.restores += 1
        return entry

    def discard(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.used_bytes -= len(entry.data)

    def clear(self) -> None:
        self._entries.clear()
        self.used_bytes = 0


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
SPILL_MAPPED_ABOVE = 1 << 20  # bytes


def map_spills_apart() -> bool:
    """Give every large allocation (a spilled sequence is megabytes) its own mapping, unmapped
    when it is dropped. glibc raises its mmap threshold each time such a block is freed, so
    later spills come from the heap, whose freed holes it rarely returns: the engine's RSS
    then creeps past the spills it holds. False where the C library has no ``mallopt``."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl has no mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, SPILL_MAPPED_ABOVE))
