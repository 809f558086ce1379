"""Group commit on a real SQLite file: writes asked for together share one transaction, each
still all-or-nothing, and each caller hears back only after the commit."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from bot.store.database import Store
from bot.store.jobs import accept_message


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


def _slow_put(key: str) -> object:
    def work(db: sqlite3.Connection) -> str:
        time.sleep(0.05)  # long enough for the loop to ask for the others meanwhile
        db.execute("INSERT INTO settings (key, value) VALUES (?, 'v')", (key,))
        return key

    return work


async def test_writes_asked_for_together_share_one_commit(store: Store, tmp_path: Path) -> None:
    before = store._commits.batches
    first = asyncio.ensure_future(store.atomic(_slow_put("first")))
    await asyncio.sleep(0)  # it went straight to the thread
    accepted = await asyncio.gather(*(
        accept_message(store, "telegram", str(user), "U", "chat", f"message {user}")
        for user in range(8)
    ))  # fmt: skip
    assert await first == "first"
    # the eight asked while the first was on the thread went together, there too
    assert store._commits.batches - before == 2
    assert store._commits.on_loop == 0
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


def _where(key: str, threads: list[threading.Thread]) -> object:
    def work(db: sqlite3.Connection) -> str:
        threads.append(threading.current_thread())
        db.execute("INSERT INTO settings (key, value) VALUES (?, 'v')", (key,))
        return key

    return work


async def test_a_write_asked_for_now_commits_on_the_loops_thread(
    store: Store, tmp_path: Path
) -> None:
    threads: list[threading.Thread] = []
    assert await store.atomic(_where("now", threads), now=True) == "now"
    assert _stored(tmp_path / "parley.db") == {"now"}  # committed when it returned
    assert await store.atomic(_where("later", threads)) == "later"
    assert threads[0] is threading.current_thread()  # no hop to aiosqlite's thread
    assert threads[1] is not threading.current_thread()
    assert store._commits.on_loop == 1
    with pytest.raises(ValueError, match="undone went wrong"):  # undone, its caller told
        await store.atomic(_put("undone", fail=True), now=True)
    assert _stored(tmp_path / "parley.db") == {"now", "later"}


async def test_a_write_asked_for_now_never_waits_on_the_loop_for_another_writer(
    store: Store, tmp_path: Path
) -> None:
    """An operator's sqlite3 shell or a backup holding the write lock must not freeze the
    bot: the write goes to the thread, which waits for the lock, while the loop turns."""
    other = sqlite3.connect(tmp_path / "parley.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    threads: list[threading.Thread] = []
    started = time.monotonic()
    write = asyncio.ensure_future(store.atomic(_where("blocked", threads), now=True))
    for _ in range(20):  # the loop goes on turning while the write waits
        await asyncio.sleep(0.01)
    assert time.monotonic() - started < 1.0  # not held in SQLite's busy wait (5 s)
    assert not write.done()
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(write, 5) == "blocked"
    assert threads == [t for t in threads if t is not threading.current_thread()]
    assert store._commits.on_loop == 0
    assert await store.atomic(_where("free again", threads), now=True) == "free again"
    assert store._commits.on_loop == 1  # the lock is free: on the loop again
    assert _stored(tmp_path / "parley.db") == {"blocked", "free again"}


async def test_writes_asked_for_now_still_let_other_tasks_run(store: Store) -> None:
    """A loop of writes must not starve the loop: a backup finishing on its thread, say,
    is heard of (its callback runs) while they go on."""
    heard = asyncio.Event()
    asyncio.get_running_loop().call_soon(heard.set)
    for n in range(1000):
        if heard.is_set():
            break
        await store.atomic(_put(f"k{n}"), now=True)
    assert heard.is_set() and n < 5
