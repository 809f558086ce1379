"""WAL checkpoints off the write path: on a connection and a thread of their own.

SQLite copies the write-ahead log back into the database (and fsyncs it) whenever a commit
takes the log past ``wal_autocheckpoint`` pages: one commit in a hundred or so then costs
milliseconds of disk I/O instead of a fraction of one. The store turns that off for its own
connection and has this checkpoint every ``every`` commits instead, with PASSIVE checkpoints,
which copy the log and sync it without blocking any writer. The log starts again from its
beginning at the first commit after a checkpoint that left nothing uncopied; a commit that
lands while a checkpoint copies spoils that, so passes repeat (each copying only what came
meanwhile) until one finds nothing new. Under writes so steady that ``PASSES`` of them never
do, a RESTART checkpoint copies the last few frames while it holds writers off (a write on the
loop finds the lock taken and goes to the thread, bot/store/batch.py): without it the log would
only grow. When the last connection closes, SQLite checkpoints whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 200  # commits; each writes a few pages, so roughly SQLite's 1000-page default
PASSES = 2  # passive passes before a RESTART catches up with steady writes
RESTART_WAIT = 1.0  # seconds a RESTART waits for the writer or readers it needs gone


class Checkpointer:
    """Counts the store's commits and checkpoints the WAL every ``every`` of them, one at a
    time, on ``asyncio.to_thread``. Event-loop-only, except the connection, which only the
    checkpoint thread uses."""

    def __init__(self, path: Path, every: int = CHECKPOINT_EVERY) -> None:
        self.path = path
        self.every = every
        self.done = 0  # checkpoints run (tests, benchmarks)
        self._since = 0
        self._running: asyncio.Task[None] | None = None
        self._db: sqlite3.Connection | None = None

    def committed(self) -> None:
        """A transaction was committed; start a checkpoint if one is due."""
        self._since += 1
        if self._since >= self.every and self._running is None:
            self._since = 0
            self._running = asyncio.create_task(self._checkpoint(), name="parley-checkpoint")

    async def _checkpoint(self) -> None:
        try:
            await asyncio.to_thread(self._on_thread)
            self.done += 1
        except Exception as exc:  # the next one, or the close, copies it; never fail a write
            log.warning("WAL checkpoint failed: %s", exc)
        finally:
            self._running = None

    def _on_thread(self) -> None:
        if self._db is None:
            # one thread at a time uses it (a checkpoint runs only when the last has ended)
            self._db = sqlite3.connect(self.path, timeout=RESTART_WAIT, check_same_thread=False)
        logged = -1
        for _ in range(PASSES):
            # fetchall: a statement left unfinished would hold a read lock that pins the log
            ((_, now_logged, _),) = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            if now_logged == logged:  # nothing committed since the last pass copied it all
                return
            logged = now_logged
        self._db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()

    async def close(self) -> None:
        """Wait for a checkpoint under way, then close the connection."""
        if self._running is not None:
            with contextlib.suppress(Exception):
                await self._running
        if self._db is not None:
            self._db.close()
            self._db = None
