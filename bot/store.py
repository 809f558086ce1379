"""The bot's SQLite store: users, conversations, messages, jobs, settings and bans.

One aiosqlite connection in autocommit mode; every write method runs in its own
``BEGIN IMMEDIATE`` ... ``COMMIT`` and has committed before it returns, so "the user's message is
stored before the job is queued" holds even if the process dies right after. An asyncio lock
serialises the methods, so concurrent coroutines never share a transaction. Methods are safe to
call from any coroutine on the loop that opened the store; not from other threads.

Rows leave as frozen dataclasses. Timestamps are ISO-8601 UTC. Errors: ``ValueError`` for a bad
role/status or text that is not valid Unicode (a lone surrogate), ``KeyError`` when updating a
row that does not exist, ``sqlite3.IntegrityError`` when a foreign key points nowhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import aiosqlite

from bot.migrations import apply_migrations

Role = Literal["system", "user", "assistant"]
MessageStatus = Literal["complete", "partial", "cancelled", "failed", "pending"]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]

BUSY_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class User:
    id: int
    platform: str
    platform_user_id: str
    name: str


@dataclass(frozen=True)
class Conversation:
    id: int
    user_id: int
    platform: str
    chat_id: str


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: Role
    content: str
    token_count: int | None
    model: str | None
    status: MessageStatus
    created_at: datetime


@dataclass(frozen=True)
class Job:
    """A reply to produce for the user message ``message_id`` (in ``conversation_id``)."""

    id: int
    message_id: int
    user_id: int
    conversation_id: int
    status: JobStatus
    reply_message_id: int | None
    error: str | None
    created_at: datetime


_MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.role, m.content, m.token_count, m.model, m.status, m.created_at"
)
_JOB_SELECT = (
    "SELECT j.id, j.message_id, j.user_id, m.conversation_id, j.status, j.reply_message_id,"
    " j.error, j.created_at FROM jobs j JOIN messages m ON m.id = j.message_id"
)
# Assistant replies the model sees again: failed or still-pending ones, and empty ones, are left
# out. A reply sorts right after the user message its job answered, not by insertion order.
_HISTORY = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages m LEFT JOIN jobs j ON j.reply_message_id = m.id
WHERE m.conversation_id = ?
  AND (m.role != 'assistant'
       OR (m.status IN ('complete', 'partial', 'cancelled') AND m.content != ''))
  AND (? IS NULL OR COALESCE(j.message_id, m.id) <= ?)
ORDER BY COALESCE(j.message_id, m.id), m.id
"""


