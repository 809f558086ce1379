"""``parley admin backup PATH``: a consistent copy of the live database, with SQLite's online
backup API, while the bot keeps running.

The copy is read through a second, read-only connection in a thread: in WAL mode a reader
sees one snapshot and never blocks the bot's writes. It is written next to the target, private
from its first byte (mode 600: it holds everyone's history), checked with ``PRAGMA
integrity_check`` and only then moved into place, so a failed backup never leaves a
half-written file at PATH.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ParleyError
from bot.store.private_files import create_private_file


@dataclass(frozen=True)
class Backup:
    path: Path
    bytes: int
    seconds: float


async def backup_database(source: Path, target: Path) -> Backup:
    """Copy ``source`` (the live database) to ``target``; ParleyError saying why if it fails."""
    return await asyncio.to_thread(_backup, source, target)


def _backup(source: Path, target: Path) -> Backup:
    started = time.monotonic()
    if target.resolve() == source.resolve():
        raise ParleyError("the backup must go to another file than the database itself")
    if not target.parent.is_dir():
        raise ParleyError(f"cannot write a backup to {target}: {target.parent} is not a folder")
    partial = target.with_name(target.name + ".partial")
    try:
        # private from its first byte (and so its -journal): it holds everyone's history
        partial.unlink(missing_ok=True)  # a failed backup's, of whatever mode
        create_private_file(partial)
        with (
            closing(sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)) as reader,
            closing(sqlite3.connect(partial)) as copy,
        ):
            reader.backup(copy)
            (verdict,) = copy.execute("PRAGMA integrity_check").fetchone()
        if verdict != "ok":
            raise ParleyError(f"the copy failed its integrity check: {verdict}")
        os.chmod(partial, 0o600)
        os.replace(partial, target)
    except (sqlite3.Error, OSError) as exc:
        raise ParleyError(f"cannot back up to {target}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return Backup(target, target.stat().st_size, time.monotonic() - started)
