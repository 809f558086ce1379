"""A scripted stand-in for the llama.cpp backend, so the scheduler is tested with no model.

It keeps a real per-sequence KV ledger and checks every batch the way llama.cpp would
(positions must continue the sequence), so scheduling bugs show up as assertion errors.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Callable, Sequence

from engine.backend import DECODE_NO_ROOM, DECODE_OK, BatchEntry
from engine.requests import SamplingParams

NextToken = Callable[[list[int]], int]


def count_up(history: list[int]) -> int:
    """Default model: the next token is the last one plus one (prompts use ids >= 10)."""
    return history[-1] + 1 if history else 10


class FakeSampler:
    def __init__(self, backend: FakeBackend, params: SamplingParams) -> None:
        self.backend = backend
        self.params = params
        self.accepted: list[int] = []
        self.closed = False

    def sample(self, batch_index: int) -> int:
        entry = self.backend.last_batch[batch_index]
        assert entry.logits, "sampled a position without logits"
        token = self.backend.next_token(self.backend.kv[entry.seq])
        self.accepted.append(token)
        return token

    def accept(self, token: int) -> None:
        self.accepted.append(token)

    def close(self) -> None:
        self.closed = True


class FakeBackend:
    def __init__(
        self,
        *,
        n_seq: int = 2,
        n_ctx_seq: int = 64,
        kv_cells: int | None = None,
        unified: bool = False,
        swa: bool = False,
        n_swa: int = 0,
        can_shift: bool = True,
        n_batch: int = 16,
        eog_ids: frozenset[int] = frozenset({1, 2}),
        next_token: NextToken = count_up,
    ) -> None:
        self.n_seq = n_seq
        self.n_ctx_seq = n_ctx_seq
        self.kv_cells = kv_cells if kv_cells is not None else n_seq * n_ctx_seq
        self.unified = unified
        self.swa = swa or n_swa > 0
        self.n_swa = n_swa
        self.can_shift = can_shift
        self.cuts: list[tuple[int, int, int, int]] = []  # (seq, start, end, keep_end)
        self.kv_bytes = self.kv_cells * 64
        self.n_batch = n_batch
        self.eog_ids = eog_ids
        self.next_token = next_token
        self.kv: dict[int, list[int]] = {seq: [] for seq in range(n_seq)}
        self.batches: list[list[BatchEntry]] = []
        self.last_batch: list[BatchEntry] = []
        self.fail_with: int | None = None
        self.samplers: list[FakeSampler] = []
        self.closed = False
        self.saves = 0
        self.resident: list[set[int]] = []  # sequences holding KV at each decode
        self.restores = 0
        self.held_at_restore: list[set[int]] = []  # the other sequences holding KV then

    def decode(self, entries: Sequence[BatchEntry]) -> int:
        assert 0 < len(entries) <= self.n_batch, f"batch of {len(entries)}"
        if self.fail_with is not None:
            status, self.fail_with = self.fail_with, None
            return status
        if self.unified and self.used() + len(entries) > self.kv_cells:
            return DECODE_NO_ROOM
        for entry in entries:
            seq = self.kv[entry.seq]
            assert entry.pos == len(seq), f"seq {entry.seq}: pos {entry.pos} after {len(seq)}"
            assert len(seq) < self.n_ctx_seq, f"seq {entry.seq} overflowed its window"
            seq.append(entry.token)
        self.batches.append(list(entries))
        self.resident.append({seq for seq, tokens in self.kv.items() if tokens})
        self.last_batch = list(entries)
        return DECODE_OK

    def used(self) -> int:
        return sum(len(tokens) for tokens in self.kv.values())

    def make_sampler(self, params: SamplingParams) -> FakeSampler:
        sampler = FakeSampler(self, params)
        self.samplers.append(sampler)
        return sampler

    def keep_prefix(self, seq: int, n_tokens: int) -> bool:
        del self.kv[seq][n_tokens:]
        return True

    def cut_gap(self, seq: int, start: int, end: int, keep_end: int) -> bool:
        if not self.can_shift:
            return False
        tokens = self.kv[seq]
        assert 0 <= start < end <= keep_end <= len(tokens), (start, end, keep_end, len(tokens))
        self.kv[seq] = tokens[:start] + tokens[end:keep_end]
        self.cuts.append((seq, start, end, keep_end))
        return True

    def clear(self, seq: int) -> None:
        self.kv[seq].clear()

    def copy_prefix(self, src: int, dst: int, n_tokens: int) -> None:
        assert self.unified and not self.kv[dst], "llama.cpp shares cells only in one stream"
        self.kv[dst] = self.kv[src][:n_tokens]

    def state_size(self, seq: int) -> int:
        return len(json.dumps(self.kv[seq]).encode())

    def save(self, seq: int, into: mmap.mmap) -> bool:
        self.saves += 1
        into[:] = json.dumps(self.kv[seq]).encode()
        return True

    def restore(self, seq: int, data: mmap.mmap) -> bool:
        tokens = json.loads(data[:])
        self.held_at_restore.append({s for s, held in self.kv.items() if held and s != seq})
        if self.unified and self.used() - len(self.kv[seq]) + len(tokens) > self.kv_cells:
            return False
        self.kv[seq] = tokens
        self.restores += 1
        return True

    def piece(self, token: int) -> bytes:
        return f"{token} ".encode()

    def close(self) -> None:
        self.closed = True
