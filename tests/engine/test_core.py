"""The scheduler, stepped in-process over a scripted backend: no model, no socket."""

from __future__ import annotations

from engine.core import EngineCore, Swap
from engine.requests import (
    Delta,
    Event,
    Failed,
    Finished,
    GenerationRequest,
    SamplingParams,
)
from tests.engine.fakes import FakeBackend, FakeSampler


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, Delta))

    @property
    def final(self) -> Finished | Failed | None:
        last = self.events[-1] if self.events else None
        return last if isinstance(last, Finished | Failed) else None

    @property
    def finished(self) -> Finished:
        assert isinstance(self.final, Finished), self.events
        return self.final


def request(
    prompt: list[int], sink: Collector, key: str | None = None, **params: object
) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        params=SamplingParams(**params),
        sink=sink,
        cache_key=key,  # type: ignore[arg-type]
    )


def run_all(core: EngineCore, limit: int = 1000) -> int:
    steps = 0
    while core.step():
        steps += 1
        assert steps < limit, "scheduler did not finish"
    return steps


def test_a_request_streams_its_tokens_and_stops_at_max_tokens() -> None:
    backend = FakeBackend()
    core = EngineCore(backend)
    out = Collector()
    core.submit(request([10, 11, 12], out, max_tokens=3))
    run_all(core)
    assert out.text == "13 14 15 "
    assert out.finished.reason == "length"
    assert out.finished.usage.prompt_tokens == 3
    assert out.finished.usage.completion_tokens == 3
    assert backend.samplers[0].closed


def test_two_requests_are_decoded_in_the_same_batches() -> None:
    backend = FakeBackend(n_seq=2)
    core = EngineCore(backend)
    a, b = Collector(), Collector()
    core.submit(request([10, 11], a, max_tokens=5))
    core.submit(request([20, 21, 22], b, max_tokens=5))
    core.step()  # both prompts prefill in one batch
    assert {e.seq for e in backend.batches[0]} == {0, 1}
    core.step()
    assert a.text and b.text and a.final is None and b.final is None
    run_all(core)
    assert a.text == "12 13 14 15 16 " and b.text == "23 24 25 26 27 "
    assert all(len({e.seq for e in batch}) == 2 for batch in backend.batches)


def test_requests_beyond_the_slots_wait_then_run() -> None:
    core = EngineCore(FakeBackend(n_seq=1))
    a, b = Collector(), Collector()
    core.submit(request([10], a, max_tokens=2))
    core.submit(request([50], b, max_tokens=2))
    core.step()
    assert core.load == (1, 1, 1)
    run_all(core)
    assert a.finished and b.text == "51 52 "


def test_a_follow_up_turn_reuses_the_cached_prefix() -> None:
    backend = FakeBackend()
    core = EngineCore(backend)
    first = Collector()
    core.submit(request([10, 11, 12, 13], first, key="conv", max_tokens=2))
    run_all(core)
    seq = next(s for s, tokens in backend.kv.items() if tokens)
    cached = list(backend.kv[seq])
    assert cached == [10, 11, 12, 13, 14]  # the last sampled token was never decoded
    follow = Collector()
    before = len(backend.batches)
    core.submit(request([*cached, 15, 40, 41], follow, key="conv", max_tokens=1))
    run_all(core)
    assert follow.finished.usage.cached_tokens == 5
    prefill = backend.batches[before]
    assert [e.token for e in prefill] == [15, 40, 41]
    assert prefill[0].pos == 5


def test_a_divergent_prompt_keeps_only_the_common_prefix() -> None:
    backend = FakeBackend(n_seq=1)
    core = EngineCore(backend)
    core.submit(request([10, 11, 12, 13], Collector(), key="c", max_tokens=1))
    run_all(core)
    out = Collector()
    core.submit(request([10, 11, 99], out, key="c", max_tokens=1))
    run_all(core)
    assert out.finished.usage.cached_tokens == 2
    assert backend.kv[0] == [10, 11, 99]


