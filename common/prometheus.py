"""How the bot and the engine expose their prometheus_client registries, written once: no
``*_created`` series (nothing reads them; they double a scrape), and the text format's media type,
which every Prometheus version scrapes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest

disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the text format, for a ``/metrics`` response."""
    return generate_latest(registry)
