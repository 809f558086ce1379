"""Engine benchmark: raw llama-cpp-python, Parley's engine and (if built) llama-server, one run.

Measured on the demo model, each phase on a fresh server:
- raw ``Llama``: one stream's prompt and decode tok/s (the ceiling for one stream), its runs
  alternated with Parley's one-stream runs, best of three each (the machine drifts);
- streams: prompt tok/s, then 1, 2, 4, 8, 16 concurrent streams (aggregate tok/s, TTFT);
- multi-turn: TTFT of turns 1..8 (~150 new tokens a turn) for one user, and for 32 users
  taking turns round-robin over 8 sequences (every conversation's KV leaves its sequence
  between turns, so the RAM spill cache is what keeps turn 8 cheap);
- memory: the server's peak RSS against model file + KV cache + RAM cache.

Set ``LLAMA_SERVER_BIN`` to a llama-server binary (``make llama-server`` builds the one
vendored in llama-cpp-python's sdist) to run the same load against it and print ratios.
Absolute numbers on a shared machine are noisy; compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from bench import load
from bench.phases import phase
from bench.servers import Running, ServerShape, llama_server, parley
from engine.demo_model import demo_model_path

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 2, 4, 8, 16)
ROUNDS = 3  # raw and Parley one-stream runs, alternated
Start = Callable[[Path, ServerShape], AbstractContextManager[Running]]


class RawLlama:
    """llama-cpp-python's high-level ``Llama``, one stream, greedy, EOS ignored: the ceiling
    for one stream. Loaded once; ``run`` is one measurement."""

    def __init__(self, model: Path, threads: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            str(model), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        self.prompt = self.llm.tokenize(("<start_of_turn>user\n" + load.PROMPT * 8).encode())

    def run(self, tokens: int) -> dict[str, float]:
        self.llm.reset()  # type: ignore[no-untyped-call]
        started = time.perf_counter()
        first = 0.0
        produced = 0
        for _token in self.llm.generate(self.prompt, temp=0.0, reset=True):
            produced += 1
            if produced == 1:
                first = time.perf_counter()
            if produced >= tokens:
                break
        end = time.perf_counter()
        return {
            "prompt_tps": len(self.prompt) / (first - started),
            "decode_tps": (produced - 1) / (end - first),
        }


def measure(
    start: Start, model: Path, args: argparse.Namespace, raw: RawLlama | None = None,
    label: str = "Parley",
) -> dict[str, Any]:
    """Every phase against one kind of server. With ``raw``, its runs alternate with the
    server's one-stream runs (best of ``ROUNDS`` each), so the machine's drift hits both."""
    results: dict[str, Any] = {}
    streams_shape = ServerShape(parallel=max(LEVELS), n_ctx=1024, threads=args.threads)
    chat_shape = ServerShape(parallel=8, n_ctx=2048, threads=args.threads)
    with (
        phase(f"engine, {label}: one stream, then 1-16 at once"),
        start(model, streams_shape) as server,
    ):
        asyncio.run(load.warm_up(server.target))
        raw_runs, prompts, singles = [], [], []
        for i in range(ROUNDS):
            if raw is not None:
                raw_runs.append(raw.run(args.tokens))
            prompts.append(asyncio.run(load.prompt_speed(server.target)))
            single = load.concurrent_streams(server.target, 1, args.tokens, tag=f"round {i}, ")
            singles.append(asyncio.run(single))  # a new prompt each round: none fully cached
        if raw_runs:
            results["raw"] = {
                key: max(run[key] for run in raw_runs) for key in ("prompt_tps", "decode_tps")
            }
        results["prompt_tps"] = max(prompts)
        ttfts = [run["ttft_mean_ms"] for run in singles]
        results["streams"] = {1: {  # the best decode; TTFT over every round, not one sample
            **max(singles, key=lambda run: run["decode_tps_per_stream"]),
            "ttft_mean_ms": statistics.mean(ttfts), "ttft_p95_ms": load.p95(ttfts),
        }}  # fmt: skip
        results["streams"].update({n: _streams(server, n, args.tokens) for n in LEVELS[1:]})
    with phase(f"engine, {label}: 8 turns, one user"), start(model, chat_shape) as server:
        solo = [
            asyncio.run(load.round_robin(server.target, 1, args.turns, args.answer, f"solo{i}"))
            for i in range(3)
        ]
        per_turn = zip(*(s["ttft_mean_ms"] for s in solo), strict=True)
        results["solo"] = {
            "ttft_ms": [statistics.median(t) for t in per_turn],
            "prompt_mean": solo[0]["prompt_mean"],
        }
    with (
        phase(f"engine, {label}: {args.users} users taking turns"),
        start(model, chat_shape) as server,
    ):
        results["crowd"] = asyncio.run(
            load.round_robin(server.target, args.users, args.turns, args.answer, "crowd")
        )
        results["memory"] = server.memory_mb()
        if server.card:
            results["memory"].update(
                model_mb=server.card["size_bytes"] / 2**20,
                kv_cache_mb=server.card["kv_cache_bytes"] / 2**20,
                kv_ram_used_mb=server.metric("parley_engine_kv_ram_bytes") / 2**20,
                kv_restores=server.metric("parley_engine_kv_restores_total"),
            )
    return results


def _streams(server: Running, n: int, tokens: int) -> dict[str, float]:
    return asyncio.run(load.concurrent_streams(server.target, n, tokens))


def collect(args: argparse.Namespace | None = None) -> dict[str, Any]:
    args = args or parser().parse_args([])
    model = demo_model_path()
    raw = RawLlama(model, args.threads)
    results: dict[str, Any] = {"parley": measure(parley, model, args, raw)}
    binary = os.environ.get("LLAMA_SERVER_BIN")
    if binary:

        def start(model: Path, shape: ServerShape) -> AbstractContextManager[Running]:
            return llama_server(Path(binary), model, shape)

        # raw again, alternated with llama-server's runs: the host's speed drifts between phases
        results["llama_server"] = measure(start, model, args, raw, label="llama-server")
    return results


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(measure, Parley, reference, Parley ÷ reference, target) rows for the Markdown table."""
    ours, ref = results["parley"], results.get("llama_server")
    raw = ours["raw"]  # each server's raw runs are its own phase's
    out: list[tuple[str, str, str, str, str]] = []

    def row(name: str, get: Callable[[dict[str, Any]], float], unit: str, target: str) -> None:
        mine = get(ours)
        theirs = get(ref) if ref else None
        out.append(
            (
                name,
                f"{mine:.1f} {unit}",
                f"{theirs:.1f} {unit} (llama-server)" if theirs is not None else "",
                f"{mine / theirs:.2f}" if theirs else "",
                target,
            )
        )

    raw_theirs = f"{ref['raw']['decode_tps']:.1f} tok/s (in llama-server's phase)" if ref else ""
    out.append(("raw llama-cpp-python decode, 1 stream", f"{raw['decode_tps']:.1f} tok/s",
                raw_theirs, "", ""))  # fmt: skip
    for name, key, least in (("decode ÷ raw, 1 stream", "decode_tps", 0.95),
                             ("prompt ÷ raw", "prompt_tps", 0.9)):  # fmt: skip
        mine = _speed(ours, key) / raw[key]
        theirs = _speed(ref, key) / ref["raw"][key] if ref else None  # drift-free comparison
        out.append((f"Parley {name}", f"{mine:.2f}",
                    f"{theirs:.2f} (llama-server ÷ raw)" if theirs else "",
                    f"{mine / theirs:.2f}" if theirs else "",
                    _check(mine >= least, f"≥ {least:g}")))  # fmt: skip
    row("decode, 1 stream", lambda r: _speed(r, "decode_tps"), "tok/s", "")
    row("prompt", lambda r: _speed(r, "prompt_tps"), "tok/s", "")
    for n in LEVELS:
        target = _check(ours["streams"][n]["aggregate_tps"] >= 100, "≥ 100") if n == 8 else ""
        row(f"{n} streams: aggregate", _stream(n, "aggregate_tps"), "tok/s", target)
        row(f"{n} streams: TTFT mean", _stream(n, "ttft_mean_ms"), "ms", "")
        row(f"{n} streams: TTFT p95", _stream(n, "ttft_p95_ms"), "ms", "")
    for label, key in (("1 user", "solo"), ("32 users round-robin", "crowd")):
        first, last = _turn(key, 0), _turn(key, -1)
        row(f"{label}: turn 1 TTFT", first, "ms", "")
        row(f"{label}: turn 8 TTFT", last, "ms", "")
        growth = last(ours) / first(ours)
        row(f"{label}: turn 8 ÷ turn 1", _ratio(last, first), "×", _check(growth <= 1.3, "≤ 1.3"))
    out.append(("32 users: prompt at turn 8 / computed", _prompt_sizes(ours),
                f"{_prompt_sizes(ref)} (llama-server)" if ref else "", "", ""))  # fmt: skip
    memory = ours["memory"]
    budget = memory["model_mb"] + memory["kv_cache_mb"] + memory["kv_ram_used_mb"] + 200
    row(
        "engine peak RSS",
        lambda r: r["memory"]["peak_rss_mb"],
        "MiB",
        _check(memory["peak_rss_mb"] <= budget, f"≤ {budget:.0f} (model + KV + RAM cache + 200)"),
    )
    return out


