"""Token ids of recently seen prompt segments, so a conversation's history is not
re-tokenized on every turn.

A chat request carries the whole history, and the template splits it into segments that are
tokenized one by one (``Model.tokenize_segments``), so a message's tokens never depend on its
neighbours: caching them per segment changes nothing but the time. On the demo model a
1,200-token history took 3.6 ms to tokenize, on a request's critical path, growing each turn.
Bounded by bytes, least recently used out first; shared by the request threads.
"""

from __future__ import annotations

import sys
from array import array
from collections import OrderedDict
from threading import Lock

ENTRY_OVERHEAD = 200  # bytes: the key tuple, the array object and the dict slot


class TokenCache:
    def __init__(self, budget_bytes: int = 16 << 20) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, bool], array[int]] = OrderedDict()
        self._lock = Lock()

    def get(self, text: str, special: bool) -> array[int] | None:
        with self._lock:
            tokens = self._entries.get((text, special))
            if tokens is None:
                self.misses += 1
                return None
            self._entries.move_to_end((text, special))
            self.hits += 1
            return tokens

    def put(self, text: str, special: bool, tokens: list[int]) -> None:
        """Keep ``tokens`` for ``text``; one entry bigger than an eighth of the budget is not."""
        ids = array("i", tokens)
        size = _size(text, ids)
        if size > self.budget_bytes // 8:
            return
        with self._lock:
            old = self._entries.pop((text, special), None)
            if old is not None:
                self.used_bytes -= _size(text, old)
            while self._entries and self.used_bytes + size > self.budget_bytes:
                (old_text, _), old_ids = self._entries.popitem(last=False)
                self.used_bytes -= _size(old_text, old_ids)
            self._entries[(text, special)] = ids
            self.used_bytes += size

    def __len__(self) -> int:
        return len(self._entries)


def _size(text: str, ids: array[int]) -> int:
    return sys.getsizeof(text) + ids.itemsize * len(ids) + ENTRY_OVERHEAD
