"""The store on a real SQLite file: round trips, durability, transactions, exact content.

Written through what the service uses (bot/store/jobs.py's accept/begin/finish, ``Store``'s
methods, the row statements on ``Store.atomic``), read back with the bot's own statements
(tests/bot/store/reads.py) or a second connection.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.store.database import Conversation, Job, Message, MessageStatus, Store, User
from bot.store.job_writes import Accepted, Reply
from bot.store.jobs import (
    accept_message,
    begin_job,
    finish_job,
    mark_shown,
)
from bot.store.migrations import MigrationError
from bot.store.rows import active_conversation, insert_job, insert_message, update_job
from tests.bot.store import reads
from tests.bot.store.reads import contents, history, unfinished


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "parley.db"  # parent does not exist yet


@pytest.fixture
async def store(path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(path)
    yield opened
    await opened.close()


@pytest.fixture
async def user(store: Store) -> User:
    return await store.user("telegram", "42", "Ada")


async def ask(
    store: Store, text: str, chat: str = "chat-1", who: str = "42", begin: str | None = None
) -> Accepted:
    """``who`` (on Telegram) says ``text`` in ``chat``, as the service stores it."""
    accepted = await accept_message(store, "telegram", who, "Ada", chat, text, begin=begin)
    assert accepted is not None
    return accepted


async def answer(
    store: Store, asked: Accepted, text: str, status: MessageStatus = "complete",
    tokens: int | None = None, model: str | None = None,
) -> int:  # fmt: skip
    """The job's reply stored and the job closed, as the service finishes it."""
    reply_id = await finish_job(
        store, asked.job, "done", Reply(text, status, model, completion_tokens=tokens), None
    )
    assert reply_id is not None
    return reply_id


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
    first = (await ask(store, "a")).conversation
    assert first == Conversation(first.id, user.id, "telegram", "chat-1")
    assert (await ask(store, "b")).conversation == first
    assert (await ask(store, "c", chat="chat-2")).conversation.id != first.id
    assert (await ask(store, "d", who="43")).conversation.id != first.id


async def test_reset_keeps_old_messages_and_starts_empty(
    store: Store, user: User, path: Path
) -> None:
    old = await ask(store, "hello")
    await answer(store, old, "hi there")
    fresh = await store.reset_conversation(user, "chat-1")
    assert fresh.id != old.conversation.id
    assert await history(store, fresh.id) == []
    assert await contents(store, old.conversation.id) == ["hello", "hi there"]
    after = await ask(store, "again")
    assert after.conversation == fresh
    assert await contents(store, fresh.id) == ["again"]
    with other_connection(path) as db:
        active = db.execute(
            "SELECT id FROM conversations WHERE user_id = ? AND active = 1", (user.id,)
        ).fetchall()
        assert active == [(fresh.id,)]
    again = await store.reset_conversation(user, "chat-1")
    assert again.id not in (fresh.id, old.conversation.id)


async def test_messages_come_back_as_stored(store: Store, user: User) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    asked = await ask(store, "hi")
    message = asked.message
    assert message == Message(
        message.id, asked.conversation.id, "user", "hi", None, None, "complete", message.created_at
    )
    assert before <= message.created_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert message.created_at.tzinfo is not None and message.created_at.utcoffset() == timedelta(0)
    assert await reads.message(store, message.id) == message

    reply_id = await answer(store, asked, "Hello", tokens=3, model="demo")
    reply = await reads.message(store, reply_id)
    assert reply is not None
    assert reply == Message(
        reply_id, asked.conversation.id, "assistant", "Hello", 3, "demo", "complete",
        reply.created_at,
    )  # fmt: skip


async def test_invalid_values_are_refused(store: Store, user: User) -> None:
    asked = await ask(store, "x")
    cid = asked.conversation.id
    with pytest.raises(ValueError, match="role"):
        await store.atomic(
            lambda db: insert_message(db, cid, "bot", "x", "complete", None, None)  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="message status"):
        await finish_job(store, asked.job, "done", Reply("x", "done", None), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="job status"):
        await finish_job(store, asked.job, "complete", Reply("x", "complete", None), None)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):  # no such conversation
        await finish_job(store, replace(asked.job, conversation_id=10_000), "done",
                         Reply("x", "complete", None), None)  # fmt: skip
    with pytest.raises(sqlite3.IntegrityError):
        await store.atomic(
            lambda db: insert_message(db, 10_000, "user", "x", "complete", None, None)
        )
    assert await contents(store, cid) == ["x"]  # no reply of the refused ones was kept
    assert await reads.job(store, asked.job.id) == asked.job  # still queued
    assert not store._db.in_transaction


