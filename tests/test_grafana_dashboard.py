"""contrib/grafana/parley.json: a dashboard Grafana imports (the keys its schema requires, a
panel grid that fits), whose every query names only series Parley exports: the names are
collected from real scrapes of the bot's and the engine's /metrics (tests/metrics_scrape.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.metrics_scrape import bot_scrape, engine_scrape, series_names

DASHBOARD = Path(__file__).resolve().parents[1] / "contrib" / "grafana" / "parley.json"
# PromQL words that are neither metrics nor functions
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                      "offset", "and", "or", "unless"})  # fmt: skip
# what the dashboard is for: one series of each
WANTED = {
    "parley_queue_depth", "parley_engine_queue_depth", "parley_ttft_seconds_bucket",
    "parley_engine_ttft_seconds_bucket", "parley_tokens_generated_total",
    "parley_engine_completion_tokens_total", "parley_engine_slots", "parley_engine_slots_busy",
    "parley_rate_limited_total", "parley_engine_up", "parley_store_write_failures_total",
    "process_resident_memory_bytes",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The series a PromQL expression reads: its identifiers, less functions, keywords, label
    matchers, grouping labels, ranges and numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", expr):
        if match[0] not in KEYWORDS and not expr[match.end() :].lstrip().startswith("("):
            names.add(match[0])
    return names


def test_metric_names_finds_series_and_nothing_else() -> None:
    expr = 'histogram_quantile(0.9, sum by (le) (rate(x_bucket{a!="b c"}[$__rate_interval])))'
    assert metric_names(expr) == {"x_bucket"}
    assert metric_names("60 * rate(y_total[5m]) / on (job) z") == {"y_total", "z"}


def panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(dashboard["title"], str) and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["uid"]
    found: list[dict[str, Any]] = dashboard["panels"]
    return found


def test_the_dashboard_has_the_schema_keys_and_a_grid_that_fits() -> None:
    found = panels()
    assert len({panel["id"] for panel in found}) == len(found) > 0
    for panel in found:
        assert panel["type"] in ("timeseries", "stat") and panel["title"], panel
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0 and grid["y"] >= 0, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        targets = panel["targets"]
        assert targets and len({t["refId"] for t in targets}) == len(targets), panel["title"]
        assert all(t["expr"] for t in targets), panel["title"]


async def test_every_series_the_dashboard_queries_is_one_parley_exports(tmp_path: Path) -> None:
    exported = series_names(await bot_scrape(tmp_path / "bot.db")) | series_names(
        await engine_scrape()
    )
    used: set[str] = set()
    for panel in panels():
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, target["expr"]
            assert names <= exported, (panel["title"], sorted(names - exported))
            used |= names
    assert used >= WANTED, sorted(WANTED - used)
