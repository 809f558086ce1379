"""The online backup: a consistent, private copy of the live database while it is written."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.errors import ParleyError
from bot.store.backup import backup_database
from bot.store.database import Store
from bot.store.jobs import accept_message


async def test_a_backup_taken_while_the_bot_writes_is_whole_and_private(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "live db.sqlite")  # a space: the path is a URI
    assert store.path is not None
    for i in range(200):
        await accept_message(store, "telegram", str(i % 7), "U", "c", f"before {i}")
    writing = True

    async def keep_writing() -> int:
        count = 0
        while writing and count < 20_000:  # bounded: a store that starved the loop would
            # otherwise write until the disk is full (it once did: an 83 GB log)
            await accept_message(store, "telegram", "9", "W", "c", f"during {count}")
            count += 1
        return count

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(0.05)
    made = await backup_database(store.path, tmp_path / "copy.db")
    writing = False
    during = await writer
    await store.close()
    assert during > 0 and made.bytes > 0
    assert oct((tmp_path / "copy.db").stat().st_mode & 0o777) == "0o600"
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        texts = [r[0] for r in copy.execute("SELECT content FROM messages ORDER BY id")]
        jobs = copy.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    assert texts[:200] == [f"before {i}" for i in range(200)]
    assert len(texts) == jobs  # one snapshot: every message with its job
    assert not list(tmp_path.glob("*.partial"))


async def test_a_backup_that_cannot_be_made_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.db")
    assert store.path is not None
    with pytest.raises(ParleyError, match="not a folder"):
        await backup_database(store.path, tmp_path / "missing" / "copy.db")
    with pytest.raises(ParleyError, match="another file"):
        await backup_database(store.path, store.path)
    await store.close()
    assert all(p.name.startswith("bot.db") for p in tmp_path.iterdir())  # no stray copy
