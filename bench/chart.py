"""A picture of ``make bench``'s engine phases, written next to bench.json as bench.png.

Left: aggregate decode tok/s against concurrent streams, Parley and (when it ran) llama-server,
with raw llama-cpp-python's one stream as a mark. Right: time to first token by turn, for one
user alone and for the crowd taking turns. Plotting needs matplotlib (``pip install
'.[bench]'``; the dev install has it); without it the table is all there is, said in one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SERVERS = (("parley", "Parley", "tab:blue"), ("llama_server", "llama-server", "tab:orange"))


def write_chart(engine: dict[str, Any], path: Path) -> Path | None:
    """Draw ``engine`` (bench/engine.py's results, as JSON gives them back) into ``path``;
    the path, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: no chart (pip install '.[bench]' for matplotlib)", file=sys.stderr)
        return None
    figure, (streams, turns) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for key, label, colour in SERVERS:
        if (ran := engine.get(key)) is None:
            continue
        levels = sorted(ran["streams"], key=int)
        streams.plot([int(n) for n in levels], [ran["streams"][n]["aggregate_tps"] for n in levels],
                     marker="o", color=colour, label=label)  # fmt: skip
        solo, crowd = ran["solo"]["ttft_ms"], ran["crowd"]["ttft_mean_ms"]
        turns.plot(range(1, len(solo) + 1), solo, marker="o", color=colour,
                   label=f"{label}, one user")  # fmt: skip
        turns.plot(range(1, len(crowd) + 1), crowd, marker="s", linestyle="--", color=colour,
                   label=f"{label}, users taking turns")  # fmt: skip
    raw = engine["parley"]["raw"]["decode_tps"]
    streams.scatter([1], [raw], marker="*", s=160, color="black", zorder=3,
                    label="raw llama-cpp-python, 1 stream")  # fmt: skip
    streams.set(xscale="log", xlabel="concurrent streams", ylabel="aggregate decode tok/s",
                title="Decode throughput")  # fmt: skip
    streams.set_xticks([1, 2, 4, 8, 16], labels=["1", "2", "4", "8", "16"])
    turns.set(xlabel="turn", ylabel="time to first token, ms (mean)", yscale="log",
              title="Time to first token by turn")  # fmt: skip
    for axes in (streams, turns):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
