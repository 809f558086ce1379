"""A store that cannot write (a full disk, a read-only file) refuses each message clearly:
the user is told to send it again, the operator reads one line and a metric, readiness says
why, and once the disk is back the next message is stored and answered. On a real (small,
mounted) filesystem; unit tests of the fault names."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.chat.service import ChatService
from bot.chat.workers import STORE_DOWN
from bot.incoming import Incoming
from bot.metrics import METRICS
from bot.store.faults import storage_fault
from tests.bot.chat.test_service import Recorder
from tests.bot.scripted_service import scripted_service
from tests.small_disk import immutable, small_disk


@pytest.fixture(params=["full", "read-only"])
async def faulty(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Callable[[bool], None], ChatService]]:
    """A service whose store a test can break and mend: ``fault(True)`` fills the small disk
    its database is on, or makes its write-ahead log (where every commit goes) immutable
    (on the ordinary disk: tmpfs lets an open file be written all the same)."""
    with contextlib.ExitStack() as stack:
        if request.param == "full":
            disk = stack.enter_context(small_disk(tmp_path / "disk"))
            folder = disk.path
            fault: Callable[[bool], None] = lambda on: disk.fill() if on else disk.free()  # noqa: E731
        else:
            folder = tmp_path
            fault = lambda on: immutable(folder / "bot.db-wal", on)  # noqa: E731
        stack.callback(fault, False)
        async with scripted_service(folder / "bot.db") as (_, service):
            service.storage._every = 0.1  # probe often: the test waits for recovery
            try:
                yield fault, service
            finally:
                fault(False)


async def _say(service: ChatService, text: str) -> Recorder:
    sink = Recorder([], text)
    await service.handle(Incoming("test", "chat-1", "alice", "Alice", text, sink))
    await asyncio.wait_for(sink.done.wait(), 30)
    return sink


def _stored(service: ChatService) -> list[str]:
    assert service.store.path is not None
    with sqlite3.connect(service.store.path) as db:
        return [row[0] for row in db.execute("SELECT content FROM messages WHERE role = 'user'")]


def _failures() -> float:
    return sum(METRICS.counters["parley_store_write_failures_total"].values())


async def _recovered(service: ChatService) -> None:
    for _ in range(300):
        if service.storage.fault is None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still faulted: {service.storage.fault}")


async def test_a_message_the_store_cannot_take_is_refused_clearly_then_stored_when_it_can(
    faulty: tuple[Callable[[bool], None], ChatService], caplog: pytest.LogCaptureFixture
) -> None:
    fault, service = faulty
    assert (await _say(service, "warm up")).outcome is not None
    failures = _failures()
    fault(True)
    refused = [await _say(service, f"message {i}") for i in range(3)]
    for sink in refused:
        assert sink.notices == [STORE_DOWN] and sink.outcome is None, sink.outcome
    assert _failures() == failures + 3
    assert service.storage.fault is not None
    said = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(said) == 1  # one line for the operator, not one a message
    fault(False)
    await _recovered(service)  # the probe finds the disk back, without a message
    answered = await _say(service, "and now?")
    assert answered.outcome is not None and answered.outcome.state == "done"
    assert _stored(service) == ["warm up", "and now?"]


@pytest.mark.parametrize(
    ("message", "named"),
    [
        ("database or disk is full", "the disk is full"),
        ("attempt to write a readonly database", "read-only"),
        ("disk I/O error", "I/O error"),
        ("database disk image is malformed", "damaged"),
        ("file is not a database", "not a SQLite database"),
        ("database is locked", "write lock"),
    ],
)
def test_storage_faults_are_named_for_the_operator(message: str, named: str) -> None:
    fault = storage_fault(sqlite3.OperationalError(message))
    assert fault is not None and named in fault


def test_other_database_errors_are_not_storage_faults() -> None:
    assert storage_fault(sqlite3.IntegrityError("UNIQUE constraint failed")) is None
    assert storage_fault(ValueError("disk is full")) is None
