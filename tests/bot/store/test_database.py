"""The store on a real SQLite file: round trips, durability, transactions, exact content."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.store.database import Conversation, Job, Message, Store, User
from bot.store.jobs import unfinished_jobs
from bot.store.migrations import MigrationError


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "parley.db"  # parent does not exist yet


@pytest.fixture
async def store(path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(path)
    yield opened
    await opened.close()


async def unfinished(store: Store, platform: str = "telegram") -> list[Job]:
    """The jobs a restart would resume (bot/store/jobs.py), as job rows."""
    return [left.accepted.job for left in await unfinished_jobs(store, platform)]


@pytest.fixture
async def user(store: Store) -> User:
    return await store.user("telegram", "42", "Ada")


@pytest.fixture
async def conversation(store: Store, user: User) -> Conversation:
    return await store.active_conversation(user, "chat-1")


def other_connection(path: Path) -> sqlite3.Connection:
    """A second, independent connection: it sees only what the store has committed."""
    return sqlite3.connect(path)


async def test_pragmas(store: Store, path: Path) -> None:
    db = store._db
    assert list(await db.execute_fetchall("PRAGMA journal_mode")) == [("wal",)]
    assert list(await db.execute_fetchall("PRAGMA foreign_keys")) == [(1,)]
    assert list(await db.execute_fetchall("PRAGMA busy_timeout")) == [(5000,)]
    assert list(await db.execute_fetchall("PRAGMA synchronous")) == [(1,)]  # NORMAL
    assert path.exists()


async def test_user_get_or_create_updates_name(store: Store, path: Path) -> None:
    ada = await store.user("telegram", "42", "Ada")
    assert ada == User(ada.id, "telegram", "42", "Ada")
    assert await store.user("telegram", "42", "Ada") == ada
    renamed = await store.user("telegram", "42", "Ada L.")
    assert renamed == User(ada.id, "telegram", "42", "Ada L.")
    other_platform = await store.user("discord", "42", "Ada")
    assert other_platform.id != ada.id
    with other_connection(path) as db:
        assert db.execute("SELECT count(*) FROM users").fetchone() == (2,)


async def test_active_conversation_is_stable_per_user_and_chat(store: Store, user: User) -> None:
    first = await store.active_conversation(user, "chat-1")
    assert first == Conversation(first.id, user.id, "telegram", "chat-1")
    assert await store.active_conversation(user, "chat-1") == first
    assert (await store.active_conversation(user, "chat-2")).id != first.id
    bob = await store.user("telegram", "43", "Bob")
    assert (await store.active_conversation(bob, "chat-1")).id != first.id


async def test_reset_keeps_old_messages_and_starts_empty(
    store: Store, user: User, conversation: Conversation, path: Path
) -> None:
    await store.add_message(conversation.id, "user", "hello")
    await store.add_message(conversation.id, "assistant", "hi there")
    fresh = await store.reset_conversation(user, "chat-1")
    assert fresh.id != conversation.id
    assert await store.active_conversation(user, "chat-1") == fresh
    assert await store.history(fresh.id) == []
    assert [m.content for m in await store.history(conversation.id)] == ["hello", "hi there"]
    with other_connection(path) as db:
        active = db.execute(
            "SELECT id FROM conversations WHERE user_id = ? AND active = 1", (user.id,)
        ).fetchall()
        assert active == [(fresh.id,)]
    again = await store.reset_conversation(user, "chat-1")
    assert again.id not in (fresh.id, conversation.id)


async def test_add_and_update_message(store: Store, conversation: Conversation) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    message = await store.add_message(
        conversation.id, "assistant", "", status="pending", model="demo"
    )
    assert message == Message(
        message.id, conversation.id, "assistant", "", None, "demo", "pending", message.created_at
    )
    assert before <= message.created_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert message.created_at.tzinfo is not None and message.created_at.utcoffset() == timedelta(0)
    assert await store.history(conversation.id) == []  # pending replies are not history

    await store.update_message(message.id, content="Hel", status="partial")
    [partial] = await store.history(conversation.id)
    assert (partial.content, partial.status, partial.model) == ("Hel", "partial", "demo")
    await store.update_message(message.id, content="Hello", status="complete", token_count=3)
    [done] = await store.history(conversation.id)
    assert done == Message(
        message.id, conversation.id, "assistant", "Hello", 3, "demo", "complete", message.created_at
    )
    with pytest.raises(KeyError):
        await store.update_message(10_000, content="x", status="complete")


async def test_invalid_values_are_refused(store: Store, conversation: Conversation) -> None:
    with pytest.raises(ValueError, match="role"):
        await store.add_message(conversation.id, "bot", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="message status"):
        await store.add_message(conversation.id, "user", "x", status="done")  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        await store.add_message(10_000, "user", "no such conversation")
    assert await store.history(conversation.id) == []
    assert not store._db.in_transaction


async def test_history_filters_and_orders(store: Store, conversation: Conversation) -> None:
    add = store.add_message
    cid = conversation.id
    await add(cid, "system", "be brief")
    await add(cid, "user", "one")
    await add(cid, "assistant", "failed reply", status="failed")
    await add(cid, "assistant", "", status="cancelled")  # stopped before any text
    await add(cid, "assistant", "cut", status="cancelled")
    await add(cid, "assistant", "more", status="partial")
    await add(cid, "assistant", "pending", status="pending")
    await add(cid, "user", "two")
    history = await store.history(cid)
    assert [(m.role, m.content) for m in history] == [
        ("system", "be brief"),
        ("user", "one"),
        ("assistant", "cut"),
        ("assistant", "more"),
        ("user", "two"),
    ]


async def test_replies_sort_after_the_message_they_answer(
    store: Store, user: User, conversation: Conversation
) -> None:
    """Two quick messages: both stored before either reply; history still alternates."""
    first, first_job = await store.add_user_message_with_job(conversation.id, user.id, "q1")
    second, second_job = await store.add_user_message_with_job(conversation.id, user.id, "q2")
    reply1 = await store.add_message(conversation.id, "assistant", "a1")
    await store.set_job_status(first_job.id, "done", reply_message_id=reply1.id)
    reply2 = await store.add_message(conversation.id, "assistant", "a2")
    await store.set_job_status(second_job.id, "done", reply_message_id=reply2.id)
    history = await store.history(conversation.id)
    assert [m.content for m in history] == ["q1", "a1", "q2", "a2"]
    upto_first = await store.history(conversation.id, through_message_id=first.id)
    assert [m.content for m in upto_first] == ["q1", "a1"]
    upto_second = await store.history(conversation.id, through_message_id=second.id)
    assert [m.content for m in upto_second] == ["q1", "a1", "q2", "a2"]


async def test_message_with_job_is_committed_together(
    store: Store, user: User, conversation: Conversation, path: Path
) -> None:
    message, job = await store.add_user_message_with_job(conversation.id, user.id, "hi")
    assert (message.role, message.content, message.status) == ("user", "hi", "complete")
    assert job == Job(
        job.id, message.id, user.id, conversation.id, "queued", None, None, job.created_at
    )
    with other_connection(path) as db:  # committed before the call returned
        assert db.execute("SELECT content FROM messages").fetchall() == [("hi",)]
        assert db.execute("SELECT message_id, status FROM jobs").fetchall() == [
            (message.id, "queued")
        ]
    assert await store.job(job.id) == job
    assert await unfinished(store) == [job]


async def test_failed_job_insert_leaves_no_message(
    store: Store, conversation: Conversation, path: Path
) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        await store.add_user_message_with_job(conversation.id, 10_000, "orphan")  # no such user
    assert await store.history(conversation.id) == []
    assert await unfinished(store) == []
    assert not store._db.in_transaction
    with other_connection(path) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)


async def test_job_lifecycle(store: Store, user: User, conversation: Conversation) -> None:
    _, first = await store.add_user_message_with_job(conversation.id, user.id, "a")
    _, second = await store.add_user_message_with_job(conversation.id, user.id, "b")
    _, third = await store.add_user_message_with_job(conversation.id, user.id, "c")
    assert [j.id for j in await unfinished(store)] == [first.id, second.id, third.id]

    reply = await store.add_message(conversation.id, "assistant", "", status="pending")
    await store.set_job_status(first.id, "running", reply_message_id=reply.id)
    running = await store.job(first.id)
    assert running is not None
    assert (running.status, running.reply_message_id) == ("running", reply.id)
    await store.set_job_status(first.id, "done")  # None keeps reply_message_id
    done = await store.job(first.id)
    assert done is not None and (done.status, done.reply_message_id) == ("done", reply.id)

    await store.set_job_status(second.id, "failed", error="engine unreachable")
    failed = await store.job(second.id)
    assert failed is not None and (failed.status, failed.error) == ("failed", "engine unreachable")
    assert [j.id for j in await unfinished(store)] == [third.id]
    await store.set_job_status(third.id, "cancelled")
    assert await unfinished(store) == []

    assert await store.job(10_000) is None
    with pytest.raises(KeyError):
        await store.set_job_status(10_000, "done")
    with pytest.raises(ValueError, match="job status"):
        await store.set_job_status(third.id, "complete")  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        await store.set_job_status(third.id, "done", reply_message_id=10_000)


async def test_restart_keeps_everything(path: Path) -> None:
    store = await Store.open(path)
    user = await store.user("discord", "7", "Grace")
    conversation = await store.active_conversation(user, "dm")
    await store.add_message(conversation.id, "user", "remember me")
    await store.add_message(conversation.id, "assistant", "I will", token_count=3, model="demo")
    _, job = await store.add_user_message_with_job(conversation.id, user.id, "still there?")
    await store.set_setting("system_prompt", "be kind")
    await store.set_user_setting(user.id, "system_prompt", "be brief")
    await store.ban("discord", "666", "spam")
    history = await store.history(conversation.id)
    await store.close()

    reopened = await Store.open(path)
    try:
        assert await reopened.user("discord", "7", "Grace") == user
        assert await reopened.active_conversation(user, "dm") == conversation
        assert await reopened.history(conversation.id) == history
        assert [j.id for j in await unfinished(reopened, "discord")] == [job.id]
        assert await reopened.get_setting("system_prompt") == "be kind"
        assert await reopened.get_user_setting(user.id, "system_prompt") == "be brief"
        assert await reopened.is_banned("discord", "666")
    finally:
        await reopened.close()


async def test_settings(store: Store, user: User) -> None:
    assert await store.get_setting("k") is None
    await store.set_setting("k", "v1")
    await store.set_setting("k", "v2")
    assert await store.get_setting("k") == "v2"
    await store.set_setting("k", "")
    assert await store.get_setting("k") == ""
    await store.set_setting("k", None)
    assert await store.get_setting("k") is None

    other = await store.user("telegram", "43", "Bob")
    assert await store.get_user_setting(user.id, "system_prompt") is None
    await store.set_user_setting(user.id, "system_prompt", "talk like a pirate")
    await store.set_user_setting(other.id, "system_prompt", "be formal")
    assert await store.get_user_setting(user.id, "system_prompt") == "talk like a pirate"
    assert await store.get_user_setting(other.id, "system_prompt") == "be formal"
    await store.set_user_setting(user.id, "system_prompt", None)
    assert await store.get_user_setting(user.id, "system_prompt") is None
    assert await store.get_user_setting(other.id, "system_prompt") == "be formal"
    await store.set_user_setting(user.id, "system_prompt", None)  # deleting twice is fine


async def test_bans(store: Store) -> None:
    assert not await store.is_banned("telegram", "13")
    await store.ban("telegram", "13")
    assert await store.is_banned("telegram", "13")
    assert not await store.is_banned("discord", "13")
    await store.ban("telegram", "13", "spam")  # re-ban updates the reason
    rows = await store._db.execute_fetchall("SELECT reason FROM bans")
    assert list(rows) == [("spam",)]
    assert await store.unban("telegram", "13")
    assert not await store.is_banned("telegram", "13")
    assert not await store.unban("telegram", "13")


TRICKY = [
    "",
    "\x00",
    "a\x00b\x00",
    "😀👩‍👩‍👧‍👦🏳️‍🌈",
    "שלום עולם مرحبا بالعالم",
    "\u202eevil\u202c \u200b\u200d\ufeff",
    "e\u0301 Z̤͔ͅa̘l̞g̘o",
    "line\r\nbreak\rand\ttab\n",
    "'; DROP TABLE messages; --",
    "<|im_end|><start_of_turn>user",
    "\uffff\U0010ffff\U0001d11e",
    "x" * 100_000,
    "😀" * 100_000,
]


@pytest.mark.parametrize("content", TRICKY, ids=range(len(TRICKY)))
async def test_content_round_trips_exactly(
    store: Store, conversation: Conversation, path: Path, content: str
) -> None:
    message = await store.add_message(conversation.id, "user", content)
    reply = await store.add_message(conversation.id, "assistant", "", status="pending")
    await store.update_message(reply.id, content=content + "!", status="complete")
    history = await store.history(conversation.id)
    assert [m.content for m in history] == [content, content + "!"]
    assert history[0].id == message.id
    with other_connection(path) as db:
        stored = db.execute("SELECT content FROM messages WHERE id = ?", (message.id,)).fetchone()
    assert stored == (content,)


async def test_random_unicode_round_trips(store: Store, conversation: Conversation) -> None:
    rng = random.Random(1234)
    scalars = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = [
        "".join(chr(rng.choice(scalars)) for _ in range(rng.randint(1, 300))) for _ in range(50)
    ]
    for text in texts:
        await store.add_user_message_with_job(conversation.id, conversation.user_id, text)
    assert [m.content for m in await store.history(conversation.id)] == texts


async def test_text_that_is_not_unicode_is_refused(
    store: Store, user: User, conversation: Conversation
) -> None:
    with pytest.raises(ValueError):
        await store.add_user_message_with_job(conversation.id, user.id, "bad \ud800 surrogate")
    assert await store.history(conversation.id) == []
    assert not store._db.in_transaction


async def test_concurrent_writers_do_not_share_transactions(
    store: Store, user: User, conversation: Conversation
) -> None:
    async def one(i: int) -> None:
        if i % 7 == 0:  # some fail mid-transaction while the others run
            with pytest.raises(sqlite3.IntegrityError):
                await store.add_user_message_with_job(conversation.id, 10_000, f"bad {i}")
        else:
            await store.add_user_message_with_job(conversation.id, user.id, f"m{i}")

    await asyncio.gather(*(one(i) for i in range(60)))
    contents = {m.content for m in await store.history(conversation.id)}
    assert contents == {f"m{i}" for i in range(60) if i % 7}
    assert len(await unfinished(store)) == len(contents)


async def test_two_processes_can_open_the_same_database(path: Path) -> None:
    first = await Store.open(path)
    second = await Store.open(path)
    try:
        user = await first.user("telegram", "1", "A")
        assert await second.user("telegram", "1", "A") == user
    finally:
        await first.close()
        await second.close()


async def test_open_reports_a_failed_migration_and_releases_the_file(
    path: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "0001_bad.sql").write_text("CREATE TABLE x (y INTEGER); NOT SQL;", encoding="utf-8")
    with pytest.raises(MigrationError, match=r"0001_bad\.sql"):
        await Store.open(path, migrations_dir=broken)
    store = await Store.open(path)  # the real migrations still apply cleanly afterwards
    await store.close()
