"""A job's three writes on the message path, one transaction and one round trip each.

Every message is accepted (ban check, user, conversation, message, queued job), begun (marked
running, its history and the user's system prompt read) and finished (the reply stored, the job
closed, its usage recorded). A job that starts at once is begun in its accept transaction
(``Begun``): one round trip less between the user's message and the engine request. With one
aiosqlite round trip per statement those took about a dozen trips, 3-4 ms of the bot's
per-message overhead in bench/bot.py; through ``Store.atomic`` each is one. The user's message
and job are committed before the job is queued, as DESIGN.md asks ("before anything else
happens"); the reply right after its final text is handed to the platform (``_finish`` in
bot/chat/service.py says why), before the chat's next message can arrive. A closed job counts as
shown only once the platform has confirmed its final text (``mark_shown``); until then a restart
shows the stored text again (bot/chat/resume.py).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from bot.chat.context_fit import Turn
from bot.store.database import Store
from bot.store.rows import (
    JOB_COLUMNS,
    MESSAGE_COLUMNS,
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
    job_from_row,
    message_from_row,
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


async def accept_message(
    store: Store, platform: str, platform_user_id: str, name: str, chat_id: str, content: str,
    source_ref: str | None = None, begin: str | None = None,
) -> Accepted | None:  # fmt: skip
    """Store the message and its queued job for the user's active conversation in this chat
    (user and conversation created when new); None, storing nothing, if the user is banned.
    ``source_ref`` is the message's id on its platform. With ``begin`` (the system prompt's
    setting key), the job is begun too: for a job that starts at once (one that waits is begun
    when it starts, its history read then)."""

    def accept(db: sqlite3.Connection) -> Accepted | None:
        if is_banned(db, platform, platform_user_id):
            return None
        user = upsert_user(db, platform, platform_user_id, name)
        conversation = active_conversation(db, user, chat_id)
        message = insert_message(db, conversation.id, "user", content, "complete", None, None)
        job = insert_job(db, message, user.id, source_ref, running=begin is not None)
        begun = None if begin is None else _prompt_of(db, job, begin)
        return Accepted(user, conversation, message, job, begun)

    return await store.atomic(accept, now=True)  # the engine request waits for it


async def begin_job(store: Store, job: Job, setting: str) -> Begun:
    """Mark the job running (and count the start); its prompt's history and the user's
    ``setting`` (their system prompt)."""
    return await store.atomic(lambda db: _begin(db, job, setting), now=True)


def _begin(db: sqlite3.Connection, job: Job, setting: str) -> Begun:
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


async def finish_job(
    store: Store, job: Job, status: JobStatus, reply: Reply | None, error: str | None
) -> int | None:
    """Store the reply (if any), close the job and record its usage; the reply's message id."""

    def finish(db: sqlite3.Connection) -> int | None:
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

    return await store.atomic(finish, now=True)  # no thread to fight the final edit for the GIL


async def mark_shown(store: Store, job: Job) -> None:
    """The platform confirmed the job's final text: nothing is left to do for it."""
    await store.atomic(lambda db: db.execute("UPDATE jobs SET shown = 1 WHERE id = ?", (job.id,)))


async def requeue_job(store: Store, job: Job) -> None:
    """Put a job interrupted by a restart back in the queue; that start does not count."""
    await store.atomic(
        lambda db: db.execute(
            "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0) WHERE id = ?",
            (job.id,),
        )
    )


async def set_reply_ref(store: Store, job_id: int, reply_ref: str) -> None:
    """Where the job's reply is shown on its platform (its placeholder message)."""
    await store.atomic(
        lambda db: db.execute("UPDATE jobs SET reply_ref = ? WHERE id = ?", (reply_ref, job_id))
    )


@dataclass(frozen=True)
class Unfinished:
    """A job left queued or running by a bot that stopped, or closed but its final text not
    yet shown, with what resuming it needs."""

    accepted: Accepted
    attempts: int  # times a worker started it
    source_ref: str | None
    reply_ref: str | None
    answer: str = ""  # a closed job's stored answer ("" if none was written)

    @property
    def closed(self) -> bool:
        """Answered (or ended) already: only its final text is left to show."""
        return self.accepted.job.status not in ("queued", "running")


_UNFINISHED = f"""
SELECT {JOB_COLUMNS}, j.attempts, j.source_ref, j.reply_ref,
       u.platform_user_id, u.name, c.chat_id, r.content, {MESSAGE_COLUMNS}
FROM jobs j JOIN messages m ON m.id = j.message_id
JOIN conversations c ON c.id = m.conversation_id JOIN users u ON u.id = j.user_id
LEFT JOIN messages r ON r.id = j.reply_message_id
WHERE j.id IN (SELECT id FROM jobs WHERE status IN ('queued', 'running')
               UNION SELECT id FROM jobs WHERE shown = 0)
  AND c.platform = ? ORDER BY j.id
"""


async def unfinished_jobs(store: Store, platform: str) -> list[Unfinished]:
    """Queued and running jobs of ``platform``'s chats, and closed ones not yet shown, oldest
    first."""
    found = []
    for row in await store.query(_UNFINISHED, (platform,)):
        job = job_from_row(row[:8])
        attempts, source_ref, reply_ref, user_id, name, chat_id, answer = row[8:15]
        user = User(job.user_id, platform, user_id, name)
        conversation = Conversation(job.conversation_id, job.user_id, platform, chat_id)
        accepted = Accepted(user, conversation, message_from_row(row[15:]), job)
        found.append(Unfinished(accepted, int(attempts), source_ref, reply_ref, answer or ""))
    return found
