"""The engine's /metrics: prometheus_client's text format, read back with its own parser;
the real HTTP app and runtime over the scripted byte model (no model needed)."""

from __future__ import annotations

from tests.metrics_scrape import convention_problems, engine_scrape, families, samples


async def test_the_scrape_parses_with_help_everywhere_totals_as_counters_and_the_process() -> None:
    text = await engine_scrape()
    assert convention_problems(text) == []
    types = {name: family.type for name, family in families(text).items()}
    for name in ("requests", "prompt_tokens", "completion_tokens", "kv_restores"):
        assert types[f"parley_engine_{name}"] == "counter", name
    assert types["parley_engine_ttft_seconds"] == "histogram"
    found = samples(text)
    assert found['parley_engine_requests_total{reason="length"}'] == 1  # max_tokens 4
    assert found['parley_engine_requests_total{reason="error"}'] == 0  # shown from 0
    assert found["parley_engine_completion_tokens_total"] == 4
    assert found["parley_engine_ttft_seconds_count"] == 1
    assert found["parley_engine_slots"] == 4 and found["parley_engine_slots_busy"] == 0
    assert found["process_resident_memory_bytes"] > 1 << 20
    assert found["process_open_fds"] > 0 and "process_cpu_seconds_total" in found
