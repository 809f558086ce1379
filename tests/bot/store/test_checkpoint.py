"""WAL checkpoints on a thread of their own: commits never checkpoint, yet the log is reused
from its start again and again, even under writes with no quiet moment between them, and the
database file has everything once the store is closed."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

from bot.store.database import Store

ROW = "x" * 3000  # about a page a commit


def _log_generation(path: Path) -> bytes:
    """The WAL header's salts: SQLite changes them each time the log starts over."""
    with path.open("rb") as wal:
        return wal.read(24)[16:24]


async def _restarts(tmp_path: Path, commits: int, every: int) -> int:
    """How many times the log started over during ``commits`` back-to-back commits, with a
    checkpoint due every ``every``."""
    store = await Store.open(tmp_path / "parley.db")
    wal = tmp_path / "parley.db-wal"
    try:
        assert await store.query("PRAGMA wal_autocheckpoint", ()) == [(0,)]  # none by commits
        assert store._checkpoints is not None
        store._checkpoints.every = every
        generations = []
        for n in range(commits):
            await store.atomic(
                lambda db, n=n: db.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?)", (f"k{n}", ROW)
                ),
                now=n % 2 == 0,  # on the loop and on the thread alike
            )
            generations.append(_log_generation(wal))
            await asyncio.sleep(0)  # back to back, letting other tasks run as the bot does
        while store._checkpoints._running is not None:
            await asyncio.sleep(0.01)
        assert (store._checkpoints.done > 0) == (commits >= every)
        return sum(a != b for a, b in itertools.pairwise(generations))
    finally:
        await store.close()
        assert not wal.exists()  # the close checkpointed the rest
        with sqlite3.connect(tmp_path / "parley.db") as db:
            assert db.execute("SELECT COUNT(*) FROM settings").fetchone() == (commits,)


async def test_the_log_starts_over_under_steady_writes(tmp_path: Path) -> None:
    """Without the checkpointer the log would hold every commit (nothing copies it back);
    a passive checkpoint alone never catches up with commits that keep coming either."""
    assert await _restarts(tmp_path / "unchecked", 600, every=10**9) == 0
    assert await _restarts(tmp_path / "checked", 600, every=20) >= 3
