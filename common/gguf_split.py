"""Split GGUFs: one model in N files named ``NAME-00001-of-0000N.gguf`` (llama.cpp's gguf-split,
as large models ship on the Hub). llama.cpp loads the set from its first file when the others lie
beside it; so a download fetches every part, and a listing or a choice shows the set once, by
its first file. The engine (engine/download.py) and the bot (bot/models/pull.py, catalog.py)
both ask here."""

from __future__ import annotations

import re
from collections.abc import Iterable

_PART = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


def split_parts(filename: str) -> list[str]:
    """Every file of the split set ``filename`` is part of, first to last (a path prefix
    kept); ``[filename]`` for a file that is not split."""
    found = _PART.match(filename)
    if found is None or not 1 <= int(found["no"]) <= int(found["count"]):
        return [filename]
    count, width = int(found["count"]), len(found["count"])
    return [f"{found['stem']}-{n:0{width}d}-of-{found['count']}.gguf" for n in range(1, count + 1)]


def is_later_part(filename: str) -> bool:
    """A split set's second or later file: listed and chosen through its first."""
    found = _PART.match(filename)
    return found is not None and 1 < int(found["no"]) <= int(found["count"])


def one_per_model(names: Iterable[str]) -> list[str]:
    """``names`` with each split set shown once, by its first file."""
    return [name for name in names if not is_later_part(name)]