def _speed(results: dict[str, Any], key: str) -> float:
    """A server's one-stream decode or prompt tok/s, keyed as the raw runs are."""
    if key == "decode_tps":
        return float(results["streams"][1]["decode_tps_per_stream"])
    return float(results["prompt_tps"])


def _prompt_sizes(results: dict[str, Any]) -> str:
    """Turn 8's prompt and the part computed: equal prompts say both servers got the same
    template and history."""
    crowd = results["crowd"]
    return f"{crowd['prompt_mean'][-1]:.0f} / {crowd['evaluated_mean'][-1]:.0f} tokens"


def _ratio(
    top: Callable[[dict[str, Any]], float], bottom: Callable[[dict[str, Any]], float]
) -> Callable[[dict[str, Any]], float]:
    return lambda r: top(r) / bottom(r)


def _turn(phase: str, index: int) -> Callable[[dict[str, Any]], float]:
    series = "ttft_ms" if phase == "solo" else "ttft_mean_ms"
    return lambda r: float(r[phase][series][index])


def _stream(n: int, field: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: float(r["streams"][n][field])


def _check(ok: bool, target: str) -> str:
    return f"{'✅' if ok else '❌'} {target}"


def table(all_rows: list[tuple[str, str, str, str, str]]) -> Iterator[str]:
    yield "| measure | Parley | reference | ratio | target |"
    yield "|---|---:|---:|---:|---|"
    for cells in all_rows:
        yield "| " + " | ".join(cells) + " |"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=128, help="reply length in the streams phase")
    p.add_argument("--turns", type=int, default=8)
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--answer", type=int, default=8, help="reply length in multi-turn phases")
    p.add_argument("--threads", type=int, default=2)
    return p


def main() -> None:
    results = collect(parser().parse_args())
    print("\n".join(table(rows(results))))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "engine.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
