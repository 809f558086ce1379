"""``Backend`` over llama.cpp's low-level API: one context, ``n_seq`` sequences, one batch.

Scheduler-thread only, except construction (a model swap builds the next backend on a
loader thread while the old one keeps serving).
"""

from __future__ import annotations

import ctypes
import logging
import math
import mmap
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp as ll

from engine.backend import BatchEntry
from engine.errors import ModelLoadError
from engine.model import Model, meta_string
from engine.requests import SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContextConfig:
    """How big a context to build. ``n_ctx`` is per sequence (what one conversation may use)."""

    n_ctx: int = 4096
    parallel: int = 8
    n_batch: int = 512
    threads: int | None = None
    kv_unified: bool = True
    flash_attn: str = "auto"  # auto | on | off


FLASH_ATTN = {
    "auto": ll.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": ll.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": ll.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


def default_threads() -> int:
    """All cores this process may use: decode on CPU is memory-bound and scales to them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def kv_bytes_per_cell(model: Model) -> int:
    """K and V of one token across all layers, in f16 (llama.cpp's default cache type)."""
    arch = model.info.architecture
    n_head = max(ll.llama_model_n_head(model.ptr), 1)
    head_dim = ll.llama_model_n_embd(model.ptr) // n_head
    key = int(meta_string(model.ptr, f"{arch}.attention.key_length") or head_dim)
    value = int(meta_string(model.ptr, f"{arch}.attention.value_length") or head_dim)
    n_head_kv = int(ll.llama_model_n_head_kv(model.ptr))
    return int(ll.llama_model_n_layer(model.ptr)) * n_head_kv * (key + value) * 2


class LlamaSampler:
    """A llama.cpp sampler chain for one request."""

    def __init__(self, backend: LlamaBackend, params: SamplingParams) -> None:
        self._ctx = backend.ctx
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if params.logit_bias:
            biases = (ll.llama_logit_bias * len(params.logit_bias))()
            for i, (token, bias) in enumerate(params.logit_bias):
                biases[i] = ll.llama_logit_bias(token, -math.inf if bias <= -100 else bias)
            ll.llama_sampler_chain_add(
                chain,
                ll.llama_sampler_init_logit_bias(backend.n_vocab, len(biases), biases),
            )
        penalize = (
            params.repeat_penalty != 1.0
            or params.frequency_penalty != 0.0
            or params.presence_penalty != 0.0
        )
        # -1 means the whole context (llama.cpp's CLI and Parley's settings say so), but the
        # sampler itself clamps a negative window to 0: penalties would silently be off.
        window = backend.n_ctx_seq if params.repeat_last_n < 0 else params.repeat_last_n
        if penalize and window != 0:
            ll.llama_sampler_chain_add(
                chain,
                ll.llama_sampler_init_penalties(
                    backend.n_vocab,
                    window,
                    params.repeat_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                ),
            )
        if params.temperature <= 0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_min_p(params.min_p, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(params.temperature))
            seed = params.seed if params.seed is not None else random.getrandbits(32)
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        self._chain = chain

    def sample(self, batch_index: int) -> int:
        return int(ll.llama_sampler_sample(self._chain, self._ctx, batch_index))

    def accept(self, token: int) -> None:
        ll.llama_sampler_accept(self._chain, token)

    def close(self) -> None:
        if self._chain:
            ll.llama_sampler_free(self._chain)
            self._chain = None


class LlamaBackend:
    """A llama.cpp context over ``model`` with ``parallel`` sequences."""

    def __init__(self, model: Model, config: ContextConfig) -> None:
        self.model = model
        self.n_seq = config.parallel
        self.n_ctx_seq = min(config.n_ctx, model.info.n_ctx_train or config.n_ctx)
        self.unified = config.kv_unified
        self.swa = model.info.sliding_window > 0
        self.n_swa = model.info.sliding_window
        self.n_batch = config.n_batch
        self.eog_ids = model.eog_ids
        self.n_vocab = model.n_vocab
        threads = config.threads or default_threads()
        params = ll.llama_context_default_params()
        params.n_ctx = self.n_ctx_seq * self.n_seq
        params.n_batch = params.n_ubatch = config.n_batch
        params.n_seq_max = self.n_seq
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = config.kv_unified
        # Sliding-window models (Gemma 3) can only cut a sequence back to a shared prefix
        # when the full window is kept; otherwise every turn re-evaluates the whole prompt.
        params.swa_full = model.info.sliding_window > 0
        params.no_perf = True
        params.flash_attn_type = FLASH_ATTN[config.flash_attn]
        self.ctx = ll.llama_init_from_model(model.ptr, params)
        if not self.ctx:
            raise ModelLoadError(
                f"could not create a context of {params.n_ctx} tokens for {model.info.name}; "
                "lower --n-ctx or --parallel"
            )
        self.kv_cells = ll.llama_n_ctx(self.ctx)
        self.kv_bytes = self.kv_cells * kv_bytes_per_cell(model)
        self.memory = ll.llama_get_memory(self.ctx)
        self.can_shift = bool(ll.llama_memory_can_shift(self.memory))
        self._batch = ll.llama_batch_init(config.n_batch, 0, 1)
        log.info(
            "context: %d sequences x %d tokens (%d KV cells, %.0f MiB, %s), batch %d, %d threads",
            self.n_seq, self.n_ctx_seq, self.kv_cells, self.kv_bytes / 2**20,
            "unified" if self.unified else "split", config.n_batch, threads,
        )  # fmt: skip

    def decode(self, entries: Sequence[BatchEntry]) -> int:
        batch = self._batch
        token, pos, seq_id, logits, n_seq_id = (
            batch.token, batch.pos, batch.seq_id, batch.logits, batch.n_seq_id
        )  # fmt: skip
        for i, entry in enumerate(entries):
            token[i] = entry.token
            pos[i] = entry.pos
            n_seq_id[i] = 1
            seq_id[i][0] = entry.seq
            logits[i] = entry.logits
        batch.n_tokens = len(entries)
        return int(ll.llama_decode(self.ctx, batch))

    def make_sampler(self, params: SamplingParams) -> LlamaSampler:
        return LlamaSampler(self, params)

    def keep_prefix(self, seq: int, n_tokens: int) -> bool:
        return bool(ll.llama_memory_seq_rm(self.memory, seq, n_tokens, -1))

    def cut_gap(self, seq: int, start: int, end: int, keep_end: int) -> bool:
        # The tail goes first: if the gap cannot go (a recurrent model), the caller's cut at
        # ``start`` leaves the sequence consistent. The move is applied at the next decode,
        # before anything reads or saves these cells (llama_decode updates memory first).
        if not self.can_shift:
            return False
        if not ll.llama_memory_seq_rm(self.memory, seq, keep_end, -1):
            return False
        if not ll.llama_memory_seq_rm(self.memory, seq, start, end):
            return False
        ll.llama_memory_seq_add(self.memory, seq, end, keep_end, start - end)
        return True

    def clear(self, seq: int) -> None:
        ll.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def copy_prefix(self, src: int, dst: int, n_tokens: int) -> None:
        ll.llama_memory_seq_cp(self.memory, src, dst, 0, n_tokens)

    def state_size(self, seq: int) -> int:
        return int(ll.llama_state_seq_get_size(self.ctx, seq))

    def save(self, seq: int, into: mmap.mmap) -> bool:
        size = len(into)
        view = (ctypes.c_uint8 * size).from_buffer(into)
        written = ll.llama_state_seq_get_data(self.ctx, view, size, seq)
        del view  # a live ctypes view would stop the mapping from being resized or closed
        return bool(written == size)

    def restore(self, seq: int, data: mmap.mmap) -> bool:
        view = (ctypes.c_uint8 * len(data)).from_buffer(data)
        read = ll.llama_state_seq_set_data(self.ctx, view, len(data), seq)
        del view
        return bool(read)

    def piece(self, token: int) -> bytes:
        return self.model.piece(token)

    def close(self) -> None:
        if self.ctx:
            ll.llama_batch_free(self._batch)
            ll.llama_free(self.ctx)
            self.ctx = None
