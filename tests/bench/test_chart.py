"""The bench chart (bench/chart.py) from results shaped as bench/engine.py writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench.chart import write_chart


def server(scale: float) -> dict[str, Any]:
    return {
        "raw": {"decode_tps": 70.0, "prompt_tps": 500.0},
        "streams": {n: {"aggregate_tps": 60.0 * n**0.5 * scale} for n in (1, 2, 4, 8, 16)},
        "solo": {"ttft_ms": [40.0, 20.0, 21.0, 22.0]},
        "crowd": {"ttft_mean_ms": [300.0, 90.0, 95.0, 99.0]},
    }


@pytest.mark.parametrize("with_llama_server", [False, True])
def test_the_chart_is_a_picture_of_both_phases(tmp_path: Path, with_llama_server: bool) -> None:
    results = {"parley": server(1.0)}
    if with_llama_server:
        results["llama_server"] = server(0.95)
    results = json.loads(json.dumps(results))  # as bench.json holds them: string keys
    path = write_chart(results, tmp_path / "bench.png")
    assert path == tmp_path / "bench.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1100, 420)
        colours = {colour for _, colour in image.convert("RGB").getcolors(1 << 20) or []}
    orange = (255, 127, 14)  # matplotlib's tab:orange: llama-server's line
    assert (orange in colours) == with_llama_server
    assert (31, 119, 180) in colours  # tab:blue: Parley's
