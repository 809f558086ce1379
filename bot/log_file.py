"""An append-only log file that rotates itself: the local engine's stderr goes to
``engine.log`` beside the database for as long as the bot runs, which would otherwise grow
without end (one INFO line per answer, plus whatever llama.cpp says)."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

ROTATE_AT = 20 * 2**20  # bytes; the previous file is kept as engine.log.1


class RotatingLog:
    """``write`` lines; past ``max_bytes`` the file becomes ``NAME.1`` (replacing the older
    one) and a fresh file starts. Use as a context manager."""

    def __init__(self, path: Path, max_bytes: int = ROTATE_AT) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._file: TextIO | None = None
        self._size = 0

    def __enter__(self) -> RotatingLog:
        self._open()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, line: str) -> None:
        assert self._file is not None
        if self._size >= self.max_bytes:
            self._file.close()
            self.path.replace(self.path.with_name(self.path.name + ".1"))
            self._open()
            assert self._file is not None
        self._file.write(line)
        self._file.flush()
        self._size += len(line.encode("utf-8", "replace"))

    def _open(self) -> None:
        self._file = self.path.open("a", encoding="utf-8")
        self._size = self.path.stat().st_size
