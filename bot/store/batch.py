"""Group commit: the write transactions asked for while one is on aiosqlite's thread go there
together next, as savepoints of one transaction, with one round trip and one commit for all.

Messages come in bursts (one getUpdates answer hands out every message sent in the last
moment), and each is stored, with its job, before it is queued. One transaction a message
meant the eighth of eight waited for seven round trips (about 0.9 ms each here, 0.36 ms of
it the thread hop alone) before its own. Each piece of work is still atomic on its own (a
savepoint, rolled back alone when it raises), and its caller hears back only once the
commit is done, so "stored before it is queued, and before it is shown" holds as before.

A write on the message path (``on_loop``) that finds the connection free skips the thread
altogether: it runs right there on the event loop, all in C but the few statements, with no
thread hop either way and no other thread contending for the GIL meanwhile (an accept took
0.37 ms so against 0.86 ms by the thread in bench/trace_ingress.py terms, one user). It never
waits on the loop: if another connection (a backup, an operator's sqlite3 shell) holds the
write lock, it goes to the thread, which waits for it as every other write does. With no
automatic checkpoints (bot/store/checkpoint.py), a commit is a write to the log, never a
copy of it into the database.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiosqlite

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]
Outcome = tuple[Any, BaseException | None]  # the work's result, or what it raised
BUSY_TIMEOUT_MS = 5000  # how long a write on the thread waits for another connection's lock


class GroupCommit:
    """Runs ``run(work)`` at once when nothing else is on the thread, else in the next batch;
    ``lock`` keeps other uses of the connection out while a batch is on the thread."""

    def __init__(
        self, db: aiosqlite.Connection, lock: asyncio.Lock,
        committed: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        """``db`` must be opened with ``check_same_thread=False`` (writes ``on_loop`` use it
        from the loop's thread); ``committed`` hears of every commit."""
        self._db = db
        self._lock = lock
        self._committed = committed
        self._waiting: list[tuple[Work, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # transactions committed (tests, benchmarks)
        self.on_loop = 0  # of which on the event loop's thread

    async def run(self, work: Callable[[sqlite3.Connection], T], on_loop: bool = False) -> T:
        """``work`` committed; ``on_loop`` for a write someone is waiting on (see above)."""
        if self._flusher is None and not self._lock.locked():  # nothing in flight: straight on
            outcome = commit_now(self._db._conn, work) if on_loop else None
            if outcome is not None:
                self.on_loop += 1
                # an await that never yields would let a loop of writes starve every other
                # task (and the threads' callbacks): give them their turn, as the thread does
                await asyncio.sleep(0)
            else:
                async with self._lock:
                    (outcome,) = await self._on_thread([work])
            self._count()
            result, error = outcome
            if error is not None:
                raise error
            return result  # type: ignore[no-any-return]
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((work, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="parley-store-commit")
        return await future

    async def _flush(self) -> None:
        try:
            async with self._lock:
                while self._waiting:
                    batch, self._waiting = self._waiting, []
                    await self._commit(batch)
        finally:
            self._flusher = None
            for _, future in self._waiting:  # only when cancelled: nothing will run them
                if not future.done():
                    future.set_exception(RuntimeError("the store was closed"))
            self._waiting.clear()

    def _count(self) -> None:
        self.batches += 1
        if self._committed is not None:
            self._committed()

    async def _on_thread(self, works: list[Work]) -> list[Outcome]:
        connection = self._db._conn
        # aiosqlite's one way to run a function on its thread (present since its first releases)
        run_on_thread: Callable[[Callable[[], list[Outcome]]], Awaitable[list[Outcome]]] = (
            self._db._execute
        )
        return await run_on_thread(functools.partial(commit_all, connection, works))

    async def _commit(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = await self._on_thread([work for work, _ in batch])
        except BaseException as exc:  # the commit itself failed: none of them is stored
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self._count()
        for (_, future), (result, error) in zip(batch, outcomes, strict=True):
            if future.done():  # its caller gave up waiting; the work is stored anyway
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)


def commit_now(db: sqlite3.Connection, work: Work) -> Outcome | None:
    """``work`` in a transaction of its own, if the write lock is free this instant; None,
    having done nothing, if another connection holds it."""
    db.execute("PRAGMA busy_timeout = 0")
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if (exc.sqlite_errorcode & 0xFF) == sqlite3.SQLITE_BUSY:  # BUSY, or one of its kinds
            return None
        raise
    finally:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    (outcome,) = _commit_begun(db, [work])
    return outcome


def commit_all(db: sqlite3.Connection, works: list[Work]) -> list[Outcome]:
    """One transaction; with several works, each in a savepoint of its own."""
    db.execute("BEGIN IMMEDIATE")
    return _commit_begun(db, works)


def _commit_begun(db: sqlite3.Connection, works: list[Work]) -> list[Outcome]:
    try:
        if len(works) == 1:
            outcomes: list[Outcome] = [(works[0](db), None)]
        else:
            outcomes = [_in_savepoint(db, work) for work in works]
    except BaseException as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if len(works) == 1 and isinstance(exc, Exception):
            return [(None, exc)]
        raise
    _commit(db)
    return outcomes


def _commit(db: sqlite3.Connection) -> None:
    """COMMIT, or roll back when it fails: a COMMIT refused for a full disk leaves the
    transaction open, and every later BEGIN would fail even once space is back."""
    try:
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _in_savepoint(db: sqlite3.Connection, work: Work) -> Outcome:
    db.execute("SAVEPOINT work")
    try:
        result = work(db)
    except Exception as exc:
        db.execute("ROLLBACK TO work")
        db.execute("RELEASE work")
        return None, exc
    db.execute("RELEASE work")
    return result, None
