"""What a failed SQLite call says about the storage under it, in words an operator can act on.

A full disk, a read-only file or folder, an I/O error or a damaged file are not bugs in Parley:
the operator must fix the machine. ``storage_fault`` recognises them (from the error SQLite
raises) and names the fix, so start-up can print one line and the running bot can refuse a
message clearly instead of dropping it (``StorageHealth`` keeps that state for readiness).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable

from bot.metrics import METRICS

log = logging.getLogger(__name__)

PROBE_EVERY = 5.0  # seconds between write probes while the store refuses writes

# (what SQLite's message contains, what the operator is told): first match wins
_FAULTS: tuple[tuple[str, str], ...] = (
    ("database or disk is full", "the disk is full"),
    ("readonly database", "the database is read-only (check the file's and folder's permissions)"),
    ("disk i/o error", "the disk reported an I/O error"),
    ("unable to open database", "the database file cannot be opened"),
    ("malformed", "the database file is damaged (restore it from a backup)"),
    ("file is not a database", "the file is not a SQLite database (damaged or truncated?)"),
    ("out of memory", "SQLite ran out of memory"),
)


def storage_fault(exc: BaseException) -> str | None:
    """What is wrong with the storage, if ``exc`` says so; None for other errors (a bug, a
    constraint, a busy database)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    text = str(exc).lower()
    for needle, meaning in _FAULTS:
        if needle in text:
            return meaning
    return None


class StorageHealth:
    """Whether the store takes writes, as the last write (or probe) found it. Readiness reports
    the fault; the log gets one line when it starts and one when it ends (not one per refused
    message); /metrics counts every write refused. While it lasts, ``probe`` (one small write)
    runs every ``every`` s, so readiness recovers with the disk, not only with the next
    message. Event-loop-only."""

    def __init__(self, probe: Callable[[], Awaitable[object]], every: float = PROBE_EVERY) -> None:
        self.fault: str | None = None  # what is wrong, while writes fail
        self._probe = probe
        self._every = every
        self._probing: asyncio.Task[None] | None = None

    def check(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a storage fault; if so it is reported and probed."""
        if (fault := storage_fault(exc)) is None:
            return False
        METRICS.count("parley_store_write_failures_total")
        if self.fault is None:
            log.error(
                "the database cannot be written (%s): messages are refused until it can", fault
            )
        self.fault = fault
        if self._probing is None or self._probing.done():
            self._probing = asyncio.create_task(self._probe_until_ok(), name="parley-store-probe")
        return True

    def recovered(self) -> None:
        """A write went through."""
        if self.fault is not None:
            log.warning("the database can be written again (it was: %s)", self.fault)
        self.fault = None

    async def _probe_until_ok(self) -> None:
        while self.fault is not None:
            await asyncio.sleep(self._every)
            try:
                await self._probe()
            except sqlite3.DatabaseError as exc:
                if storage_fault(exc) is None:
                    raise
            else:
                self.recovered()

    async def close(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
            self._probing = None
