"""Migrations: applied in order, once each, one transaction each; upgrades from every version."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from bot.store.database import Store
from bot.store.jobs import accept_message
from bot.store.migrations import (
    MIGRATIONS_DIR,
    MigrationError,
    apply_migrations,
    current_version,
    discover,
    split_statements,
)
from tests.bot.store.reads import contents

REAL = discover()
TABLES = {"users", "conversations", "messages", "jobs", "settings", "user_settings", "bans"}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await aiosqlite.connect(tmp_path / "test.db")
    yield connection
    await connection.close()


def write(directory: Path, name: str, sql: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(sql, encoding="utf-8")
    return path


async def tables(db: aiosqlite.Connection) -> set[str]:
    rows = await db.execute_fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {row[0] for row in rows}


async def schema(db: aiosqlite.Connection) -> list[tuple[str, str]]:
    rows = await db.execute_fetchall(
        "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
    )
    return [(row[0], row[1]) for row in rows]


def test_real_migrations_are_found_next_to_the_package() -> None:
    assert Path(__file__).resolve().parents[3] / "migrations" == MIGRATIONS_DIR
    assert REAL[0].version == 1 and REAL[0].path.name == "0001_init.sql"
    assert [m.version for m in REAL] == sorted({m.version for m in REAL})


async def test_fresh_database_gets_every_migration(db: aiosqlite.Connection) -> None:
    assert await current_version(db) == 0
    applied = await apply_migrations(db)
    assert applied == [m.version for m in REAL]
    assert await current_version(db) == REAL[-1].version
    assert await tables(db) >= TABLES
    rows = await db.execute_fetchall("SELECT version, name, applied_at FROM schema_migrations")
    assert [(r[0], r[1]) for r in rows] == [(m.version, m.name) for m in REAL]
    assert all(r[2].endswith("Z") and "T" in r[2] for r in rows)


async def test_applying_twice_applies_nothing(db: aiosqlite.Connection) -> None:
    await apply_migrations(db)
    before = await schema(db)
    assert await apply_migrations(db) == []
    assert await schema(db) == before


async def test_upgrade_from_an_older_version(db: aiosqlite.Connection, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    write(directory, "0001_first.sql", "CREATE TABLE a (x INTEGER);\nINSERT INTO a VALUES (1);\n")
    assert await apply_migrations(db, directory) == [1]
    assert await current_version(db) == 1
    write(directory, "0002_second.sql", "ALTER TABLE a ADD COLUMN y TEXT DEFAULT 'new';")
    write(directory, "0010_tenth.sql", "UPDATE a SET y = 'ten';")
    assert await apply_migrations(db, directory) == [2, 10]
    assert await current_version(db) == 10
    assert list(await db.execute_fetchall("SELECT x, y FROM a")) == [(1, "ten")]


@pytest.mark.parametrize("prefix", range(len(REAL) + 1))
async def test_upgrade_from_every_real_version(tmp_path: Path, prefix: int) -> None:
    """A database left at any earlier real version upgrades to the same schema as a fresh one."""
    fresh = await aiosqlite.connect(tmp_path / "fresh.db")
    await apply_migrations(fresh)
    expected = await schema(fresh)
    await fresh.close()

    older = tmp_path / "older"
    older.mkdir()
    for migration in REAL[:prefix]:
        shutil.copy(migration.path, older / migration.path.name)
    async with aiosqlite.connect(tmp_path / "old.db") as db:
        await apply_migrations(db, older)
        assert await current_version(db) == (REAL[prefix - 1].version if prefix else 0)
        assert await apply_migrations(db) == [m.version for m in REAL[prefix:]]
        assert await schema(db) == expected


async def test_store_opens_a_database_made_by_the_first_migration(tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(REAL[0].path, first / REAL[0].path.name)
    path = tmp_path / "bot.db"
    async with aiosqlite.connect(path) as db:
        await apply_migrations(db, first)
        await db.execute(
            "INSERT INTO users (platform, platform_user_id, name) VALUES ('t', '1', 'A')"
        )
        await db.commit()
    store = await Store.open(path)
    try:
        user = await store.user("t", "1", "A")
        assert user.id == 1
        accepted = await accept_message(store, "t", "1", "A", "chat", "hi")
        assert accepted is not None and accepted.user == user
        assert await contents(store, accepted.conversation.id) == ["hi"]
    finally:
        await store.close()
    async with aiosqlite.connect(path) as db:
        assert await current_version(db) == REAL[-1].version


async def test_failing_migration_leaves_the_database_as_it_was(
    db: aiosqlite.Connection, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    write(directory, "0001_first.sql", "CREATE TABLE a (x INTEGER);")
    await apply_migrations(db, directory)
    before = await schema(db)
    write(
        directory,
        "0002_broken.sql",
        "CREATE TABLE b (y INTEGER);\nINSERT INTO a VALUES (7);\nINSERT INTO nowhere VALUES (1);\n",
    )
    with pytest.raises(MigrationError) as raised:
        await apply_migrations(db, directory)
    message = str(raised.value)
    assert "0002_broken.sql" in message
    assert "no such table: nowhere" in message
    assert not db.in_transaction
    assert await current_version(db) == 1
    assert await schema(db) == before
    assert "b" not in await tables(db)
    assert list(await db.execute_fetchall("SELECT * FROM a")) == []


async def test_each_migration_is_its_own_transaction(
    db: aiosqlite.Connection, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    write(directory, "0001_first.sql", "CREATE TABLE a (x INTEGER);")
    write(directory, "0002_second.sql", "CREATE TABLE b (y INTEGER);")
    write(directory, "0003_broken.sql", "CREATE TABLE c (z INTEGER); SELEC 1;")
    with pytest.raises(MigrationError, match=r"0003_broken\.sql"):
        await apply_migrations(db, directory)
    assert await current_version(db) == 2
    assert {"a", "b"} <= await tables(db)
    assert "c" not in await tables(db)
    write(directory, "0003_broken.sql", "CREATE TABLE c (z INTEGER);")  # fixed by the operator
    assert await apply_migrations(db, directory) == [3]


async def test_foreign_key_violation_fails_the_migration(
    db: aiosqlite.Connection, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    write(
        directory,
        "0001_first.sql",
        "CREATE TABLE p (id INTEGER PRIMARY KEY);"
        "CREATE TABLE c (id INTEGER PRIMARY KEY, p INTEGER REFERENCES p (id));",
    )
    await apply_migrations(db, directory)
    await db.execute("PRAGMA foreign_keys = ON")
    write(directory, "0002_orphan.sql", "INSERT INTO c (id, p) VALUES (1, 99);")
    with pytest.raises(MigrationError, match=r"0002_orphan\.sql.*foreign key"):
        await apply_migrations(db, directory)
    assert await current_version(db) == 1
    assert list(await db.execute_fetchall("SELECT * FROM c")) == []
    assert list(await db.execute_fetchall("PRAGMA foreign_keys")) == [(1,)]  # restored


async def test_statements_are_split_like_sqlite_does(
    db: aiosqlite.Connection, tmp_path: Path
) -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE log (text TEXT);
    CREATE TABLE t (x TEXT);
    /* block; comment */
    CREATE TRIGGER t_log AFTER INSERT ON t BEGIN
        INSERT INTO log VALUES ('inserted; ' || new.x);
        INSERT INTO log VALUES ('twice');
    END;
    INSERT INTO t VALUES ('a;b')
    """
    assert len(list(split_statements(sql))) == 4
    directory = tmp_path / "migrations"
    write(directory, "0001_trigger.sql", sql)
    assert await apply_migrations(db, directory) == [1]
    rows = await db.execute_fetchall("SELECT text FROM log ORDER BY rowid")
    assert [r[0] for r in rows] == ["inserted; a;b", "twice"]


