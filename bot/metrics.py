"""The bot's Prometheus metrics and health checks: ``/metrics`` and ``/healthz`` on
``METRICS_HOST:METRICS_PORT`` (off unless METRICS_PORT is set).

One registry per process (``METRICS``): counters bumped where things happen (a message
accepted, a reply finished, an edit sent, a 429 received), histograms of queue wait and time
to first token, and gauges read from the service at scrape time (queue depth, engine up).
The text format is Prometheus' plain exposition format, written here: a few dozen lines
instead of a dependency.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)  # seconds
Labels = tuple[tuple[str, str], ...]


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value


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
    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self.histograms: dict[str, dict[Labels, Histogram]] = defaultdict(
            lambda: defaultdict(Histogram)
        )
        self.help: dict[str, str] = {}

    def count(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self.counters[name][tuple(sorted(labels.items()))] += amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        self.histograms[name][tuple(sorted(labels.items()))].observe(value)

    def render(self, gauges: dict[str, float]) -> str:
        """Every metric in Prometheus' text format; ``gauges`` are read just now (keys are
        names, or ``labelled`` names)."""
        lines: list[str] = []
        typed: set[str] = set()
        for key, value in sorted(gauges.items()):
            name = key.split("{", 1)[0]
            if name not in typed:
                typed.add(name)
                lines.append(f"# TYPE {name} gauge")
            lines.append(f"{key} {value:g}")
        for name, series in sorted(self.counters.items()):
            lines.append(f"# TYPE {name} counter")
            lines += [f"{name}{_labels(labels)} {value:g}" for labels, value in series.items()]
        for name, hists in sorted(self.histograms.items()):
            lines.append(f"# TYPE {name} histogram")
            for labels, hist in hists.items():
                lines += list(_histogram_lines(name, labels, hist))
        return "\n".join(lines) + "\n"


def _histogram_lines(name: str, labels: Labels, hist: Histogram) -> Iterator[str]:
    running = 0
    for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
        running += count
        le = "+Inf" if bound == float("inf") else f"{bound:g}"
        yield f"{name}_bucket{_labels((*labels, ('le', le)))} {running}"
    yield f"{name}_sum{_labels(labels)} {hist.total:g}"
    yield f"{name}_count{_labels(labels)} {running}"


def labelled(name: str, **labels: str) -> str:
    """A gauge's key with labels, e.g. ``parley_engine_up{engine="http://a:1"}``."""
    return name + _labels(tuple(sorted(labels.items())))


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"') for _, value in labels)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(labels, escaped, strict=True)) + "}"


METRICS = Registry()

# (ready, reasons): whether the bot can answer now, and why not
Readiness = Callable[[], tuple[bool, list[str]]]


def create_metrics_app(
    gauges: Callable[[], dict[str, float]], ready: Readiness,
    middlewares: Sequence[Middleware] = (),
) -> web.Application:  # fmt: skip
    """``/metrics`` for Prometheus; ``/healthz`` (liveness: the process answers) and
    ``/healthz?ready=1`` (readiness: 503 with the reasons while the bot cannot answer).
    ``middlewares``: e.g. bot/http_guard.py's, which bounds the port's connections."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=METRICS.render(gauges()), content_type="text/plain")

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
