"""Admin surfaces refuse everyone without the token or an admin id.

The admin API is served for real on its Unix socket (with a stand-in service: a refusal must
happen before any route touches it); the chat commands run the real adapters against the
platform emulators and a scripted engine that records every /admin/model call it gets.
(tests/bot/admin/test_admin_cli.py covers the CLI with the right token; tests/adapters cover a
plain non-admin's /model.)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from bot.admin.api import create_admin_app, serve_admin, token_path
from bot.admin.cli import AdminClient
from bot.chat.service import ChatService
from bot.errors import ParleyError
from bot.settings import Settings
from engine.cli import build_parser
from tests.adapters import discord_harness, telegram_harness
from tests.adapters.discord_harness import discord_bot, switchable_engine
from tests.adapters.telegram_harness import GROUP, telegram_bot
from tests.conftest import ADMIN_TOKEN
from tests.engine_process import EngineProcess

TOKEN = "the-admin-token-Zx81"


class StandIn:
    """Just enough of ChatService for /queue, the one route the guard test lets through."""

    def jobs(self) -> list[dict[str, Any]]:
        return []


def routes() -> list[tuple[str, str]]:
    """(method, path) for every admin route, path parameters filled in."""
    app = create_admin_app(cast(ChatService, StandIn()), TOKEN, {})
    found = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        found.add((route.method, path.replace("{action}", "ban")))
    return sorted(found)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@asynccontextmanager
async def admin_socket(tmp_path: Path, token: str = TOKEN) -> AsyncIterator[Path]:
    socket = tmp_path / "admin.sock"
    runner = await serve_admin(cast(ChatService, StandIn()), socket, token, {}, write_token=True)
    try:
        yield socket
    finally:
        await runner.cleanup()


async def call(socket: Path, method: str, path: str, headers: dict[str, str]) -> int:
    connector = aiohttp.UnixConnector(path=str(socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, f"http://parley{path}", json={}, headers=headers) as response,
    ):
        return response.status


# ---- the admin API -------------------------------------------------------------------------

WRONG = {
    "no header": {},
    "empty bearer": {"Authorization": "Bearer "},
    "wrong token": {"Authorization": "Bearer nope"},
    "a prefix of it": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "it plus more": {"Authorization": f"Bearer {TOKEN}x"},
    "basic auth": {"Authorization": f"Basic {TOKEN}"},
    "another header": {"X-Admin-Token": TOKEN},
}


async def test_every_admin_route_refuses_a_missing_or_wrong_token(tmp_path: Path) -> None:
    every = routes()
    assert len(every) >= 10 and ("POST", "/history/wipe") in every
    async with admin_socket(tmp_path) as socket:
        for method, path in every:
            for why, headers in WRONG.items():
                status = await call(socket, method, path, headers)
                assert status == 401, f"{method} {path} with {why}: {status}"
            # The token in the query string is no token.
            assert await call(socket, method, f"{path}?token={TOKEN}", {}) == 401
        assert await call(socket, "GET", "/no-such-route", {}) == 401
        assert await call(socket, "GET", "/queue", {"Authorization": f"Bearer {TOKEN}"}) == 200


async def test_an_empty_configured_token_lets_nobody_in(tmp_path: Path) -> None:
    async with admin_socket(tmp_path, token="") as socket:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": ""}):
            assert await call(socket, "GET", "/queue", headers) == 401


async def test_the_socket_and_token_file_are_mode_600_even_under_a_lax_umask(
    tmp_path: Path,
) -> None:
    stale = token_path(tmp_path / "admin.sock")
    stale.write_text("left by an earlier run")
    stale.chmod(0o644)
    with umask(0):
        async with admin_socket(tmp_path) as socket:
            assert oct(socket.stat().st_mode & 0o777) == "0o600"
            assert oct(stale.stat().st_mode & 0o777) == "0o600"
            assert stale.read_text() == TOKEN
            assert os.umask(0) == 0  # serve_admin put the caller's umask back


async def test_the_admin_api_listens_on_its_unix_socket_and_nothing_else(tmp_path: Path) -> None:
    socket = tmp_path / "admin.sock"
    runner = await serve_admin(cast(ChatService, StandIn()), socket, TOKEN, {}, write_token=False)
    try:
        assert runner.sites and all(isinstance(site, web.UnixSite) for site in runner.sites)
        assert runner.addresses == [str(socket)]
        assert not token_path(socket).exists()  # a configured ADMIN_TOKEN is never written
    finally:
        await runner.cleanup()
    # No setting could put it on TCP; the engine (whose /admin/model needs its own token)
    # binds loopback unless told otherwise, and the bot never tells its own engine otherwise.
    assert not [name for name in Settings.model_fields
                if "admin" in name and ("host" in name or "port" in name)]  # fmt: skip
    assert build_parser().parse_args([]).host == "127.0.0.1"


async def test_parley_admin_without_a_token_is_refused(tmp_path: Path) -> None:
    async with admin_socket(tmp_path) as socket:
        token_path(socket).unlink()
        for token in ("", "wrong"):
            with pytest.raises(ParleyError, match="refused: wrong admin token"):
                await AdminClient(socket, token).call("GET", "/status")


# ---- chat commands -------------------------------------------------------------------------


async def test_telegram_model_switch_needs_a_telegram_admin_id(tmp_path: Path) -> None:
    """Being allowed at runtime, or a Discord admin with the same number, is not enough."""
    alice, admin = telegram_harness.ALICE, telegram_harness.ADMIN
    async with switchable_engine("hello") as (url, calls):
        engine = cast(EngineProcess, SimpleNamespace(url=url))
        async with telegram_bot(
            engine, tmp_path / "bot.db", telegram_allowed_users=str(admin),
            discord_admin_ids=str(alice),
        ) as bot:  # fmt: skip
            bot.service.allowed_at_runtime.add(("telegram", str(alice)))  # `users allow`
            emu = bot.emu
            await emu.user_says("/model demo", chat_id=alice, user_id=alice)
            await emu.wait_for(lambda: any("Only the bot's admins" in m.text
                                           for m in emu.bot_messages(alice)))  # fmt: skip
            group = {"chat_type": "supergroup", "group_title": "Friends"}
            await emu.user_says("/model@parley_bot demo", chat_id=GROUP, user_id=alice, **group)  # type: ignore[arg-type]
            await emu.wait_for(lambda: any("Only the bot's admins" in m.text
                                           for m in emu.bot_messages(GROUP)))  # fmt: skip
            assert calls == [] and bot.service.model == "scripted"
            await emu.user_says("/model demo", chat_id=admin, user_id=admin)
            await emu.wait_for(lambda: any("Now answering with demo" in m.text
                                           for m in emu.bot_messages(admin)))  # fmt: skip
            assert calls == [f"Bearer {ADMIN_TOKEN}"]


async def test_discord_model_switch_needs_a_discord_admin_id(tmp_path: Path) -> None:
    alice, admin = discord_harness.ALICE, discord_harness.ADMIN
    async with (
        switchable_engine("hello") as (url, calls),
        discord_bot(
            url, tmp_path / "bot.db", discord_allowed_users=str(admin),
            telegram_admin_ids=str(alice),
        ) as bot,
    ):  # fmt: skip
        bot.service.allowed_at_runtime.add(("discord", str(alice)))
        refused = await bot.emu.run_slash_command("model", {"name": "demo"}, user_id=alice)
        message = bot.emu.messages[await bot.emu.wait_for(lambda: refused.original_id or 0)]
        assert message.ephemeral and "Only the bot's admins" in message.content
        assert calls == [] and bot.service.model == "scripted"
        await bot.emu.run_slash_command("model", {"name": "demo"}, user_id=admin)
        await bot.emu.wait_for(
            lambda: any("Now answering with demo" in m.content for m in bot.emu.messages.values())
        )
        assert calls == [f"Bearer {ADMIN_TOKEN}"]
