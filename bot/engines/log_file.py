"""An append-only log file that rotates itself: the local engine's stderr goes to
``engine.log`` beside the database for as long as the bot runs, which would otherwise grow
without end (one INFO line per answer, plus whatever llama.cpp says)."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
from collections import deque
from pathlib import Path
from typing import TextIO

from bot.store.private_files import open_private_append

log = logging.getLogger(__name__)

ROTATE_AT = 20 * 2**20  # bytes; the previous file is kept as engine.log.1
CHUNK = 2**16  # bytes read at a time
TAIL_LINE = 2000  # characters of a line kept in the tail (error messages quote it)


class RotatingLog:
    """``write`` lines; past ``max_bytes`` the file becomes ``NAME.1`` (replacing the older
    one) and a fresh file starts. Use as a context manager."""

    def __init__(self, path: Path, max_bytes: int = ROTATE_AT) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._file: TextIO | None = None
        self._size = 0

    def __enter__(self) -> RotatingLog:
        """Opens the file; if it cannot be, the first ``write`` raises why (OSError), so a
        caller that copies a stream keeps reading it (bot/log_file.copy_stream)."""
        with contextlib.suppress(OSError):
            self._open()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, line: str) -> None:
        if self._file is None:
            self._open()
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
        # mode 600: the engine logs model paths and errors that may quote a prompt
        self._file = os.fdopen(open_private_append(self.path), "a", encoding="utf-8")
        self._size = os.fstat(self._file.fileno()).st_size


async def copy_stream(stream: asyncio.StreamReader, sink: RotatingLog, tail: deque[str]) -> None:
    """Copy ``stream`` into ``sink`` as it comes until it ends, its last lines kept in ``tail``.

    It reads chunks, not lines: a line past the stream's 64 KiB limit would end a line-by-line
    copy (ValueError), and a child writing to a pipe no one reads freezes once it is full.
    For the same reason a failing file (a full disk) only stops the copying, not the reading.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    line = ""  # the line being read, its first TAIL_LINE characters
    writing = True
    while chunk := await stream.read(CHUNK):
        text = decoder.decode(chunk)
        *ended, rest = (line + text).split("\n")
        tail.extend(kept for whole in ended if (kept := whole.strip()[:TAIL_LINE]))
        line = rest[: TAIL_LINE * 2]
        if writing:
            try:
                sink.write(text)
            except OSError as exc:
                log.error("the engine's log cannot be written (%s); its output is dropped", exc)
                writing = False
    end = decoder.decode(b"", final=True)  # a character cut off at the very end
    if writing and end:
        with contextlib.suppress(OSError):
            sink.write(end)
    if kept := (line + end).strip()[:TAIL_LINE]:
        tail.append(kept)