async def test_history_filters_and_orders(store: Store, user: User) -> None:
    """All system and user messages; replies only if complete, partial or cancelled and not
    empty: failed and pending ones never go back to the model."""
    conversation = (await ask(store, "one")).conversation
    await store.atomic(
        lambda db: insert_message(db, conversation.id, "system", "be brief", "complete", None, None)
    )
    replies: list[tuple[str, MessageStatus]] = [
        ("failed reply", "failed"), ("", "cancelled"), ("cut", "cancelled"), ("more", "partial"),
        ("pending", "pending"), ("done", "complete"),
    ]  # fmt: skip
    for i, (text, status) in enumerate(replies):
        await answer(store, await ask(store, f"q{i}"), text, status)
    last = await ask(store, "two", begin="system_prompt")
    assert last.begun is not None
    expected = [
        ("user", "one"), ("system", "be brief"), ("user", "q0"), ("user", "q1"), ("user", "q2"),
        ("assistant", "cut"), ("user", "q3"), ("assistant", "more"), ("user", "q4"),
        ("user", "q5"), ("assistant", "done"), ("user", "two"),
    ]  # fmt: skip
    assert [(t.role, t.content) for t in last.begun.history] == expected
    assert await history(store, conversation.id) == expected


async def test_replies_sort_after_the_message_they_answer(store: Store, user: User) -> None:
    """Two quick messages: both stored before either reply, the second answered first;
    history still alternates."""
    first = await ask(store, "q1")
    second = await ask(store, "q2")
    await answer(store, second, "a2")
    await answer(store, first, "a1")
    cid = first.conversation.id
    assert await contents(store, cid) == ["q1", "a1", "q2", "a2"]
    assert await contents(store, cid, through=first.message.id) == ["q1", "a1"]
    assert await contents(store, cid, through=second.message.id) == ["q1", "a1", "q2", "a2"]
    begun = await begin_job(store, first.job, "system_prompt")  # a prompt stops at its message
    assert [t.content for t in begun.history] == ["q1", "a1"]


async def test_message_with_job_is_committed_together(store: Store, user: User, path: Path) -> None:
    asked = await ask(store, "hi")
    message, job = asked.message, asked.job
    assert (message.role, message.content, message.status) == ("user", "hi", "complete")
    assert job == Job(
        job.id, message.id, user.id, asked.conversation.id, "queued", None, None, job.created_at
    )
    with other_connection(path) as db:  # committed before the call returned
        assert db.execute("SELECT content FROM messages").fetchall() == [("hi",)]
        assert db.execute("SELECT message_id, status FROM jobs").fetchall() == [
            (message.id, "queued")
        ]
    assert await reads.job(store, job.id) == job
    assert await unfinished(store) == [job]


async def test_failed_job_insert_leaves_no_message(store: Store, user: User, path: Path) -> None:
    conversation = await store.atomic(lambda db: active_conversation(db, user, "chat-1"))

    def orphan(db: sqlite3.Connection) -> None:
        message = insert_message(db, conversation.id, "user", "orphan", "complete", None, None)
        insert_job(db, message, 10_000)  # no such user

    with pytest.raises(sqlite3.IntegrityError):
        await store.atomic(orphan)
    assert await history(store, conversation.id) == []
    assert await unfinished(store) == []
    assert not store._db.in_transaction
    with other_connection(path) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)


async def test_job_lifecycle(store: Store, user: User) -> None:
    first, second, third = [(await ask(store, text)).job for text in "abc"]
    assert [j.id for j in await unfinished(store)] == [first.id, second.id, third.id]

    await begin_job(store, first, "system_prompt")
    running = await reads.job(store, first.id)
    assert running is not None and (running.status, running.reply_message_id) == ("running", None)
    reply = await finish_job(store, first, "done", Reply("A", "complete", None), None)
    done = await reads.job(store, first.id)
    assert done is not None and (done.status, done.reply_message_id) == ("done", reply)
    assert first.id in [j.id for j in await unfinished(store)]  # until its text is shown
    await mark_shown(store, first)
    await store.atomic(lambda db: update_job(db, first.id, "done", None, None))
    kept = await reads.job(store, first.id)  # None keeps reply_message_id
    assert kept is not None and kept.reply_message_id == reply

    await finish_job(store, second, "failed", None, "engine unreachable")
    failed = await reads.job(store, second.id)
    assert failed is not None and (failed.status, failed.error) == ("failed", "engine unreachable")
    await mark_shown(store, second)
    assert [j.id for j in await unfinished(store)] == [third.id]
    await finish_job(store, third, "cancelled", None, None)
    await mark_shown(store, third)
    assert await unfinished(store) == []

    assert await reads.job(store, 10_000) is None
    with pytest.raises(KeyError):
        await finish_job(store, replace(third, id=10_000), "done", None, None)
    with pytest.raises(KeyError):
        await store.atomic(lambda db: update_job(db, 10_000, "done", None, None))
    with pytest.raises(ValueError, match="job status"):
        await finish_job(store, third, "complete", None, None)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        await store.atomic(lambda db: update_job(db, third.id, "done", 10_000, None))


