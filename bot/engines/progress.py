"""A starting local engine's progress, shown where the person who started Parley waits.

The engine reports its model's download (common/progress.py) before it serves, then loads the
model. On a terminal that is one line that updates in place ("downloading qwen….gguf: 35 %,
350 of 1,000 MB, 12.3 MB/s") and is cleared once the engine serves, so `parley chat`'s start-up
lines and the chat follow cleanly; anywhere else (a service's journal) a log line when a
download starts and ends, and one per tenth at INFO.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from common.progress import Progress

log = logging.getLogger(__name__)

MB = 1_000_000
WHAT = {"download": "downloading", "fetch": "fetching the demo model"}


class StartupView:
    """``progress`` for each line the engine reports, ``loading`` once it listens, ``ready``
    once it serves. Event-loop-only."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty()
        self._started: dict[str, float] = {}  # when each download began
        self._tenths: dict[str, int] = {}
        self._shown = False  # a live line is on the terminal

    def progress(self, step: Progress) -> None:
        now = time.monotonic()
        text = describe(step, now - self._started.setdefault(step.what, now))
        tenth = step.done * 10 // step.total if step.total else 0
        last = self._tenths.get(step.what)
        self._tenths[step.what] = max(tenth, last or 0)
        if self.live:
            self._show(text)
        elif last is None or (tenth >= 10 > last):  # started, finished
            log.warning("%s", text)
        elif tenth > last:
            log.info("%s", text)

    def loading(self) -> None:
        if self.live:
            self._show("loading the model…")

    def ready(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def _show(self, text: str) -> None:
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self._shown = True


def describe(step: Progress, seconds: float) -> str:
    """``downloading NAME: 35 %, 350 of 1,000 MB, 12.3 MB/s`` (what is known of it)."""
    done = step.done / MB
    head = f"{WHAT.get(step.stage, step.stage)} {step.what}"
    rate = f", {done / seconds:.1f} MB/s" if seconds > 0.5 and step.done else ""
    if not step.total:
        return f"{head}: {done:,.0f} MB{rate}"
    share = 100 * step.done // step.total
    return f"{head}: {share} %, {done:,.0f} of {step.total / MB:,.0f} MB{rate}"
