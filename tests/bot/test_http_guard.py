"""The metrics port cannot be held open: idle and slow-header connections are closed within
the timeout, their number is bounded, and ``/healthz`` answers through a flood of idle
sockets (issue 33: 1,200 idle sockets filled the bot's fds and /healthz stopped answering)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.http_guard import MAX_CONNECTIONS, REQUEST_TIMEOUT, ConnectionGuard, serve_guarded
from parley.app import serve_metrics

IDLE_SOCKETS = 300  # well past MAX_CONNECTIONS, well under any fd limit
SLACK = 3.0  # seconds a busy machine may add to a timeout


@pytest.fixture
async def metrics_port() -> AsyncIterator[Any]:
    """The bot's real metrics server (bot/app.serve_metrics) before any engine is up."""
    starting = SimpleNamespace(service=None, engines=None, engine=None)
    server = await serve_metrics(starting, "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        await server.close()


async def _idle_sockets(url: str, count: int) -> list[asyncio.StreamReader]:
    host, port = url.removeprefix("http://").split(":")
    readers = []
    for _ in range(count):  # one at a time: a burst would only test the listen backlog
        reader, _writer = await asyncio.open_connection(host, int(port))
        readers.append(reader)
    return readers


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server ended the connection (EOF or reset) within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def _healthz(url: str) -> tuple[int, float]:
    started = time.monotonic()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(url + "/healthz") as response,
    ):
        return response.status, time.monotonic() - started


async def test_healthz_answers_through_hundreds_of_idle_sockets_which_are_then_closed(
    metrics_port: Any,
) -> None:
    readers = await _idle_sockets(metrics_port.url, IDLE_SOCKETS)
    await asyncio.sleep(0.2)  # every one accepted
    assert metrics_port.guard.open <= MAX_CONNECTIONS  # the rest were closed at once
    assert len(metrics_port.runner.server.connections) <= MAX_CONNECTIONS

    status, seconds = await _healthz(metrics_port.url)
    assert status == 200 and seconds < SLACK

    started = time.monotonic()
    closed = await asyncio.gather(
        *(_closed_within(r, REQUEST_TIMEOUT + SLACK) for r in readers)
    )  # fmt: skip
    assert all(closed), f"{closed.count(False)} idle sockets still open"
    assert time.monotonic() - started < REQUEST_TIMEOUT + SLACK
    assert metrics_port.guard.open == 0
    status, _ = await _healthz(metrics_port.url)
    assert status == 200


async def test_a_client_trickling_its_headers_is_cut_off(metrics_port: Any) -> None:
    host, port = metrics_port.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    cut = False
    for _ in range(int((REQUEST_TIMEOUT + SLACK) / 0.25)):  # a byte every 0.25 s
        try:
            writer.write(b"X")
            await writer.drain()
        except ConnectionError:
            cut = True
            break
        if reader.at_eof() or await _closed_within(reader, 0.25):
            cut = True
            break
    assert cut, "a slow-header client held the connection"
    assert time.monotonic() - started < REQUEST_TIMEOUT + SLACK
    writer.close()


async def test_a_keep_alive_connection_is_closed_after_its_idle_time(metrics_port: Any) -> None:
    host, port = metrics_port.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    assert await _closed_within(reader, REQUEST_TIMEOUT + SLACK)
    assert REQUEST_TIMEOUT - 1 < time.monotonic() - started < REQUEST_TIMEOUT + SLACK
    writer.close()


async def test_a_request_being_answered_is_never_cut() -> None:
    """A handler slower than the timeout finishes (only waiting for a request is limited);
    and when every place is taken by one being answered, a new connection is refused."""
    guard = ConnectionGuard(max_connections=2, request_timeout=0.3)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(text="done")

    app = web.Application(middlewares=[guard.middleware])
    app.router.add_get("/slow", slow)
    server = await serve_guarded(app, "127.0.0.1", 0, guard)
    try:
        async with aiohttp.ClientSession() as http:

            async def get() -> str:
                async with http.get(server.url + "/slow") as response:
                    return await response.text()

            first, second = asyncio.create_task(get()), asyncio.create_task(get())
            await asyncio.sleep(0.5)  # both being answered, past the timeout
            with pytest.raises(aiohttp.ClientError):
                async with aiohttp.ClientSession() as other, other.get(server.url + "/slow"):
                    pass
            assert await first == await second == "done"
    finally:
        await server.close()
