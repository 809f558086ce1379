"""The store's rows as frozen dataclasses, and the statements that write and read them.

The statements are plain functions on a ``sqlite3.Connection``, for ``Store.atomic``: a whole
transaction of them costs one round trip to aiosqlite's thread (bot/store/database.py,
bot/store/jobs.py). Each is written once here; the store's methods and the message path both
use it. They raise ``ValueError`` for a bad role or status, ``KeyError`` for a job that does
not exist, ``sqlite3.IntegrityError`` for a foreign key that points nowhere.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

Role = Literal["system", "user", "assistant"]
MessageStatus = Literal["complete", "partial", "cancelled", "failed", "pending"]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
# their values, worked out once: every message written checks two
ROLES: tuple[str, ...] = get_args(Role)
MESSAGE_STATUSES: tuple[str, ...] = get_args(MessageStatus)
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)


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


SYSTEM_PROMPT_KEY = "system_prompt"  # the user setting that holds a person's own system prompt
MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.role, m.content, m.token_count, m.model, m.status, m.created_at"
)
JOB_COLUMNS = (
    "j.id, j.message_id, j.user_id, m.conversation_id, j.status, j.reply_message_id, j.error,"
    " j.created_at"
)
# The conversation as the model sees it, oldest first, read for every answer's prompt:
# (id, role, content) rows. All system and user messages; assistant replies only if complete,
# partial or cancelled and not empty (failed and still-pending ones never go back to the
# model). A reply sorts right after the user message its job answered, not by insertion
# order. Two user messages in a row are possible (a reply failed); the caller merges them if
# its template needs it. Parameters: the conversation, then a user message twice, to stop at
# it and its reply (a job's prompt), or None twice for the whole conversation.
# Read as (id, role, content), not whole messages, and made into prompt turns 2.5x faster:
# 91 -> 37 us for 27 messages, 632 -> 231 us for 201 (this machine, warm), on the loop every
# other chat shares.
PROMPT_SQL = """
SELECT m.id, m.role, m.content
FROM messages m LEFT JOIN jobs j ON j.reply_message_id = m.id
WHERE m.conversation_id = ?
  AND (m.role != 'assistant'
       OR (m.status IN ('complete', 'partial', 'cancelled') AND m.content != ''))
  AND (? IS NULL OR COALESCE(j.message_id, m.id) <= ?)
ORDER BY COALESCE(j.message_id, m.id), m.id
"""


def upsert_user(db: sqlite3.Connection, platform: str, platform_user_id: str, name: str) -> User:
    """Get or create the user; a changed display name is saved."""
    (row,) = db.execute(
        "INSERT INTO users (platform, platform_user_id, name, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (platform, platform_user_id) DO UPDATE SET name = excluded.name"
        " RETURNING id",
        (platform, platform_user_id, name, now_iso()),
    ).fetchall()
    return User(int(row[0]), platform, platform_user_id, name)


def active_conversation(db: sqlite3.Connection, user: User, chat_id: str) -> Conversation:
    row = db.execute(
        "SELECT id, user_id, platform, chat_id FROM conversations"
        " WHERE user_id = ? AND platform = ? AND chat_id = ? AND active = 1",
        (user.id, user.platform, chat_id),
    ).fetchone()
    return Conversation(*row) if row is not None else new_conversation(db, user, chat_id)


def new_conversation(db: sqlite3.Connection, user: User, chat_id: str) -> Conversation:
    cursor = db.execute(
        "INSERT INTO conversations (user_id, platform, chat_id, active, created_at)"
        " VALUES (?, ?, ?, 1, ?)",
        (user.id, user.platform, chat_id, now_iso()),
    )
    assert cursor.lastrowid is not None
    return Conversation(cursor.lastrowid, user.id, user.platform, chat_id)


def insert_message(
    db: sqlite3.Connection,
    conversation_id: int,
    role: Role,
    content: str,
    status: MessageStatus,
    token_count: int | None,
    model: str | None,
) -> Message:
    check_choice(role, ROLES, "role")
    check_choice(status, MESSAGE_STATUSES, "message status")
    now = now_iso()
    cursor = db.execute(
        "INSERT INTO messages (conversation_id, role, content, token_count, model, status,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (conversation_id, role, content, token_count, model, status, now, now),
    )
    assert cursor.lastrowid is not None
    return message_from_row(
        (cursor.lastrowid, conversation_id, role, content, token_count, model, status, now)
    )


def insert_job(
    db: sqlite3.Connection, message: Message, user_id: int, source_ref: str | None = None,
    running: bool = False,
) -> Job:  # fmt: skip
    """A job answering the user message ``message``, queued, or with ``running`` started at
    once (its start counted); ``source_ref``: the message's id on the platform, for a reply
    posted after a restart."""
    now = now_iso()
    status = "running" if running else "queued"
    cursor = db.execute(
        "INSERT INTO jobs (message_id, user_id, status, attempts, created_at, updated_at,"
        " source_ref) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (message.id, user_id, status, int(running), now, now, source_ref),
    )
    assert cursor.lastrowid is not None
    return job_from_row(
        (cursor.lastrowid, message.id, user_id, message.conversation_id, status, None, None, now)
    )


def update_job(
    db: sqlite3.Connection,
    job_id: int,
    status: JobStatus,
    reply_message_id: int | None,
    error: str | None,
) -> None:
    check_choice(status, JOB_STATUSES, "job status")
    cursor = db.execute(
        "UPDATE jobs SET status = ?, reply_message_id = COALESCE(?, reply_message_id),"
        " error = COALESCE(?, error), updated_at = ? WHERE id = ?",
        (status, reply_message_id, error, now_iso(), job_id),
    )
    if cursor.rowcount == 0:
        raise KeyError(f"no job with id {job_id}")


def replace_conversation(db: sqlite3.Connection, user: User, chat_id: str) -> Conversation:
    """A fresh active conversation for the user in this chat (/reset); the old one is kept."""
    db.execute(
        "UPDATE conversations SET active = 0"
        " WHERE user_id = ? AND platform = ? AND chat_id = ? AND active = 1",
        (user.id, user.platform, chat_id),
    )
    return new_conversation(db, user, chat_id)


def is_banned(db: sqlite3.Connection, platform: str, platform_user_id: str) -> bool:
    found = db.execute(
        "SELECT 1 FROM bans WHERE platform = ? AND platform_user_id = ?",
        (platform, platform_user_id),
    ).fetchone()
    return found is not None


def user_setting(db: sqlite3.Connection, user_id: int, key: str) -> str | None:
    """The user's setting ``key`` (e.g. their system prompt); None if unset."""
    found = db.execute(
        "SELECT value FROM user_settings WHERE user_id = ? AND key = ?", (user_id, key)
    ).fetchone()
    return None if found is None else str(found[0])


def message_from_row(row: Any) -> Message:
    i, conversation, role, content, tokens, model, status, at = row
    return Message(
        i, conversation, role, content, tokens, model, status, datetime.fromisoformat(at)
    )


def job_from_row(row: Any) -> Job:
    i, message, user, conversation, status, reply, error, at = row
    return Job(i, message, user, conversation, status, reply, error, datetime.fromisoformat(at))


def check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    """ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}; got {value!r}")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
