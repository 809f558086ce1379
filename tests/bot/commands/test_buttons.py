"""Buttons: their callback data names the button and whose answer it is on, and only that
person's press does anything; on a real service answering from a scripted engine."""

from __future__ import annotations

import asyncio

from bot.chat.service import ChatService
from bot.commands import STOP, Reply, button_data, press_button
from bot.commands import texts as say
from bot.commands.buttons import parse_button_data
from bot.incoming import Incoming
from tests.bot.chat.test_service import Recorder
from tests.bot.scripted_service import scripted  # noqa: F401 (a fixture)
from tests.emulators.scripted_engine import ScriptedEngine


def test_button_data_names_the_button_and_the_owner_within_discords_100_characters() -> None:
    data = button_data(STOP, 12345678901234567890, nonce="ab" * 8)
    assert len(data) <= 100 and parse_button_data(data) == (STOP, "12345678901234567890")
    assert button_data(STOP, 1001) == "stop:1001"  # Telegram's, as buttons already shown have
    assert parse_button_data("stop:") is None
    assert parse_button_data("regenerate:1001") is None


async def test_only_the_owner_stops_an_answer_with_its_button(
    scripted: tuple[ScriptedEngine, ChatService],  # noqa: F811
) -> None:
    engine, service = scripted
    engine.tokens_per_second = 5  # long enough to press
    sink = Recorder([], "talk")
    await service.handle(Incoming("test", "chat", "alice", "Alice", "talk", sink))
    data = button_data(STOP, "alice")
    refused = await press_button(service, "test", "chat", "bob", data)
    assert refused == Reply(say.only_the_asker("stop"))
    assert service.load() == (0, 1)
    assert await press_button(service, "test", "chat", "bob", "nonsense") is None
    stopped = await press_button(service, "test", "chat", "alice", data)
    assert stopped == Reply(say.STOPPING, quiet=True)
    await asyncio.wait_for(sink.done.wait(), 10)
    assert sink.outcome is not None and sink.outcome.state == "stopped"