async def test_restart_keeps_everything(path: Path) -> None:
    store = await Store.open(path)
    first = await accept_message(store, "discord", "7", "Grace", "dm", "remember me")
    assert first is not None
    await finish_job(store, first.job, "done", Reply("I will", "complete", "demo", 5, 3), None)
    await mark_shown(store, first.job)
    later = await accept_message(store, "discord", "7", "Grace", "dm", "still there?")
    assert later is not None
    await store.set_setting("system_prompt", "be kind")
    await store.set_user_setting(first.user.id, "system_prompt", "be brief")
    await store.ban("discord", "666", "spam")
    before = await history(store, first.conversation.id)
    await store.close()

    reopened = await Store.open(path)
    try:
        assert await reopened.user("discord", "7", "Grace") == first.user
        assert await history(reopened, first.conversation.id) == before
        assert await unfinished(reopened, "discord") == [later.job]
        assert await reopened.get_setting("system_prompt") == "be kind"
        assert await reopened.get_user_setting(first.user.id, "system_prompt") == "be brief"
        assert await reopened.is_banned("discord", "666")
        again = await accept_message(reopened, "discord", "7", "Grace", "dm", "and now?")
        assert again is not None and again.conversation == first.conversation
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
    begun = await ask(store, "hi", begin="system_prompt")  # the prompt reads the same setting
    assert begun.begun is not None and begun.begun.system_prompt == "talk like a pirate"
    await store.set_user_setting(user.id, "system_prompt", None)
    assert await store.get_user_setting(user.id, "system_prompt") is None
    assert await store.get_user_setting(other.id, "system_prompt") == "be formal"
    assert (await begin_job(store, begun.job, "system_prompt")).system_prompt is None
    await store.set_user_setting(user.id, "system_prompt", None)  # deleting twice is fine


async def test_bans(store: Store) -> None:
    assert not await store.is_banned("telegram", "13")
    await store.ban("telegram", "13")
    assert await store.is_banned("telegram", "13")
    assert not await store.is_banned("discord", "13")
    assert await accept_message(store, "telegram", "13", "Mal", "c", "hi") is None  # same check
    assert await accept_message(store, "discord", "13", "Mal", "c", "hi") is not None
    await store.ban("telegram", "13", "spam")  # re-ban updates the reason
    rows = await store._db.execute_fetchall("SELECT reason FROM bans")
    assert list(rows) == [("spam",)]
    assert await store.unban("telegram", "13")
    assert not await store.is_banned("telegram", "13")
    assert await accept_message(store, "telegram", "13", "Mal", "c", "hi") is not None
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
async def test_content_round_trips_exactly(store: Store, path: Path, content: str) -> None:
    asked = await ask(store, content)
    reply_id = await answer(store, asked, content + "!")
    assert await contents(store, asked.conversation.id) == [content, content + "!"]
    with other_connection(path) as db:
        stored = db.execute(
            "SELECT content FROM messages WHERE id IN (?, ?) ORDER BY id",
            (asked.message.id, reply_id),
        ).fetchall()
    assert stored == [(content,), (content + "!",)]


async def test_random_unicode_round_trips(store: Store) -> None:
    rng = random.Random(1234)
    scalars = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = [
        "".join(chr(rng.choice(scalars)) for _ in range(rng.randint(1, 300))) for _ in range(50)
    ]
    for text in texts:
        conversation = (await ask(store, text)).conversation
    assert await contents(store, conversation.id) == texts


async def test_text_that_is_not_unicode_is_refused(store: Store, path: Path) -> None:
    with pytest.raises(ValueError):
        await ask(store, "bad \ud800 surrogate")
    with other_connection(path) as db:  # not even the user: the accept is one transaction
        assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    asked = await ask(store, "fine")
    with pytest.raises(ValueError):
        await finish_job(store, asked.job, "done", Reply("bad \udfff", "complete", None), None)
    assert await contents(store, asked.conversation.id) == ["fine"]
    assert await reads.job(store, asked.job.id) == asked.job  # still queued
    assert not store._db.in_transaction


async def test_concurrent_writers_do_not_share_transactions(store: Store, user: User) -> None:
    """Writes asked for together share a commit (bot/store/batch.py), each in a savepoint of
    its own: one that fails takes none of the others with it."""
    conversation = await store.atomic(lambda db: active_conversation(db, user, "chat-1"))

    def add(text: str, user_id: int) -> Callable[[sqlite3.Connection], Job]:
        def work(db: sqlite3.Connection) -> Job:
            message = insert_message(db, conversation.id, "user", text, "complete", None, None)
            return insert_job(db, message, user_id)

        return work

    async def one(i: int) -> None:
        fails = i % 7 == 0  # some fail mid-transaction while the others run
        if i % 3 == 0:  # the message path's accept, on the loop or in the next batch
            with pytest.raises(ValueError) if fails else nullcontext():
                await ask(store, f"bad {i} \ud800" if fails else f"m{i}")
        else:
            with pytest.raises(sqlite3.IntegrityError) if fails else nullcontext():
                await store.atomic(add(f"m{i}", 10_000 if fails else user.id))  # no such user

    await asyncio.gather(*(one(i) for i in range(60)))
    texts = await contents(store, conversation.id)
    assert set(texts) == {f"m{i}" for i in range(60) if i % 7} and len(texts) == len(set(texts))
    assert len(await unfinished(store)) == len(texts)
    assert store._commits.batches < 60  # they did share commits
    assert not store._db.in_transaction


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
