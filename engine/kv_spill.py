"""Idle conversations' KV kept in RAM, so a returning conversation is restored, not recomputed.

The KV cache holds only ``parallel`` sequences, and in a unified cache every idle one makes
each batch attend over its cells. So the scheduler copies an idle sequence out
(``llama_state_seq_get_data``) and frees its cells; when the conversation's next turn arrives
it copies the bytes back (``set_data``), which costs milliseconds where re-evaluating a long
history costs seconds. Entries are keyed by ``prompt_cache_key`` and evicted least recently
used first within a byte budget (``--kv-cache-ram-mb``). Scheduler-thread only.

Each spill is an anonymous memory mapping of its own, so a dropped one goes straight back to
the OS, and the mapping of the last restored conversation is kept to take the next spill:
filling fresh pages cost 5.6 of the 6.3 ms a 10 MB spill took, reusing mapped ones 0.6 ms.
"""

from __future__ import annotations

import mmap
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Spilled:
    tokens: tuple[int, ...]  # the tokens whose KV ``data`` holds, in order
    data: mmap.mmap


class SpillCache:
    """An LRU map from conversation key to its spilled KV, bounded by ``budget_bytes``.

    ``used_bytes`` counts every mapping it holds, the spare buffer too.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = max(budget_bytes, 0)
        self._entries: OrderedDict[str, Spilled] = OrderedDict()
        self._spare: mmap.mmap | None = None
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

    def buffer(self, size: int) -> mmap.mmap:
        """``size`` bytes to spill into: the spare mapping resized in place, else a new one."""
        spare = self._take_spare()
        if spare is not None:
            try:
                spare.resize(size)  # mremap: the pages it had stay mapped in
                return spare
            except (OSError, SystemError):  # no mremap on this OS
                spare.close()
        # Private: a shared anonymous mapping grown by mremap faults (SIGBUS) past its start size.
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)

    def recycle(self, data: mmap.mmap) -> None:
        """Keep a restored conversation's mapping as the next spill's buffer, if it fits."""
        self._take_spare()
        if self.used_bytes + len(data) <= self.budget_bytes:
            self._spare = data
            self.used_bytes += len(data)

    def put(self, key: str, tokens: tuple[int, ...], data: mmap.mmap) -> bool:
        """Keep ``data`` for ``key``, evicting older entries; False if it can never fit."""
        self.discard(key)
        if len(data) > self.budget_bytes:
            return False
        if self.used_bytes + len(data) > self.budget_bytes:
            self._take_spare()
        while self.used_bytes + len(data) > self.budget_bytes:
            _, oldest = self._entries.popitem(last=False)
            self.used_bytes -= len(oldest.data)
            self.dropped += 1
        self._entries[key] = Spilled(tokens, data)
        self.used_bytes += len(data)
        self.spills += 1
        return True

    def peek(self, key: str | None) -> Spilled | None:
        """``key``'s entry, now the most recently used: the conversation is back, so making
        room for the spills its placement causes drops older ones first."""
        if key is None or key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

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
        self._take_spare()
        self.used_bytes = 0

    def _take_spare(self) -> mmap.mmap | None:
        spare, self._spare = self._spare, None
        if spare is not None:
            self.used_bytes -= len(spare)
        return spare
