"""Long conversations: TTFT once histories outgrow the context, through the bot's own trimming.

``users`` people talk at once, each turn a ~100-token message and an ``answer``-token reply,
each prompt fitted by ``bot.chat.context_fit.fit_conversation`` with the counts the bot remembers
(``bot.chat.prompt_sizes``), until every conversation has ``past`` turns beyond the one where its
history first outgrew the context. Past the limit each user also takes a turn in a short
conversation (a fresh one every 4 turns; its first turn is not counted) after each long one,
so short and long turns are measured side by side: on a shared machine the speed drifts
more within a run than the difference measured. Reported per server and per 10 turns past
the limit: TTFT p50/p95 of the long turns, p50 of the short ones, and the prompt tokens
cached on each long turn. The target (issue 33): each 10 turns' long p50 stays within 1.5x
the short p50.

Servers: Parley's engine as it ships; with ``--before``, Parley as it was (the oldest turn
dropped at a time, no reuse past a gap); with ``LLAMA_SERVER_BIN``, llama-server with
``--cache-reuse`` on the same load. ``python -m bench.long_chat --users 2 --past 20`` is a
quick run (~2 min on 2 cores); ``make bench`` runs 8 users x 40 turns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import load
from bench.phases import phase
from bench.servers import Running, ServerShape, llama_server, parley
from bot.chat.context_fit import (
    STEP_OF_BUDGET,
    ScaffoldBound,
    Turn,
    fit_conversation,
    measure_scaffold,
)
from bot.chat.prompt_sizes import PromptSizes
from bot.engines.client import EngineClient, Tokenizer
from engine.demo_model import demo_model_path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 10  # turns past the limit per reported block
TARGET = 1.5  # past-the-limit p50 / short p50
CACHE_REUSE = 256  # llama-server's value in its docs' examples; Parley's default is lower
Start = Callable[[Path, ServerShape], AbstractContextManager[Running]]


@dataclass(frozen=True)
class Variant:
    name: str
    start: Start
    step_of_budget: float  # the bot's trimming step (0: the oldest turn at a time)
    tokenizer: Tokenizer  # how the bot counts on this server (bot/engines/client.py)


@dataclass(frozen=True)
class TurnRecord:
    user: int
    kind: str  # "long", or "short" for a turn of a short conversation in between
    past: int | None  # long turns since the history first outgrew the context (0: that turn)
    ttft_ms: float
    prompt: int
    cached: int
    dropped: int


def message(user: int, turn: int) -> str:
    return f"Reader {user}, entry {turn}. {load.PARAGRAPH}"


class Chat:
    """One conversation, fitted as the bot fits it: ``fit_conversation`` with the count the
    engine reported for its last prompt (``PromptSizes``), ids standing for stored messages."""

    def __init__(
        self, key: str, variant: Variant, client: EngineClient, bound: ScaffoldBound,
        args: argparse.Namespace,
    ) -> None:  # fmt: skip
        self.key, self.variant, self.client, self.bound, self.args = (
            key,
            variant,
            client,
            bound,
            args,
        )
        self.system = f"{key} keeps a log. Answer briefly."
        self.history: list[Turn] = []
        self.sizes = PromptSizes()

    async def turn(
        self, http: aiohttp.ClientSession, target: load.Target, text: str
    ) -> tuple[load.Stream, int]:
        """Ask ``text``; the answer's stream and how many messages the prompt left out."""
        self.history.append(Turn("user", text))
        ids = list(range(len(self.history)))
        fitted = await fit_conversation(
            self.system, self.history, n_ctx=self.args.n_ctx, max_tokens=self.args.answer,
            count_tokens=self.client.count_tokens, bound=self.bound,
            known=self.sizes.known(0, "m", self.system, ids),
            step_of_budget=self.variant.step_of_budget,
        )  # fmt: skip
        run = await load.chat(http, target, fitted.messages, self.args.answer, key=self.key)
        self.sizes.remember(0, "m", self.system, ids[fitted.dropped :], run.prompt_tokens)
        self.history.append(Turn("assistant", run.text))
        return run, fitted.dropped


