"""The RAM spill cache: idle conversations leave the KV cache and come back without recompute."""

from __future__ import annotations

import mmap
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core import EngineCore, Swap
from engine.kv_spill import SpillCache
from tests.engine.fakes import FakeBackend
from tests.engine.test_core import Collector, request, run_all

ROOT = Path(__file__).resolve().parents[2]


def test_spill_cache_evicts_least_recently_spilled_within_its_budget() -> None:
    cache = SpillCache(10)
    assert cache.put("a", (1,), mmap.mmap(-1, 4))
    assert cache.put("b", (2,), mmap.mmap(-1, 4))
    assert cache.put("c", (3,), mmap.mmap(-1, 4))  # 12 > 10: "a" goes
    assert "a" not in cache and "b" in cache and "c" in cache
    assert cache.used_bytes == 8 and cache.dropped == 1
    assert not cache.put("huge", (4,), mmap.mmap(-1, 11))
    taken = cache.take("b")
    assert taken is not None and taken.tokens == (2,)
    assert cache.used_bytes == 4 and len(cache) == 1
    assert not SpillCache(0).enabled


def test_a_conversation_looked_up_to_come_back_is_the_last_one_dropped() -> None:
    cache = SpillCache(8)
    cache.put("a", (1,), mmap.mmap(-1, 4))
    cache.put("b", (2,), mmap.mmap(-1, 4))
    assert cache.peek("a") is not None  # a's next turn is being placed
    cache.put("c", (3,), mmap.mmap(-1, 4))  # spilled to make room for it
    assert "a" in cache and "b" not in cache


def test_an_evicted_conversation_is_restored_from_ram_not_recomputed() -> None:
    backend = FakeBackend(n_seq=1)
    core = EngineCore(backend, spill=SpillCache(1 << 20))
    first = Collector()
    core.submit(request([10, 11, 12, 13], first, key="a", max_tokens=2))
    run_all(core)
    core.submit(request([50, 51, 52], Collector(), key="b", max_tokens=2))  # takes the only slot
    run_all(core)
    assert "a" in core.spill and backend.kv[0][:3] == [50, 51, 52]
    again = Collector()
    before = len(backend.batches)
    core.submit(request([10, 11, 12, 13, 14, 15, 60], again, key="a", max_tokens=1))
    run_all(core)
    assert again.finished.usage.cached_tokens == 5
    assert [e.token for e in backend.batches[before]] == [15, 60]
    assert backend.restores == 1 and "b" in core.spill and "a" not in core.spill


def test_without_a_spill_budget_the_evicted_conversation_is_recomputed() -> None:
    backend = FakeBackend(n_seq=1)
    core = EngineCore(backend)
    core.submit(request([10, 11, 12, 13], Collector(), key="a", max_tokens=2))
    run_all(core)
    core.submit(request([50, 51, 52], Collector(), key="b", max_tokens=2))
    run_all(core)
    again = Collector()
    core.submit(request([10, 11, 12, 13, 14, 15, 60], again, key="a", max_tokens=1))
    run_all(core)
    assert again.finished.usage.cached_tokens == 0 and backend.saves == 0


def test_in_a_unified_cache_idle_sequences_leave_while_another_conversation_runs() -> None:
    backend = FakeBackend(n_seq=4, n_ctx_seq=32, unified=True)
    core = EngineCore(backend, spill=SpillCache(1 << 20))
    core.submit(request([10, 11, 12], Collector(), key="idle", max_tokens=2))
    run_all(core)
    busy = Collector()
    before = len(backend.batches)
    core.submit(request([40, 41, 42], busy, key="busy", max_tokens=4))
    run_all(core)
    busy_seq = backend.batches[before][0].seq
    assert all(seqs == {busy_seq} for seqs in backend.resident[before:])  # attends only itself
    assert "idle" in core.spill
    resident = [tokens for tokens in backend.kv.values() if tokens]
    assert resident == [[40, 41, 42, 43, 44, 45]]  # "busy" stays: nothing else ran after it
    back = Collector()
    core.submit(request([10, 11, 12, 13, 20], back, key="idle", max_tokens=1))
    run_all(core)
    assert back.finished.usage.cached_tokens == 4
    assert back.text == "21 "


def test_a_conversation_alone_keeps_its_sequence_resident_between_turns() -> None:
    backend = FakeBackend(n_seq=2, n_ctx_seq=32, unified=True)
    core = EngineCore(backend, spill=SpillCache(1 << 20))
    for turn in range(3):
        out = Collector()
        prompt = [10 + i for i in range(4 + 3 * turn)]
        core.submit(request(prompt, out, key="solo", max_tokens=2))
        run_all(core)
    assert backend.saves == 0 and backend.restores == 0
    assert out.finished.usage.cached_tokens == 8  # 7 prompt tokens + 1 decoded answer token


