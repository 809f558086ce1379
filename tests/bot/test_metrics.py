"""The bot's /metrics (prometheus_client's text format, parsed with its own parser) and
/healthz, on loopback."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from bot.metrics import COUNTERS, HISTOGRAMS, Registry
from bot.settings import load_settings
from parley.app import Parley
from tests.adapters.discord_harness import serve
from tests.adapters.telegram_harness import ALICE, BOB, telegram_bot
from tests.emulators.scripted_engine import ScriptedEngine
from tests.engine_process import EngineProcess
from tests.metrics_scrape import bot_scrape, convention_problems, families, samples

ROOT = Path(__file__).resolve().parents[2]


def test_a_newline_in_a_label_and_a_large_count_round_trip() -> None:
    registry = Registry(
        {"x_total": ("Things.", ("platform",))}, {"wait_seconds": ("Waits.", ())}, process=False
    )
    odd = 'tele"gram\\\nsecond line'
    registry.count("x_total", 1_234_567, platform=odd)
    registry.count("x_total", 2, platform=odd)
    registry.count("x_total", 2**53, platform="big")
    for value in (0.07, 0.3, 200.0):
        registry.observe("wait_seconds", value)
    text = generate_latest(registry.registry).decode()
    assert "1.23457e+06" not in text
    found = samples(text)
    assert found[f'x_total{{platform="{odd}"}}'] == 1_234_569
    assert found['x_total{platform="big"}'] == 2**53
    assert found['wait_seconds_bucket{le="0.1"}'] == 1  # cumulative buckets
    assert found['wait_seconds_bucket{le="0.5"}'] == 2
    assert found['wait_seconds_bucket{le="+Inf"}'] == 3 == found["wait_seconds_count"]
    assert found["wait_seconds_sum"] == pytest.approx(200.37)
    assert registry.counters["x_total"][(("platform", odd),)] == 1_234_569
    assert convention_problems(text) == []


def test_a_name_or_labels_not_declared_raise() -> None:
    registry = Registry(process=False)
    with pytest.raises(KeyError):
        registry.count("parley_no_such_total")
    with pytest.raises(ValueError):
        registry.count("parley_replies_total", platform="telegram")  # state missing


def test_every_declared_name_is_a_total_or_seconds_and_has_help() -> None:
    for name, (help_text, _) in {**COUNTERS, **HISTOGRAMS}.items():
        assert name.startswith("parley_") and help_text.endswith("."), name
        assert name.endswith("_total" if name in COUNTERS else "_seconds"), name


def test_every_name_the_code_counts_is_declared_with_the_labels_it_passes() -> None:
    """A name or label set not declared raises where it is counted: found here first, in
    every ``METRICS.count``/``METRICS.observe`` call of the bot's packages."""
    calls = 0
    for path in sorted(
        p for package in ("bot", "adapters", "parley") for p in (ROOT / package).rglob("*.py")
    ):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {
            target.id: node.value.value
            for node in tree.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            for target in node.targets if isinstance(target, ast.Name)
        }  # fmt: skip
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "METRICS"
                and node.func.attr in ("count", "observe")
            ):  # fmt: skip
                continue
            calls += 1
            first = node.args[0]  # a string, or a module constant holding one
            name = first.value if isinstance(first, ast.Constant) else constants[ast.unparse(first)]
            declared = COUNTERS if node.func.attr == "count" else HISTOGRAMS
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert name in declared, f"{where}: {name} is not declared in bot/metrics.py"
            assert {k.arg for k in node.keywords} == set(declared[name][1]), where
    assert calls >= 10


async def test_the_scrape_parses_with_help_everywhere_totals_as_counters_and_the_process(
    tmp_path: Path,
) -> None:
    text = await bot_scrape(tmp_path / "bot.db")
    assert convention_problems(text) == []
    found, types = samples(text), {n: f.type for n, f in families(text).items()}
    for name in ("parley_engine_jobs", "parley_engine_failures", "parley_engine_restarts"):
        assert types[name] == "counter", name
    for name in COUNTERS:
        assert types[name.removesuffix("_total")] == "counter", name
    assert types["parley_queue_depth"] == types["parley_engine_up"] == "gauge"
    assert found["process_resident_memory_bytes"] > 1 << 20
    assert found["process_open_fds"] > 0 and "process_cpu_seconds_total" in found
    assert [v for k, v in found.items() if k.startswith("parley_engine_up{engine=")] == [1]
    assert [v for k, v in found.items() if k.startswith("parley_engine_slots{")] == [2]


