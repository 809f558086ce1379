"""A running Parley bot on Discord for tests: the real adapter and discord.py client, the
real chat service and SQLite file, an engine (the demo model's, or a scripted stand-in), and
the Discord API emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.discord import DiscordAdapter
from bot.chat.service import ChatService
from bot.settings import load_settings
from parley.app import Parley
from tests.conftest import ADMIN_TOKEN, store_settled
from tests.emulators.discord_api import DiscordEmulator
from tests.emulators.discord_models import MessageRecord
from tests.emulators.scripted_engine import ScriptedEngine

ADMIN = 7001
ALICE = 7002
BOB = 7003


@dataclass
class DiscordBot:
    emu: DiscordEmulator
    service: ChatService
    adapter: DiscordAdapter
    database: Path

    async def final(self, message_id: int, timeout: float = 60) -> MessageRecord:
        """A bot message once its text is final: no cursor, no Stop button, not loading."""

        def done() -> MessageRecord | None:
            record = self.emu.messages.get(message_id)
            if not record or not record.content or record.components:
                return None
            text = record.content
            streaming = "▌" in text or text == "…" or text.startswith("⏳")
            return None if streaming else record

        final = await self.emu.wait_for(done, timeout)
        await store_settled(self.service.store)  # and stored, for tests that read the file
        return final

    async def answer_to(self, user_message: int, timeout: float = 60) -> MessageRecord:
        """The bot's (final) reply to a DM or a mention."""
        reply = await self.emu.wait_for(
            lambda: next(
                (m for m in self.emu.bot_messages() if m.reference_id == user_message), None
            ),
            timeout,
        )
        return await self.final(reply.id, timeout)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """An aiohttp app on 127.0.0.1 in this event loop; yields its base URL."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@asynccontextmanager
async def switchable_engine(
    answer: str, tokens_per_second: float = 200.0
) -> AsyncIterator[tuple[str, list[str]]]:
    """A scripted engine whose /admin/model loads any model; yields its URL and the
    Authorization header of each switch asked of it."""
    switches: list[str] = []

    async def admin_model(request: web.Request) -> web.Response:
        switches.append(request.headers.get("Authorization", ""))
        body = await request.json()
        return web.json_response({"model": {"id": body["model"], "n_ctx": 4096}, "seconds": 0})

    app = ScriptedEngine(answer, tokens_per_second=tokens_per_second).app()
    app.router.add_post("/admin/model", admin_model)
    async with serve(app) as url:
        yield url, switches


@asynccontextmanager
async def discord_bot(
    engine_url: str, database: Path, **settings: object
) -> AsyncIterator[DiscordBot]:
    async with DiscordEmulator() as emu:
        config = load_settings(
            discord_token=emu.token,
            discord_api_base_url=f"{emu.base_url}/api/v10",
            discord_gateway_url=emu.gateway_url,
            database_path=database,
            engine_urls=engine_url,
            admin_token=ADMIN_TOKEN,
            discord_admin_ids=str(ADMIN),
            **{"max_tokens": 24, "temperature": 0, "rate_limit_per_minute": 0, **settings},
        )
        async with Parley(config) as service:
            adapter = DiscordAdapter(config, service)
            await adapter.start()
            try:
                yield DiscordBot(emu, service, adapter, database)
            finally:
                await service.stop()  # running answers end ("stopped") while Discord is there
                await adapter.stop()