def test_outputs_are_identical_with_and_without_the_spill_cache() -> None:
    def chat(spill: SpillCache) -> list[str]:
        backend = FakeBackend(n_seq=2, n_ctx_seq=48, kv_cells=40, unified=True)
        core = EngineCore(backend, spill=spill)
        histories = {key: [start] for key, start in (("a", 100), ("b", 200), ("c", 300))}
        texts = []
        for _ in range(3):  # three conversations round-robin over two slots
            for key, history in histories.items():
                out = Collector()
                history.append(history[-1] + 1)
                core.submit(request(list(history), out, key=key, max_tokens=3))
                run_all(core)
                texts.append(out.text)
                history.extend(int(t) for t in out.text.split())
        return texts

    assert chat(SpillCache(1 << 20)) == chat(SpillCache(0))
    assert chat(SpillCache(30)) == chat(SpillCache(0))  # a budget too small drops entries


def test_a_failed_restore_falls_back_to_recomputing() -> None:
    backend = FakeBackend(n_seq=1)
    core = EngineCore(backend, spill=SpillCache(1 << 20))
    core.submit(request([10, 11, 12], Collector(), key="a", max_tokens=1))
    run_all(core)
    core.submit(request([50, 51], Collector(), key="b", max_tokens=1))
    run_all(core)
    backend.restore = lambda seq, data: False  # type: ignore[method-assign]
    out = Collector()
    core.submit(request([10, 11, 12, 13, 7], out, key="a", max_tokens=1))
    run_all(core)
    assert out.finished.usage.cached_tokens == 0
    assert out.text == "8 "


def test_a_model_swap_forgets_the_spilled_kv() -> None:
    core = EngineCore(FakeBackend(n_seq=1), spill=SpillCache(1 << 20))
    core.submit(request([10, 11], Collector(), key="a", max_tokens=1))
    run_all(core)
    core.submit(request([50, 51], Collector(), key="b", max_tokens=1))
    run_all(core)
    assert len(core.spill) == 1
    core.request_swap(Swap(FakeBackend(n_seq=1), lambda r: list(r.prompt), lambda: None))
    core.submit(request([60], Collector(), max_tokens=1))
    run_all(core)
    assert len(core.spill) == 0


def test_a_sliding_window_conversation_that_diverged_inside_its_spilled_kv_is_recomputed() -> None:
    backend = FakeBackend(n_seq=1, swa=True)
    core = EngineCore(backend, spill=SpillCache(1 << 20))
    core.submit(request([10, 11, 12, 13, 14], Collector(), key="a", max_tokens=2))
    run_all(core)  # "a" holds 10..15 (the last sampled token, 16, was never decoded)
    core.submit(request([50, 51], Collector(), key="b", max_tokens=1))
    run_all(core)
    continued, edited = Collector(), Collector()
    core.submit(request([10, 11, 12, 13, 14, 15, 16, 30], continued, key="a", max_tokens=1))
    run_all(core)
    assert continued.finished.usage.cached_tokens == 6  # continues after its last cell: exact
    core.submit(request([50, 51, 52], Collector(), key="b", max_tokens=1))
    run_all(core)
    restores = backend.restores
    core.submit(request([10, 11, 12, 99], edited, key="a", max_tokens=1))
    run_all(core)
    # cutting 10..17 back to 3 tokens would need cells the saved window no longer has
    assert edited.finished.usage.cached_tokens == 0 and backend.restores == restores


def summing(history: list[int]) -> int:
    """A model whose next token depends on every cached token, so wrong KV shows."""
    return sum(history) % 1000 + 10


def test_a_new_conversation_shares_the_system_prompt_another_sequence_holds() -> None:
    system = list(range(100, 140))

    def answer(shared: bool) -> tuple[str, int]:
        backend = FakeBackend(n_seq=3, n_ctx_seq=64, unified=True, next_token=summing)
        core = EngineCore(backend, spill=SpillCache(1 << 20))
        if shared:
            core.submit(request([*system, 7, 8], Collector(), key="first", max_tokens=2))
            run_all(core)
        out = Collector()
        core.submit(request([*system, 9], out, key="second", max_tokens=4))
        run_all(core)
        return out.text, out.finished.usage.cached_tokens

    alone, cached_alone = answer(shared=False)
    text, cached = answer(shared=True)
    assert text == alone
    assert (cached_alone, cached) == (0, 40)


