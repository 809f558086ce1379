"""``parley run`` on storage it cannot use stops at once with one line saying what is wrong and
exit code 78 (EX_CONFIG, which the systemd unit does not restart into the same fault): a
folder at DATABASE_PATH, a damaged or truncated file, a database from a newer Parley, a
read-only file, folder or file system, a full disk. Each through the real CLI in a subprocess,
on real filesystems: an immutable file or folder (``chattr +i``: the tests run as root, whom
mode bits do not stop) and a small tmpfs mounted for the test; skipped, saying why, where
this machine allows neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.admin.api import serve_admin
from bot.errors import EX_CONFIG, ConfigError
from bot.store.database import Store
from tests.engine_process import ROOT
from tests.small_disk import small_disk


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def parley_run(database: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``parley run`` with a Telegram token (so it runs the bots, not the terminal chat).
    The platform and the engine are at closed ports with a short start timeout: a start-up
    that got past the store (as every one of these cases did before) ends in about a second
    with the engine's error and exit 1, rather than loading a model."""
    closed = f"http://127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
    env.update(
        PYTHONPATH=str(ROOT), DATABASE_PATH=str(database), MODEL="demo",
        TELEGRAM_TOKEN="123456:storage-test-token", TELEGRAM_API_BASE_URL=closed,
        ENGINE_URLS=closed, ENGINE_START_TIMEOUT="1", LOG_LEVEL="warning",
    )  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "parley", "run"], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
    )  # fmt: skip


def assert_one_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 78 and exactly one line on stderr (no traceback) that has every one of ``words``."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode == EX_CONFIG, (result.returncode, result.stderr)
    assert result.stdout == ""
    line = lines[0]
    assert line.startswith("parley: "), line
    for word in words:
        assert word in line, line
    return line


def make_database(path: Path, rows: int = 2000) -> None:
    """A real, migrated Parley database of a few hundred KiB, closed (no -wal left)."""

    async def migrate() -> None:
        store = await Store.open(path)
        await store.close()

    asyncio.run(migrate())
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO settings (key, value) VALUES (?, ?)",
            [(f"filler-{i}", "x" * 200) for i in range(rows)],
        )
    db.close()  # the last connection: checkpointed, and the -wal and -shm are removed
    assert not path.with_name(path.name + "-wal").exists()


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``chattr +i path`` for the block: not even root may write it (or, for a folder, create
    or remove anything in it). Skips the test where that is not possible."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("making a file immutable needs root and chattr")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"this file system has no immutable files: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_folder_at_the_database_path(tmp_path: Path) -> None:
    (tmp_path / "parley.db").mkdir()
    assert_one_line(parley_run(tmp_path / "parley.db", tmp_path), "parley.db", "a folder")


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "parley.db").write_bytes(os.urandom(64 * 1024))
    assert_one_line(parley_run(tmp_path / "parley.db", tmp_path), "not a SQLite database")


def test_a_truncated_database(tmp_path: Path) -> None:
    database = tmp_path / "parley.db"
    make_database(database)
    os.truncate(database, database.stat().st_size // 2)
    assert_one_line(parley_run(database, tmp_path), "damaged", "backup")


def test_a_database_from_a_newer_parley(tmp_path: Path) -> None:
    database = tmp_path / "parley.db"
    make_database(database, rows=0)
    db = sqlite3.connect(database)
    with db:
        db.execute("INSERT INTO schema_migrations VALUES (999, 'future', '2099-01-01')")
    db.close()
    assert_one_line(parley_run(database, tmp_path), "schema version 999", "upgrade Parley")


def test_an_immutable_database_file_does_not_pass_start_up(tmp_path: Path) -> None:
    # SQLite opens a file it may not write read-only without a word, and a migrated
    # database is only read at start-up: before, the bot started and dropped every message
    database = tmp_path / "parley.db"
    make_database(database)
    with immutable(database):
        assert_one_line(parley_run(database, tmp_path), "read-only")


def test_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    make_database(folder / "old.db")  # SQLite must create its -wal and -shm beside it
    with immutable(folder):
        assert_one_line(parley_run(folder / "new.db", tmp_path), "new.db", "not permitted")
        assert_one_line(parley_run(folder / "old.db", tmp_path), "old.db", "cannot be opened")


async def test_a_folder_that_takes_the_database_but_not_the_admin_socket(tmp_path: Path) -> None:
    # a read-only folder whose database still opens (its -wal and -shm were left by a crash)
    # fails later, at the admin socket beside it: one line too, not a traceback
    folder = tmp_path / "data"
    folder.mkdir()
    with immutable(folder), pytest.raises(ConfigError) as refused:
        await serve_admin(None, folder / "admin.sock", "a-token", {}, write_token=True)  # type: ignore[arg-type]
    assert "admin socket" in str(refused.value) and "not permitted" in str(refused.value)
    assert "\n" not in str(refused.value)


def _remount_read_only(path: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount {path} read-only: {done.stderr.strip()}")


def test_a_read_only_file_system(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        make_database(disk.path / "old.db")
        _remount_read_only(disk.path)
        assert_one_line(parley_run(disk.path / "old.db", tmp_path), "file system is read-only")
        assert_one_line(parley_run(disk.path / "new.db", tmp_path), "file system is read-only")


def test_a_full_disk(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        make_database(disk.path / "old.db")
        disk.fill()
        # SQLite says "disk I/O error" for this one (it cannot make its -shm file)
        assert_one_line(parley_run(disk.path / "old.db", tmp_path), "old.db", "disk is full")
        assert_one_line(parley_run(disk.path / "new.db", tmp_path), "new.db", "disk is full")
