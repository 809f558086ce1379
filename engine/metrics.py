"""The engine's Prometheus metrics (``/metrics``), written by prometheus_client.

One ``CollectorRegistry`` per engine app (one per process): counters of finished requests
and tokens, histograms of time to first token and decode speed, bumped from the event loop
thread as the server forwards events; slots, queue depth and the RAM KV cache read from the
runtime at scrape time; and the process's RSS, CPU seconds and open fds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from common.prometheus import exposition
from engine.kv_spill import SpillCache
from engine.requests import Usage

# how a request can end: each is shown from 0 on, so rate() sees the first one
REASONS = ("stop", "length", "cancelled", "error")


class LiveCollector:
    """Slots, queue and the RAM KV cache, read from the runtime at each scrape."""

    def __init__(
        self, load: Callable[[], tuple[int, int, int]], spill: Callable[[], SpillCache | None]
    ) -> None:
        self._load, self._spill = load, spill

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        total, busy, queued = self._load()
        cache = self._spill()
        yield GaugeMetricFamily("parley_engine_slots", "Sequences served at once.", value=total)
        yield GaugeMetricFamily("parley_engine_slots_busy", "Sequences generating now.", busy)
        yield GaugeMetricFamily("parley_engine_queue_depth", "Requests waiting for a slot.", queued)
        yield GaugeMetricFamily(
            "parley_engine_kv_ram_bytes", "Idle conversations' KV held in RAM.",
            cache.used_bytes if cache else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "parley_engine_kv_ram_conversations", "Conversations whose KV is in RAM.",
            len(cache) if cache else 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            "parley_engine_kv_restores_total", "Conversations restored from RAM.",
            cache.restores if cache else 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            "parley_engine_kv_ram_dropped_total", "Spilled conversations dropped for room.",
            cache.dropped if cache else 0,
        )  # fmt: skip


class EngineMetrics:
    """Everything /metrics reports; ``render()`` is the scrape."""

    def __init__(
        self,
        load: Callable[[], tuple[int, int, int]],
        spill: Callable[[], SpillCache | None] = lambda: None,
    ) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "parley_engine_requests_total", "Finished requests by how they ended.", ["reason"],
            registry=registry,
        )  # fmt: skip
        for reason in REASONS:
            self.requests.labels(reason=reason)
        self.prompt_tokens = Counter(
            "parley_engine_prompt_tokens_total", "Prompt tokens.", registry=registry
        )
        self.cached_tokens = Counter(
            "parley_engine_cached_tokens_total", "Prompt tokens served from the KV cache.",
            registry=registry,
        )  # fmt: skip
        self.completion_tokens = Counter(
            "parley_engine_completion_tokens_total", "Generated tokens.", registry=registry
        )
        self.ttft = Histogram(
            "parley_engine_ttft_seconds", "Time from a request received to its first token.",
            buckets=[0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30], registry=registry,
        )  # fmt: skip
        self.decode_rate = Histogram(
            "parley_engine_decode_tokens_per_second", "Per-request decode speed.",
            buckets=[5, 10, 20, 30, 40, 50, 75, 100, 200], registry=registry,
        )  # fmt: skip
        registry.register(LiveCollector(load, spill))
        ProcessCollector(registry=registry)

    def ended(self, reason: str) -> None:
        """A request that ended without usage (cancelled, or failed)."""
        self.requests.labels(reason=reason).inc()

    def finished(self, reason: str, usage: Usage) -> None:
        self.requests.labels(reason=reason).inc()
        self.prompt_tokens.inc(usage.prompt_tokens)
        self.cached_tokens.inc(usage.cached_tokens)
        self.completion_tokens.inc(usage.completion_tokens)
        if usage.decode_per_second > 0:
            self.decode_rate.observe(usage.decode_per_second)

    def render(self) -> bytes:
        return exposition(self.registry)
