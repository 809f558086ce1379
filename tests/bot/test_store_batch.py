"""Group commit on a real SQLite file: writes asked for together share one transaction, each
still all-or-nothing, and each caller hears back only after the commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.store import Store
from bot.store_jobs import accept_message


def _put(key: str, fail: bool = False) -> object:
    def work(db: sqlite3.Connection) -> str:
        db.execute("INSERT INTO settings (key, value) VALUES (?, 'v')", (key,))
        if fail:
            raise ValueError(f"{key} went wrong")
        return key

    return work


def _stored(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT key FROM settings")}


async def test_writes_asked_for_together_share_one_commit(store: Store, tmp_path: Path) -> None:
    before = store._commits.batches
    accepted = await asyncio.gather(*(
        accept_message(store, "telegram", str(user), "U", "chat", f"message {user}")
        for user in range(8)
    ))  # fmt: skip
    # the first went straight on; the seven asked while it was on the thread went together
    assert store._commits.batches - before == 2
    assert [a.message.content for a in accepted if a] == [f"message {u}" for u in range(8)]
    assert len({a.job.id for a in accepted if a}) == 8
    with sqlite3.connect(tmp_path / "parley.db") as db:  # committed, seen by another reader
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone() == (8,)


async def test_a_failing_write_is_undone_alone_and_its_caller_told(
    store: Store, tmp_path: Path
) -> None:
    results = await asyncio.gather(
        store.atomic(_put("first")), store.atomic(_put("second", fail=True)),
        store.atomic(_put("third")), store.atomic(_put("fourth", fail=True)),
        return_exceptions=True,
    )  # fmt: skip
    assert results[0] == "first" and results[2] == "third"
    assert isinstance(results[1], ValueError) and "second went wrong" in str(results[1])
    assert isinstance(results[3], ValueError)
    assert _stored(tmp_path / "parley.db") == {"first", "third"}
    with pytest.raises(ValueError, match="alone went wrong"):  # a write on its own, too
        await store.atomic(_put("alone", fail=True))
    assert _stored(tmp_path / "parley.db") == {"first", "third"}
    assert await store.atomic(_put("after")) == "after"  # the store goes on working
