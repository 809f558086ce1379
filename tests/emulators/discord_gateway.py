"""The gateway half of the Discord emulator: one websocket endpoint with HELLO, heartbeats,
IDENTIFY -> READY + GUILD_CREATE, RESUME with replay, RECONNECT and Discord's close codes.

A session outlives its websocket: events dispatched while the client is reconnecting stay in the
session's log and are replayed on RESUME, as Discord does, so a test never loses an event to a
reconnect. Frames are text JSON unless the emulator is asked to compress and the client asked for
``zlib-stream`` (one shared zlib stream per connection, each frame ending in Z_SYNC_FLUSH).

Everything runs on the emulator's event loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.emulators.discord_models import (
    INTENT_MESSAGE_CONTENT,
    PRIVILEGED_INTENTS,
    Json,
)

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

CLOSE_UNKNOWN_OPCODE = 4001
CLOSE_DECODE_ERROR = 4002
CLOSE_AUTH_FAILED = 4004
CLOSE_ALREADY_AUTHENTICATED = 4005
CLOSE_INVALID_INTENTS = 4013
CLOSE_DISALLOWED_INTENTS = 4014


@dataclass
class Connection:
    """One websocket; ``path`` tells a test whether the client used resume_gateway_url."""

    ws: web.WebSocketResponse
    path: str
    query: dict[str, str]
    compressor: Any = field(default=None, repr=False)  # zlib stream when compression is on
    session: GatewaySession | None = field(default=None, repr=False)
    received: list[Json] = field(default_factory=list, repr=False)
    heartbeats: int = 0
    client_close_code: int | None = None  # from the client's CLOSE frame, if it sent one

    async def send(self, frame: Json) -> None:
        text = json.dumps(frame, separators=(",", ":"))
        if self.compressor is None:
            await self.ws.send_str(text)
            return
        data = self.compressor.compress(text.encode()) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        await self.ws.send_bytes(data)


class GatewaySession:
    """State Discord keeps per session: sequence numbers and the events sent so far."""

    def __init__(self, session_id: str, intents: int) -> None:
        self.session_id = session_id
        self.intents = intents
        self.seq = 0
        self.log: list[Json] = []
        self.conn: Connection | None = None
        self.alive = True
        self.resumes = 0
        self.lock = asyncio.Lock()

    async def dispatch(self, event: str, data: Json) -> None:
        """Assign the next ``s`` and send; kept in the log for replay whether or not it got out."""
        async with self.lock:
            self.seq += 1
            frame = {"op": OP_DISPATCH, "t": event, "s": self.seq, "d": data}
            self.log.append(frame)
            await self._send(frame)

    async def _send(self, frame: Json) -> None:
        conn = self.conn
        if conn is None or conn.ws.closed:
            return
        # If the client is gone the frame still waits in the log for a RESUME.
        with contextlib.suppress(ConnectionError, RuntimeError):
            await conn.send(frame)

    async def attach(self, conn: Connection, after_seq: int) -> None:
        """Take over ``conn`` for a RESUME: replay what the client missed, then RESUMED."""
        async with self.lock:
            old, self.conn = self.conn, conn
            conn.session = self
            if old is not None and old is not conn and not old.ws.closed:
                await old.ws.close(code=4000)
            for frame in self.log:
                if frame["s"] > after_seq:
                    await self._send(frame)
            self.seq += 1
            frame = {"op": OP_DISPATCH, "t": "RESUMED", "s": self.seq, "d": {}}
            self.log.append(frame)
            await self._send(frame)
            self.resumes += 1


class Gateway:
    """The websocket endpoint. The emulator supplies READY/GUILD_CREATE bodies via callbacks."""

    def __init__(
        self,
        *,
        token: str,
        ready: Callable[[GatewaySession], Json],
        guilds: Callable[[], list[Json]],
        members: Callable[[int], list[Json]],
        heartbeat_interval_ms: int = 41250,
        compress: bool = False,
        privileged_intents: int = PRIVILEGED_INTENTS,
    ) -> None:
        self.token = token
        self._ready = ready
        self._guilds = guilds
        self._members = members
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.compress = compress
        self.privileged_intents = privileged_intents
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: list[Connection] = []

    def live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if s.alive]

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        query = dict(request.query)
        conn = Connection(ws=ws, path=request.path, query=query)
        if self.compress and query.get("compress") == "zlib-stream":
            conn.compressor = zlib.compressobj()
        self.connections.append(conn)
        await conn.send(
            {"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None}
        )
        try:
            while True:
                msg = await ws.receive()
                if msg.type is WSMsgType.TEXT:
                    frame = json.loads(msg.data)
                    conn.received.append(frame)
                    await self._on_frame(conn, frame)
                elif msg.type is WSMsgType.CLOSE:
                    conn.client_close_code = int(msg.data)
                    break
                elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                else:
                    await ws.close(code=CLOSE_DECODE_ERROR, message=b"Decode error.")
                    break
        finally:
            session = conn.session
            if session is not None and session.conn is conn:
                session.conn = None
                # A client closing with 1000/1001 ends its session; other codes may resume.
                if conn.client_close_code in (1000, 1001):
                    session.alive = False
        return ws

    async def _on_frame(self, conn: Connection, frame: Json) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == OP_HEARTBEAT:
            conn.heartbeats += 1
            await conn.send({"op": OP_HEARTBEAT_ACK})
        elif op == OP_IDENTIFY:
            await self._identify(conn, data or {})
        elif op == OP_RESUME:
            await self._resume(conn, data or {})
        elif op == OP_REQUEST_MEMBERS:
            await self._members_chunk(conn, data or {})
        elif op in (3, 4):
            pass  # presence / voice state updates: accepted and ignored
        else:
            await conn.ws.close(code=CLOSE_UNKNOWN_OPCODE, message=b"Unknown opcode.")

    async def _identify(self, conn: Connection, data: Json) -> None:
        if conn.session is not None:
            await conn.ws.close(code=CLOSE_ALREADY_AUTHENTICATED, message=b"Already authenticated.")
            return
        if data.get("token") != self.token:
            await conn.ws.close(code=CLOSE_AUTH_FAILED, message=b"Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or intents < 0:
            await conn.ws.close(code=CLOSE_INVALID_INTENTS, message=b"Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~self.privileged_intents:
            await conn.ws.close(code=CLOSE_DISALLOWED_INTENTS, message=b"Disallowed intent(s).")
            return
        session = GatewaySession(uuid.uuid4().hex, intents)
        self.sessions[session.session_id] = session
        session.conn = conn
        conn.session = session
        await session.dispatch("READY", self._ready(session))
        for guild in self._guilds():
            await session.dispatch("GUILD_CREATE", guild)

    async def _resume(self, conn: Connection, data: Json) -> None:
        if data.get("token") != self.token:
            await conn.ws.close(code=CLOSE_AUTH_FAILED, message=b"Authentication failed.")
            return
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or not session.alive:
            await conn.send({"op": OP_INVALID_SESSION, "d": False})
            return
        await session.attach(conn, int(data.get("seq") or 0))

    async def _members_chunk(self, conn: Connection, data: Json) -> None:
        if conn.session is None:
            return
        guild_id = int(data.get("guild_id") or 0)
        chunk: Json = {
            "guild_id": str(guild_id),
            "members": self._members(guild_id),
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await conn.session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def dispatch(
        self, event: str, data: Json, *, intent: int | None = None, redact: bool = False
    ) -> None:
        """Send to every live session subscribed to ``intent``.

        ``redact`` blanks content, embeds, attachments and components for sessions without the
        MESSAGE_CONTENT intent, as Discord does for guild messages that do not mention the bot.
        """
        for session in self.live_sessions():
            if intent is not None and not session.intents & intent:
                continue
            body = data
            if redact and not session.intents & INTENT_MESSAGE_CONTENT:
                body = {**data, "content": "", "embeds": [], "attachments": [], "components": []}
            await session.dispatch(event, body)

    async def reconnect(self) -> list[GatewaySession]:
        """Send op 7 RECONNECT and close each live connection; returns the sessions affected."""
        affected = []
        for session in self.live_sessions():
            conn = session.conn
            if conn is None or conn.ws.closed:
                continue
            affected.append(session)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.send({"op": OP_RECONNECT, "d": None})
            await conn.ws.close(code=4000, message=b"Reconnect requested.")
        return affected

    async def close_all(self, code: int) -> None:
        for conn in self.connections:
            if not conn.ws.closed:
                await conn.ws.close(code=code)
