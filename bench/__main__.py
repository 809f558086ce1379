"""``make bench``: the engine, long-conversation and bot benchmarks in one run, one Markdown
table, one JSON file, one chart (bench/chart.py).

``python -m bench [--engine-only | --long-only | --bot-only]``; ``LLAMA_SERVER_BIN`` adds
llama-server.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import engine, long_chat
from bench.chart import write_chart

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--engine-only", action="store_true")
    which.add_argument("--long-only", action="store_true")
    which.add_argument("--bot-only", action="store_true")
    args = p.parse_args()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    rows: list[tuple[str, str, str, str, str]] = []
    everything = not (args.engine_only or args.long_only or args.bot_only)
    if everything or args.engine_only:
        results["engine"] = engine.collect()
        rows += engine.rows(results["engine"])
    if everything or args.long_only:
        results["long_chat"] = long_chat.collect()
        rows += long_chat.rows(results["long_chat"])
    if everything or args.bot_only:
        from bench import bot

        results["bot"] = bot.collect()
        rows += [(name, value, "", "", target) for name, value, target in bot.rows(results["bot"])]
    results["seconds"] = time.perf_counter() - started
    print("\n".join(engine.table(rows)))
    print(f"\n({results['seconds']:.0f} s; ratios are Parley ÷ llama-server when it ran)")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    if "engine" in results and (chart := write_chart(results["engine"], out / "bench.png")):
        print(f"chart: {chart.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
