"""A conversation trimmed at its context limit reuses the cached turns after the cut.

The plan (engine.kv_reuse) is pure; the scheduler runs it over the scripted backend, whose
ledger checks that every batch continues each sequence where its cells end.
"""

from __future__ import annotations

from engine.core import EngineCore
from engine.kv_reuse import Reuse, plan_reuse
from engine.kv_spill import SpillCache
from tests.engine.fakes import FakeBackend
from tests.engine.test_core import Collector, request, run_all
from tests.engine.test_kv_spill import summing

SYSTEM = list(range(100, 110))
TURNS = [list(range(1000 * t, 1000 * t + 20)) for t in range(1, 7)]  # 20 tokens a turn


def flat(*parts: list[int]) -> list[int]:
    return [token for part in parts for token in part]


def test_a_prompt_that_continues_the_cache_reuses_its_prefix_only() -> None:
    cached = flat(SYSTEM, TURNS[0])
    assert plan_reuse(cached, [*cached, 5, 6], min_run=8) == Reuse(len(cached))


def test_turns_cut_after_the_system_prompt_leave_a_gap_and_the_rest_moves_back() -> None:
    cached = flat(SYSTEM, *TURNS[:4])
    prompt = flat(SYSTEM, *TURNS[2:4], TURNS[4])
    plan = plan_reuse(cached, prompt, min_run=8)
    assert plan == Reuse(prefix=10, gap=40, run=40)
    assert plan.tokens == 50 and plan.end == len(cached)


def test_the_shortest_stretch_worth_moving_is_a_setting_and_zero_turns_it_off() -> None:
    cached = flat(SYSTEM, *TURNS[:4])
    prompt = flat(SYSTEM, TURNS[3], TURNS[4])
    assert plan_reuse(cached, prompt, min_run=20).run == 20
    assert plan_reuse(cached, prompt, min_run=21) == Reuse(10)
    assert plan_reuse(cached, prompt, min_run=0) == Reuse(10)


def test_the_last_prompt_token_is_always_evaluated() -> None:
    cached = flat(SYSTEM, *TURNS[:3])
    prompt = flat(SYSTEM, *TURNS[1:3])  # all of it cached, after the gap
    plan = plan_reuse(cached, prompt, min_run=8)
    assert plan.tokens == len(prompt) - 1 and plan.gap == 20


def test_the_longest_of_several_matching_stretches_is_taken() -> None:
    alike = list(range(500, 516))  # two turns open with the same 16 tokens ("Reader 3, ...")
    earlier, kept = alike + TURNS[1][:4], alike + TURNS[2][:4]
    cached = flat(SYSTEM, TURNS[0], earlier, kept)
    plan = plan_reuse(cached, flat(SYSTEM, kept, TURNS[3]), min_run=8)
    assert (plan.gap, plan.run) == (40, 20)


def test_with_a_sliding_window_the_stretch_must_end_the_cache_and_span_the_window() -> None:
    cached = flat(SYSTEM, *TURNS[:4])
    prompt = flat(SYSTEM, *TURNS[2:4], TURNS[4])
    assert plan_reuse(cached, prompt, min_run=8, window=40).run == 40
    assert plan_reuse(cached, prompt, min_run=8, window=41) == Reuse(10)  # shorter than it
    cut_short = flat(SYSTEM, TURNS[2], TURNS[4])  # the stretch ends before the cache does
    assert plan_reuse(cached, cut_short, min_run=8).run == 20
    assert plan_reuse(cached, cut_short, min_run=8, window=8) == Reuse(10)


def answer_both_ways(**backend: object) -> tuple[list[Collector], list[Collector], FakeBackend]:
    """One conversation trimmed twice, with cache reuse past the gap and without."""
    runs: list[list[Collector]] = []
    backends = []
    for cache_reuse in (16, 0):
        fake = FakeBackend(n_seq=2, n_ctx_seq=128, next_token=summing, **backend)  # type: ignore[arg-type]
        core = EngineCore(fake, spill=SpillCache(1 << 20), cache_reuse=cache_reuse)
        outs = []
        for prompt in (
            flat(SYSTEM, *TURNS[:4]),
            flat(SYSTEM, *TURNS[2:4], TURNS[4]),  # the first two turns trimmed
            flat(SYSTEM, *TURNS[2:5], TURNS[5]),  # continues the trimmed prompt
        ):
            out = Collector()
            outs.append(out)
            core.submit(request(prompt, out, key="c", max_tokens=3, temperature=0))
            run_all(core)
        runs.append(outs)
        backends.append(fake)
    return runs[0], runs[1], backends[0]


def test_a_trimmed_conversation_evaluates_only_its_new_turn_and_answers_the_same() -> None:
    moved, recomputed, backend = answer_both_ways()
    assert [o.finished.usage.cached_tokens for o in recomputed] == [0, 10, 70]
    # turn 2: the system prompt, and turns 3-4 moved back past the gap
    assert [o.finished.usage.cached_tokens for o in moved] == [0, 50, 70]
    assert backend.cuts == [(0, 10, 50, 90)]
    assert [o.text for o in moved] == [o.text for o in recomputed]


def test_a_trimmed_conversation_restored_from_ram_is_cut_after_the_restore() -> None:
    backend = FakeBackend(n_seq=2, n_ctx_seq=128, unified=True)
    core = EngineCore(backend, spill=SpillCache(1 << 20), cache_reuse=16)
    core.submit(request(flat(SYSTEM, *TURNS[:4]), Collector(), key="a", max_tokens=2))
    core.submit(request([50, 51, 52], Collector(), key="b", max_tokens=8))
    run_all(core)  # "a" finished first and left for RAM while "b" ran
    assert "a" in core.spill
    out = Collector()
    core.submit(request(flat(SYSTEM, *TURNS[2:4], TURNS[4]), out, key="a", max_tokens=1))
    run_all(core)
    assert backend.restores == 1 and out.finished.usage.cached_tokens == 50


def test_cells_another_sequence_shares_are_not_moved() -> None:
    backend = FakeBackend(n_seq=3, n_ctx_seq=128, unified=True)
    core = EngineCore(backend, cache_reuse=16)  # no RAM cache: idle sequences stay resident
    core.submit(request(flat(SYSTEM, *TURNS[:4]), Collector(), key="a", max_tokens=1))
    run_all(core)
    core.submit(request(flat(SYSTEM, *TURNS[:3], [5]), Collector(), key="b", max_tokens=1))
    run_all(core)  # "b" shares "a"'s cells through turn 3
    out = Collector()
    core.submit(request(flat(SYSTEM, *TURNS[2:4], TURNS[4]), out, key="a", max_tokens=1))
    run_all(core)
    assert backend.cuts == [] and out.finished.usage.cached_tokens == 10


def test_a_cache_that_cannot_move_positions_keeps_the_prefix_only() -> None:
    backend = FakeBackend(n_seq=1, n_ctx_seq=128, can_shift=False)
    core = EngineCore(backend, cache_reuse=16)
    core.submit(request(flat(SYSTEM, *TURNS[:4]), Collector(), key="a", max_tokens=1))
    run_all(core)
    out = Collector()
    core.submit(request(flat(SYSTEM, *TURNS[2:4], TURNS[4]), out, key="a", max_tokens=1))
    run_all(core)
    assert out.finished.usage.cached_tokens == 10
