"""A few Prometheus metrics in text format, without a client library.

Updated from the event loop thread only (the server records events as it forwards them), so
no locking is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from engine.kv_spill import SpillCache


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self.values: dict[tuple[tuple[str, str], ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for key, value in sorted(self.values.items()) or [((), 0.0)]:
            lines.append(f"{self.name}{_labels(key)} {value:g}")
        return lines


class Gauge:
    """A value read when scraped; ``kind="counter"`` for a total kept elsewhere."""

    def __init__(
        self, name: str, help_text: str, read: Callable[[], float], kind: str = "gauge"
    ) -> None:
        self.name, self.help, self.read, self.kind = name, help_text, read, kind

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} {self.kind}",
            f"{self.name} {self.read():g}",
        ]


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name, self.help = name, help_text
        self.buckets = list(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for bound, count in zip(self.buckets, self.counts, strict=True):
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {count}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {self.total:g}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


def _spill_stat(spill: Callable[[], SpillCache | None], name: str) -> float:
    cache = spill()
    if cache is None:
        return 0.0
    value = getattr(cache, name)
    return float(value() if callable(value) else value)


def _labels(key: tuple[tuple[str, str], ...]) -> str:
    if not key:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in key)
    return "{" + inner + "}"


class EngineMetrics:
    """Everything /metrics reports."""

    def __init__(
        self,
        load: Callable[[], tuple[int, int, int]],
        spill: Callable[[], SpillCache | None] = lambda: None,
    ) -> None:
        self.requests = Counter("parley_engine_requests_total", "Finished requests by reason.")
        self.prompt_tokens = Counter("parley_engine_prompt_tokens_total", "Prompt tokens.")
        self.cached_tokens = Counter(
            "parley_engine_cached_tokens_total", "Prompt tokens served from the KV cache."
        )
        self.completion_tokens = Counter(
            "parley_engine_completion_tokens_total", "Generated tokens."
        )
        self.ttft = Histogram(
            "parley_engine_ttft_seconds", "Time to first token.",
            [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
        )  # fmt: skip
        self.decode_rate = Histogram(
            "parley_engine_decode_tokens_per_second", "Per-request decode speed.",
            [5, 10, 20, 30, 40, 50, 75, 100, 200],
        )  # fmt: skip
        self._gauges = [
            Gauge("parley_engine_slots_total", "Sequences served at once.", lambda: load()[0]),
            Gauge("parley_engine_slots_busy", "Sequences generating now.", lambda: load()[1]),
            Gauge("parley_engine_queue_depth", "Requests waiting for a slot.", lambda: load()[2]),
            Gauge(
                "parley_engine_kv_ram_bytes", "Idle conversations' KV held in RAM.",
                lambda: _spill_stat(spill, "used_bytes"),
            ),
            Gauge(
                "parley_engine_kv_ram_conversations", "Conversations whose KV is in RAM.",
                lambda: _spill_stat(spill, "__len__"),
            ),
            Gauge(
                "parley_engine_kv_restores_total", "Conversations restored from RAM.",
                lambda: _spill_stat(spill, "restores"), "counter",
            ),
            Gauge(
                "parley_engine_kv_ram_dropped_total", "Spilled conversations dropped for room.",
                lambda: _spill_stat(spill, "dropped"), "counter",
            ),
        ]  # fmt: skip

    def render(self) -> str:
        metrics: list[Counter | Histogram | Gauge] = [
            self.requests,
            self.prompt_tokens,
            self.cached_tokens,
            self.completion_tokens,
            self.ttft,
            self.decode_rate,
            *self._gauges,
        ]
        return "\n".join(line for m in metrics for line in m.render()) + "\n"
