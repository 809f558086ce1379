"""What Parley writes about its users is private whatever the umask: the database, its -wal
and -shm, backups and the engine's log are created mode 600, the folders Parley creates 700;
folders and files the operator made keep their modes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.engines.log_file import RotatingLog
from bot.store.backup import backup_database
from bot.store.database import Store
from bot.store.private_files import create_private_file, make_private_folder


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask of a login shell: outside the systemd unit, new files are world-readable."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


async def test_a_new_database_is_private_in_new_private_folders(tmp_path: Path) -> None:
    database = tmp_path / "new" / "data" / "parley.db"
    store = await Store.open(database)
    try:
        await store.set_setting("written", "so the -wal and -shm exist")
        for name in ("parley.db", "parley.db-wal", "parley.db-shm"):
            assert mode(database.parent / name) == 0o600, name
        assert mode(tmp_path / "new") == mode(tmp_path / "new" / "data") == 0o700
    finally:
        await store.close()
    copy = await backup_database(database, tmp_path / "backup.db")
    assert mode(copy.path) == 0o600


async def test_what_the_operator_made_keeps_its_mode(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    database = folder / "parley.db"
    database.touch(mode=0o640)
    database.chmod(0o640)
    store = await Store.open(database)
    await store.close()
    assert mode(folder) == 0o755
    assert mode(database) == 0o640


def test_the_engine_log_is_private_and_so_is_the_one_it_rotates_to(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    with RotatingLog(log, max_bytes=10) as sink:
        sink.write("a line longer than ten bytes\n")
        sink.write("the next one goes to a fresh file\n")
    assert mode(log) == mode(tmp_path / "engine.log.1") == 0o600


def test_private_files_and_folders(tmp_path: Path) -> None:
    make_private_folder(tmp_path / "a" / "b")
    make_private_folder(tmp_path / "a" / "b")  # there already: nothing to do
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700
    assert create_private_file(tmp_path / "a" / "f") is True
    assert create_private_file(tmp_path / "a" / "f") is False
    assert mode(tmp_path / "a" / "f") == 0o600
    (tmp_path / "file").touch()
    with pytest.raises(OSError):  # a file where a folder should be: said, not ignored
        make_private_folder(tmp_path / "file" / "sub")
