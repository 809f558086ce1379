"""Reading the store back in its tests, with the statements the bot itself reads with.

The store has no method that only tests would call: a test writes through what the service
uses (bot/store/jobs.py, ``Store``'s methods) and reads the outcome here, through
``Store.query``.
"""

from __future__ import annotations

from bot.store.database import Store
from bot.store.jobs import unfinished_jobs
from bot.store.rows import (
    JOB_COLUMNS,
    MESSAGE_COLUMNS,
    PROMPT_SQL,
    Job,
    Message,
    job_from_row,
    message_from_row,
)


async def history(
    store: Store, conversation_id: int, through: int | None = None
) -> list[tuple[str, str]]:
    """The conversation as the model sees it, (role, content) oldest first: the statement a
    job's prompt is read with (bot/store/rows.py PROMPT_SQL); ``through`` a user message,
    to stop at it and its reply."""
    rows = await store.query(PROMPT_SQL, (conversation_id, through, through))
    return [(role, content) for _, role, content in rows]


async def contents(store: Store, conversation_id: int, through: int | None = None) -> list[str]:
    return [content for _, content in await history(store, conversation_id, through)]


async def message(store: Store, message_id: int) -> Message | None:
    rows = await store.query(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = ?", (message_id,)
    )
    return message_from_row(rows[0]) if rows else None


async def job(store: Store, job_id: int) -> Job | None:
    rows = await store.query(
        f"SELECT {JOB_COLUMNS} FROM jobs j JOIN messages m ON m.id = j.message_id WHERE j.id = ?",
        (job_id,),
    )
    return job_from_row(rows[0]) if rows else None


async def unfinished(store: Store, platform: str = "telegram") -> list[Job]:
    """The jobs a restart would resume (bot/store/jobs.py), as job rows."""
    return [left.accepted.job for left in await unfinished_jobs(store, platform)]