async def test_database_newer_than_the_code_is_refused(
    db: aiosqlite.Connection, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    write(directory, "0001_first.sql", "CREATE TABLE a (x INTEGER);")
    write(directory, "0002_second.sql", "CREATE TABLE b (x INTEGER);")
    await apply_migrations(db, directory)
    (directory / "0002_second.sql").unlink()
    with pytest.raises(MigrationError, match="schema version 2, newer"):
        await apply_migrations(db, directory)


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["0001_a.sql", "1_b.sql"], "share version 1"),
        (["0001 init.sql"], "not named NNNN_name.sql"),
        (["0000_zero.sql"], "start at 1"),
    ],
)
async def test_bad_migration_file_names_are_refused(
    db: aiosqlite.Connection, tmp_path: Path, names: list[str], match: str
) -> None:
    directory = tmp_path / "migrations"
    for name in names:
        write(directory, name, "SELECT 1;")
    with pytest.raises(MigrationError, match=match):
        await apply_migrations(db, directory)


async def test_missing_directory_is_a_clear_error(db: aiosqlite.Connection, tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        await apply_migrations(db, tmp_path / "nope")


async def test_refuses_to_run_inside_a_transaction(db: aiosqlite.Connection) -> None:
    await db.execute("CREATE TABLE a (x INTEGER)")
    await db.execute("INSERT INTO a VALUES (1)")  # legacy isolation opens a transaction
    assert db.in_transaction
    with pytest.raises(MigrationError, match="open transaction"):
        await apply_migrations(db)
