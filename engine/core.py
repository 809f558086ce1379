"""The scheduler: continuous batching of many conversations over one KV cache.

One thread owns the backend (the llama context) and calls ``step()``: admit waiting requests
into free slots (reusing each conversation's cached prefix), put one token per generating
sequence plus prompt chunks of starting sequences into one batch, decode once, sample each
sequence with its own sampler, and push text to each request's sink.

Where a request's KV comes from and where idle conversations go (their slot, the RAM spill
cache, eviction) is ``engine.kv_placement``'s job; this module decides what runs when.

Other threads only call ``submit``, ``cancel``, ``request_swap`` and read ``load``: those
append to thread-safe deques and wake the scheduler. Cancellations are handled at the start
of the next step, ahead of queued work, so a cancelled sequence is freed before the next decode.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.backend import DECODE_NO_ROOM, DECODE_OK, Backend, BatchEntry, Sampler
from engine.errors import EngineError
from engine.kv_placement import CACHE_REUSE, KvPlacement
from engine.kv_spill import SpillCache
from engine.requests import (
    FINISH_CANCELLED,
    FINISH_LENGTH,
    FINISH_STOP,
    Delta,
    Failed,
    Finished,
    GenerationRequest,
    Usage,
)
from engine.slots import Slot
from engine.textstream import TextStream

log = logging.getLogger(__name__)

Retokenize = Callable[[GenerationRequest], list[int]]


@dataclass
class Job:
    """A request inside the scheduler: waiting, prefilling, or generating."""

    request: GenerationRequest
    prompt: list[int]  # tokens that must be in the KV before the next sample
    text: TextStream
    sampler: Sampler | None = None
    slot: Slot | None = None
    pending: int | None = None  # sampled, emitted, not yet decoded
    n_generated: int = 0
    n_cached: int = 0
    t_admitted: float = 0.0
    t_first: float | None = None
    prompt_len: int = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_len = len(self.prompt)


@dataclass
class Swap:
    backend: Backend
    retokenize: Retokenize
    activate: Callable[[], None]  # called on the scheduler thread right after the switch


class EngineCore:
    """Continuous-batching scheduler over a ``Backend``. See the module docstring for threads."""

    def __init__(
        self,
        backend: Backend,
        clock: Callable[[], float] = time.perf_counter,
        spill: SpillCache | None = None,
        cache_reuse: int = CACHE_REUSE,
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.cache_reuse = cache_reuse
        self.kv = KvPlacement(
            backend, spill if spill is not None else SpillCache(0), cache_reuse=cache_reuse
        )
        self.waiting: deque[Job] = deque()
        self.running: list[Job] = []  # admission order
        self._inbox: deque[GenerationRequest] = deque()
        self._cancels: deque[int] = deque()
        self._swaps: deque[Swap] = deque()
        self._wake = threading.Event()

    # ---- any thread -------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> None:
        self._inbox.append(request)
        self._wake.set()

    def cancel(self, request_id: int) -> None:
        self._cancels.append(request_id)
        self._wake.set()

    def request_swap(self, swap: Swap) -> None:
        """Stop admitting, let running requests finish, then switch to ``swap.backend``."""
        self._swaps.append(swap)
        self._wake.set()

    @property
    def spill(self) -> SpillCache:
        return self.kv.spill

    @property
    def load(self) -> tuple[int, int, int]:
        """(slots_total, slots_busy, queued) for /health; approximate while it changes."""
        return self.backend.n_seq, len(self.running), len(self.waiting) + len(self._inbox)

    def wait_for_work(self, timeout: float) -> None:
        self._wake.wait(timeout)
        self._wake.clear()

    # ---- scheduler thread -------------------------------------------------------------

    def step(self) -> bool:
        """One iteration. Returns True if it decoded a batch (there may be more to do)."""
        self._take_inbox()
        self._take_cancels()
        self._maybe_swap()
        self._admit()
        if not self.running:
            return False
        self.kv.spill_idle()
        entries = self._build_batch()
        status = self.backend.decode(entries)
        while status == DECODE_NO_ROOM and self._make_room(entries):
            entries = self._build_batch()
            status = self.backend.decode(entries)
        if status != DECODE_OK:
            self._fail_batch(entries, status)
            return True
        self._after_decode(entries)
        return True

    def run(self, stop: threading.Event) -> None:
        """The scheduler thread's loop."""
        while not stop.is_set():
            try:
                worked = self.step()
            except Exception:  # a bug must not kill the thread and hang every client
                log.exception("scheduler step failed; failing running requests")
                for job in list(self.running):
                    self._fail(job, "internal engine error (see the engine log)")
                worked = False
            if not worked:
                self.wait_for_work(0.25)
        for job in list(self.running) + list(self.waiting):
            self._fail(job, "engine is shutting down")

    def _take_inbox(self) -> None:
        while self._inbox:
            request = self._inbox.popleft()
            self.waiting.append(Job(request, list(request.prompt), TextStream(request.params.stop)))

    def _take_cancels(self) -> None:
        while self._cancels:
            request_id = self._cancels.popleft()
            for job in self.waiting:
                if job.request.id == request_id:
                    self.waiting.remove(job)
                    self._finish(job, FINISH_CANCELLED)
                    break
            else:
                for job in self.running:
                    if job.request.id == request_id:
                        self._finish(job, FINISH_CANCELLED)
                        break

    def _admit(self) -> None:
        wanted = {job.request.cache_key for job in self.waiting if job.request.cache_key}
        while self.waiting:
            job = self.waiting[0]
            if self._swaps and job.t_first is None:
                return  # draining for a model swap; only preempted jobs may resume
            reserved = sum(  # cells running requests are about to fill
                1 if other.pending is not None else len(other.prompt) - len(other.slot.tokens)
                for other in self.running
                if other.slot is not None
            )
            placed = self.kv.place(
                job.request.cache_key,
                job.prompt,
                reserved=reserved,
                crowded=bool(self.running),
                wanted=wanted,
            )
            if placed is None:
                return
            self.waiting.popleft()
            slot, reuse = placed.slot, placed.reuse
            job.slot = slot
            job.n_cached = reuse if job.t_first is None else job.n_cached
            job.t_admitted = self.clock() if job.t_first is None else job.t_admitted
            if job.sampler is None:
                try:
                    job.sampler = self.backend.make_sampler(job.request.params)
                except Exception:  # the job left `waiting`: fail it, or its client hangs
                    log.exception(
                        "could not make a sampler for request %s", job.request.id,
                        extra={"request_id": job.request.request_id},
                    )  # fmt: skip
                    self._fail(job, "the engine could not set up sampling for this request")
                    continue
                for token in job.prompt[-max(job.request.params.repeat_last_n, 0) :]:
                    job.sampler.accept(token)
            self.running.append(job)

    def _build_batch(self) -> list[BatchEntry]:
        entries: list[BatchEntry] = []
        for job in self.running:
            if job.pending is not None and job.slot is not None:
                entries.append(BatchEntry(job.pending, len(job.slot.tokens), job.slot.seq, True))
        budget = self.backend.n_batch - len(entries)
        for job in self.running:
            if budget <= 0:
                break
            if job.pending is not None or job.slot is None:
                continue
            start = len(job.slot.tokens)
            chunk = job.prompt[start : start + budget]
            last = start + len(chunk) == len(job.prompt)
            for offset, token in enumerate(chunk):
                is_last = last and offset == len(chunk) - 1
                entries.append(BatchEntry(token, start + offset, job.slot.seq, is_last))
            budget -= len(chunk)
        return entries

    def _make_room(self, entries: list[BatchEntry]) -> bool:
        """After a no-room decode: evict idle KV, else preempt the newest job. True = retry."""
        if self.kv.evict_one_idle():
            return True
        if len(self.running) > 1:
            self._preempt(self.running[-1])
            return True
        if self.running:
            job = self.running[0]
            if job.pending is not None:
                self._finish(job, FINISH_LENGTH)
            else:
                self._fail(job, "the prompt does not fit in the engine's KV cache")
        return False

    def _preempt(self, job: Job) -> None:
        """Give the job's KV back (to RAM if it can) and requeue it first to resume later."""
        assert job.slot is not None
        log.info(
            "KV cache full: preempting request %d", job.request.id,
            extra={"request_id": job.request.request_id},
        )  # fmt: skip
        if job.pending is not None:
            job.prompt = [*job.slot.tokens, job.pending]
            job.pending = None
        self.kv.evict(job.slot)
        job.slot.busy = False
        job.slot = None
        self.running.remove(job)
        self.waiting.appendleft(job)

    def _after_decode(self, entries: list[BatchEntry]) -> None:
        by_seq: dict[int, list[tuple[int, BatchEntry]]] = {}
        for index, entry in enumerate(entries):
            by_seq.setdefault(entry.seq, []).append((index, entry))
        now = self.clock()
        for job in list(self.running):
            assert job.slot is not None and job.sampler is not None
            mine = by_seq.get(job.slot.seq, [])
            job.slot.tokens.extend(entry.token for _, entry in mine)
            job.slot.last_used = now
            sample_at = [index for index, entry in mine if entry.logits]
            if sample_at:
                job.pending = None
                self._on_token(job, job.sampler.sample(sample_at[-1]), now)

    def _on_token(self, job: Job, token: int, now: float) -> None:
        assert job.slot is not None
        if job.t_first is None:
            job.t_first = now
        if token in self.backend.eog_ids:
            self._finish(job, FINISH_STOP)
            return
        job.n_generated += 1
        text = job.text.feed(self.backend.piece(token))
        if text:
            job.request.sink(Delta(text))
        max_tokens = job.request.params.max_tokens
        if job.text.stopped:
            self._finish(job, FINISH_STOP)
        elif max_tokens is not None and job.n_generated >= max_tokens:
            self._finish(job, FINISH_LENGTH)
        elif len(job.slot.tokens) >= self.backend.n_ctx_seq:  # no room for another token
            self._finish(job, FINISH_LENGTH)
        else:
            job.pending = token

    def _finish(self, job: Job, reason: str) -> None:
        now = self.clock()
        tail = job.text.flush()
        if tail:
            job.request.sink(Delta(tail))
        first = job.t_first if job.t_first is not None else now
        usage = Usage(
            prompt_tokens=job.prompt_len,
            completion_tokens=job.n_generated,
            cached_tokens=job.n_cached,
            prompt_ms=(first - job.t_admitted) * 1000 if job.t_admitted else 0.0,
            decode_ms=(now - first) * 1000,
        )
        self._release(job)
        job.request.sink(Finished(reason, usage))

    def _fail(self, job: Job, message: str) -> None:
        if job.slot is not None:
            self.kv.evict(job.slot, spill=False)
        self._release(job)
        job.request.sink(Failed(message))

    def _release(self, job: Job) -> None:
        if job in self.running:
            self.running.remove(job)
        if job in self.waiting:
            self.waiting.remove(job)
        if job.slot is not None:
            job.slot.busy = False
            job.slot.last_used = self.clock()
            job.slot = None
        if job.sampler is not None:
            job.sampler.close()
            job.sampler = None

    def _fail_batch(self, entries: list[BatchEntry], status: int) -> None:
        """A decode error fails only the requests in that batch; their KV is discarded."""
        log.error("llama_decode returned %d for a batch of %d tokens", status, len(entries))
        seqs = {entry.seq for entry in entries}
        for job in list(self.running):
            if job.slot is not None and job.slot.seq in seqs:
                self._fail(job, f"the model failed to decode (llama_decode returned {status})")

    def _maybe_swap(self) -> None:
        if not self._swaps or self.running:
            return
        swap = self._swaps.popleft()
        old = self.backend
        self.backend = swap.backend
        self.kv.spill.clear()  # KV of the old model means nothing to the new one
        self.kv = KvPlacement(swap.backend, self.kv.spill, cache_reuse=self.cache_reuse)
        old.close()
        swap.activate()
        for job in list(self.waiting):
            if job.sampler is not None:  # built for the old model's vocabulary
                job.sampler.close()
                job.sampler = None
            try:
                job.prompt = swap.retokenize(job.request)
                job.prompt_len = len(job.prompt)
            except EngineError as exc:
                self.waiting.remove(job)
                job.request.sink(Failed(str(exc)))