def test_identical_prompt_still_evaluates_its_last_token() -> None:
    backend = FakeBackend(n_seq=1)
    core = EngineCore(backend)
    core.submit(request([10, 11, 12], Collector(), key="c", max_tokens=1))
    run_all(core)
    out = Collector()
    core.submit(request([10, 11, 12], out, key="c", max_tokens=1))
    run_all(core)
    assert out.finished.usage.cached_tokens == 2
    assert out.text == "13 "


def test_least_recently_used_conversation_is_evicted_first() -> None:
    backend = FakeBackend(n_seq=2)
    core = EngineCore(backend, clock=iter(range(10_000)).__next__)
    for key, start in (("a", 100), ("b", 200)):
        core.submit(request([start, start + 1], Collector(), key=key, max_tokens=1))
        run_all(core)
    core.submit(request([300, 301], Collector(), key="c", max_tokens=1))
    run_all(core)
    again_a, again_b = Collector(), Collector()
    core.submit(request([200, 201, 5], again_b, key="b", max_tokens=1))
    run_all(core)
    core.submit(request([100, 101, 5], again_a, key="a", max_tokens=1))
    run_all(core)
    assert again_b.finished.usage.cached_tokens == 2  # "b" stayed resident
    assert again_a.finished.usage.cached_tokens == 0  # "a" was least recently used


def test_every_end_of_generation_id_stops_without_leaking_text() -> None:
    for eog in (1, 2, 3):
        script = {12: eog}
        backend = FakeBackend(
            eog_ids=frozenset({1, 2, 3}), next_token=lambda h, s=script: s.get(h[-1], h[-1] + 1)
        )
        core = EngineCore(backend)
        out = Collector()
        core.submit(request([10], out, max_tokens=50))
        run_all(core)
        assert out.text == "11 12 "
        assert out.finished.reason == "stop"
        assert out.finished.usage.completion_tokens == 2


def test_a_stop_string_split_across_tokens_stops_and_is_not_emitted() -> None:
    core = EngineCore(FakeBackend())
    out = Collector()
    core.submit(request([10], out, max_tokens=50, stop=("13 1",)))
    run_all(core)
    assert out.text == "11 12 "
    assert out.finished.reason == "stop"


def test_held_back_partial_stop_is_released_when_generation_ends() -> None:
    core = EngineCore(FakeBackend())
    out = Collector()
    core.submit(request([10], out, max_tokens=3, stop=("13 X",)))
    run_all(core)
    assert out.text == "11 12 13 "
    assert out.finished.reason == "length"


def test_generation_that_fills_the_context_window_ends_with_length() -> None:
    backend = FakeBackend(n_ctx_seq=8)
    core = EngineCore(backend)
    out = Collector()
    core.submit(request([10, 11, 12, 13, 14], out))
    run_all(core)
    assert out.finished.reason == "length"
    assert out.finished.usage.completion_tokens == 4
    assert max(len(t) for t in backend.kv.values()) == 8


def test_cancelling_a_waiting_request_finishes_it_without_decoding() -> None:
    backend = FakeBackend(n_seq=1)
    core = EngineCore(backend)
    a, b = Collector(), Collector()
    core.submit(request([10], a, max_tokens=20))
    core.submit(rb := request([500], b, max_tokens=20))
    core.step()
    core.cancel(rb.id)
    core.step()
    assert b.finished.reason == "cancelled" and b.text == ""
    run_all(core)
    assert all(e.token < 500 for batch in backend.batches for e in batch)


def test_cancelling_a_running_request_frees_its_slot_before_the_next_decode() -> None:
    backend = FakeBackend(n_seq=2)
    core = EngineCore(backend)
    a, b = Collector(), Collector()
    core.submit(ra := request([10], a, max_tokens=100))
    core.submit(request([500], b, max_tokens=5))
    core.step()
    core.step()
    core.cancel(ra.id)
    batches_before = len(backend.batches)
    core.step()
    assert a.finished.reason == "cancelled"
    assert core.load[1] == 1
    assert all(e.seq != 0 for batch in backend.batches[batches_before:] for e in batch)
    run_all(core)
    assert b.finished.reason == "length"


