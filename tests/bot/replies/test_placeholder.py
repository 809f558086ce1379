"""A message that starts at once: the engine takes its request before the placeholder is
posted (the placeholder's work, here and on the platform, used to delay the request), and an
engine slow to answer does not hold the placeholder back for more than ``ASKING_WAIT``."""

from __future__ import annotations

import asyncio
import time

import pytest

import bot.chat.service
from bot.chat.service import ChatService
from tests.bot.chat.test_service import Recorder
from tests.bot.scripted_service import ANSWER, ask, scripted
from tests.emulators.scripted_engine import Run, ScriptedEngine

__all__ = ["scripted"]  # the fixture


class Stamped(Recorder):
    """Notes when the placeholder was asked for."""

    accepted_at: float | None = None

    async def accepted(self, position: int | None) -> None:
        self.accepted_at = time.perf_counter()
        await super().accepted(position)


async def test_the_engine_has_the_request_before_the_placeholder_is_posted(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    engine, service = scripted
    for text in ("hello", "and again"):
        sink = Stamped([], text)
        await ask(service, text, sink)
        run = engine.runs[-1]
        assert sink.accepted_at is not None and run.answered is not None
        assert run.received < run.answered < sink.accepted_at
        assert sink.text == ANSWER


async def test_an_engine_slow_to_answer_does_not_hold_the_placeholder_back(
    scripted: tuple[ScriptedEngine, ChatService], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, service = scripted
    monkeypatch.setattr(bot.chat.service, "ASKING_WAIT", 0.05)

    async def slow(run: Run) -> None:
        await asyncio.sleep(0.5)  # as a server that answers only with the first token

    engine.before_headers = slow
    sink = Stamped([], "hello")
    asked = time.perf_counter()
    await ask(service, "hello", sink)
    run = engine.runs[-1]
    assert sink.accepted_at is not None and run.answered is not None
    assert sink.accepted_at - asked < 0.3  # the 0.05 s wait, not the engine's 0.5 s
    assert run.received < sink.accepted_at < run.answered
    assert sink.text == ANSWER
