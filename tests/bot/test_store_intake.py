"""Accepting a user message in one transaction: the same rows the separate store calls make."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Store
from bot.store_intake import accept_message


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "parley.db")
    yield opened
    await opened.close()


async def test_a_first_message_creates_the_user_the_conversation_and_a_queued_job(
    store: Store, tmp_path: Path
) -> None:
    first = await accept_message(store, "telegram", "42", "Ada", "chat-1", "Hello")
    assert first is not None
    assert first.user == await store.user("telegram", "42", "Ada")
    assert first.conversation == await store.active_conversation(first.user, "chat-1")
    assert (first.message.role, first.message.content) == ("user", "Hello")
    assert (first.job.status, first.job.message_id) == ("queued", first.message.id)
    again = await accept_message(store, "telegram", "42", "Ada L.", "chat-1", "More")
    assert again is not None and again.conversation == first.conversation
    elsewhere = await accept_message(store, "telegram", "42", "Ada L.", "chat-2", "Hi")
    assert elsewhere is not None and elsewhere.conversation != first.conversation
    history = await store.history(first.conversation.id, through_message_id=again.message.id)
    assert [m.content for m in history] == ["Hello", "More"]
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
