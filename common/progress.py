"""Progress the local engine reports to the bot that started it, before it serves.

A model's download (a GB from the Hub, or the demo model from PyPI) happens before the engine
binds its port, so there is no HTTP to ask. The bot starts it with ``PARLEY_PROGRESS=lines``;
the engine then writes one ``progress`` line per step to stdout (the same pipe that later says
``listening on URL``), and the bot shows them where its user waits (bot/engines/progress.py).
Run on its own, the engine draws huggingface_hub's usual bar on stderr instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PROGRESS_VARIABLE = "PARLEY_PROGRESS"
LINES = "lines"
PREFIX = "progress "


@dataclass(frozen=True)
class Progress:
    """``stage`` ("download" or "fetch"), what (a file name), and bytes so far of ``total``
    (None when the size is unknown)."""

    stage: str
    what: str
    done: int
    total: int | None

    def line(self) -> str:
        total = "?" if self.total is None else str(self.total)
        return f"{PREFIX}{self.stage} {self.done} {total} {self.what}"


def wanted() -> bool:
    """Whether this engine was asked for progress lines (by the bot that started it)."""
    return os.environ.get(PROGRESS_VARIABLE) == LINES


def parse(line: str) -> Progress | None:
    """The ``Progress`` a line says, or None if it is no progress line."""
    if not line.startswith(PREFIX):
        return None
    parts = line[len(PREFIX) :].split(" ", 3)
    if len(parts) != 4 or not parts[1].isdigit() or not (parts[2].isdigit() or parts[2] == "?"):
        return None
    stage, done, total, what = parts
    return Progress(stage, what, int(done), None if total == "?" else int(total))