def record(user: int, kind: str, past: int | None, run: load.Stream, dropped: int) -> TurnRecord:
    cached = run.prompt_tokens - run.prompt_evaluated
    return TurnRecord(user, kind, past, run.ttft_ms, run.prompt_tokens, cached, dropped)


async def converse(
    target: load.Target, client: EngineClient, user: int, args: argparse.Namespace,
    variant: Variant, bound: ScaffoldBound,
) -> list[TurnRecord]:  # fmt: skip
    """One user's long conversation until ``args.past`` turns past the limit, with a turn of
    a short conversation after each of those."""
    long = Chat(f"long-{user}", variant, client, bound, args)
    short = Chat(f"short-{user}-0", variant, client, bound, args)
    records: list[TurnRecord] = []
    first_trim: int | None = None
    # a connection per request, as bench.load does it (llama-server closes streamed ones)
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        for turn in range(args.max_turns):
            run, dropped = await long.turn(http, target, message(user, turn))
            if dropped and first_trim is None:
                first_trim = turn
            past = None if first_trim is None else turn - first_trim
            records.append(record(user, "long", past, run, dropped))
            if past is None:
                continue
            if past % 4 == 0:
                short = Chat(f"short-{user}-{past}", variant, client, bound, args)
            run, dropped = await short.turn(http, target, message(user, turn))
            if past % 4:  # its first turn has nothing cached: not a short turn to compare
                records.append(record(user, "short", past, run, dropped))
            if past + 1 >= args.past:
                return records
    raise RuntimeError(f"user {user} did not pass the context in {args.max_turns} turns")


async def run_load(server: Running, args: argparse.Namespace, variant: Variant) -> list[TurnRecord]:
    await load.warm_up(server.target)
    async with aiohttp.ClientSession() as session:
        client = EngineClient(server.target.url, session)
        client.tokenizer = variant.tokenizer
        bound = await measure_scaffold(client.count_tokens)
        conversations = await asyncio.gather(
            *(converse(server.target, client, u, args, variant, bound) for u in range(args.users))
        )
    return [record for records in conversations for record in records]


@dataclass(frozen=True)
class Block:
    """Ten turns past the limit: the long conversations' TTFTs, the short ones' in between."""

    turns: str
    p50_ms: float
    p95_ms: float
    short_p50_ms: float

    @property
    def ratio(self) -> float:
        return self.p50_ms / self.short_p50_ms


def block(first: int, past: list[TurnRecord]) -> Block:
    inside = [r for r in past if first <= (r.past or 0) < first + BLOCK]
    ttfts = [r.ttft_ms for r in inside if r.kind == "long"]
    short = statistics.median(r.ttft_ms for r in inside if r.kind == "short")
    turns = f"{first + 1}-{first + BLOCK}"
    return Block(turns, statistics.median(ttfts), load.p95(ttfts), short)


def summarize(records: list[TurnRecord]) -> dict[str, Any]:
    """Per 10 turns past the limit: long and short TTFTs; per long turn: cached tokens."""
    past = [r for r in records if r.past is not None]
    long = [r for r in past if r.kind == "long"]
    last = max(r.past or 0 for r in long)
    blocks = [block(first, past) for first in range(0, last + 1, BLOCK)]
    per_turn = [
        {"prompt": statistics.mean(r.prompt for r in turn),
         "cached": statistics.mean(r.cached for r in turn)}
        for turn in ([r for r in long if r.past == index] for index in range(last + 1))
    ]  # fmt: skip
    return {
        "blocks": [{**asdict(b), "ratio": b.ratio} for b in blocks],
        "worst_ratio": max(b.ratio for b in blocks),
        "cached_per_turn": per_turn,
        "cached_share": sum(r.cached for r in long) / sum(r.prompt for r in long),
        "records": [asdict(r) for r in records],
    }


