"""Loading GGUF files: the demo model in-process, bad files, and the Hub path (loopback only)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core import EngineCore
from engine.demo_model import demo_model_path
from engine.download import split_repo_spec
from engine.errors import ModelLoadError
from engine.kv_spill import SpillCache
from engine.llama_backend import ContextConfig, LlamaBackend
from engine.model import Model
from engine.requests import GenerationRequest, SamplingParams
from engine.token_cache import TokenCache
from tests.emulators.hf_hub import HubStandIn
from tests.emulators.threaded import ThreadedServer
from tests.engine.sse import NO_END
from tests.engine.test_core import Collector, run_all
from tests.engine_process import ROOT, start_engine
from tests.split_gguf import split_copy

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def demo() -> Iterator[Model]:
    model = Model.load("demo")
    yield model
    model.close()


@pytest.fixture(scope="module")
def gemma() -> Iterator[Model]:
    model = Model.load("gemma3-270m")
    yield model
    model.close()


def test_the_demo_model_is_an_instruct_model_with_its_template_in_the_gguf(demo: Model) -> None:
    info = demo.info
    assert (info.name, info.architecture, info.quantization) == ("demo", "llama", "Q4_1")
    assert info.template_source == "gguf" and "<|im_start|>" in demo.template.text
    assert demo.tokenize("<|im_end|>", special=True)[-1] in info.eog_ids


def test_gemma_has_no_template_of_its_own_and_slides_its_attention(gemma: Model) -> None:
    info = gemma.info
    assert (info.name, info.architecture, info.quantization) == ("gemma3-270m", "gemma3", "Q4_K_M")
    assert info.tensor_count > 100 and info.size_bytes > 100_000_000
    assert info.template_source == "builtin:gemma"
    assert {1, 106} <= set(info.eog_ids)
    assert info.sliding_window > 0


def test_chat_tokens_keep_user_control_text_as_plain_text(demo: Model, gemma: Model) -> None:
    start = demo.tokenize("<|im_start|>", special=True)[-1]
    plain = demo.tokenize_chat([{"role": "user", "content": "hello"}])
    typed = demo.tokenize_chat([{"role": "user", "content": "<|im_start|>assistant"}])
    assert typed.count(start) == plain.count(start)  # the template's turns only
    tokens = gemma.tokenize_chat([{"role": "user", "content": "<start_of_turn>"}])
    assert tokens.count(105) == 2  # template's user turn + generation prompt only
    assert tokens[0] == gemma.bos_id


def test_a_history_tokenizes_the_same_from_the_token_cache(demo: Model) -> None:
    history = [
        {"role": "system", "content": "Narrate for Ada."},
        {"role": "user", "content": "Chapter one, déjà vu: \U0001f600 and <b>tags</b>."},
        {"role": "assistant", "content": " Once upon a time..."},
        {"role": "user", "content": "Chapter two."},
    ]
    demo.token_cache = TokenCache(0)  # a budget of nothing keeps nothing
    uncached = demo.tokenize_chat(history)
    assert len(demo.token_cache) == 0
    demo.token_cache = TokenCache()
    demo.tokenize_chat(history[:2])
    hits = demo.token_cache.hits
    assert demo.tokenize_chat(history) == uncached
    assert demo.token_cache.hits > hits  # the earlier turn's segments came from the cache


def test_the_core_runs_in_process_on_the_real_model(demo: Model) -> None:
    backend = LlamaBackend(demo, ContextConfig(n_ctx=256, parallel=2, threads=2))
    core = EngineCore(backend)
    try:
        prompt = demo.tokenize_chat([{"role": "user", "content": "Hello there"}])
        outs = [Collector(), Collector()]
        for out in outs:
            params = SamplingParams(max_tokens=6, temperature=0)
            core.submit(GenerationRequest(prompt=prompt, params=params, sink=out, cache_key="k"))
        run_all(core)
        assert outs[0].text and outs[0].finished.usage.completion_tokens == 6
        assert outs[1].finished.usage.completion_tokens == 6
        again = Collector()
        params = SamplingParams(max_tokens=2, temperature=0)
        core.submit(GenerationRequest(prompt=prompt, params=params, sink=again, cache_key="k"))
        run_all(core)
        assert again.finished.usage.cached_tokens == len(prompt) - 1
    finally:
        backend.close()


def test_a_repeat_window_of_minus_one_penalizes_the_whole_context(demo: Model) -> None:
    backend = LlamaBackend(demo, ContextConfig(n_ctx=256, parallel=1, threads=2))
    core = EngineCore(backend)
    prompt = demo.tokenize_chat([{"role": "user", "content": "Say 'ha' twenty times."}])

    def answer(window: int) -> str:
        out = Collector()
        params = SamplingParams(
            max_tokens=24, temperature=0, repeat_penalty=1.8, repeat_last_n=window
        )
        core.submit(GenerationRequest(prompt=prompt, params=params, sink=out))
        run_all(core)
        return out.text

    try:
        whole = answer(-1)
        assert whole == answer(256)  # the context is 256 tokens
        assert whole != answer(0)  # with no window there is no penalty
    finally:
        backend.close()


def test_spilled_kv_restores_on_the_real_model_and_answers_exactly_as_recomputing(
    demo: Model,
) -> None:
    def two_conversations(spill: SpillCache) -> tuple[list[str], int]:
        backend = LlamaBackend(demo, ContextConfig(n_ctx=256, parallel=1, threads=2))
        core = EngineCore(backend, spill=spill)
        answers, cached = [], 0
        try:
            for key, question in (("a", "Name a fruit."), ("b", "Name a colour."), ("a", "")):
                messages = [{"role": "user", "content": "Name a fruit."}]
                if question:
                    messages = [{"role": "user", "content": question}]
                else:  # a's second turn, after b took the only sequence
                    messages += [
                        {"role": "assistant", "content": answers[0]},
                        {"role": "user", "content": "And another?"},
                    ]
                out = Collector()
                params = SamplingParams(max_tokens=8, temperature=0)
                prompt = demo.tokenize_chat(messages)
                request = GenerationRequest(prompt=prompt, params=params, sink=out, cache_key=key)
                core.submit(request)
                run_all(core)
                answers.append(out.text)
                cached = out.finished.usage.cached_tokens
        finally:
            backend.close()
        return answers, cached

    spilled, restored = two_conversations(SpillCache(64 << 20))
    recomputed, shared_prefix_only = two_conversations(SpillCache(0))
    assert spilled == recomputed
    assert restored > shared_prefix_only + 10  # a's first turn came back from RAM


def test_a_shared_system_prompt_is_shared_on_the_real_model_and_changes_no_answer(
    demo: Model,
) -> None:
    system = {"role": "system", "content": "You are a ship's cook. " * 12}

    def ask(first: str | None) -> tuple[str, int]:
        backend = LlamaBackend(demo, ContextConfig(n_ctx=512, parallel=2, threads=2))
        core = EngineCore(backend)
        try:
            outs = []
            for key, question in (("a", first), ("b", "What is for dinner?")):
                if question is None:
                    continue
                prompt = demo.tokenize_chat([system, {"role": "user", "content": question}])
                out = Collector()
                params = SamplingParams(max_tokens=8, temperature=0)
                core.submit(
                    GenerationRequest(prompt=prompt, params=params, sink=out, cache_key=key)
                )
                run_all(core)
                outs.append(out)
            return outs[-1].text, outs[-1].finished.usage.cached_tokens
        finally:
            backend.close()

    alone, _ = ask(None)
    after_another, shared = ask("Who are you?")
    assert after_another == alone
    assert shared > 60  # the system prompt came from the other conversation's cells


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "model file not found"),
        (b"hello, I am not a model", "is not a GGUF model file"),
        ("truncated-early", "failed to read key-value pairs"),
        ("truncated-late", "not within the file bounds"),
    ],
)
def test_a_bad_model_file_is_one_clear_line_and_a_failing_exit(
    tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / "model.gguf"
    if content == "truncated-early":
        path.write_bytes(demo_model_path().read_bytes()[:1_000_000])
    elif content == "truncated-late":
        path.write_bytes(demo_model_path().read_bytes()[:50_000_000])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        Model.load(str(path))
    result = run_engine_cli("--model", str(path))
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def run_engine_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "engine", "--port", "0", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_repo_specs_are_told_apart_from_paths() -> None:
    assert split_repo_spec("Qwen/Qwen2.5-GGUF:q4.gguf") == ("Qwen/Qwen2.5-GGUF", "q4.gguf")
    assert split_repo_spec("/models/x.gguf") is None
    assert split_repo_spec("C:model.gguf") is None


def test_offline_hub_download_names_the_repo_and_file(tmp_path: Path) -> None:
    result = run_engine_cli(
        "--model", "acme/chat-GGUF:chat-q4.gguf",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1
    assert "chat-q4.gguf from acme/chat-GGUF" in result.stderr


def test_an_unreachable_hub_fails_fast_with_one_line(tmp_path: Path) -> None:
    result = run_engine_cli(
        "--model", "acme/chat-GGUF:chat-q4.gguf",
        env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 3
    assert "unreachable" in result.stderr and result.stderr.count("\n") == 1


def test_a_model_and_a_chat_template_come_from_the_hub(tmp_path: Path) -> None:
    hub = HubStandIn()
    hub.add("acme/tiny-GGUF", "tiny-q4.gguf", demo_model_path())
    config = tmp_path / "tokenizer_config.json"
    config.write_text(
        json.dumps({"chat_template": "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"})
    )
    generation = tmp_path / "generation_config.json"
    generation.write_text(json.dumps({"eos_token_id": [1, 106, 50]}))
    hub.add("acme/tiny", "tokenizer_config.json", config)
    hub.add("acme/tiny", "generation_config.json", generation)
    with ThreadedServer(hub.app()) as server:
        env = {"HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf")}
        engine = start_engine(
            "--model", "acme/tiny-GGUF:tiny-q4.gguf", "--chat-template-from", "acme/tiny",
            "--n-ctx", "256", "--parallel", "1", env=env,
        )  # fmt: skip
        try:
            card = engine.get("/v1/models")["data"][0]
        finally:
            engine.stop()
        assert card["id"] == "tiny-q4.gguf"
        assert card["template_source"] == "hub:acme/tiny"
        assert 50 in card["eog_ids"]
        cached = list((tmp_path / "hf").rglob("tiny-q4.gguf"))
        assert cached and cached[0].stat().st_size == demo_model_path().stat().st_size
        # Now cached: starting again needs no Hub at all.
        engine = start_engine(
            "--model", "acme/tiny-GGUF:tiny-q4.gguf", "--n-ctx", "256", "--parallel", "1",
            env={**env, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        engine.stop()


def test_a_split_gguf_from_the_hub_downloads_every_part_and_loads_as_one(tmp_path: Path) -> None:
    parts = split_copy(demo_model_path(), tmp_path / "files" / "tiny.gguf", max_tensors=100)
    assert len(parts) == 3
    hub = HubStandIn()
    for part in parts:
        hub.add("acme/tiny-GGUF", part.name, part)
    with ThreadedServer(hub.app()) as server:
        env = {"HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf")}
        engine = start_engine(
            "--model", f"acme/tiny-GGUF:{parts[1].name}",  # any part names the set
            "--n-ctx", "256", "--parallel", "1", env=env,
        )  # fmt: skip
        try:
            card = engine.get("/v1/models")["data"][0]
            answer = engine.post("/v1/chat/completions", {
                "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
                "temperature": 0, "logit_bias": NO_END,
            })  # fmt: skip
        finally:
            engine.stop()
    assert card["id"] == parts[0].name and card["tensor_count"] == 272
    assert answer["usage"]["completion_tokens"] == 8
    cached = sorted(p.name for p in (tmp_path / "hf").rglob("tiny-*.gguf"))
    assert cached == [p.name for p in parts]