def test_a_full_shared_cache_preempts_the_newest_request_and_resumes_it_exactly() -> None:
    alone = {}
    for start in (10, 500):
        core = EngineCore(FakeBackend(n_seq=2, n_ctx_seq=64))
        out = Collector()
        core.submit(request([start, start + 1, start + 2], out, max_tokens=12))
        run_all(core)
        alone[start] = out.text
    backend = FakeBackend(n_seq=2, n_ctx_seq=32, kv_cells=20, unified=True)
    core = EngineCore(backend)
    a, b = Collector(), Collector()
    core.submit(request([10, 11, 12], a, max_tokens=12))
    core.submit(request([500, 501, 502], b, max_tokens=12))
    run_all(core)
    assert a.text == alone[10] and b.text == alone[500]
    assert a.finished.reason == b.finished.reason == "length"
    assert backend.used() <= 20


def test_idle_cached_sequences_are_evicted_when_the_shared_cache_is_full() -> None:
    backend = FakeBackend(n_seq=3, n_ctx_seq=32, kv_cells=24, unified=True)
    core = EngineCore(backend)
    core.submit(request(list(range(100, 110)), Collector(), key="idle", max_tokens=1))
    run_all(core)
    a, b = Collector(), Collector()
    core.submit(request([10, 11, 12], a, max_tokens=8))
    core.submit(request([500, 501, 502], b, max_tokens=8))
    run_all(core)
    assert a.finished.reason == b.finished.reason == "length"
    assert a.text == "13 14 15 16 17 18 19 20 "


def test_a_decode_error_fails_only_the_requests_in_that_batch() -> None:
    backend = FakeBackend()
    core = EngineCore(backend)
    a = Collector()
    core.submit(request([10], a, max_tokens=5))
    backend.fail_with = -3
    core.step()
    assert isinstance(a.final, Failed) and "-3" in a.final.message
    b = Collector()
    core.submit(request([10], b, max_tokens=2))
    run_all(core)
    assert b.text == "11 12 "


def test_a_sampler_that_cannot_be_made_fails_only_its_request() -> None:
    """Not a hang: the request has left the waiting queue when its sampler is made."""
    backend = FakeBackend(n_seq=1)
    core = EngineCore(backend)
    broken, fine = Collector(), Collector()
    real = backend.make_sampler

    def make_sampler(params: SamplingParams) -> FakeSampler:
        if params.seed == 666:
            raise ValueError("bad sampler")
        return real(params)

    backend.make_sampler = make_sampler  # type: ignore[method-assign]
    core.submit(request([10], broken, max_tokens=2, seed=666))
    core.submit(request([10], fine, max_tokens=2))
    run_all(core)
    assert isinstance(broken.final, Failed) and "sampling" in broken.final.message
    assert fine.text == "11 12 "  # the only slot was given back


def test_the_sampler_sees_the_prompt_for_repeat_penalties() -> None:
    backend = FakeBackend()
    core = EngineCore(backend)
    core.submit(request(list(range(10, 30)), Collector(), max_tokens=1, repeat_last_n=4))
    run_all(core)
    assert backend.samplers[0].accepted[:4] == [26, 27, 28, 29]


def test_a_model_swap_drains_running_requests_then_serves_the_queue_with_the_new_model() -> None:
    old, new = FakeBackend(n_seq=2), FakeBackend(n_seq=2)
    core = EngineCore(old)
    running, queued = Collector(), Collector()
    core.submit(request([10], running, max_tokens=4))
    core.step()
    switched: list[bool] = []
    core.request_swap(Swap(new, lambda req: [700, 701], lambda: switched.append(True)))
    core.submit(request([10], queued, max_tokens=2))
    run_all(core)
    assert running.text == "11 12 13 14 "
    assert switched == [True] and old.closed
    assert queued.text == "702 703 "
    assert all(e.token < 700 for batch in old.batches for e in batch)
