"""A loopback Discord (API v10 REST + gateway) for testing the real discord.py client end to end.

``DiscordEmulator`` serves REST under ``{base_url}/api/v10`` and the gateway at ``gateway_url``;
``patch_discord()`` points discord.py at both. Drivers play the user's side (slash commands,
buttons, DMs, mentions) by sending gateway events; records keep everything the bot did (messages
with their whole content history, callbacks, typing, synced commands, raw requests) for asserts.

It behaves like Discord where a bot could get it wrong: the 2000-character limit, 3 seconds to
answer an interaction, one callback per interaction, no follow-up before the callback, the first
follow-up after a defer replacing the "thinking" message, the bot's own messages echoed back as
MESSAGE_CREATE, content blanked without the MESSAGE_CONTENT intent, per-route rate-limit buckets
with X-RateLimit-* headers, and injected faults (429 with/without ``Via``, 500, dropped socket).

Everything runs on the test's event loop; nothing here is thread-safe. This module holds the
state, the routing and the test helpers; the REST handlers are in discord_rest.py and the user's
side in discord_drivers.py, both mixins of ``DiscordEmulator``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

from aiohttp import web

from tests.emulators.discord_drivers import UserDrivers
from tests.emulators.discord_gateway import Gateway, GatewaySession
from tests.emulators.discord_models import (
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MESSAGES,
    INTENT_MESSAGE_CONTENT,
    PRIVILEGED_INTENTS,
    ApiError,
    CallbackRecord,
    ChannelRecord,
    Fault,
    InteractionRecord,
    Json,
    MessageRecord,
    RateLimitedError,
    RequestRecord,
    Snowflakes,
    channel_payload,
    guild_payload,
    json_response,
    member_payload,
    message_payload,
    read_body,
    ready_payload,
    user_payload,
)
from tests.emulators.discord_rest import (
    UNAUTHORIZED,
    RestCall,
    RestHandlers,
)

__all__ = ["DiscordEmulator", "InteractionRecord", "MessageRecord", "RequestRecord"]

T = TypeVar("T")
FaultKind = Literal["429", "403", "500", "drop"]
Handler = Callable[["RestCall"], Awaitable[web.StreamResponse]]

DEFAULT_TOKEN = "MTEx.emulator.bot-token"


@dataclass
class _Route:
    method: str
    template: str
    regex: re.Pattern[str]
    handler: Handler
    auth: bool


class DiscordEmulator(UserDrivers, RestHandlers):
    """One bot, one application, one guild with a ``#general`` text channel, DMs on demand."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        interaction_deadline: float = 3.0,
        interaction_token_lifetime: float = 15 * 60.0,
        bucket_limit: int = 50,
        bucket_window: float = 1.0,
        compress_gateway: bool = False,
        privileged_intents: int = PRIVILEGED_INTENTS,
        heartbeat_interval_ms: int = 41250,
    ) -> None:
        self.token = token
        self.interaction_deadline = interaction_deadline
        # after this, an interaction's webhook (its response and follow-ups) refuses the token
        self.interaction_token_lifetime = interaction_token_lifetime
        self.bucket_limit = bucket_limit
        self.bucket_window = bucket_window
        self._ids = Snowflakes()
        self.bot_id = self.application_id = self._ids.next()
        self.guild_id = self._ids.next()
        self.channel_id = self._ids.next()
        self.owner_id = self._ids.next()
        self.users: dict[int, Json] = {
            self.bot_id: {**user_payload(self.bot_id, "parley", bot=True), "verified": True},
            self.owner_id: user_payload(self.owner_id, "owner"),
        }
        self.guild_members: set[int] = {self.bot_id, self.owner_id}
        self.channels: dict[int, ChannelRecord] = {
            self.channel_id: ChannelRecord(self.channel_id, 0, "general", self.guild_id)
        }
        self.messages: dict[int, MessageRecord] = {}
        self.interactions: dict[int, InteractionRecord] = {}
        self.callbacks: list[CallbackRecord] = []
        self.typing: list[tuple[int, float]] = []  # (channel_id, monotonic time)
        self.synced_commands: dict[int | None, list[Json]] = {}  # None = global
        self.requests: list[RequestRecord] = []
        self.faults: list[Fault] = []
        self._buckets: dict[str, tuple[float, int]] = {}
        self.gateway = Gateway(
            token=token,
            ready=self._ready_payload,
            guilds=lambda: [self._guild_payload()],
            members=lambda _gid: [self._member(uid) for uid in sorted(self.guild_members)],
            heartbeat_interval_ms=heartbeat_interval_ms,
            compress=compress_gateway,
            privileged_intents=privileged_intents,
        )
        self._routes: list[_Route] = []
        self._register_routes()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self._changed = asyncio.Event()

    # ----------------------------------------------------------------- lifecycle

    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/gateway"

    @property
    def resume_gateway_url(self) -> str:
        """Distinct from gateway_url so a test can see the client resumed where READY said."""
        return self.base_url.replace("http://", "ws://", 1) + "/resume"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/resume", self.gateway.handle)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        await self.gateway.close_all(1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway here; restored on exit."""
        import discord.gateway
        import discord.http
        import yarl

        route, socket = discord.http.Route, discord.gateway.DiscordWebSocket
        saved = (route.BASE, socket.DEFAULT_GATEWAY)
        route.BASE = f"{self.base_url}/api/v10"
        socket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            route.BASE, socket.DEFAULT_GATEWAY = saved

    # ----------------------------------------------------------------- test helpers

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        kind: FaultKind,
        times: int = 1,
        retry_after: float = 0.2,
        via: bool = True,
    ) -> None:
        """Fail the next ``times`` matching requests before they have any effect.

        ``path_pattern`` is an fnmatch glob over the path after /api/v10 (``*`` may span
        slashes), e.g. ``/channels/*/messages``; ``method`` may be ``*``. ``kind`` is ``"429"``
        (retried by discord.py only when ``via``: Discord's real 429s carry ``Via``),
        ``"403"`` (Missing Access), ``"500"`` or ``"drop"`` (the connection is closed without
        a response).
        """
        if kind not in ("429", "403", "500", "drop"):
            raise ValueError(f"unknown fault kind {kind!r}")
        self.faults.append(Fault(method.upper(), path_pattern, kind, times, retry_after, via))

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Wait until ``predicate()`` is truthy and return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            self._changed.clear()
            # Short cap: predicates may also look at client-side state we are not told about.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.02))

    def messages_in(self, channel_id: int | None = None) -> list[MessageRecord]:
        channel = self.channel_id if channel_id is None else channel_id
        return [m for m in self.messages.values() if m.channel_id == channel]

    def bot_messages(self, channel_id: int | None = None) -> list[MessageRecord]:
        return [
            m
            for m in self.messages.values()
            if m.author_id == self.bot_id and (channel_id is None or m.channel_id == channel_id)
        ]

    def requests_to(self, method: str, path_pattern: str) -> list[RequestRecord]:
        return [
            r
            for r in self.requests
            if r.method == method.upper() and fnmatch.fnmatchcase(r.path, path_pattern)
        ]

    def user(self, user_id: int, name: str | None = None) -> Json:
        """The user's payload, creating the user on first use."""
        if user_id not in self.users:
            self.users[user_id] = user_payload(user_id, name or f"user{user_id}")
        return self.users[user_id]

    def dm_channel(self, user_id: int) -> int:
        """The DM channel with ``user_id``, created on first use (one per user, as on Discord)."""
        for channel in self.channels.values():
            if channel.type == 1 and channel.recipient_id == user_id:
                return channel.id
        self.user(user_id)
        channel_id = self._ids.next()
        self.channels[channel_id] = ChannelRecord(channel_id, 1, recipient_id=user_id)
        return channel_id

    def _touch(self) -> None:
        self._changed.set()

    # ----------------------------------------------------------------- gateway payloads

    def _member(self, user_id: int) -> Json:
        return member_payload(self.users[user_id])

    def _ready_payload(self, session: GatewaySession) -> Json:
        return ready_payload(
            self.users[self.bot_id],
            self.guild_id,
            session.session_id,
            self.resume_gateway_url,
            self.application_id,
            self._app_flags(),
        )

    def _app_flags(self) -> int:
        # GATEWAY_MESSAGE_CONTENT (1 << 18) when the intent is enabled "in the portal".
        return 1 << 18 if self.gateway.privileged_intents & INTENT_MESSAGE_CONTENT else 0

    def _guild_payload(self) -> Json:
        channels = [
            channel_payload(c, self.users) for c in self.channels.values() if c.guild_id is not None
        ]
        members = [self._member(uid) for uid in sorted(self.guild_members)]
        return guild_payload(self.guild_id, self.owner_id, channels, members)

    def _message_json(self, record: MessageRecord) -> Json:
        referenced = self.messages.get(record.reference_id or 0)
        ref_json = message_payload(referenced, self.users) if referenced else None
        return message_payload(record, self.users, referenced=ref_json)

    async def _dispatch_message(self, event: str, record: MessageRecord) -> None:
        """Gateway event for a message; ephemeral ones are never broadcast."""
        if record.ephemeral:
            return
        if event == "MESSAGE_DELETE":
            data: Json = {"id": str(record.id), "channel_id": str(record.channel_id)}
            if record.guild_id is not None:
                data["guild_id"] = str(record.guild_id)
        else:
            data = self._message_json(record)
            if record.guild_id is not None and record.author_id in self.guild_members:
                data["member"] = {
                    k: v for k, v in self._member(record.author_id).items() if k != "user"
                }
        intent = INTENT_GUILD_MESSAGES if record.guild_id is not None else INTENT_DIRECT_MESSAGES
        # Discord blanks content without the intent, except in DMs, for mentions of the bot,
        # and for the bot's own messages.
        redact = (
            record.guild_id is not None
            and record.author_id != self.bot_id
            and self.bot_id not in record.mentions
        )
        await self.gateway.dispatch(event, data, intent=intent, redact=redact)

    # ----------------------------------------------------------------- REST plumbing

    def _register_routes(self) -> None:
        add = self._add
        add("GET", "/users/@me", self._get_me)
        add("GET", "/oauth2/applications/@me", self._get_app)
        add("GET", "/applications/@me", self._get_app)
        add("GET", "/gateway", self._get_gateway, auth=False)
        add("GET", "/gateway/bot", self._get_gateway)
        add("POST", "/users/@me/channels", self._create_dm)
        add("GET", "/users/{user_id}", self._get_user)
        for template in (
            "/applications/{app}/commands",
            "/applications/{app}/guilds/{guild_id}/commands",
        ):
            add("GET", template, self._get_commands)
            add("PUT", template, self._put_commands)
        add("POST", "/interactions/{interaction}/{token}/callback", self._callback, auth=False)
        add("POST", "/webhooks/{app}/{token}", self._followup, auth=False)
        for method in ("GET", "PATCH", "DELETE"):
            add(
                method,
                "/webhooks/{app}/{token}/messages/{message}",
                self._webhook_message,
                auth=False,
            )
        add("GET", "/channels/{channel_id}", self._get_channel)
        add("POST", "/channels/{channel_id}/typing", self._typing)
        add("POST", "/channels/{channel_id}/messages", self._create_message)
        for method in ("GET", "PATCH", "DELETE"):
            add(method, "/channels/{channel_id}/messages/{message}", self._channel_message)

    def _add(self, method: str, template: str, handler: Handler, *, auth: bool = True) -> None:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self._routes.append(_Route(method, template, re.compile(pattern + "$"), handler, auth))

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body = await read_body(request)
        record = RequestRecord(request.method, path, dict(request.query), body)
        self.requests.append(record)
        self._touch()
        try:
            fault = self._take_fault(request.method, path)
            if fault is not None:
                record.fault = fault.kind
                response = self._fault_response(request, fault)
                record.status = 0 if fault.kind == "drop" else response.status
                return response
            route, params = self._match(request.method, path)
            if route.auth and request.headers.get("Authorization") != f"Bot {self.token}":
                raise ApiError(*UNAUTHORIZED)
            headers = self._take_bucket(route, params)
            response = await route.handler(RestCall(request, params, body))
            response.headers.update(headers)
        except RateLimitedError as exc:
            response = self._rate_limited(exc.retry_after, via=True)
        except ApiError as exc:
            response = json_response(exc.body, exc.status)
        record.status = response.status
        self._touch()
        return response

    def _match(self, method: str, path: str) -> tuple[_Route, dict[str, str]]:
        allowed = False
        for route in self._routes:
            found = route.regex.match(path)
            if found is None:
                continue
            if route.method == method:
                return route, found.groupdict()
            allowed = True
        if allowed:
            raise ApiError(405, 0, "405: Method Not Allowed")
        raise ApiError(404, 0, "404: Not Found")

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            method_ok = fault.method in ("*", method)
            if fault.times > 0 and method_ok and fnmatch.fnmatchcase(path, fault.pattern):
                fault.times -= 1
                return fault
        return None

    def _fault_response(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499)
        if fault.kind == "500":
            return json_response({"message": "500: Internal Server Error", "code": 0}, 500)
        if fault.kind == "403":
            return json_response({"message": "Missing Access", "code": 50001}, 403)
        return self._rate_limited(fault.retry_after, via=fault.via)

    def _rate_limited(self, retry_after: float, *, via: bool) -> web.Response:
        headers = {
            "Retry-After": str(max(1, round(retry_after))),
            "X-RateLimit-Scope": "user",
            "X-RateLimit-Global": "false",
        }
        if via:
            headers["Via"] = "1.1 google"
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
        }
        return json_response(body, 429, headers)

    def _take_bucket(self, route: _Route, params: dict[str, str]) -> dict[str, str]:
        """Count the request in its bucket (route + major parameter); 429 when it is full."""
        major = params.get("channel_id") or params.get("guild_id") or params.get("token") or ""
        key = f"{route.method} {route.template}:{major}"
        now = time.monotonic()
        start, count = self._buckets.get(key, (now, 0))
        if now - start >= self.bucket_window:
            start, count = now, 0
        reset_after = max(0.0, start + self.bucket_window - now)
        if count >= self.bucket_limit:
            raise RateLimitedError(reset_after)
        count += 1
        self._buckets[key] = (start, count)
        return {
            "X-RateLimit-Limit": str(self.bucket_limit),
            "X-RateLimit-Remaining": str(self.bucket_limit - count),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(key.split(":")[0].encode()).hexdigest()[:16],
        }
