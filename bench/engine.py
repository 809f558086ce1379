"""Engine benchmark: raw llama-cpp-python vs Parley's engine over HTTP, in one run.

Prints a Markdown table (and writes bench/results/engine.json):
- raw ``Llama`` single-stream prompt and decode tok/s (the ceiling for one stream),
- Parley single-stream decode tok/s over HTTP, and the ratio to raw,
- aggregate tok/s and mean/p95 TTFT for 1, 2, 4, 8 concurrent streams,
- TTFT for turns 1..N of a growing conversation (prefix cache at work), alone and with two
  other conversations idle in the cache.

Absolute numbers on a shared machine are noisy; compare the ratios measured in one run.
Usage: python bench/engine.py [--tokens 128] [--streams 1,2,4,8] [--turns 6] [--no-kv-unified]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.download import demo_model_path  # noqa: E402
from tests.engine_process import start_engine  # noqa: E402

PROMPT = "Write a long, detailed story about a lighthouse keeper and the sea."


def raw_llama(model: Path, tokens: int, threads: int) -> dict[str, float]:
    """llama-cpp-python's high-level ``Llama``, one stream, greedy, EOS ignored."""
    from llama_cpp import Llama

    llm = Llama(str(model), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = llm.tokenize(("<start_of_turn>user\n" + PROMPT * 8).encode())
    best: dict[str, float] = {}
    for _ in range(2):  # first run warms caches; keep the better of two
        llm.reset()
        started = time.perf_counter()
        first = 0.0
        produced = 0
        for _token in llm.generate(prompt, temp=0.0, reset=True):
            produced += 1
            if produced == 1:
                first = time.perf_counter()
            if produced >= tokens:
                break
        end = time.perf_counter()
        run = {
            "prompt_tps": len(prompt) / (first - started),
            "decode_tps": (produced - 1) / (end - first),
        }
        if run["decode_tps"] > best.get("decode_tps", 0):
            best = run
    del llm
    return best


async def one_stream(
    http: aiohttp.ClientSession, url: str, messages: list[dict[str, str]], tokens: int,
    ban: dict[str, int], key: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    body = {
        "messages": messages, "stream": True, "max_tokens": tokens, "temperature": 0.7,
        "seed": 7, "logit_bias": ban, "prompt_cache_key": key,
    }  # fmt: skip
    sent = time.perf_counter()
    first = None
    text: list[str] = []
    usage: dict[str, Any] = {}
    async with http.post(f"{url}/v1/chat/completions", json=body) as response:
        async for raw in response.content:
            if not raw.startswith(b"data: ") or raw.startswith(b"data: [DONE]"):
                continue
            chunk = json.loads(raw[6:])
            delta = chunk["choices"][0]["delta"].get("content")
            if delta:
                first = first or time.perf_counter()
                text.append(delta)
            usage = chunk.get("usage") or usage
    end = time.perf_counter()
    assert first is not None, "no tokens streamed"
    return {"sent": sent, "first": first, "end": end, "usage": usage, "text": "".join(text)}


async def concurrency(url: str, streams: int, tokens: int, ban: dict[str, int]) -> dict[str, float]:
    async with aiohttp.ClientSession() as http:
        runs = await asyncio.gather(
            *[
                one_stream(http, url, [{"role": "user", "content": f"{PROMPT} ({i})"}], tokens, ban)
                for i in range(streams)
            ]
        )
    total = sum(r["usage"]["completion_tokens"] for r in runs)
    start = min(r["sent"] for r in runs)
    end = max(r["end"] for r in runs)
    ttfts = sorted(r["first"] - r["sent"] for r in runs)
    return {
        "aggregate_tps": total / (end - start),
        "decode_tps_per_stream": statistics.mean(
            (r["usage"]["completion_tokens"] - 1) / (r["end"] - r["first"]) for r in runs
        ),
        "ttft_mean_ms": statistics.mean(ttfts) * 1000,
        "ttft_p95_ms": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] * 1000,
    }


async def prompt_speed(url: str, ban: dict[str, int]) -> float:
    """Prompt tok/s for the same ~110-token prompt raw ``Llama`` gets (best of three)."""
    best = 0.0
    async with aiohttp.ClientSession() as http:
        for i in range(3):
            content = f"{i}. {PROMPT * 8}"
            run = await one_stream(http, url, [{"role": "user", "content": content}], 1, ban)
            usage = run["usage"]
            evaluated = usage["prompt_tokens"] - usage["cached_tokens"]
            best = max(best, evaluated / (usage["prompt_ms"] / 1000))
    return best


async def multi_turn(url: str, turns: int, ban: dict[str, int], label: str) -> list[float]:
    """TTFT per turn of one growing conversation (~80 new tokens a turn)."""
    history = [{"role": "system", "content": f"You are storyteller {label}."}]
    ttfts = []
    async with aiohttp.ClientSession() as http:
        for turn in range(turns):
            history.append({"role": "user", "content": f"Turn {turn}: {PROMPT} " * 4})
            run = await one_stream(http, url, history, 48, ban, key=label)
            ttfts.append((run["first"] - run["sent"]) * 1000)
            history.append({"role": "assistant", "content": run["text"]})
    return ttfts


@contextmanager
def running_engine(args: list[str]) -> Iterator[tuple[str, dict[str, int]]]:
    """A fresh engine and the logit bias that bans its end tokens (fixed-length replies)."""
    engine = start_engine(*args)
    try:
        card = engine.get("/v1/models")["data"][0]
        yield engine.url, {str(t): -100 for t in card["eog_ids"]}
    finally:
        engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--streams", default="1,2,4,8")
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kv-unified", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    model = demo_model_path()
    results: dict[str, Any] = {"raw": raw_llama(model, args.tokens, args.threads)}
    levels = [int(n) for n in args.streams.split(",")]
    extra = ["--kv-unified" if args.kv_unified else "--no-kv-unified"]
    engine_args = [
        "--model", str(model), "--parallel", str(max(levels)), "--n-ctx", "2048",
        "--threads", str(args.threads), *extra,
    ]  # fmt: skip
    # Each phase gets a fresh engine: idle conversations left in a unified KV cache make
    # later batches attend over their cells too (measured in the note on issue 2).
    with running_engine(engine_args) as (url, ban):
        asyncio.run(concurrency(url, 1, 8, ban))  # warm-up
        results["prompt_tps"] = asyncio.run(prompt_speed(url, ban))
        results["streams"] = {n: asyncio.run(concurrency(url, n, args.tokens, ban)) for n in levels}
    # One conversation per fresh engine, three times; the median per turn is reported.
    # Then the same with two other conversations idle in the cache (their cells are part of
    # every attention in a unified KV cache).
    alone = []
    for repeat in range(3):
        with running_engine(engine_args) as (url, ban):
            alone.append(asyncio.run(multi_turn(url, args.turns, ban, f"alone-{repeat}")))
    results["turn_ttft_ms"] = [statistics.median(turn) for turn in zip(*alone, strict=True)]
    with running_engine(engine_args) as (url, ban):
        for other in ("a", "b"):
            asyncio.run(multi_turn(url, args.turns, ban, f"idle-{other}"))
        results["turn_ttft_ms_with_idle"] = asyncio.run(multi_turn(url, args.turns, ban, "busy"))
    report(results)


def report(results: dict[str, Any]) -> None:
    raw = results["raw"]
    streams = results["streams"]
    single = streams[min(streams)]
    turns = results["turn_ttft_ms"]
    print("| measure | value | ratio |")
    print("|---|---:|---:|")
    print(f"| raw llama-cpp-python decode, 1 stream | {raw['decode_tps']:.1f} tok/s | 1.00 |")
    print(f"| raw llama-cpp-python prompt | {raw['prompt_tps']:.1f} tok/s | 1.00 |")
    ratio = single["decode_tps_per_stream"] / raw["decode_tps"]
    print(f"| Parley decode, 1 stream over HTTP | {single['decode_tps_per_stream']:.1f} tok/s "
          f"| {ratio:.2f} × raw |")  # fmt: skip
    ratio = results["prompt_tps"] / raw["prompt_tps"]
    print(f"| Parley prompt | {results['prompt_tps']:.1f} tok/s | {ratio:.2f} × raw |")
    for n, row in streams.items():
        print(f"| {n} streams: aggregate (wall, incl. prompts) | {row['aggregate_tps']:.1f} tok/s "
              f"| {row['aggregate_tps'] / raw['decode_tps']:.2f} × raw |")  # fmt: skip
        print(f"| {n} streams: TTFT mean / p95 | {row['ttft_mean_ms']:.0f} / "
              f"{row['ttft_p95_ms']:.0f} ms | |")  # fmt: skip
    for i, ttft in enumerate(turns, 1):
        print(f"| turn {i} TTFT | {ttft:.0f} ms | {ttft / turns[0]:.2f} × turn 1 |")
    crowded = results["turn_ttft_ms_with_idle"]
    print(f"| turn {len(crowded)} TTFT, 2 idle conversations cached | {crowded[-1]:.0f} ms "
          f"| {crowded[-1] / crowded[0]:.2f} × its turn 1 |")  # fmt: skip
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "engine.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
