"""Schema migrations: ``migrations/NNNN_name.sql`` applied in numeric order, each exactly once.

Each file runs inside its own ``BEGIN IMMEDIATE`` ... ``COMMIT`` together with the row that
records it in ``schema_migrations``, so a file either applies completely or not at all: a failed
migration leaves the database exactly as it was before that file. We split files into statements
ourselves (``sqlite3.complete_statement``) because ``executescript`` commits on its own.

Foreign-key enforcement is switched off while migrations run (it cannot be changed inside a
transaction, and table rebuilds need it off, as SQLite's ALTER TABLE guide describes), and each
file must leave ``PRAGMA foreign_key_check`` clean before it commits. Migration files must not
contain their own BEGIN/COMMIT.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.errors import ConfigError, ParleyError

# The SQL files live at the repository root, next to the ``bot`` package.
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

_FILE_NAME = re.compile(r"^(\d+)_(\w+)\.sql$")


class MigrationError(ParleyError):
    """The schema could not be brought up to date; the message names the file and the cause."""


class SchemaTooNew(MigrationError, ConfigError):
    """The database was written by a newer Parley: the operator upgrades Parley or points
    DATABASE_PATH elsewhere (``parley run`` ends with EX_CONFIG, not restarted into it)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def discover(directory: Path | None = None) -> list[Migration]:
    """The migration files in ``directory`` (default: the shipped ones), in version order."""
    directory = MIGRATIONS_DIR if directory is None else directory
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(
                f"migration file {path.name} is not named NNNN_name.sql; rename or remove it"
            )
        version = int(match.group(1))
        if version < 1:
            raise MigrationError(f"migration file {path.name}: versions start at 1")
        if version in found:
            raise MigrationError(
                f"migration files {found[version].path.name} and {path.name} share version "
                f"{version}; renumber one of them"
            )
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


def split_statements(sql: str) -> Iterator[str]:
    """Complete SQL statements in ``sql``, honouring quotes, comments and trigger bodies."""
    start = 0
    for end, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[start : end + 1]):
            statement = sql[start : end + 1].strip()
            if statement.strip(";").strip():
                yield statement
            start = end + 1
    tail = sql[start:].strip()
    if tail:
        yield tail  # a last statement without ';' (or only comments, which run as a no-op)


async def current_version(db: aiosqlite.Connection) -> int:
    """The highest applied version; 0 for a database that has never been migrated."""
    applied = await _applied_versions(db)
    return max(applied, default=0)


async def apply_migrations(db: aiosqlite.Connection, directory: Path | None = None) -> list[int]:
    """Apply every migration not yet recorded, oldest first; returns the versions applied.

    Safe to call on every start and from several processes at once: each file re-checks under
    the write lock that nobody applied it meanwhile. ``db`` must not be inside a transaction.
    """
    migrations = discover(directory)
    if db.in_transaction:
        raise MigrationError("cannot migrate inside an open transaction; commit it first")
    await _transaction(db, ["CREATE TABLE IF NOT EXISTS schema_migrations (" + _TABLE + ")"])
    applied = await _applied_versions(db)
    latest = max((m.version for m in migrations), default=0)
    if max(applied, default=0) > latest:
        raise SchemaTooNew(
            f"the database is at schema version {max(applied)}, newer than this Parley knows "
            f"(latest {latest}); upgrade Parley or use another DATABASE_PATH"
        )
    done: list[int] = []
    async with _foreign_keys_off(db):
        for migration in migrations:
            if migration.version not in applied and await _apply_one(db, migration):
                done.append(migration.version)
    return done


_TABLE = "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL"


async def _applied_versions(db: aiosqlite.Connection) -> set[int]:
    async with db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ) as cursor:
        if await cursor.fetchone() is None:
            return set()
    async with db.execute("SELECT version FROM schema_migrations") as cursor:
        return {int(row[0]) for row in await cursor.fetchall()}


async def _apply_one(db: aiosqlite.Connection, migration: Migration) -> bool:
    """Run one file in one transaction; False if another process applied it first."""
    try:
        sql = migration.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise MigrationError(f"migration {migration.path.name} cannot be read: {error}") from None
    await db.execute("BEGIN IMMEDIATE")
    try:
        async with db.execute(
            "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
        ) as cursor:
            if await cursor.fetchone() is not None:
                await db.execute("ROLLBACK")
                return False
        for statement in split_statements(sql):
            async with db.execute(statement):
                pass  # close each cursor so nothing is left in progress at COMMIT
        async with db.execute("PRAGMA foreign_key_check") as cursor:
            broken = list(await cursor.fetchall())
        if broken:
            table, rowid, parent = broken[0][0], broken[0][1], broken[0][2]
            raise sqlite3.IntegrityError(
                f"{len(broken)} foreign key violation(s), e.g. {table} row {rowid} -> {parent}"
            )
        await db.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)"
            " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            (migration.version, migration.name),
        )
        await db.execute("COMMIT")
    except sqlite3.Error as error:
        await _rollback(db)
        raise MigrationError(
            f"migration {migration.path.name} failed and was rolled back: {error}"
        ) from error
    except BaseException:
        await _rollback(db)
        raise
    return True


async def _transaction(db: aiosqlite.Connection, statements: list[str]) -> None:
    await db.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements:
            await db.execute(statement)
        await db.execute("COMMIT")
    except BaseException:
        await _rollback(db)
        raise


async def _rollback(db: aiosqlite.Connection) -> None:
    if db.in_transaction:
        await db.execute("ROLLBACK")


@asynccontextmanager
async def _foreign_keys_off(db: aiosqlite.Connection) -> AsyncIterator[None]:
    """FK enforcement off for the block, then back to the connection's previous setting."""
    async with db.execute("PRAGMA foreign_keys") as cursor:
        row = await cursor.fetchone()
    await db.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        if row is not None and row[0]:
            await db.execute("PRAGMA foreign_keys = ON")
