"""Every chat command of bot/commands, proven once for Telegram, Discord and the terminal: the
real adapters and platform clients against the emulators, a real service and SQLite file, and
a scripted engine that also answers the model switch (tests/adapters/command_drivers.py)."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from bot.commands import COMMANDS, STOP
from bot.commands import texts as say
from bot.incoming import NOT_UNICODE
from tests.adapters.command_drivers import (
    PLATFORMS,
    WAIT,
    DiscordDriver,
    TelegramDriver,
    driver,
    until,
)
from tests.adapters.discord_harness import switchable_engine
from tests.conftest import ADMIN_TOKEN

LONG_ANSWER = " ".join(f"word{i}" for i in range(400))  # 20 s at 20 tokens a second


def engine() -> AbstractAsyncContextManager[tuple[str, list[str]]]:
    """A slow scripted engine whose /admin/model loads any model and records the token."""
    return switchable_engine(LONG_ANSWER, tokens_per_second=20)


def jobs(database: Path) -> list[str]:
    with sqlite3.connect(database) as db:
        return [row[0] for row in db.execute("SELECT status FROM jobs ORDER BY id")]


def active_conversations(database: Path) -> list[int]:
    with sqlite3.connect(database) as db:
        return [r[0] for r in db.execute("SELECT id FROM conversations WHERE active = 1")]


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_every_command_works_the_same_on_every_platform(
    platform: str, tmp_path: Path
) -> None:
    database = tmp_path / "bot.db"
    async with engine() as (url, switches), driver(platform, url, database) as bot:
        member, admin, service = bot.member, bot.admin, bot.service

        await bot.command(member, "help")
        listing = await bot.shown(member, say.ABOUT)
        for command in COMMANDS:
            assert f"{say.usage(command)} — {command.description}" in listing

        await bot.command(member, "stop")
        await bot.shown(member, say.NOTHING_TO_STOP)
        await bot.ask(member, "Tell me everything")
        await until(lambda: service.load()[1] == 1)
        await bot.command(member, "stop")
        await until(lambda: jobs(database) == ["cancelled"], WAIT)

        before = active_conversations(database)
        await bot.command(member, "reset")
        await bot.shown(member, say.NEW_CONVERSATION)
        after = active_conversations(database)
        assert len(before) == len(after) == 1 and before != after

        await bot.command(member, "system", "Answer like a pirate.")
        await bot.shown(member, say.PROMPT_SET)
        prompt = await service.system_prompt_for(platform, member, "")
        assert prompt == "Answer like a pirate."
        await bot.command(member, "system")
        await bot.shown(member, say.PROMPT_SHOWN + "Answer like a pirate.")
        await bot.command(member, "system", "be \udcff brief")
        await bot.shown(member, NOT_UNICODE)
        await bot.command(member, "system", "reset")
        await bot.shown(member, say.PROMPT_DEFAULT)
        assert await service.system_prompt_for(platform, member, "") == service.system_prompt

        await bot.command(member, "model")
        await bot.shown(member, say.answering_with("scripted"))
        if member != admin:  # the terminal's one user is the operator, an admin
            await bot.command(member, "model", "demo")
            await bot.shown(member, say.ONLY_ADMINS_SWITCH)
            assert switches == [] and service.model == "scripted"
        await bot.command(admin, "model", "demo")
        await bot.shown(admin, say.now_answering_with("demo"))
        assert switches == [f"Bearer {ADMIN_TOKEN}"] and service.model == "demo"


@pytest.mark.parametrize("platform", ["telegram", "discord"])  # the terminal shows no buttons
async def test_only_the_person_who_asked_can_press_stop(platform: str, tmp_path: Path) -> None:
    database = tmp_path / "bot.db"
    async with engine() as (url, _), driver(platform, url, database) as bot:
        assert isinstance(bot, TelegramDriver | DiscordDriver)
        await bot.ask(bot.member, "Tell me everything")
        await until(lambda: bot.service.load()[1] == 1)
        await bot.press_stop(bot.admin, owner=bot.member)  # an admin, but not the asker
        await bot.shown(bot.admin, say.only_the_asker(STOP.verb))
        assert bot.service.load()[1] == 1 and jobs(database) == ["running"]
        await bot.press_stop(bot.member, owner=bot.member)
        await until(lambda: jobs(database) == ["cancelled"])


@pytest.mark.parametrize("platform", ["telegram", "discord"])  # the terminal has no menu
async def test_the_command_menu_is_generated_from_the_commands(
    platform: str, tmp_path: Path
) -> None:
    async with engine() as (url, _), driver(platform, url, tmp_path / "bot.db") as bot:
        assert isinstance(bot, TelegramDriver | DiscordDriver)
        assert bot.menu() == {c.name: c.description for c in COMMANDS}


async def test_discord_suggests_model_names_as_they_are_typed(tmp_path: Path) -> None:
    async with engine() as (url, _), driver("discord", url, tmp_path / "bot.db") as bot:
        assert isinstance(bot, DiscordDriver)
        options = bot.bot.emu.synced_commands[None]
        model = next(c for c in options if c["name"] == "model")
        assert [(o["name"], o.get("required", False), o.get("autocomplete")) for o in
                model["options"]] == [("name", False, True)]  # fmt: skip
        typed = await bot.bot.emu.autocomplete("model", "name", "DEM", user_id=int(bot.admin))
        assert typed.choices == [{"name": "demo", "value": "demo"}]