@pytest.mark.model
async def test_a_running_bot_counts_messages_replies_edits_and_429s(
    engine: EngineProcess, tmp_path: Path
) -> None:
    settings = {"metrics_port": 0, "rate_limit_per_minute": 1, "max_tokens": 40}
    async with (
        telegram_bot(engine, tmp_path / "bot.db", **settings) as bot,
        aiohttp.ClientSession() as http,
    ):
        assert bot.app is not None and bot.app.metrics_url.startswith("http://127.0.0.1:")

        async def scrape() -> dict[str, float]:
            async with http.get(bot.app.metrics_url + "/metrics") as response:  # type: ignore[union-attr]
                assert response.status == 200
                return samples(await response.text())

        before = await scrape()
        bot.emu.fail_next("editMessageText", "429", times=1, retry_after=1)
        first = await bot.emu.user_says("Tell me about the sea", chat_id=ALICE, user_id=ALICE)
        await bot.answer_to(first, ALICE)
        limited = await bot.emu.user_says("again", chat_id=ALICE, user_id=ALICE)
        await bot.answer_to(limited, ALICE)
        other = await bot.emu.user_says("hello", chat_id=BOB, user_id=BOB)
        await bot.answer_to(other, BOB)
        after = await scrape()

        def grew(name: str) -> float:
            return after.get(name, 0) - before.get(name, 0)

        assert grew('parley_messages_received_total{platform="telegram"}') == 2
        assert grew('parley_messages_refused_total{platform="telegram"}') == 1
        assert grew('parley_replies_total{platform="telegram",state="done"}') == 2
        assert grew('parley_edits_sent_total{platform="telegram"}') >= 2
        assert grew('parley_rate_limited_total{platform="telegram"}') == 1
        assert grew("parley_ttft_seconds_count") == 2 and grew("parley_tokens_generated_total") > 0
        engine_series = f'{{engine="{engine.url}"}}'
        assert after["parley_queue_depth"] == 0 and after["parley_engine_up" + engine_series] == 1
        assert after["parley_engine_slots" + engine_series] == engine.get("/health")["slots_total"]
        assert after["parley_engine_jobs_total" + engine_series] >= 2
        for query, status in (("", "alive"), ("?ready=1", "ready")):
            async with http.get(f"{bot.app.metrics_url}/healthz{query}") as response:
                assert response.status == 200 and (await response.json())["status"] == status


class LoadingEngine(ScriptedEngine):
    """Says "loading" (503) until ``loaded`` is set, as an engine fetching its model does."""

    def __init__(self) -> None:
        super().__init__("hello", slots=2)
        self.loaded = asyncio.Event()

    async def _health(self, request: web.Request) -> web.Response:
        if self.loaded.is_set():
            return await super()._health(request)
        body = {"status": "loading", "model": "", "slots_total": 2, "slots_busy": 0}
        return web.json_response(body, status=503)


async def test_the_bot_is_alive_while_its_engine_loads_and_ready_once_it_serves(
    tmp_path: Path,
) -> None:
    engine = LoadingEngine()
    async with serve(engine.app()) as url, aiohttp.ClientSession() as http:
        settings = load_settings(engine_urls=url, database_path=tmp_path / "bot.db", metrics_port=0)
        app = Parley(settings)
        starting = asyncio.create_task(app.__aenter__())
        try:
            for _ in range(500):
                if app.metrics_url:
                    break
                await asyncio.sleep(0.01)
            async with http.get(app.metrics_url + "/healthz") as alive:
                assert alive.status == 200 and (await alive.json())["status"] == "alive"
            await asyncio.sleep(1.0)  # the pool keeps waiting: the engine said "loading"
            assert not starting.done()
            async with http.get(app.metrics_url + "/healthz?ready=1") as ready:
                assert ready.status == 503
                assert "starting" in (await ready.json())["reasons"][0]
            engine.loaded.set()
            service = await asyncio.wait_for(starting, 10)
            assert service.model == "scripted"
            async with http.get(app.metrics_url + "/healthz?ready=1") as ready:
                assert ready.status == 200
        finally:
            if not starting.done():
                starting.cancel()
            await app.close()
