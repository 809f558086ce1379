"""One driver per platform for tests that must prove a chat command (bot/commands) works on
Telegram, Discord and the terminal alike: each runs the real adapter (python-telegram-bot and
discord.py against their loopback emulators; the terminal chat reading a pipe) on a real
service, SQLite file and a scripted engine, and says what the person sees.

A driver's verbs are what a person does (``command``, ``ask``, ``press_stop``) and what they
see (``shown``); the test itself is written once, over ``PLATFORMS``."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

from adapters.console import Console
from bot.chat.service import ChatService
from bot.commands import find_command
from bot.settings import load_settings
from parley.app import Parley
from tests.adapters import discord_harness, telegram_harness
from tests.adapters.discord_harness import DiscordBot, discord_bot
from tests.adapters.telegram_harness import TelegramBot, telegram_bot
from tests.conftest import ADMIN_TOKEN
from tests.emulators.discord_models import InteractionRecord

PLATFORMS = ["telegram", "discord", "console"]
WAIT = 15.0  # seconds a person waits for what they expect to see


async def until(predicate: Callable[[], object], timeout: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(0.01)


class Driver(Protocol):
    platform: str
    service: ChatService
    admin: str  # a person who is an admin
    member: str  # a person allowed to talk; on the terminal, the operator (an admin) again

    async def command(self, user: str, name: str, argument: str = "") -> None:
        """``user`` uses command ``name`` (the platform's way) with ``argument``."""

    async def ask(self, user: str, text: str) -> None:
        """``user`` sends ``text`` for the bot to answer."""

    async def shown(self, user: str, text: str) -> str:
        """The first thing the bot showed ``user`` since their last action that contains
        ``text`` (waits for it)."""


class TelegramDriver:
    platform = "telegram"
    admin, member = str(telegram_harness.ADMIN), str(telegram_harness.ALICE)

    def __init__(self, bot: TelegramBot) -> None:
        self.bot = bot
        self.service = bot.service
        self.seen: dict[str, tuple[int, int]] = {}  # messages and toasts shown before
        self.pressed: dict[str, str] = {}  # callback query id -> who pressed

    def _mark(self, user: str) -> None:
        self.seen[user] = (len(self.bot.emu.bot_messages(int(user))), len(self._toasts(user)))

    async def command(self, user: str, name: str, argument: str = "") -> None:
        self._mark(user)
        line = f"/{name} {argument}".strip()
        await self.bot.emu.user_says(line, chat_id=int(user), user_id=int(user))

    async def ask(self, user: str, text: str) -> None:
        self._mark(user)
        await self.bot.emu.user_says(text, chat_id=int(user), user_id=int(user))

    async def press_stop(self, user: str, owner: str) -> None:
        self._mark(user)
        emu = self.bot.emu
        answer = await emu.wait_for(
            lambda: next((m for m in emu.bot_messages(int(owner)) if m.reply_markup), None), WAIT
        )
        keyboard = answer.reply_markup["inline_keyboard"]  # type: ignore[index]
        data = keyboard[0][0]["callback_data"]
        query = await emu.press_button(answer.message_id, data, int(user), int(owner))
        self.pressed[query] = user

    def menu(self) -> dict[str, str]:
        """The command menu the bot set: name -> description."""
        return {c["command"]: c["description"] for c in self.bot.emu.commands}

    def _toasts(self, user: str) -> list[str]:
        answers = self.bot.emu.callback_answers
        return [a.text or "" for a in answers if self.pressed.get(a.callback_query_id) == user]

    def _texts(self, user: str) -> list[str]:
        messages, toasts = self.seen.get(user, (0, 0))
        shown = [m.text for m in self.bot.emu.bot_messages(int(user))[messages:]]
        return shown + self._toasts(user)[toasts:]

    async def shown(self, user: str, text: str) -> str:
        await until(lambda: any(text in t for t in self._texts(user)))
        return next(t for t in self._texts(user) if text in t)


class DiscordDriver:
    platform = "discord"
    admin, member = str(discord_harness.ADMIN), str(discord_harness.ALICE)

    def __init__(self, bot: DiscordBot) -> None:
        self.bot = bot
        self.service = bot.service
        self.runs: dict[str, list[InteractionRecord]] = {}

    async def command(self, user: str, name: str, argument: str = "") -> None:
        command = find_command(name)
        assert command is not None
        options = {command.argument.name: argument} if argument and command.argument else {}
        run = await self.bot.emu.run_slash_command(name, options, user_id=int(user))
        self.runs[user] = [run]

    async def ask(self, user: str, text: str) -> None:
        self.runs[user] = []
        await self.bot.emu.mention_bot(int(user), None, text)

    async def press_stop(self, user: str, owner: str) -> None:
        emu = self.bot.emu
        answer = await emu.wait_for(
            lambda: next((m for m in emu.bot_messages() if m.custom_ids()), None), WAIT
        )
        assert answer is not None
        custom_id = next(iter(answer.custom_ids()))
        self.runs[user] = [await emu.press_button(answer.id, custom_id, int(user))]

    def menu(self) -> dict[str, str]:
        """The slash commands the bot synced, but /chat (Discord's way to ask): name ->
        description."""
        synced = self.bot.emu.synced_commands[None]
        return {c["name"]: c["description"] for c in synced if c["name"] != "chat"}

    def _texts(self, user: str) -> list[str]:
        """What the user's interactions since their last action showed; command answers are
        private (ephemeral), as Discord allows."""
        shown = []
        for run in self.runs.get(user, []):
            for message_id in [run.original_id, *run.followup_ids]:
                message = self.bot.emu.messages.get(message_id or 0)
                if message is not None and message.content:
                    assert message.ephemeral, message.content
                    shown.append(message.content)
        return shown

    async def shown(self, user: str, text: str) -> str:
        await until(lambda: any(text in t for t in self._texts(user)))
        return next(t for t in self._texts(user) if text in t)


class ConsoleDriver:
    platform = "console"

    def __init__(self, service: ChatService, console: Console, typing: io.TextIOBase) -> None:
        self.service = service
        self.console = console
        self.admin = self.member = console.user_id  # the operator
        self.typing = typing
        self.out = console.out
        assert isinstance(self.out, io.StringIO)
        self.seen = 0

    async def command(self, user: str, name: str, argument: str = "") -> None:
        await self._type(f"/{name} {argument}".strip())

    async def ask(self, user: str, text: str) -> None:
        await self._type(text)

    async def _type(self, line: str) -> None:
        assert isinstance(self.out, io.StringIO)
        self.seen = len(self.out.getvalue())
        self.typing.write(line + "\n")
        self.typing.flush()

    async def shown(self, user: str, text: str) -> str:
        assert isinstance(self.out, io.StringIO)
        out = self.out
        await until(lambda: text in out.getvalue()[self.seen :])
        return out.getvalue()[self.seen :]


@asynccontextmanager
async def driver(platform: str, engine_url: str, database: Path) -> AsyncIterator[Driver]:
    """``platform``'s driver, on a bot answering with the engine at ``engine_url``."""
    if platform == "telegram":
        async with telegram_bot(engine_url, database) as telegram:
            yield TelegramDriver(telegram)
    elif platform == "discord":
        async with discord_bot(engine_url, database) as discord:
            yield DiscordDriver(discord)
    else:
        async with _terminal(engine_url, database) as terminal:
            yield terminal


@asynccontextmanager
async def _terminal(engine_url: str, database: Path) -> AsyncIterator[ConsoleDriver]:
    """The terminal chat (``parley chat``) in this process, reading what is typed into a pipe."""
    config = load_settings(database_path=database, engine_urls=engine_url,
                           admin_token=ADMIN_TOKEN, max_tokens=24)  # fmt: skip
    read_end, write_end = os.pipe()
    typing = os.fdopen(write_end, "w", errors="surrogateescape")  # as a terminal's bad bytes
    async with Parley(config) as service:
        console = Console(service, service.model, os.fdopen(read_end), io.StringIO())
        chat = asyncio.create_task(console.run())
        try:
            yield ConsoleDriver(service, console, typing)
        finally:
            typing.close()  # the end of input ends the chat
            assert await asyncio.wait_for(chat, WAIT) == 0
            await service.stop()
