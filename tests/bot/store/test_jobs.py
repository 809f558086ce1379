"""A job's writes in one transaction each: accept, begin, finish (bot/store/jobs.py)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from bot.store.database import Conversation, Store
from bot.store.job_writes import Reply
from bot.store.jobs import accept_message, begin_job, finish_job
from tests.bot.store.reads import contents, history, job, message


async def test_a_first_message_creates_the_user_the_conversation_and_a_queued_job(
    store: Store, tmp_path: Path
) -> None:
    first = await accept_message(store, "telegram", "42", "Ada", "chat-1", "Hello")
    assert first is not None
    assert first.user == await store.user("telegram", "42", "Ada")
    assert first.conversation == Conversation(
        first.conversation.id, first.user.id, "telegram", "chat-1"
    )
    assert (first.message.role, first.message.content) == ("user", "Hello")
    assert (first.job.status, first.job.message_id) == ("queued", first.message.id)
    again = await accept_message(store, "telegram", "42", "Ada L.", "chat-1", "More")
    assert again is not None and again.conversation == first.conversation
    elsewhere = await accept_message(store, "telegram", "42", "Ada L.", "chat-2", "Hi")
    assert elsewhere is not None and elsewhere.conversation != first.conversation
    assert await contents(store, first.conversation.id, through=again.message.id) == [
        "Hello",
        "More",
    ]
    with sqlite3.connect(tmp_path / "parley.db") as db:
        assert db.execute("SELECT name FROM users").fetchall() == [("Ada L.",)]
        assert db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone() == (3,)


async def test_a_reset_conversation_is_not_written_to(store: Store) -> None:
    first = await accept_message(store, "discord", "7", "Bo", "dm", "one")
    assert first is not None
    fresh = await store.reset_conversation(first.user, "dm")
    after = await accept_message(store, "discord", "7", "Bo", "dm", "two")
    assert after is not None and after.conversation == fresh


async def test_a_banned_user_gets_nothing_stored(store: Store, tmp_path: Path) -> None:
    await store.ban("telegram", "9")
    assert await accept_message(store, "telegram", "9", "Eve", "chat", "hi") is None
    with sqlite3.connect(tmp_path / "parley.db") as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM users").fetchone() == (0,)


async def test_begin_marks_running_and_reads_the_prompt(store: Store) -> None:
    first = await accept_message(store, "telegram", "5", "Cy", "c", "one")
    second = await accept_message(store, "telegram", "5", "Cy", "c", "two")
    assert first is not None and second is not None
    await store.set_user_setting(first.user.id, "system_prompt", "be brief")
    begun = await begin_job(store, first.job, "system_prompt")
    assert [t.content for t in begun.history] == ["one"]  # not the later message
    assert begun.message_ids == [first.message.id]
    assert begun.system_prompt == "be brief"
    assert (await job(store, first.job.id)) == replace(first.job, status="running")
    assert (await begin_job(store, second.job, "no such setting")).system_prompt is None


async def test_accept_can_begin_the_job_in_the_same_transaction(store: Store) -> None:
    queued = await accept_message(store, "telegram", "6", "Di", "c", "one")
    assert queued is not None and queued.begun is None
    assert (await job(store, queued.job.id)) == queued.job  # queued
    await store.set_user_setting(queued.user.id, "system_prompt", "be kind")
    begun = await accept_message(store, "telegram", "6", "Di", "c", "two", begin="system_prompt")
    assert begun is not None and begun.begun is not None
    assert [t.content for t in begun.begun.history] == ["one", "two"]
    assert begun.begun.system_prompt == "be kind"
    assert begun.job.status == "running" and await job(store, begun.job.id) == begun.job
    later = await begin_job(store, queued.job, "system_prompt")  # started from the queue
    assert later.system_prompt == "be kind"
    with sqlite3.connect(store.path) as db:  # type: ignore[arg-type]
        starts = dict(db.execute("SELECT id, attempts FROM jobs").fetchall())
    assert (starts[queued.job.id], starts[begun.job.id]) == (1, 1)  # each start counted once


async def test_finish_stores_the_reply_closes_the_job_and_records_usage(
    store: Store, tmp_path: Path
) -> None:
    accepted = await accept_message(store, "discord", "8", "Di", "dm", "hi")
    assert accepted is not None
    reply = Reply("hello", "complete", "demo", prompt_tokens=12, completion_tokens=3, ttft_ms=40.0)
    reply_id = await finish_job(store, accepted.job, "done", reply, None)
    done = await job(store, accepted.job.id)
    assert done is not None and (done.status, done.reply_message_id) == ("done", reply_id)
    assert reply_id is not None
    stored = await message(store, reply_id)
    assert stored is not None
    assert (stored.role, stored.content, stored.token_count) == ("assistant", "hello", 3)
    assert await history(store, accepted.conversation.id) == [
        ("user", "hi"),
        ("assistant", "hello"),
    ]
    with sqlite3.connect(tmp_path / "parley.db") as db:
        row = db.execute("SELECT prompt_tokens, completion_tokens, ttft_ms, model FROM jobs")
        assert row.fetchone() == (12, 3, 40.0, "demo")


async def test_a_failed_finish_stores_nothing(store: Store) -> None:
    """The whole transaction rolls back: no orphan reply for a job that does not exist."""
    accepted = await accept_message(store, "discord", "8", "Di", "dm", "hi")
    assert accepted is not None
    ghost = replace(accepted.job, id=10_000)
    with pytest.raises(KeyError):
        await finish_job(store, ghost, "done", Reply("lost", "complete", None), None)
    assert await contents(store, accepted.conversation.id) == ["hi"]
    failed = await finish_job(store, accepted.job, "failed", None, "engine down")
    closed = await job(store, accepted.job.id)
    assert failed is None and closed is not None
    assert (closed.status, closed.error) == ("failed", "engine down")


async def test_the_prompt_reads_the_history_as_stored(store: Store) -> None:
    """The prompt's read (bot/store/rows.py PROMPT_SQL) gives every usable stored message,
    replies after the message they answered, each turn with its own message's id."""
    first = await accept_message(store, "telegram", "8", "Fy", "c", "q1")
    second = await accept_message(store, "telegram", "8", "Fy", "c", "q2")
    assert first is not None and second is not None
    await finish_job(store, second.job, "done", Reply("a2", "complete", "m"), None)
    await finish_job(store, first.job, "done", Reply("a1", "partial", "m"), None)
    cut = await accept_message(store, "telegram", "8", "Fy", "c", "q3")
    assert cut is not None
    await finish_job(store, cut.job, "failed", Reply("", "failed", "m"), "engine lost")
    now = await accept_message(store, "telegram", "8", "Fy", "c", "q4", begin="system_prompt")
    assert now is not None and now.begun is not None
    assert [t.content for t in now.begun.history] == ["q1", "a1", "q2", "a2", "q3", "q4"]
    with sqlite3.connect(store.path) as db:  # type: ignore[arg-type]
        stored = db.execute(
            "SELECT id, role, content FROM messages WHERE conversation_id = ?"
            " AND NOT (role = 'assistant' AND status = 'failed')",
            (now.conversation.id,),
        ).fetchall()
    by_id = {i: (role, content) for i, role, content in stored}
    assert [(t.role, t.content) for t in now.begun.history] == [
        by_id[i] for i in now.begun.message_ids
    ]  # each turn is the message whose id goes with it
    assert sorted(now.begun.message_ids) == sorted(by_id)
