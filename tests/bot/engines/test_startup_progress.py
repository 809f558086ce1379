"""A starting engine's download and load, shown where the person who started Parley waits
(bot/engines/progress.py, common/progress.py, engine/progress_lines.py)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import aiohttp
import pytest

from bot.engines.local import LocalEngine
from bot.engines.progress import StartupView, describe
from common.progress import Progress, parse
from engine.demo_model import demo_model_path
from tests.emulators.hf_hub import HubStandIn
from tests.emulators.threaded import ThreadedServer


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_progress_line_says_what_it_was_given_and_nothing_else_is_one() -> None:
    for step in (Progress("download", "a b.gguf", 5, 10), Progress("fetch", "x.gguf", 0, None)):
        assert parse(step.line()) == step
    for line in ("listening on http://127.0.0.1:1", "progress download x 1", "progress a b c d"):
        assert parse(line) is None


def test_the_shown_line_has_the_share_sizes_and_rate() -> None:
    step = Progress("download", "q.gguf", 350_000_000, 1_000_000_000)
    assert describe(step, 10.0) == "downloading q.gguf: 35 %, 350 of 1,000 MB, 35.0 MB/s"
    assert describe(Progress("download", "q.gguf", 2_000_000, None), 0.1) == (
        "downloading q.gguf: 2 MB"
    )


def test_a_terminal_gets_one_line_updated_in_place_and_cleared_when_ready() -> None:
    terminal = Terminal()
    view = StartupView(terminal)
    for done in (0, 500, 1000):
        view.progress(Progress("download", "q.gguf", done * 1_000_000, 1_000_000_000))
    view.loading()
    view.ready()
    shown = terminal.getvalue()
    assert "\n" not in shown and shown.endswith("loading the model…\r\x1b[K")
    assert shown.count("\r\x1b[K") == 5 and "100 %, 1,000 of 1,000 MB" in shown


def test_elsewhere_the_log_has_the_start_and_end_and_a_line_per_tenth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    view = StartupView(io.StringIO())
    with caplog.at_level(logging.INFO, logger="bot.engines.progress"):
        for done in range(0, 1001, 50):  # every 5 %
            view.progress(Progress("download", "q.gguf", done * 1_000_000, 1_000_000_000))
        view.loading()
        view.ready()
    levels = [(r.levelname, r.getMessage().split(": ")[1].split(" %")[0]) for r in caplog.records]
    assert levels[0] == ("WARNING", "0") and levels[-1] == ("WARNING", "100")
    assert [share for level, share in levels[1:-1] if level == "INFO"] == [
        str(n) for n in range(10, 100, 10)
    ]


@pytest.mark.model
async def test_a_model_the_engine_downloads_is_shown_on_the_terminal_as_it_comes(
    tmp_path: Path,
) -> None:
    hub = HubStandIn()
    hub.add("acme/tiny-GGUF", "tiny.gguf", demo_model_path())
    terminal = Terminal()
    with ThreadedServer(hub.app()) as server:
        engine = LocalEngine(
            ["--model", "acme/tiny-GGUF:tiny.gguf", "--n-ctx", "256", "--parallel", "1"],
            log_path=tmp_path / "engine.log",
            env={"HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf")},
            view=StartupView(terminal),
        )
        async with aiohttp.ClientSession() as session:
            await engine.start(session, timeout=120)
            await engine.stop()
    shown = terminal.getvalue()
    size = demo_model_path().stat().st_size / 1e6
    assert f"downloading tiny.gguf: 100 %, {size:,.0f} of {size:,.0f} MB" in shown
    assert "loading the model…" in shown and shown.endswith("\r\x1b[K")
