"""What a failed SQLite call says about the storage under it, in words an operator can act on.

A full disk, a read-only file or folder, an I/O error or a damaged file are not bugs in Parley:
the operator must fix the machine. ``storage_fault`` recognises them (from the error SQLite
raises) and names the fix, so start-up can print one line and the running bot can refuse a
message clearly instead of dropping it (``StorageHealth`` keeps that state for readiness).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.errors import StoreUnusable
from bot.metrics import METRICS

log = logging.getLogger(__name__)

PROBE_EVERY = 5.0  # seconds between write probes while the store refuses writes

# (what SQLite's message contains, what the operator is told): first match wins
_FAULTS: tuple[tuple[str, str], ...] = (
    ("database or disk is full", "the disk is full"),
    ("readonly database", "the database is read-only (check the file's and folder's permissions)"),
    ("disk i/o error", "the disk reported an I/O error"),
    # SQLite says this for a folder it may not write too: WAL mode creates -wal and -shm
    # files beside the database
    (
        "unable to open database",
        "the database file cannot be opened (it and its folder must be readable and writable)",
    ),
    ("malformed", "the database file is damaged (restore it from a backup)"),
    ("file is not a database", "the file is not a SQLite database (damaged or truncated?)"),
    ("out of memory", "SQLite ran out of memory"),
    # past the 5 s busy timeout: a backup, a sqlite3 shell or a second Parley holds the lock
    ("database is locked", "another program holds the database's write lock (a second bot?)"),
)


# what an OSError from making the database's file or folder means, by errno
_OS_FAULTS: dict[int, str] = {
    errno.ENOSPC: "the disk is full",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied (check the owner and mode of the file and its folder)",
    errno.EPERM: "not permitted (check the owner, mode and attributes (lsattr) of the file "
    "and its folder)",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "part of its path is a file, not a folder",
    errno.EEXIST: "a file is in the way of its folder",
    errno.EIO: "the disk reported an I/O error",
}
if hasattr(errno, "EDQUOT"):  # not on every platform
    _OS_FAULTS[errno.EDQUOT] = "the disk quota is used up"


def storage_fault(exc: BaseException) -> str | None:
    """What is wrong with the storage, if ``exc`` says so: SQLite's error, the OS's when the
    file or its folder is made, or the error either was raised from (a failed migration wraps
    SQLite's). None for other errors (a bug, a constraint, a busy database)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _OS_FAULTS:
            return _OS_FAULTS[seen.errno]
        if isinstance(seen, sqlite3.DatabaseError):
            text = str(seen).lower()
            for needle, meaning in _FAULTS:
                if needle in text:
                    return meaning
        seen = seen.__cause__
    return None


def unusable_store(path: str | Path, exc: BaseException) -> StoreUnusable | None:
    """The one line start-up shows when the database at ``path`` cannot be used because of
    ``exc`` (a storage fault); None for any other error, which is a bug to show as it is."""
    if (fault := storage_fault(exc)) is None:
        return None
    fault = _cause_shown_by_disk(Path(path), fault)
    return StoreUnusable(f"cannot use the database {path} (DATABASE_PATH): {fault} [{_said(exc)}]")


# SQLite's words for an open or write that failed without saying why
_VAGUE = frozenset(
    meaning
    for needle, meaning in _FAULTS
    if needle in ("readonly database", "disk i/o error", "unable to open database")
)
_PAGE = 4096  # bytes: less free than a page is no room at all


def _cause_shown_by_disk(path: Path, fault: str) -> str:
    """A vague fault named by the cause the file system shows, if it shows one: mounted
    read-only, or full. (SQLite says "disk I/O error" when a full disk stops it making its
    -shm file, and "unable to open" for a read-only mount.)"""
    if fault not in _VAGUE or not hasattr(os, "statvfs"):
        return fault
    try:
        disk = os.statvfs(path.parent)
    except OSError:
        return fault
    if disk.f_flag & os.ST_RDONLY:
        return _OS_FAULTS[errno.EROFS]
    free_blocks = disk.f_bfree if os.geteuid() == 0 else disk.f_bavail  # root may use all
    if free_blocks * disk.f_frsize < _PAGE:
        return _OS_FAULTS[errno.ENOSPC]
    return fault


def _said(exc: BaseException) -> str:
    """What the system itself said, for a search or a bug report: the innermost cause."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


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
