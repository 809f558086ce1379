"""The bot supervises its local engine: a killed engine is noticed, restarted, and the answer it
was writing is written again once; a second loss is a clear error on the same reply. Real
engine processes on the demo model, killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest

from bot.chat.service import ChatService
from bot.chat.workers import ENGINE_LOST
from bot.engines.local import LocalEngine
from bot.settings import Settings, load_settings
from parley.app import Parley
from tests.bot.chat.test_service import Recorder, say
from tests.conftest import store_settled

pytestmark = pytest.mark.model


def _settings(tmp_path: Path) -> Settings:
    return load_settings(
        model="demo", database_path=tmp_path / "bot.db", engine_n_ctx=512, engine_parallel=1,
        max_tokens=120, temperature=0.0, engine_start_timeout=120, metrics_port=0,
    )  # fmt: skip


async def _readiness(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url + "/healthz?ready=1") as response:
        return response.status


async def _kill_when_writing(engine: LocalEngine, sink: Recorder) -> float:
    """SIGKILL the engine once ``sink`` has some text; when it was killed."""
    await asyncio.wait_for(sink.first_delta.wait(), 60)
    sink.first_delta.clear()
    assert engine.pid is not None
    os.kill(engine.pid, signal.SIGKILL)
    return time.monotonic()


async def _noticed_within(engine: LocalEngine, since: float) -> float:
    while engine.ready.is_set():
        await asyncio.sleep(0.02)
    return time.monotonic() - since


def _jobs(database: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT status, error FROM jobs ORDER BY id").fetchall()


async def test_a_killed_engine_is_restarted_and_the_answer_written_again(tmp_path: Path) -> None:
    app = Parley(_settings(tmp_path))
    async with app as service:
        assert app.engine is not None
        first_pid = app.engine.pid
        log: list[str] = []
        asking, asker = say("alice", "Tell me a long story about the sea.", log)
        waiting, waiter = say("bob", "Say hello.", log)
        await service.handle(asking)
        await service.handle(waiting)  # one slot: queued behind alice
        killed = await _kill_when_writing(app.engine, asker)
        assert await _noticed_within(app.engine, killed) < 2.0
        assert await _readiness(app.metrics_url) == 503  # while the engine restarts
        await asyncio.wait_for(asker.done.wait(), 240)
        await asyncio.wait_for(waiter.done.wait(), 240)
        assert app.engine.restarts == 1 and app.engine.pid != first_pid
        assert asker.restarts == 1 and waiter.restarts == 0
        assert asker.outcome is not None and asker.outcome.state == "done"
        assert waiter.outcome is not None and waiter.outcome.state == "done"
        assert asker.text == asker.outcome.text and len(asker.text) > 20
        await store_settled(service.store)
        assert _jobs(app.settings.database_path) == [("done", None), ("done", None)]
        assert await _readiness(app.metrics_url) == 200


async def test_losing_the_engine_twice_is_an_error_on_the_same_reply(tmp_path: Path) -> None:
    app = Parley(_settings(tmp_path))
    async with app as service:
        assert app.engine is not None
        log: list[str] = []
        asking, asker = say("alice", "Tell me a long story about the sea.", log)
        await service.handle(asking)
        await _kill_when_writing(app.engine, asker)
        await _kill_when_writing(app.engine, asker)  # the second try, once it writes
        await asyncio.wait_for(asker.done.wait(), 240)
        assert asker.restarts == 1
        assert asker.outcome is not None and asker.outcome.state == "error"
        assert asker.outcome.error == ENGINE_LOST
        assert asker.notices == []  # the error is the reply itself, not another message
        await store_settled(service.store)
        assert _jobs(app.settings.database_path) == [("failed", ENGINE_LOST)]
        await _answers(service)  # the restarted engine serves the next message


async def _answers(service: ChatService) -> None:
    incoming, sink = say("carol", "Say hi.", [])
    await service.handle(incoming)
    await asyncio.wait_for(sink.done.wait(), 120)
    assert sink.outcome is not None and sink.outcome.state == "done"
