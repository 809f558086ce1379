"""A job's transactions, as plain functions of a sqlite3 connection.

``Store.atomic`` runs each on its writer, inside one transaction (bot/store/batch.py); the
async calls that ask for them are in bot/store/jobs.py. Kept apart from those calls so a
message's route through the store goes one way: jobs -> database -> batch -> these -> rows.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from bot.chat.context_fit import Turn
from bot.store.rows import (
    PROMPT_SQL,
    Conversation,
    Job,
    JobStatus,
    Message,
    MessageStatus,
    User,
    active_conversation,
    insert_job,
    insert_message,
    is_banned,
    update_job,
    upsert_user,
    user_setting,
)


@dataclass(frozen=True)
class Begun:
    """A job marked running: its prompt's history (through its message) with the stored
    messages' ids, and the user's system prompt (None if unset)."""

    history: list[Turn]
    message_ids: list[int]
    system_prompt: str | None


@dataclass(frozen=True)
class Accepted:
    user: User
    conversation: Conversation
    message: Message
    job: Job
    begun: Begun | None = None  # when accepted with ``begin``


@dataclass(frozen=True)
class Reply:
    """An answer to store: its text, message status, and what it cost."""

    content: str
    status: MessageStatus
    model: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None


def accept(
    db: sqlite3.Connection, *, platform: str, platform_user_id: str, name: str, chat_id: str,
    content: str, source_ref: str | None, begin: str | None,
) -> Accepted | None:  # fmt: skip
    """A message and its queued job (begun too, with ``begin``); None if the user is banned."""
    if is_banned(db, platform, platform_user_id):
        return None
    user = upsert_user(db, platform, platform_user_id, name)
    conversation = active_conversation(db, user, chat_id)
    message = insert_message(db, conversation.id, "user", content, "complete", None, None)
    job = insert_job(db, message, user.id, source_ref, running=begin is not None)
    begun = None if begin is None else _prompt_of(db, job, begin)
    return Accepted(user, conversation, message, job, begun)


def begin(db: sqlite3.Connection, *, job: Job, setting: str) -> Begun:
    """The job marked running, its start counted; its prompt and the user's ``setting``."""
    update_job(db, job.id, "running", None, None)
    db.execute("UPDATE jobs SET attempts = attempts + 1 WHERE id = ?", (job.id,))
    return _prompt_of(db, job, setting)


def _prompt_of(db: sqlite3.Connection, job: Job, setting: str) -> Begun:
    """The history the job's prompt is made of, and the user's ``setting``."""
    rows = db.execute(PROMPT_SQL, (job.conversation_id, job.message_id, job.message_id))
    history, ids = [], []
    for message_id, role, content in rows:
        history.append(Turn(role, content))
        ids.append(message_id)
    return Begun(history, ids, user_setting(db, job.user_id, setting))


def finish(
    db: sqlite3.Connection, *, job: Job, status: JobStatus, reply: Reply | None,
    error: str | None,
) -> int | None:  # fmt: skip
    """The reply stored (if any), the job closed (not yet shown), its usage recorded; the
    reply's message id."""
    reply_id = None
    if reply is not None:
        stored = insert_message(
            db, job.conversation_id, "assistant", reply.content, reply.status,
            reply.completion_tokens, reply.model,
        )  # fmt: skip
        reply_id = stored.id
    update_job(db, job.id, status, reply_id, error)
    db.execute("UPDATE jobs SET shown = 0 WHERE id = ?", (job.id,))  # until confirmed
    if reply is not None and reply.prompt_tokens is not None:
        db.execute(
            "UPDATE jobs SET prompt_tokens = ?, completion_tokens = ?, ttft_ms = ?, model = ?"
            " WHERE id = ?",
            (reply.prompt_tokens, reply.completion_tokens, reply.ttft_ms, reply.model, job.id),
        )
    return reply_id


def mark_shown(db: sqlite3.Connection, *, job_id: int) -> None:
    db.execute("UPDATE jobs SET shown = 1 WHERE id = ?", (job_id,))


def requeue(db: sqlite3.Connection, *, job_id: int) -> None:
    db.execute(
        "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0) WHERE id = ?",
        (job_id,),
    )


def set_reply_ref(db: sqlite3.Connection, *, job_id: int, ref: str) -> None:
    db.execute("UPDATE jobs SET reply_ref = ? WHERE id = ?", (ref, job_id))
