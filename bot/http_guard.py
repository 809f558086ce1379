"""A listener for a small aiohttp app (the bot's metrics port) that no client can hold open.

aiohttp waits for ever for the first request on a connection that sends nothing, and keeps an
idle keep-alive one for 75 s: 1,200 idle sockets filled the bot's file-descriptor table and
``/healthz`` stopped answering (issue 33). ``ConnectionGuard`` stands between the listening
socket and aiohttp's protocol:

- at most ``max_connections`` connections are open; one more closes the connection that has
  waited longest without a request, so the fds stay bounded and a health probe still gets
  through a flood of idle sockets;
- a connection must bring a request's head within ``request_timeout`` seconds of opening or
  of its last answer, else it is closed: an idle socket and a client trickling its headers
  are cut off alike. A request being answered is never cut.

``serve_guarded`` binds such a listener for an ``AppRunner``; ``GuardedServer.close`` ends it.
Everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web

from bot.metrics import METRICS

MAX_CONNECTIONS = 64  # a scraper and a few probes need a handful
REQUEST_TIMEOUT = 5.0  # seconds to send a request's head, from connecting or the last answer
ABORT_AFTER = 1.0  # seconds a closed connection gets to flush before it is aborted

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Connection:
    transport: asyncio.Transport
    busy: int = 0  # requests being answered (pipelined ones may overlap)
    timer: asyncio.TimerHandle | None = None


class ConnectionGuard:
    """Counts, ages and closes the connections of one listener (see the module docstring)."""

    def __init__(
        self, max_connections: int = MAX_CONNECTIONS, request_timeout: float = REQUEST_TIMEOUT
    ) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        # open connections, the one served longest ago first
        self._open: OrderedDict[asyncio.BaseTransport, _Connection] = OrderedDict()

    @property
    def open(self) -> int:
        return len(self._open)

    def protocol_factory(
        self, factory: Callable[[], asyncio.Protocol]
    ) -> Callable[[], asyncio.Protocol]:
        """``factory`` (aiohttp's ``web.Server``) with every connection watched."""
        return lambda: _Watched(factory(), self)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A request's head arrived: its connection is being served, not idle, until the
        handler returns (the app must list this middleware)."""
        connection = self._open.get(request.transport) if request.transport else None
        if connection is None:
            return await handler(request)
        self._served(connection)
        try:
            return await handler(request)
        finally:
            connection.busy -= 1
            if connection.busy == 0 and connection.transport in self._open:
                self._arm(connection)

    def opened(self, transport: asyncio.Transport) -> bool:
        """Take a new connection, making room if need be; False (and it is aborted) when
        every open one is being answered."""
        while len(self._open) >= self.max_connections:
            oldest = next((c for c in self._open.values() if not c.busy), None)
            if oldest is None:
                METRICS.count("parley_http_connections_dropped_total", reason="full")
                transport.abort()
                return False
            METRICS.count("parley_http_connections_dropped_total", reason="evicted")
            self._drop(oldest, abort=True)
        connection = _Connection(transport)
        self._open[transport] = connection
        self._arm(connection)
        return True

    def closed(self, transport: asyncio.BaseTransport) -> None:
        connection = self._open.pop(transport, None)
        if connection is not None and connection.timer is not None:
            connection.timer.cancel()

    def close_all(self) -> None:
        for connection in list(self._open.values()):
            self._drop(connection, abort=True)

    def _served(self, connection: _Connection) -> None:
        connection.busy += 1
        self._open.move_to_end(connection.transport)
        if connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None

    def _arm(self, connection: _Connection) -> None:
        if connection.timer is not None:
            connection.timer.cancel()
        loop = asyncio.get_running_loop()
        connection.timer = loop.call_later(self.request_timeout, self._expire, connection)

    def _expire(self, connection: _Connection) -> None:
        connection.timer = None
        if not connection.busy and connection.transport in self._open:
            METRICS.count("parley_http_connections_dropped_total", reason="idle")
            self._drop(connection, abort=False)

    def _drop(self, connection: _Connection, *, abort: bool) -> None:
        """Close a connection; one that does not go (its peer reads nothing, so buffered
        bytes never flush) is aborted ABORT_AFTER s later. The count drops at once: a socket
        that is going no longer holds a place."""
        transport = connection.transport
        self.closed(transport)
        if abort:
            transport.abort()
            return
        transport.close()
        loop = asyncio.get_running_loop()
        loop.call_later(ABORT_AFTER, _abort_if_open, transport)


def _abort_if_open(transport: asyncio.Transport) -> None:
    with contextlib.suppress(Exception):  # aborting one already gone does nothing
        transport.abort()


class _Watched(asyncio.Protocol):
    """aiohttp's protocol, with the guard told when its connection opens and closes."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.BaseTransport | None = None  # set once taken

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; uvloop's does not derive from asyncio.Transport
        transport = cast(asyncio.Transport, transport)
        if self._guard.opened(transport):  # else aborted: aiohttp never hears of it
            self._transport = transport
            self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._guard.closed(self._transport)
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._transport is not None else None

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._inner.resume_writing()


@dataclass
class GuardedServer:
    """A running guarded listener: its base URL, and ``close`` to end it."""

    url: str
    runner: web.AppRunner
    server: asyncio.Server
    guard: ConnectionGuard

    async def close(self) -> None:
        self.server.close()
        self.guard.close_all()
        await self.runner.cleanup()


async def serve_guarded(
    app: web.Application, host: str, port: int, guard: ConnectionGuard
) -> GuardedServer:
    """Serve ``app`` (which must have ``guard.middleware``) on ``host:port`` through ``guard``.

    The socket is bound here rather than by an aiohttp site, whose protocol factory cannot be
    wrapped; ``runner.cleanup`` still closes aiohttp's side."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    server_factory = runner.server
    assert server_factory is not None  # set up just now
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(guard.protocol_factory(server_factory), host, port)
    except BaseException:
        await runner.cleanup()
        raise
    bound = server.sockets[0].getsockname()
    return GuardedServer(f"http://{bound[0]}:{bound[1]}", runner, server, guard)
