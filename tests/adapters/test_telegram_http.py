"""``AiohttpRequest`` under the real ``telegram.Bot``: forms, files, PTB's errors for statuses,
and its own for timeouts and refused connections, against a loopback stand-in of the Bot API."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import NetworkError, RetryAfter, TimedOut

from adapters.telegram_http import AiohttpRequest
from tests.adapters.discord_harness import serve

ME = {"id": 7, "is_bot": True, "first_name": "Parley", "username": "parley_bot"}
SENT = {"message_id": 1, "date": 0, "chat": {"id": 5, "type": "private"}, "text": "x"}


class BotApi:
    """Answers getMe, sendMessage and sendDocument; remembers what each call carried."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []  # (method, content type, fields)
        self.delay = 0.0
        self.busy = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._call)
        return app

    async def _call(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        fields: dict[str, Any] = {}
        if request.content_type == "multipart/form-data":
            async for part in await request.multipart():
                fields[part.name or ""] = (part.filename, await part.read())  # type: ignore[union-attr]
        elif request.content_type == "application/json":
            fields = await request.json()
        else:
            fields = dict(await request.post())
        self.seen.append((method, request.content_type, fields))
        await asyncio.sleep(self.delay)
        if self.busy:
            body = {"ok": False, "error_code": 429, "description": "Too Many Requests",
                    "parameters": {"retry_after": 3}}  # fmt: skip
            return web.json_response(body, status=429)
        return web.json_response({"ok": True, "result": ME if method == "getMe" else SENT})


@pytest.fixture
async def api() -> AsyncIterator[tuple[BotApi, str]]:
    stand_in = BotApi()
    async with serve(stand_in.app()) as url:
        yield stand_in, url


async def test_forms_and_files_reach_the_api_and_answers_come_back(
    api: tuple[BotApi, str],
) -> None:
    stand_in, url = api
    async with Bot("123:abc", base_url=f"{url}/bot", request=AiohttpRequest()) as bot:
        assert bot.username == "parley_bot"  # getMe, on initialize
        button = InlineKeyboardMarkup([[InlineKeyboardButton("Stop", callback_data="stop:1")]])
        sent = await bot.send_message(
            5, "héllo <b>there</b>", parse_mode="HTML", reply_markup=button
        )
        assert sent.message_id == 1
        await bot.send_document(5, b"file body", filename="notes.txt")
    method, kind, fields = stand_in.seen[1]
    assert (method, kind) == ("sendMessage", "application/json")
    assert fields["text"] == "héllo <b>there</b>" and fields["parse_mode"] == "HTML"
    assert fields["chat_id"] == 5  # values as JSON values, objects as objects
    stop = {"text": "Stop", "callback_data": "stop:1"}
    assert fields["reply_markup"] == {"inline_keyboard": [[stop]]}
    method, kind, fields = stand_in.seen[2]
    assert (method, kind) == ("sendDocument", "multipart/form-data")
    assert fields["document"] == ("notes.txt", b"file body")


async def test_statuses_timeouts_and_refusals_become_ptbs_errors(
    api: tuple[BotApi, str],
) -> None:
    stand_in, url = api
    async with Bot("123:abc", base_url=f"{url}/bot", request=AiohttpRequest()) as bot:
        stand_in.busy = True
        with pytest.raises(RetryAfter) as limited:
            await bot.send_message(5, "hi")
        retry = limited.value.retry_after
        assert (retry.total_seconds() if isinstance(retry, timedelta) else retry) == 3
        stand_in.busy, stand_in.delay = False, 1.0
        with pytest.raises(TimedOut):
            await bot.send_message(5, "hi", read_timeout=0.2)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(NetworkError, match=r"aiohttp\.Client"):  # nothing listens there
        async with Bot("123:abc", base_url=f"http://127.0.0.1:{port}/bot",
                       request=AiohttpRequest()):  # fmt: skip
            pass


async def test_a_proxy_named_in_the_environment_carries_the_calls(
    api: tuple[BotApi, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in is the proxy here: the API's own host does not even resolve."""
    stand_in, url = api
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("NO_PROXY", "bypassed.invalid")
    async with Bot("123:abc", base_url="http://api.invalid/bot", request=AiohttpRequest()) as bot:
        await bot.send_message(5, "through the proxy")
    assert [call[0] for call in stand_in.seen] == ["getMe", "sendMessage"]
    with pytest.raises(NetworkError):  # not proxied: its host does not resolve
        async with Bot("123:abc", base_url="http://bypassed.invalid/bot",
                       request=AiohttpRequest()):  # fmt: skip
            pass
