"""The bot's Prometheus metrics and health checks: ``/metrics`` and ``/healthz`` on
``METRICS_HOST:METRICS_PORT`` (off unless METRICS_PORT is set).

One registry per process (``METRICS``, a prometheus_client ``CollectorRegistry`` inside):
counters bumped by name where things happen (a message accepted, a reply finished, an edit
sent, a 429 received), histograms of queue wait and time to first token, and the process's
RSS, CPU seconds and open fds. Every name is declared below with its help text and labels; a
name or label set not declared there raises. What is live state (queue depth, each engine's
slots and whether it is up) is read from the running bot at scrape time (``Live``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from common.prometheus import CONTENT_TYPE, exposition

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)  # seconds
Labels = tuple[tuple[str, str], ...]

# name -> (help, label names)
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "parley_messages_received_total": ("Messages accepted for an answer.", ("platform",)),
    "parley_messages_refused_total": (
        "Messages refused (rate limit, ban, allowlist, queue full).", ("platform",)
    ),
    "parley_replies_total": ("Answers ended, by how they ended.", ("platform", "state")),
    "parley_messages_sent_total": ("Messages the bot posted.", ("platform",)),
    "parley_edits_sent_total": ("Edits of streamed answers sent.", ("platform",)),
    "parley_rate_limited_total": ("429 answers received from a platform.", ("platform",)),
    "parley_tokens_generated_total": ("Tokens generated in answers.", ()),
    "parley_store_write_failures_total": ("Database writes that failed.", ()),
    "parley_http_connections_dropped_total": (
        "Connections to the metrics port closed by its guard.", ("reason",)
    ),
    "parley_telegram_updates_skipped_total": (
        "Telegram updates skipped because they cannot be read.", ()
    ),
    "parley_telegram_malformed_answers_total": ("Malformed getUpdates answers.", ()),
}  # fmt: skip
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "parley_queue_wait_seconds": ("Time from a message accepted to its answer starting.", ()),
    "parley_ttft_seconds": ("Time from a message accepted to its answer's first token.", ()),
}


class TokenRate:
    """Tokens written lately, for `parley admin status`."""

    def __init__(self) -> None:
        self._recent: deque[tuple[float, int]] = deque(maxlen=10_000)  # (finished, tokens)

    def add(self, tokens: int) -> None:
        self._recent.append((time.monotonic(), tokens))

    def per_second(self, window: float = 60.0) -> float:
        since = time.monotonic() - window
        return sum(tokens for at, tokens in self._recent if at >= since) / window


class Registry:
    """The declared counters and histograms in one ``CollectorRegistry`` (``.registry``),
    with the process collector when ``process``."""

    def __init__(
        self,
        counters: Mapping[str, tuple[str, tuple[str, ...]]] = COUNTERS,
        histograms: Mapping[str, tuple[str, tuple[str, ...]]] = HISTOGRAMS,
        process: bool = True,
    ) -> None:
        self.registry = CollectorRegistry()
        self._counters = {
            name: Counter(name, help_text, labels, registry=self.registry)
            for name, (help_text, labels) in counters.items()
        }
        self._histograms = {
            name: Histogram(name, help_text, labels, buckets=BUCKETS, registry=self.registry)
            for name, (help_text, labels) in histograms.items()
        }
        if process:
            ProcessCollector(registry=self.registry)

    def count(self, name: str, amount: float = 1.0, **labels: str) -> None:
        counter = self._counters[name]
        (counter.labels(**labels) if labels else counter).inc(amount)

    def observe(self, name: str, value: float, **labels: str) -> None:
        histogram = self._histograms[name]
        (histogram.labels(**labels) if labels else histogram).observe(value)

    @property
    def counters(self) -> dict[str, dict[Labels, float]]:
        """Each counter's value per label set, as counted so far (for tests)."""
        return {
            name: {
                tuple(sorted(sample.labels.items())): sample.value
                for family in counter.collect()
                for sample in family.samples
                if sample.name == name
            }
            for name, counter in self._counters.items()
        }


METRICS = Registry()


@dataclass(frozen=True)
class EngineLoad:
    """One engine as the bot sees it; ``url`` without secrets."""

    url: str
    up: bool
    slots: int
    busy: int
    jobs: int
    failures: int


@dataclass(frozen=True)
class Live:
    """The bot's state at scrape time."""

    queued: int = 0
    running: int = 0
    restarts: int = 0  # of the local engine
    engines: Sequence[EngineLoad] = ()


# each engine's series: (name, help, EngineLoad field); those ending in _total are counters
PER_ENGINE = (
    ("parley_engine_up", "1 while the engine serves.", "up"),
    ("parley_engine_slots", "The engine's slots.", "slots"),
    ("parley_engine_slots_busy", "Its slots answering now.", "busy"),
    ("parley_engine_jobs_total", "Answers sent to the engine.", "jobs"),
    ("parley_engine_failures_total", "Answers the engine failed.", "failures"),
)


class LiveCollector:
    """``Live`` as metric families, read at each scrape."""

    def __init__(self, read: Callable[[], Live]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:
        return ()  # registering reads nothing: the bot may not be up yet

    def collect(self) -> Iterable[Metric]:
        live = self._read()
        yield GaugeMetricFamily(
            "parley_queue_depth", "Answers waiting for a slot.", value=live.queued
        )
        yield GaugeMetricFamily(
            "parley_answers_running", "Answers being generated now.", value=live.running
        )
        yield CounterMetricFamily(
            "parley_engine_restarts_total", "Restarts of the local engine.", value=live.restarts
        )
        for name, help_text, field in PER_ENGINE:
            kind: type[GaugeMetricFamily] | type[CounterMetricFamily] = (
                CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
            )
            family = kind(name, help_text, labels=["engine"])
            for engine in live.engines:
                family.add_metric([engine.url], float(getattr(engine, field)))
            yield family


# (ready, reasons): whether the bot can answer now, and why not
Readiness = Callable[[], tuple[bool, list[str]]]


def create_metrics_app(
    live: Callable[[], Live], ready: Readiness, middlewares: Sequence[Middleware] = (),
) -> web.Application:  # fmt: skip
    """``/metrics`` for Prometheus (``METRICS`` and ``live``, read per scrape); ``/healthz``
    (liveness: the process answers) and ``/healthz?ready=1`` (readiness: 503 with the reasons
    while the bot cannot answer). ``middlewares``: e.g. bot/http_guard.py's, which bounds the
    port's connections."""
    scraped = CollectorRegistry()
    scraped.register(METRICS.registry)
    scraped.register(LiveCollector(live))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=exposition(scraped), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(request: web.Request) -> web.Response:
        if "ready" not in request.query:
            return web.json_response({"status": "alive"})
        ok, reasons = ready()
        return web.json_response(
            {"status": "ready" if ok else "not ready", "reasons": reasons},
            status=200 if ok else 503,
        )

    app = web.Application(middlewares=middlewares)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