class Store:
    """Persistence for the bot. Open with ``await Store.open(path)``; close when done."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path, *, migrations_dir: Path | None = None) -> Store:
        """Open (creating parent directories) and bring the schema up to date."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            await apply_migrations(db, migrations_dir)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        async with self._lock:
            await self._db.close()

    # ---- users and conversations ------------------------------------------------------

    async def user(self, platform: str, platform_user_id: str, name: str) -> User:
        """Get or create the user; a changed display name is saved."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO users (platform, platform_user_id, name, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (platform, platform_user_id)"
                " DO UPDATE SET name = excluded.name WHERE users.name IS NOT excluded.name",
                (platform, platform_user_id, name, _now()),
            )
            row = await _one(
                db,
                "SELECT id, platform, platform_user_id, name FROM users"
                " WHERE platform = ? AND platform_user_id = ?",
                (platform, platform_user_id),
            )
        assert row is not None
        return User(*row)

    async def active_conversation(self, user: User, chat_id: str) -> Conversation:
        """The user's current conversation in this chat, started if there is none."""
        async with self.transaction() as db:
            row = await _one(
                db,
                "SELECT id, user_id, platform, chat_id FROM conversations"
                " WHERE user_id = ? AND platform = ? AND chat_id = ? AND active = 1",
                (user.id, user.platform, chat_id),
            )
            if row is not None:
                return Conversation(*row)
            return await _new_conversation(db, user, chat_id)

    async def reset_conversation(self, user: User, chat_id: str) -> Conversation:
        """Start a fresh conversation (/reset); the old one and its messages are kept."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE conversations SET active = 0"
                " WHERE user_id = ? AND platform = ? AND chat_id = ? AND active = 1",
                (user.id, user.platform, chat_id),
            )
            return await _new_conversation(db, user, chat_id)

    # ---- messages and jobs ------------------------------------------------------------

    async def add_message(
        self,
        conversation_id: int,
        role: Role,
        content: str,
        *,
        status: MessageStatus = "complete",
        token_count: int | None = None,
        model: str | None = None,
    ) -> Message:
        _check(role, Role, "role")
        _check(status, MessageStatus, "message status")
        async with self.transaction() as db:
            return await _insert_message(
                db, conversation_id, role, content, status, token_count, model
            )

    async def update_message(
        self,
        message_id: int,
        *,
        content: str,
        status: MessageStatus,
        token_count: int | None = None,
        model: str | None = None,
    ) -> None:
        """Replace a (streamed) message's text and status; None keeps token_count/model."""
        _check(status, MessageStatus, "message status")
        async with self.transaction() as db:
            cursor = await db.execute(
                "UPDATE messages SET content = ?, status = ?,"
                " token_count = COALESCE(?, token_count), model = COALESCE(?, model),"
                " updated_at = ? WHERE id = ?",
                (content, status, token_count, model, _now(), message_id),
            )
            if cursor.rowcount == 0:
                raise KeyError(f"no message with id {message_id}")

    async def history(
        self, conversation_id: int, *, through_message_id: int | None = None
    ) -> list[Message]:
        """The conversation as the model should see it, oldest first.

        All system and user messages; assistant ones only if complete, partial or cancelled and
        non-empty (failed and pending replies never go back to the model). A job's reply sorts
        right after the user message it answers. ``through_message_id`` (a user message) stops
        at that message and its reply: the prompt for that message's job. Two user messages in a
        row are possible (a reply failed); the caller merges them if its template needs it.
        """
        rows = await self.query(_HISTORY, (conversation_id, through_message_id, through_message_id))
        return [_message(row) for row in rows]

    async def add_user_message_with_job(
        self, conversation_id: int, user_id: int, content: str
    ) -> tuple[Message, Job]:
        """Store the user's message and its queued job in one transaction, committed."""
        async with self.transaction() as db:
            message = await _insert_message(
                db, conversation_id, "user", content, "complete", None, None
            )
            now = _now()
            cursor = await db.execute(
                "INSERT INTO jobs (message_id, user_id, status, created_at, updated_at)"
                " VALUES (?, ?, 'queued', ?, ?)",
                (message.id, user_id, now, now),
            )
            assert cursor.lastrowid is not None
            job = _job(
                (cursor.lastrowid, message.id, user_id, conversation_id, "queued", None, None, now)
            )
        return message, job

    async def set_job_status(
        self,
        job_id: int,
        status: JobStatus,
        *,
        reply_message_id: int | None = None,
        error: str | None = None,
    ) -> None:
        """Move a job on; None keeps the stored reply_message_id/error."""
        _check(status, JobStatus, "job status")
        async with self.transaction() as db:
            cursor = await db.execute(
                "UPDATE jobs SET status = ?, reply_message_id = COALESCE(?, reply_message_id),"
                " error = COALESCE(?, error), updated_at = ? WHERE id = ?",
                (status, reply_message_id, error, _now(), job_id),
            )
            if cursor.rowcount == 0:
                raise KeyError(f"no job with id {job_id}")

    async def job(self, job_id: int) -> Job | None:
        rows = await self.query(_JOB_SELECT + " WHERE j.id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    async def unfinished_jobs(self) -> list[Job]:
        """Queued and running jobs, oldest first: what to resume after a restart."""
        rows = await self.query(
            _JOB_SELECT + " WHERE j.status IN ('queued', 'running') ORDER BY j.id", ()
        )
        return [_job(row) for row in rows]

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
        rows = await self.query(
            "SELECT value FROM user_settings WHERE user_id = ? AND key = ?", (user_id, key)
        )
        return str(rows[0][0]) if rows else None

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
                (platform, platform_user_id, reason, _now()),
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
        rows = await self.query(
            "SELECT 1 FROM bans WHERE platform = ? AND platform_user_id = ?",
            (platform, platform_user_id),
        )
        return bool(rows)

    # ---- plumbing (also used by bot/store_admin.py) -------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, committed on exit, rolled back on any exception."""
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        async with self._lock:
            return list(await self._db.execute_fetchall(sql, params))


async def _one(db: aiosqlite.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    async with db.execute(sql, params) as cursor:
        return await cursor.fetchone()


async def _new_conversation(db: aiosqlite.Connection, user: User, chat_id: str) -> Conversation:
    cursor = await db.execute(
        "INSERT INTO conversations (user_id, platform, chat_id, active, created_at)"
        " VALUES (?, ?, ?, 1, ?)",
        (user.id, user.platform, chat_id, _now()),
    )
    assert cursor.lastrowid is not None
    return Conversation(cursor.lastrowid, user.id, user.platform, chat_id)


async def _insert_message(
    db: aiosqlite.Connection,
    conversation_id: int,
    role: Role,
    content: str,
    status: MessageStatus,
    token_count: int | None,
    model: str | None,
) -> Message:
    now = _now()
    cursor = await db.execute(
        "INSERT INTO messages (conversation_id, role, content, token_count, model, status,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (conversation_id, role, content, token_count, model, status, now, now),
    )
    assert cursor.lastrowid is not None
    return _message(
        (cursor.lastrowid, conversation_id, role, content, token_count, model, status, now)
    )


def _message(row: Any) -> Message:
    i, conversation, role, content, tokens, model, status, at = row
    return Message(
        i, conversation, role, content, tokens, model, status, datetime.fromisoformat(at)
    )


def _job(row: Any) -> Job:
    i, message, user, conversation, status, reply, error, at = row
    return Job(i, message, user, conversation, status, reply, error, datetime.fromisoformat(at))


def _check(value: str, allowed: Any, what: str) -> None:
    choices: tuple[str, ...] = get_args(allowed)
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}; got {value!r}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