def test_a_short_shared_prefix_is_not_worth_sharing() -> None:
    backend = FakeBackend(n_seq=2, n_ctx_seq=64, unified=True)
    core = EngineCore(backend, spill=SpillCache(1 << 20))
    core.submit(request([100, 101, 102, 103, 7], Collector(), key="a", max_tokens=1))
    run_all(core)
    out = Collector()
    core.submit(request([100, 101, 102, 103, 9], out, key="b", max_tokens=1))
    run_all(core)
    assert out.finished.usage.cached_tokens == 0


_DROPPING = """
from engine.kv_spill import SpillCache
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
cache = SpillCache(12 << 20)
before = rss_mb()
for i in range(10):  # each spill takes the budget's room: the one before is dropped
    data = cache.buffer((6 << 20) + (1 << 19) * i)  # growing, as a conversation does
    data[:] = bytes([i + 1]) * len(data)
    cache.put(str(i), (i,), data)
    if i % 3 == 2:  # restored: its mapping, grown in place, takes the next spill
        cache.recycle(cache.take(str(i)).data)
print(rss_mb() - before, cache.dropped)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_dropped_spills_give_their_memory_back() -> None:
    """Ten 6-11 MiB spills, each dropping the one before: only the newest stays resident."""
    ran = subprocess.run([sys.executable, "-c", _DROPPING], capture_output=True, text=True,
                         check=True, cwd=ROOT)  # fmt: skip
    grown_mb, dropped = ran.stdout.split()
    assert int(dropped) == 6
    assert float(grown_mb) < 20  # MiB: the kept spill plus the bytes objects that filled it


def test_a_restored_conversations_mapping_takes_the_next_spill() -> None:
    cache = SpillCache(1 << 20)
    first = cache.buffer(4096)
    first[:4] = b"kv-a"
    assert cache.put("a", (1,), first)
    taken = cache.take("a")
    assert taken is not None
    cache.recycle(taken.data)
    assert cache.used_bytes == 4096  # the spare is part of what the cache holds
    grown = cache.buffer(3 * 4096)
    assert grown is first and len(grown) == 3 * 4096  # resized in place, not a new mapping
    assert cache.used_bytes == 0 and cache.buffer(4096) is not first
    cache.recycle(grown)
    assert cache.put("b", (2,), cache.buffer((1 << 20) - 4096))
    assert cache.used_bytes == (1 << 20) - 4096  # room for "b" was made by dropping the spare
    assert cache.dropped == 0


def test_a_restore_first_spills_the_idle_sequences_it_would_land_above() -> None:
    """llama.cpp puts a restored sequence in the first free cells from its search head;
    idle cells still held below or beside it would stay in every batch's attention span."""
    backend = FakeBackend(n_seq=2, n_ctx_seq=32, unified=True)
    core = EngineCore(backend, spill=SpillCache(1 << 20))
    for key in ("a", "b", "c"):  # each runs while the one before idles: only c is left
        core.submit(request([10, 11, 12], Collector(), key=key, max_tokens=2))
        run_all(core)
    back = Collector()
    core.submit(request([10, 11, 12, 13, 20], back, key="a", max_tokens=1))
    run_all(core)
    assert back.finished.usage.cached_tokens == 4  # restored from RAM
    assert backend.held_at_restore == [set()]  # c, idle, had left before a came back


def test_spilling_the_idle_sequences_before_a_restore_cannot_drop_what_is_restored() -> None:
    backend = FakeBackend(n_seq=2, n_ctx_seq=32, unified=True)
    core = EngineCore(backend, spill=SpillCache(30))  # bytes: room for one conversation
    for key in ("a", "b"):  # b runs while a idles: a is spilled; b stays idle
        core.submit(request([10, 11, 12, 13], Collector(), key=key, max_tokens=2))
        run_all(core)
    back = Collector()
    core.submit(request([10, 11, 12, 13, 14, 20], back, key="a", max_tokens=1))
    run_all(core)
    assert back.finished.usage.cached_tokens == 5  # restored, though b's spill took the room
    assert "b" in core.spill and backend.restores == 1


def test_a_restore_keeps_the_idle_slot_of_a_conversation_already_waiting() -> None:
    backend = FakeBackend(n_seq=2, n_ctx_seq=32, unified=True)
    core = EngineCore(backend, spill=SpillCache(1 << 20))
    for key in ("a", "b", "c"):
        core.submit(request([10, 11, 12], Collector(), key=key, max_tokens=2))
        run_all(core)
    saves = backend.saves
    restored, resident = Collector(), Collector()
    core.submit(request([10, 11, 12, 13, 20], restored, key="a", max_tokens=1))
    core.submit(request([10, 11, 12, 13, 30], resident, key="c", max_tokens=1))
    run_all(core)
    assert restored.finished.usage.cached_tokens == 4
    assert resident.finished.usage.cached_tokens == 4  # straight from its slot, not RAM
    assert backend.saves == saves and len(backend.held_at_restore) == 1
