"""On the real Gemma 3 270M (a sliding window of 512; token counts below are its tokenizer's): a
conversation trimmed at its context limit keeps its cached turns after the cut, restored from
RAM and moved back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.core import EngineCore
from engine.kv_spill import SpillCache
from engine.llama_backend import ContextConfig, LlamaBackend
from engine.model import Model
from engine.requests import GenerationRequest, SamplingParams
from tests.engine.test_core import Collector, run_all

pytestmark = pytest.mark.model

N_CTX = 1024
BUDGET = 900  # the prompt's share; trimming drops the oldest three turns at once


@pytest.fixture(scope="module")
def demo() -> Iterator[Model]:
    model = Model.load("gemma3-270m")
    yield model
    model.close()


def user(turn: int) -> dict[str, str]:
    return {
        "role": "user",
        "content": f"Entry {turn} of the keeper's log. The lamp was cleaned, the oil topped "
        f"up and the shutters checked at {turn} bells; the wind came from the west and the "
        "sea was grey and rising. Note anything that changed since the last entry.",
    }


LOGGED = {"role": "assistant", "content": "Logged."}


def ask(core: EngineCore, model: Model, messages: list[dict[str, str]], key: str) -> Collector:
    out = Collector()
    params = SamplingParams(max_tokens=1, temperature=0)
    prompt = model.tokenize_chat(messages)
    core.submit(GenerationRequest(prompt=prompt, params=params, sink=out, cache_key=key))
    run_all(core)
    return out


def test_turns_after_the_trim_come_from_the_cache_on_the_real_model(demo: Model) -> None:
    backend = LlamaBackend(demo, ContextConfig(n_ctx=N_CTX, parallel=2, threads=2))
    core = EngineCore(backend, spill=SpillCache(64 << 20))
    system = {"role": "system", "content": "You keep a lighthouse log."}
    history = [m for turn in range(13) for m in (user(turn), LOGGED)]  # one prefill, ~890
    usage = []
    try:
        for turn in range(13, 16):
            history.append(user(turn))
            if len(demo.tokenize_chat([system, *history])) > BUDGET:
                history = history[6:]  # the oldest three questions and their answers
            out = ask(core, demo, [system, *history], "log")
            usage.append(out.finished.usage)
            history.append(LOGGED)
            ask(core, demo, [{"role": "user", "content": "Hi"}], "other")  # "log" goes to RAM
        assert core.spill.restores >= 2 and core.kv.shifts == 1
    finally:
        backend.close()
    trimmed, after = usage[1:]
    assert trimmed.prompt_tokens < usage[0].prompt_tokens  # turn 14 was trimmed
    for each in (trimmed, after):  # only the new question was evaluated
        assert each.cached_tokens >= each.prompt_tokens - 80, usage
