"""The bot's SQLite store: the connection, users and conversations, settings and bans.

Messages and jobs are written and read by the message path's calls in bot/store/jobs.py
(accept, begin, finish, resume), the operator's queries are in bot/store/admin_queries.py:
both through this connection's ``atomic`` and ``query``, with the statements of
bot/store/rows.py.

One aiosqlite connection in autocommit mode; every write method is atomic and has committed
before it returns, so "the user's message is stored before the job is queued" holds even if the
process dies right after. An asyncio lock serialises the methods. Methods are safe to call from
any coroutine on the loop that opened the store; not from other threads.

Writes on the message path go through ``atomic``: the whole write is one plain function run on
aiosqlite's thread, one round trip instead of one per statement (each is about 0.2 ms when the
event loop is busy, and a message makes a dozen); writes asked for at the same time share one
transaction, each in its own savepoint (bot/store/batch.py). The write a message's engine
request waits for runs on the loop's thread instead, when the connection is free. The WAL is
checkpointed on a thread of its own, never by a commit (bot/store/checkpoint.py).

Rows leave as frozen dataclasses. Timestamps are ISO-8601 UTC. Errors: ``ValueError`` for a bad
role/status or text that is not valid Unicode (a lone surrogate), ``KeyError`` when updating a
job that does not exist, ``sqlite3.IntegrityError`` when a foreign key points nowhere; a write
that raises stores nothing.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.store.batch import BUSY_TIMEOUT_MS, GroupCommit
from bot.store.checkpoint import Checkpointer
from bot.store.faults import unusable_store
from bot.store.migrations import MigrationError, apply_migrations
from bot.store.private_files import create_private_file, make_private_folder
from bot.store.rows import (
    Conversation,
    Job,
    JobStatus,
    Message,
    MessageStatus,
    Role,
    User,
    is_banned,
    now_iso,
    replace_conversation,
    upsert_user,
    user_setting,
)

__all__ = [
    "Conversation", "Job", "JobStatus", "Message", "MessageStatus", "Role", "Store", "User",
]  # fmt: skip

T = TypeVar("T")


class Store:
    """Persistence for the bot. Open with ``await Store.open(path)``; close when done."""

    def __init__(self, db: aiosqlite.Connection, path: Path | None = None) -> None:
        """``db`` as ``open`` makes it: usable from any thread, no automatic checkpoints."""
        self._db = db
        self.path = path  # the database file (None: in memory)
        self._lock = asyncio.Lock()
        self._checkpoints = Checkpointer(path) if path is not None else None
        committed = self._checkpoints.committed if self._checkpoints is not None else None
        self._commits = GroupCommit(db, self._lock, committed)

    @classmethod
    async def open(cls, path: str | Path, *, migrations_dir: Path | None = None) -> Store:
        """Open (a new file with mode 600, new folders 700: bot/store/private_files.py), bring the
        schema up to date and check that it takes writes. Storage the operator must fix (a
        folder at ``path``, a damaged file, a read-only or full disk) raises StoreUnusable,
        one line (bot/store/faults.py); anything else is raised as it is."""
        try:
            return await cls._open(path, migrations_dir)
        except (OSError, sqlite3.Error, MigrationError) as exc:
            if (unusable := unusable_store(path, exc)) is None:
                raise
            raise unusable from exc

    @classmethod
    async def _open(cls, path: str | Path, migrations_dir: Path | None) -> Store:
        memory = str(path) == ":memory:"
        if not memory:
            _create_private(Path(path))
        # writes on the message path run on the loop's thread (bot/store/batch.py)
        db = await aiosqlite.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA wal_autocheckpoint = 0")  # bot/store/checkpoint.py does it
            await db.execute("PRAGMA foreign_keys = ON")
            await apply_migrations(db, migrations_dir)
            await _check_writable(db)
        except BaseException:
            await db.close()
            raise
        return cls(db, None if memory else Path(path))

    async def close(self) -> None:
        if self._checkpoints is not None:
            await self._checkpoints.close()
        async with self._lock:
            await self._db.close()

    # ---- users and conversations ------------------------------------------------------

    async def user(self, platform: str, platform_user_id: str, name: str) -> User:
        """Get or create the user; a changed display name is saved."""
        return await self.atomic(
            functools.partial(upsert_user, platform=platform, platform_user_id=platform_user_id,
                              name=name)
        )

    async def reset_conversation(self, user: User, chat_id: str) -> Conversation:
        """Start a fresh conversation (/reset); the old one and its messages are kept."""
        return await self.atomic(
            functools.partial(replace_conversation, user=user, chat_id=chat_id)
        )

    # ---- settings and bans ------------------------------------------------------------

    async def get_setting(self, key: str) -> str | None:
        rows = await self.query("SELECT value FROM settings WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def set_setting(self, key: str, value: str | None) -> None:
        """Set a bot-wide setting; None deletes it."""
        async with self.transaction() as db:
            if value is None:
                await db.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                await db.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    async def get_user_setting(self, user_id: int, key: str) -> str | None:
        return await self._read(functools.partial(user_setting, user_id=user_id, key=key))

    async def set_user_setting(self, user_id: int, key: str, value: str | None) -> None:
        """Set a per-user setting (e.g. the user's system prompt); None deletes it."""
        async with self.transaction() as db:
            if value is None:
                await db.execute(
                    "DELETE FROM user_settings WHERE user_id = ? AND key = ?", (user_id, key)
                )
            else:
                await db.execute(
                    "INSERT INTO user_settings (user_id, key, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (user_id, key) DO UPDATE SET value = excluded.value",
                    (user_id, key, value),
                )

    async def ban(self, platform: str, platform_user_id: str, reason: str = "") -> None:
        """Ban by platform identity (they need not have written yet); re-ban updates reason."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO bans (platform, platform_user_id, reason, created_at)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (platform, platform_user_id) DO UPDATE SET reason = excluded.reason",
                (platform, platform_user_id, reason, now_iso()),
            )

    async def unban(self, platform: str, platform_user_id: str) -> bool:
        """Lift a ban; False if there was none."""
        async with self.transaction() as db:
            cursor = await db.execute(
                "DELETE FROM bans WHERE platform = ? AND platform_user_id = ?",
                (platform, platform_user_id),
            )
            return cursor.rowcount > 0

    async def is_banned(self, platform: str, platform_user_id: str) -> bool:
        return await self._read(
            functools.partial(is_banned, platform=platform, platform_user_id=platform_user_id)
        )

    # ---- plumbing (also used by bot/store/admin_queries.py) -------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, committed on exit, rolled back on any exception."""
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                await self._db.execute("COMMIT")
            except BaseException:  # a refused COMMIT (disk full) leaves the transaction open
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise

    async def atomic(self, work: Callable[[sqlite3.Connection], T], *, now: bool = False) -> T:
        """Run ``work`` atomically on aiosqlite's thread: returns once it is committed; on
        any exception nothing of it is stored. ``work`` must only touch the connection it is
        given. Works asked for together share one round trip and commit (bot/store/batch.py).
        ``now``: a write someone is waiting on, run on the loop's thread if the connection is
        free (a few statements, no thread hop)."""
        return await self._commits.run(work, on_loop=now)

    async def query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        async with self._lock:
            return list(await self._db.execute_fetchall(sql, params))

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """``read`` (a statement of bot/store/rows.py) on aiosqlite's thread: one round trip,
        as ``query`` takes."""
        connection = self._db._conn
        # aiosqlite's one way to run a function on its thread (bot/store/batch.py uses it too)
        run_on_thread: Callable[[Callable[[], T]], Awaitable[T]] = self._db._execute
        async with self._lock:
            return await run_on_thread(functools.partial(read, connection))


def _create_private(path: Path) -> None:
    """Create the database file, empty and mode 600, in its folder (made mode 700), unless
    it exists: SQLite would create it world-readable, and its -wal and -shm take its mode."""
    if path.is_dir():  # SQLite would only say "unable to open database file"
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    make_private_folder(path.parent)
    create_private_file(path)


async def _check_writable(db: aiosqlite.Connection) -> None:
    """Raise SQLite's error now if the database cannot be written. SQLite opens a file it may
    not write (immutable, on a read-only mount) read-only without a word, and a database that
    needs no migration is only read at start-up: the first message would be the first write.
    One page is changed in a transaction that is rolled back, so nothing is kept."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute("CREATE TABLE parley_write_check (x)")
    finally:
        if db.in_transaction:
            await db.execute("ROLLBACK")