def variants(args: argparse.Namespace) -> Iterator[Variant]:
    yield Variant("parley", parley, STEP_OF_BUDGET, "messages")
    if args.before:
        yield Variant("parley before", parley, 0.0, "messages")
    binary = os.environ.get("LLAMA_SERVER_BIN")
    if binary:

        def start(model: Path, shape: ServerShape) -> AbstractContextManager[Running]:
            return llama_server(Path(binary), model, shape)

        yield Variant("llama-server", start, STEP_OF_BUDGET, "template")


def shape_for(variant: Variant, args: argparse.Namespace) -> ServerShape:
    if variant.name == "parley before":
        reuse = 0
    elif variant.name == "llama-server":
        reuse = CACHE_REUSE
    else:
        reuse = None  # as it ships
    return ServerShape(args.users, args.n_ctx, args.threads, cache_reuse=reuse)


def collect(args: argparse.Namespace | None = None) -> dict[str, Any]:
    args = args or parser().parse_args([])
    model = demo_model_path()
    results: dict[str, Any] = {"users": args.users, "past": args.past, "n_ctx": args.n_ctx}
    for variant in variants(args):
        with (
            phase(f"long chats, {variant.name}: {args.users} users"),
            variant.start(model, shape_for(variant, args)) as server,
        ):
            results[variant.name] = summarize(asyncio.run(run_load(server, args, variant)))
    return results


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(measure, Parley, reference, Parley ÷ reference, target) rows for the Markdown table."""
    ours, ref = results["parley"], results.get("llama-server")
    label = f"long chats ({results['users']} users, n_ctx {results['n_ctx']})"
    out: list[tuple[str, str, str, str, str]] = []

    def row(name: str, mine: float, theirs: float | None, unit: str, target: str = "") -> None:
        out.append((f"{label}: {name}", f"{mine:.0f} {unit}",
                    f"{theirs:.0f} {unit} (llama-server)" if theirs is not None else "",
                    f"{mine / theirs:.2f}" if theirs else "", target))  # fmt: skip

    for i, block in enumerate(ours["blocks"]):
        theirs = ref["blocks"][i] if ref and i < len(ref["blocks"]) else None
        turns, ratio = block["turns"], block["ratio"]
        target = f"{'✅' if ratio <= TARGET else '❌'} {ratio:.2f}× short ≤ {TARGET:g}"
        row(f"turns {turns} past the limit TTFT p50", block["p50_ms"],
            theirs and theirs["p50_ms"], "ms", target)  # fmt: skip
        row(f"turns {turns} past the limit TTFT p95", block["p95_ms"],
            theirs and theirs["p95_ms"], "ms")  # fmt: skip
        row(f"turns {turns}: short conversations' TTFT p50", block["short_p50_ms"],
            theirs and theirs["short_p50_ms"], "ms")  # fmt: skip
    for name in ("parley before", "llama-server"):
        if name in results:
            other = results[name]
            out.append((f"{label}: {name}: worst 10 turns' p50 ÷ short p50",
                        f"{other['worst_ratio']:.2f}×", "", "", ""))  # fmt: skip
    for name in ("parley", "parley before", "llama-server"):
        if name in results:
            cached = results[name]["cached_per_turn"]
            series = " ".join(f"{turn['cached']:.0f}/{turn['prompt']:.0f}" for turn in cached[:10])
            share = results[name]["cached_share"]
            out.append((f"{label}: {name}: cached/prompt tokens, turns 1-10 past the limit",
                        series, f"{share:.0%} cached over all", "", ""))  # fmt: skip
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--past", type=int, default=40, help="turns past the context limit")
    p.add_argument("--n-ctx", type=int, default=1024, help="context per conversation")
    p.add_argument("--answer", type=int, default=16, help="reply tokens")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-turns", type=int, default=200)
    p.add_argument("--before", action="store_true", help="also run Parley as it was")
    return p


def main() -> None:
    from bench.engine import table

    results = collect(parser().parse_args())
    print("\n".join(table(rows(results))))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "long_chat.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
