"""A running Parley bot on Telegram for tests: the real adapter and python-telegram-bot,
the real chat service, SQLite file and engine process, and the Bot API emulator."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html import unescape
from pathlib import Path

from adapters.telegram import TelegramAdapter
from bot.chat.service import ChatService
from bot.settings import load_settings
from parley.app import Parley
from tests.conftest import ADMIN_TOKEN, store_settled
from tests.emulators.telegram_api import BotMessage, TelegramEmulator
from tests.engine_process import EngineProcess

ADMIN = 1
ALICE = 1001
BOB = 1002
GROUP = -100500


@dataclass
class TelegramBot:
    emu: TelegramEmulator
    service: ChatService
    adapter: TelegramAdapter
    database: Path
    app: Parley | None = None

    async def answer_to(self, message_id: int, chat_id: int, timeout: float = 60) -> BotMessage:
        """The bot's reply to a user message, once its final text (no cursor) has landed."""

        def finished() -> BotMessage | None:
            for message in self.emu.bot_messages(chat_id):
                if message.reply_to_message_id == message_id and is_final(message):
                    return message
            return None

        final = await self.emu.wait_for(finished, timeout)
        await store_settled(self.service.store)  # and stored, for tests that read the file
        return final

    def replies_to(self, message_id: int, chat_id: int) -> list[BotMessage]:
        return [m for m in self.emu.bot_messages(chat_id) if m.reply_to_message_id == message_id]


def plain(text: str) -> str:
    """What a Telegram user sees for an HTML message."""
    return unescape(re.sub(r"<[^>]+>", "", text))


def is_final(message: BotMessage) -> bool:
    return (
        message.reply_markup is None
        and "▌" not in message.text
        and message.text not in ("…",)
        and not message.text.startswith("⏳")
    )


@asynccontextmanager
async def telegram_bot(
    engine: EngineProcess | str, database: Path, emu: TelegramEmulator | None = None,
    **settings: object,
) -> AsyncIterator[TelegramBot]:  # fmt: skip
    """``engine``: the engine process, or the URL of a stand-in."""
    own = emu is None
    emulator = emu or TelegramEmulator()
    if own:
        await emulator.start()
    config = load_settings(
        telegram_token=emulator.token,
        telegram_api_base_url=emulator.base_url,
        database_path=database,
        admin_token=ADMIN_TOKEN,
        telegram_admin_ids=str(ADMIN),
        **{
            "engine_urls": engine if isinstance(engine, str) else engine.url,
            "max_tokens": 24,
            "temperature": 0,
            "rate_limit_per_minute": 0,
            **settings,
        },
    )
    try:
        app = Parley(config)
        async with app as service:
            adapter = TelegramAdapter(config, service)
            await adapter.start()
            try:
                yield TelegramBot(emulator, service, adapter, database, app)
            finally:
                await service.stop()  # running answers end ("stopped") while Telegram is there
                await adapter.stop()
    finally:
        if own:
            await emulator.stop()
