"""What a failed SQLite call says about the storage under it, in words an operator can act on.

A full disk, a read-only file or folder, an I/O error or a damaged file are not bugs in Parley:
the operator must fix the machine. ``storage_fault`` recognises them (from the error SQLite
raises) and names the fix, so start-up can print one line and the running bot can refuse a
message clearly instead of dropping it. Pure functions; any thread.
"""

from __future__ import annotations

import sqlite3

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
