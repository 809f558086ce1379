"""The narrow interface the scheduler needs from an inference backend.

``engine.llama_backend.LlamaBackend`` implements it over llama.cpp; tests implement it with a
scripted fake so the scheduling logic runs with no model and no socket.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.requests import SamplingParams

DECODE_OK = 0
DECODE_NO_ROOM = 1


@dataclass(frozen=True, slots=True)
class BatchEntry:
    token: int
    pos: int
    seq: int
    logits: bool


class Sampler(Protocol):
    def sample(self, batch_index: int) -> int:
        """Sample (and accept) the next token from the logits at ``batch_index``."""

    def accept(self, token: int) -> None:
        """Record a token the sampler did not pick itself (prompt history for penalties)."""

    def close(self) -> None: ...


class Backend(Protocol):
    """A model with a KV cache holding ``n_seq`` sequences. Scheduler-thread only."""

    n_seq: int
    n_ctx_seq: int  # the most tokens one sequence may hold
    kv_cells: int  # cells shared by all sequences when ``unified``
    kv_bytes: int  # memory of the KV cache, for the operator's accounting
    unified: bool
    swa: bool  # sliding-window attention: a saved sequence holds only its last window
    n_swa: int  # that window, in tokens (0 without one)
    can_shift: bool  # positions can be moved (``cut_gap``): RoPE models, a full SWA cache
    n_batch: int
    eog_ids: frozenset[int]

    def decode(self, entries: Sequence[BatchEntry]) -> int:
        """0 on success, 1 when the KV cache has no room, anything else is an error."""

    def make_sampler(self, params: SamplingParams) -> Sampler: ...

    def keep_prefix(self, seq: int, n_tokens: int) -> bool:
        """Drop positions >= n_tokens of ``seq``; False if the cache cannot cut there."""

    def cut_gap(self, seq: int, start: int, end: int, keep_end: int) -> bool:
        """Keep positions < ``start`` and ``[end, keep_end)`` of ``seq``, the latter moved
        back to begin at ``start``; False if the cache cannot (then cut it at ``start``)."""

    def clear(self, seq: int) -> None: ...

    def copy_prefix(self, src: int, dst: int, n_tokens: int) -> None:
        """Make positions < n_tokens of ``src`` part of (empty) ``dst`` too; unified only."""

    def state_size(self, seq: int) -> int:
        """Bytes ``save`` writes for ``seq``'s KV (for the RAM spill cache); 0 if empty."""

    def save(self, seq: int, into: mmap.mmap) -> bool:
        """Copy ``seq``'s KV into ``into`` (``state_size`` bytes); False if it cannot."""

    def restore(self, seq: int, data: mmap.mmap) -> bool:
        """Replace ``seq``'s KV with ``data`` from ``save``; False if there is no room."""

    def piece(self, token: int) -> bytes: ...

    def close(self) -> None: ...
