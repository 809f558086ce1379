"""Load generators over the OpenAI chat API, so Parley and llama-server get exactly the same load.

Every request streams, uses the same sampling, and bans the end tokens (``logit_bias`` for
Parley, ``ignore_eos`` for llama-server; each ignores the other's field), so replies have a fixed
length and tok/s compare like with like. TTFT is measured here, at the client: from sending the
request to the first content token, which is what a user waits for.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

PROMPT = "Write a long, detailed story about a lighthouse keeper and the sea."
PARAGRAPH = (
    "The harbour town wakes before the sun. Fishermen check their nets, the baker lights the "
    "oven, and gulls argue over scraps on the pier. A storm is coming from the west, and the "
    "old keeper has climbed the tower three times tonight to clean the lens. Describe what "
    "each of them notices about the sky, the water and the wind, and what they decide to do "
    "before the first wave reaches the breakwater. Keep every detail consistent with what you "
    "said in earlier answers, and mention one new thing that nobody has noticed yet."
)


@dataclass(frozen=True)
class Target:
    """A server under test: where it listens and what fixed-length replies need."""

    name: str
    url: str
    ban: dict[str, int]  # logit bias that bans the end-of-generation tokens


@dataclass(frozen=True)
class Stream:
    sent: float
    first: float
    end: float
    tokens: int
    text: str
    prompt_tokens: int
    prompt_evaluated: int  # prompt tokens the server actually computed (not cached)
    prompt_ms: float

    @property
    def ttft_ms(self) -> float:
        return (self.first - self.sent) * 1000

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / (self.end - self.first) if self.tokens > 1 else 0.0


async def chat(
    http: aiohttp.ClientSession,
    target: Target,
    messages: list[dict[str, str]],
    max_tokens: int,
    key: str | None = None,
) -> Stream:
    body = {
        "messages": messages, "stream": True, "max_tokens": max_tokens, "temperature": 0.7,
        "top_k": 40, "top_p": 0.95, "min_p": 0.05, "seed": 7, "prompt_cache_key": key,
        "logit_bias": target.ban, "ignore_eos": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    sent = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    final: dict[str, Any] = {}
    async with http.post(f"{target.url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for raw in response.content:
            if not raw.startswith(b"data: ") or raw.startswith(b"data: [DONE]"):
                continue
            chunk = json.loads(raw[6:])
            choices = chunk.get("choices") or [{}]
            delta = choices[0].get("delta", {}).get("content")
            if delta:
                first = first or time.perf_counter()
                pieces.append(delta)
            if chunk.get("usage") or chunk.get("timings"):
                final = {**final, **chunk}
    end = time.perf_counter()
    assert first is not None, f"{target.name}: no tokens streamed"
    tokens, prompt, evaluated, prompt_ms = _counts(final, len(pieces))
    return Stream(sent, first, end, tokens, "".join(pieces), prompt, evaluated, prompt_ms)


def _counts(final: dict[str, Any], chunks: int) -> tuple[int, int, int, float]:
    """(completion, prompt, evaluated prompt tokens, prompt ms) from either server's last chunk."""
    timings = final.get("timings")
    if timings:  # llama-server
        evaluated = int(timings["prompt_n"])
        prompt = evaluated + int(timings.get("cache_n", 0))
        return int(timings["predicted_n"]), prompt, evaluated, float(timings["prompt_ms"])
    usage = final.get("usage") or {}
    prompt = int(usage.get("prompt_tokens", 0))
    evaluated = prompt - int(usage.get("cached_tokens", 0))
    tokens = int(usage.get("completion_tokens", chunks))
    return tokens, prompt, evaluated, float(usage.get("prompt_ms", 0.0))


def _session() -> aiohttp.ClientSession:
    """A new connection per request: llama-server closes streamed ones, and so both match."""
    connector = aiohttp.TCPConnector(force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600))


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def concurrent_streams(
    target: Target, streams: int, tokens: int, tag: str = ""
) -> dict[str, float]:
    """``streams`` different prompts at once (``tag`` sets them apart from another call's):
    aggregate tok/s over the wall time, TTFTs."""
    async with _session() as http:
        runs = await asyncio.gather(
            *[
                chat(http, target, [{"role": "user", "content": f"{PROMPT} ({tag}{i})"}], tokens)
                for i in range(streams)
            ]
        )
    wall = max(r.end for r in runs) - min(r.sent for r in runs)
    ttfts = [r.ttft_ms for r in runs]
    return {
        "aggregate_tps": sum(r.tokens for r in runs) / wall,
        "decode_tps_per_stream": statistics.mean(r.decode_tps for r in runs),
        "ttft_mean_ms": statistics.mean(ttfts),
        "ttft_p95_ms": p95(ttfts),
    }


async def warm_up(target: Target) -> None:
    """One short request, unlike any measured prompt, so no server gets a cached prefix."""
    async with _session() as http:
        await chat(http, target, [{"role": "user", "content": "Warm up."}], 8)


async def prompt_speed(target: Target) -> float:
    """Prompt tok/s as the server reports it, for the ~120-token prompt raw ``Llama`` gets."""
    best = 0.0
    async with _session() as http:
        for i in range(3):
            messages = [{"role": "user", "content": f"{i}. {PROMPT * 8}"}]
            run = await chat(http, target, messages, 1)
            best = max(best, run.prompt_evaluated / (run.prompt_ms / 1000))
    return best


def user_turn(user: int, turn: int) -> dict[str, str]:
    return {"role": "user", "content": f"Reader {user}, chapter {turn}. {PARAGRAPH}"}


async def round_robin(
    target: Target, users: int, turns: int, answer_tokens: int, label: str
) -> dict[str, list[float]]:
    """``users`` conversations taking turns one request at a time, ``turns`` rounds.

    Each turn adds a ~140-token user message plus the previous answer. With more users than
    the server's slots, every conversation's KV has left its slot by the time it comes back.
    Returns per-turn mean and p95 TTFT, and the prompt tokens the server had to compute.
    """
    histories = [
        [{"role": "system", "content": f"Reader {label}-{u} is listening. Narrate for them."}]
        for u in range(users)
    ]
    ttft: list[list[float]] = [[] for _ in range(turns)]
    evaluated: list[list[int]] = [[] for _ in range(turns)]
    prompt: list[list[int]] = [[] for _ in range(turns)]
    async with _session() as http:
        for turn in range(turns):
            for user, history in enumerate(histories):
                history.append(user_turn(user, turn))
                run = await chat(http, target, history, answer_tokens, key=f"{label}-{user}")
                history.append({"role": "assistant", "content": run.text})
                ttft[turn].append(run.ttft_ms)
                evaluated[turn].append(run.prompt_evaluated)
                prompt[turn].append(run.prompt_tokens)
    return {
        "ttft_mean_ms": [statistics.mean(t) for t in ttft],
        "ttft_p95_ms": [p95(t) for t in ttft],
        "evaluated_mean": [statistics.mean(e) for e in evaluated],
        "prompt_mean": [statistics.mean(n) for n in prompt],
    }
