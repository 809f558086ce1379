"""Real scrapes of the bot's and the engine's ``/metrics`` without the model, parsed with
prometheus_client's own parser, and the conventions every scrape keeps (help text on every
family, totals typed as counters). Used by tests/bot/test_metrics.py,
tests/engine/test_metrics.py and tests/test_grafana_dashboard.py."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from bot.settings import load_settings
from engine.runtime import EngineConfig
from engine.server import create_app
from parley.app import Parley
from tests.adapters.discord_harness import serve
from tests.emulators.scripted_engine import ScriptedEngine
from tests.engine.fuzz_engine import FuzzRuntime


def families(text: str) -> dict[str, Metric]:
    """Every family of a scrape by name; each name once."""
    found: dict[str, Metric] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in found, f"{family.name} is exposed twice"
        found[family.name] = family
    return found


def samples(text: str) -> dict[str, float]:
    """``name{label="value",...}`` (labels sorted) -> value, for every sample of a scrape."""
    found = {}
    for family in families(text).values():
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return found


# the series a family of each type exposes, as a query names them
SERIES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def series_names(text: str) -> set[str]:
    """Every series name a query can use, a family without samples yet included."""
    return {
        name + suffix for name, family in families(text).items() for suffix in SERIES[family.type]
    }


def convention_problems(text: str) -> list[str]:
    """What breaks Prometheus' conventions: a family without help text, a ``_total`` that is
    not a counter, a counter whose samples do not end in ``_total``."""
    problems = []
    for name, family in families(text).items():
        if not family.documentation.strip():
            problems.append(f"{name}: no help text")
        for sample in family.samples:
            if sample.name.endswith("_total") and family.type != "counter":
                problems.append(f"{sample.name}: a total typed {family.type}")
            if family.type == "counter" and not sample.name.endswith("_total"):
                problems.append(f"{sample.name}: a counter without _total")
    return problems


async def bot_scrape(database: Path) -> str:
    """The bot's ``/metrics`` once it serves, over a scripted engine (tests/emulators)."""
    engine = ScriptedEngine("hello", slots=2)
    async with serve(engine.app()) as url, aiohttp.ClientSession() as http:
        settings = load_settings(engine_urls=url, database_path=database, metrics_port=0)
        app = Parley(settings)
        try:
            await app.__aenter__()
            async with http.get(app.metrics_url + "/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return await response.text()
        finally:
            await app.close()


async def engine_scrape() -> str:
    """The engine's ``/metrics`` after one completion: its real app and runtime over the
    scripted byte model (tests/engine/fuzz_engine.py)."""
    runtime = FuzzRuntime(EngineConfig(model="fake", max_queue=8))
    runtime.load()
    runner = web.AppRunner(create_app(runtime))
    try:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/v1/chat/completions", json=body) as response:
                assert response.status == 200, await response.text()
            async with http.get(url + "/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return await response.text()
    finally:
        await runner.cleanup()
        runtime.stop()
