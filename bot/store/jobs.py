"""A job's three writes on the message path, one transaction and one round trip each.

Every message is accepted (ban check, user, conversation, message, queued job), begun (marked
running, its history and the user's system prompt read) and finished (the reply stored, the job
closed, its usage recorded). A job that starts at once is begun in its accept transaction
(``Begun``): one round trip less between the user's message and the engine request. With one
aiosqlite round trip per statement those took about a dozen trips, 3-4 ms of the bot's
per-message overhead in bench/bot.py; through ``Store.atomic`` each is one. The user's message
and job are committed before the job is queued, as DESIGN.md asks ("before anything else
happens"); the reply right after its final text is handed to the platform (``finish`` in
bot/chat/workers.py says why), before the chat's next message can arrive. A closed job counts as
shown only once the platform has confirmed its final text (``mark_shown``); until then a restart
shows the stored text again (bot/chat/resume.py). The transactions themselves are plain
functions in bot/store/job_writes.py, which ``Store.atomic`` runs on its writer.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from bot.store import job_writes
from bot.store.database import Store
from bot.store.job_writes import Accepted, Begun, Reply
from bot.store.rows import (
    JOB_COLUMNS,
    MESSAGE_COLUMNS,
    Conversation,
    Job,
    JobStatus,
    User,
    job_from_row,
    message_from_row,
)


async def accept_message(
    store: Store, platform: str, platform_user_id: str, name: str, chat_id: str, content: str,
    source_ref: str | None = None, begin: str | None = None,
) -> Accepted | None:  # fmt: skip
    """Store the message and its queued job for the user's active conversation in this chat
    (user and conversation created when new); None, storing nothing, if the user is banned.
    ``source_ref`` is the message's id on its platform. With ``begin`` (the system prompt's
    setting key), the job is begun too: for a job that starts at once (one that waits is begun
    when it starts, its history read then)."""
    accept = functools.partial(
        job_writes.accept, platform=platform, platform_user_id=platform_user_id, name=name,
        chat_id=chat_id, content=content, source_ref=source_ref, begin=begin,
    )  # fmt: skip
    return await store.atomic(accept, now=True)  # the engine request waits for it


async def begin_job(store: Store, job: Job, setting: str) -> Begun:
    """Mark the job running (and count the start); its prompt's history and the user's
    ``setting`` (their system prompt)."""
    begin = functools.partial(job_writes.begin, job=job, setting=setting)
    return await store.atomic(begin, now=True)


async def finish_job(
    store: Store, job: Job, status: JobStatus, reply: Reply | None, error: str | None
) -> int | None:
    """Store the reply (if any), close the job and record its usage; the reply's message id."""
    finish = functools.partial(job_writes.finish, job=job, status=status, reply=reply, error=error)
    return await store.atomic(finish, now=True)  # no thread to fight the final edit for the GIL


async def mark_shown(store: Store, job: Job) -> None:
    """The platform confirmed the job's final text: nothing is left to do for it."""
    await store.atomic(functools.partial(job_writes.mark_shown, job_id=job.id))


async def requeue_job(store: Store, job: Job) -> None:
    """Put a job interrupted by a restart back in the queue; that start does not count."""
    await store.atomic(functools.partial(job_writes.requeue, job_id=job.id))


async def set_reply_ref(store: Store, job_id: int, reply_ref: str) -> None:
    """Where the job's reply is shown on its platform (its placeholder message)."""
    await store.atomic(functools.partial(job_writes.set_reply_ref, job_id=job_id, ref=reply_ref))


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
