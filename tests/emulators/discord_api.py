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

Everything runs on the test's event loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp import web

from tests.emulators.discord_gateway import Gateway, GatewaySession
from tests.emulators.discord_models import (
    ALL_PERMISSIONS,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
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
    application_payload,
    channel_payload,
    check_content,
    check_not_empty,
    command_options,
    guild_payload,
    json_response,
    member_payload,
    mentioned_ids,
    message_payload,
    read_body,
    ready_payload,
    user_payload,
)

__all__ = ["DiscordEmulator", "InteractionRecord", "MessageRecord", "RequestRecord"]

T = TypeVar("T")
FaultKind = Literal["429", "403", "500", "drop"]
Handler = Callable[["_Call"], Awaitable[web.StreamResponse]]

DEFAULT_TOKEN = "MTEx.emulator.bot-token"
UNAUTHORIZED = (401, 0, "401: Unauthorized")
UNKNOWN_CHANNEL = (404, 10003, "Unknown Channel")
UNKNOWN_MESSAGE = (404, 10008, "Unknown Message")
UNKNOWN_WEBHOOK = (404, 10015, "Unknown Webhook")
UNKNOWN_INTERACTION = (404, 10062, "Unknown interaction")
INVALID_WEBHOOK_TOKEN = (401, 50027, "Invalid Webhook Token")
# Callback types Discord accepts per interaction type (2 command, 3 component, 4 autocomplete,
# 5 modal submit).
ALLOWED_CALLBACKS = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}


@dataclass
class _Call:
    request: web.Request
    params: dict[str, str]
    body: Any


@dataclass
class _Route:
    method: str
    template: str
    regex: re.Pattern[str]
    handler: Handler
    auth: bool


class DiscordEmulator:
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

    # ----------------------------------------------------------------- drivers (user side)

    async def run_slash_command(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user_id: int,
        channel_id: int | None = None,
        guild: bool = True,
    ) -> InteractionRecord:
        """Send INTERACTION_CREATE type 2 as if ``user_id`` ran ``/name``; returns at once."""
        data = self._command_data(name, options or {}, guild=guild)
        return await self._interact(2, data, user_id, channel_id, guild)

    async def autocomplete(
        self,
        name: str,
        option: str,
        value: str,
        *,
        options: Mapping[str, Any] | None = None,
        user_id: int,
        channel_id: int | None = None,
        guild: bool = True,
        timeout: float = 5.0,
    ) -> InteractionRecord:
        """Send an autocomplete interaction and wait for the bot's choices (``record.choices``)."""
        data = self._command_data(name, {**(options or {}), option: value}, guild=guild)
        for item in data["options"]:
            if item["name"] == option:
                item["focused"] = True
                item["value"] = value
        record = await self._interact(4, data, user_id, channel_id, guild)
        await self.wait_for(lambda: record.choices is not None, timeout)
        return record

    async def press_button(
        self,
        message_id: int,
        custom_id: str,
        user_id: int,
        *,
        values: Sequence[str] | None = None,
    ) -> InteractionRecord:
        """Send a component interaction (type 3) for a component on a recorded message.

        ``values`` makes it a select-menu choice. Raises LookupError for an unknown custom_id.
        """
        message = self.messages[message_id]
        kinds = message.custom_ids()
        if custom_id not in kinds:
            raise LookupError(f"message {message_id} has no component {custom_id!r}: {kinds}")
        data: Json = {"custom_id": custom_id, "component_type": kinds[custom_id]}
        if values is not None:
            data["values"] = list(values)
        guild = message.guild_id is not None
        return await self._interact(3, data, user_id, message.channel_id, guild, message)

    async def submit_modal(
        self,
        interaction: InteractionRecord,
        values: Mapping[str, str],
        *,
        user_id: int | None = None,
    ) -> InteractionRecord:
        """Submit the modal the bot opened in answer to ``interaction`` (type 5)."""
        if interaction.modal is None:
            raise LookupError(f"interaction {interaction.id} opened no modal")
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": key, "value": value}]}
            for key, value in values.items()
        ]
        data = {"custom_id": interaction.modal["custom_id"], "components": rows}
        message = self.messages.get(interaction.message_id or 0)
        return await self._interact(
            5,
            data,
            interaction.user_id if user_id is None else user_id,
            interaction.channel_id,
            interaction.guild_id is not None,
            message,
        )

    async def send_message(
        self,
        user_id: int,
        channel_id: int | None,
        content: str,
        *,
        reply_to: int | None = None,
    ) -> int:
        """A user posts in a guild channel (default ``#general``); returns the message id.

        A reply to the bot's message mentions the bot, as Discord's client does by default.
        """
        channel = self.channel_id if channel_id is None else channel_id
        return await self._user_message(user_id, channel, content, reply_to)

    async def mention_bot(
        self, user_id: int, channel_id: int | None, content: str, *, reply_to: int | None = None
    ) -> int:
        """A user posts ``<@bot> content`` in a guild channel; returns the message id."""
        return await self.send_message(
            user_id, channel_id, f"<@{self.bot_id}> {content}", reply_to=reply_to
        )

    async def send_dm(self, user_id: int, content: str, *, reply_to: int | None = None) -> int:
        """A user writes to the bot in DMs; returns the message id."""
        return await self._user_message(user_id, self.dm_channel(user_id), content, reply_to)

    async def force_reconnect(self, timeout: float = 5.0) -> None:
        """Send RECONNECT (op 7), close the socket, and wait until the client has resumed."""
        sessions = await self.gateway.reconnect()
        before = {s.session_id: s.resumes for s in sessions}
        await self.wait_for(
            lambda: all(s.resumes > before[s.session_id] for s in sessions), timeout
        )

    async def close_gateway(self, code: int = 4000) -> None:
        """Close every gateway socket with ``code``: 4000 resumes, 4004 makes the client give up."""
        await self.gateway.close_all(code)

    async def _user_message(
        self, user_id: int, channel_id: int, content: str, reply_to: int | None
    ) -> int:
        if channel_id not in self.channels:
            raise LookupError(f"unknown channel {channel_id}")
        author = self.user(user_id)
        channel = self.channels[channel_id]
        if channel.guild_id is not None:
            self.guild_members.add(user_id)
        record = MessageRecord(
            id=self._ids.next(),
            channel_id=channel_id,
            guild_id=channel.guild_id,
            author=author,
            source="user",
            reference_id=reply_to,
            type=19 if reply_to else 0,
        )
        record.apply({"content": content})
        record.mentions = mentioned_ids(content)
        referenced = self.messages.get(reply_to or 0)
        if referenced is not None and referenced.author_id not in record.mentions:
            record.mentions.append(referenced.author_id)
        for uid in record.mentions:
            self.user(uid)
        self.messages[record.id] = record
        self._touch()
        await self._dispatch_message("MESSAGE_CREATE", record)
        return record.id

    async def _interact(
        self,
        kind: int,
        data: Json,
        user_id: int,
        channel_id: int | None,
        guild: bool,
        message: MessageRecord | None = None,
    ) -> InteractionRecord:
        if channel_id is None:
            channel_id = self.channel_id if guild else self.dm_channel(user_id)
        channel = self.channels[channel_id]
        guild_id = channel.guild_id if guild else None
        user = self.user(user_id)
        record = InteractionRecord(
            id=self._ids.next(),
            token=f"aW50ZXJhY3Rpb24.{secrets.token_urlsafe(24)}",
            type=kind,
            user_id=user_id,
            channel_id=channel_id,
            guild_id=guild_id,
            data=data,
            message_id=message.id if message else None,
        )
        self.interactions[record.id] = record
        payload: Json = {
            "id": str(record.id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "channel_id": str(channel_id),
            "channel": {**channel_payload(channel, self.users), "permissions": ALL_PERMISSIONS},
            "token": record.token,
            "version": 1,
            "app_permissions": ALL_PERMISSIONS,
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
            "context": 0 if guild_id else 1,
        }
        if guild_id is not None:
            self.guild_members.add(user_id)
            payload["guild_id"] = str(guild_id)
            payload["guild_locale"] = "en-US"
            payload["member"] = member_payload(user, permissions=True)
            payload["authorizing_integration_owners"] = {"0": str(guild_id)}
        else:
            payload["user"] = user
            payload["authorizing_integration_owners"] = {"1": str(user_id)}
        if message is not None:
            payload["message"] = self._message_json(message)
        self._touch()
        await self.gateway.dispatch("INTERACTION_CREATE", payload)
        return record

    def _command_data(self, name: str, options: Mapping[str, Any], *, guild: bool) -> Json:
        """Build ``data`` for a chat-input command, typing options like the synced definition."""
        spec: Json | None = None
        if guild:
            spec = next(
                (c for c in self.synced_commands.get(self.guild_id, []) if c["name"] == name), None
            )
        in_guild = spec is not None
        if spec is None:
            spec = next((c for c in self.synced_commands.get(None, []) if c["name"] == name), None)
        data: Json = {
            "id": str(spec["id"]) if spec else str(self._ids.next()),
            "name": name,
            "type": 1,
            "options": command_options(options, (spec or {}).get("options") or []),
        }
        if in_guild:
            data["guild_id"] = str(self.guild_id)
        return data

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
            response = await route.handler(_Call(request, params, body))
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

    # ----------------------------------------------------------------- REST: identity, commands

    async def _get_me(self, call: _Call) -> web.StreamResponse:
        return json_response({**self.users[self.bot_id], "mfa_enabled": False, "email": None})

    async def _get_app(self, call: _Call) -> web.StreamResponse:
        owner, bot = self.users[self.owner_id], self.users[self.bot_id]
        return json_response(
            application_payload(self.application_id, owner, bot, self._app_flags())
        )

    async def _get_gateway(self, call: _Call) -> web.StreamResponse:
        if call.request.match_info["tail"].endswith("bot"):
            limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
            return json_response(
                {"url": self.gateway_url, "shards": 1, "session_start_limit": limit}
            )
        return json_response({"url": self.gateway_url})

    async def _get_user(self, call: _Call) -> web.StreamResponse:
        user = self.users.get(int(call.params["user_id"]))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(user)

    async def _create_dm(self, call: _Call) -> web.StreamResponse:
        recipient = int((call.body or {}).get("recipient_id") or 0)
        if recipient not in self.users or recipient == self.bot_id:
            raise ApiError.invalid_form(["recipient_id"], "NUMBER_TYPE_COERCE", "Unknown user")
        channel = self.channels[self.dm_channel(recipient)]
        return json_response(channel_payload(channel, self.users))

    def _scope(self, call: _Call) -> int | None:
        if call.params["app"] != str(self.application_id):
            raise ApiError(403, 50001, "Missing Access")
        guild = call.params.get("guild_id")
        if guild is not None and guild != str(self.guild_id):
            raise ApiError(404, 10004, "Unknown Guild")
        return int(guild) if guild is not None else None

    async def _get_commands(self, call: _Call) -> web.StreamResponse:
        return json_response(self.synced_commands.get(self._scope(call), []))

    async def _put_commands(self, call: _Call) -> web.StreamResponse:
        scope = self._scope(call)
        previous = {c["name"]: c["id"] for c in self.synced_commands.get(scope, [])}
        synced = []
        for command in call.body or []:
            item = {
                "type": 1,
                "description": "",
                "options": [],
                **command,
                "id": previous.get(command["name"]) or str(self._ids.next()),
                "application_id": str(self.application_id),
                "version": str(self._ids.next()),
            }
            if scope is not None:
                item["guild_id"] = str(scope)
            synced.append(item)
        self.synced_commands[scope] = synced
        return json_response(synced)

    # ----------------------------------------------------------------- REST: channels

    def _channel(self, call: _Call) -> ChannelRecord:
        channel = self.channels.get(int(call.params["channel_id"]))
        if channel is None:
            raise ApiError(*UNKNOWN_CHANNEL)
        return channel

    async def _get_channel(self, call: _Call) -> web.StreamResponse:
        return json_response(channel_payload(self._channel(call), self.users))

    async def _typing(self, call: _Call) -> web.StreamResponse:
        self.typing.append((self._channel(call).id, time.monotonic()))
        return web.Response(status=204)

    async def _create_message(self, call: _Call) -> web.StreamResponse:
        channel = self._channel(call)
        body: Json = call.body or {}
        check_content(body, [])
        check_not_empty(body)
        reference: Json = body.get("message_reference") or {}
        reference_id = int(reference["message_id"]) if reference else None
        if reference_id is not None and reference_id not in self.messages:
            if reference.get("fail_if_not_exists", True):
                raise ApiError.invalid_form(
                    ["message_reference"], "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                )
            reference_id = None
        record = self._new_bot_message(channel.id, channel.guild_id, "channel", body)
        record.reference_id = reference_id
        record.type = 19 if reference_id else 0
        await self._dispatch_message("MESSAGE_CREATE", record)
        return json_response(self._message_json(record))

    async def _channel_message(self, call: _Call) -> web.StreamResponse:
        channel = self._channel(call)
        record = self.messages.get(int(call.params["message"]))
        if record is None or record.channel_id != channel.id or record.deleted:
            raise ApiError(*UNKNOWN_MESSAGE)
        if record.ephemeral:  # only its interaction's webhook can reach it
            raise ApiError(*UNKNOWN_MESSAGE)
        return await self._message_method(call, record)

    async def _message_method(self, call: _Call, record: MessageRecord) -> web.StreamResponse:
        method = call.request.method
        if method == "GET":
            return json_response(self._message_json(record))
        if method == "DELETE":
            record.deleted = True
            await self._dispatch_message("MESSAGE_DELETE", record)
            return web.Response(status=204)
        if record.author_id != self.bot_id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        body: Json = call.body or {}
        check_content(body, [])
        self._edit(record, body)
        await self._dispatch_message("MESSAGE_UPDATE", record)
        return json_response(self._message_json(record))

    def _new_bot_message(
        self, channel_id: int, guild_id: int | None, source: str, body: Json, flags: int = 0
    ) -> MessageRecord:
        record = MessageRecord(
            id=self._ids.next(),
            channel_id=channel_id,
            guild_id=guild_id,
            author=self.users[self.bot_id],
            source=source,
            flags=flags | (int(body.get("flags") or 0) & FLAG_EPHEMERAL),
        )
        record.apply(body)
        record.mentions = [u for u in mentioned_ids(record.content) if u in self.users]
        self.messages[record.id] = record
        return record

    def _edit(self, record: MessageRecord, body: Json) -> None:
        record.apply(body)
        record.flags &= ~FLAG_LOADING
        record.edited_at.append(time.monotonic())
        if "content" in body:
            record.mentions = [u for u in mentioned_ids(record.content) if u in self.users]

    # ----------------------------------------------------------------- REST: interactions

    async def _callback(self, call: _Call) -> web.StreamResponse:
        record = self.interactions.get(int(call.params["interaction"]))
        if record is None or record.token != call.params["token"]:
            raise ApiError(*UNKNOWN_INTERACTION)
        if record.callbacks:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - record.created_at > self.interaction_deadline:
            raise ApiError(*UNKNOWN_INTERACTION)
        body: Json = call.body or {}
        kind = int(body.get("type") or 0)
        data: Json = body.get("data") or {}
        if kind not in ALLOWED_CALLBACKS.get(record.type, set()):
            raise ApiError.invalid_form(
                ["type"], "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid interaction response type"
            )
        check_content(data, ["data"])
        message: MessageRecord | None = None
        if kind == 4:
            check_not_empty(data)
            message = self._new_bot_message(record.channel_id, record.guild_id, "original", data)
        elif kind == 5:
            flags = FLAG_LOADING | (int(data.get("flags") or 0) & FLAG_EPHEMERAL)
            message = self._new_bot_message(
                record.channel_id, record.guild_id, "original", {}, flags
            )
        elif kind in (6, 7):
            message = self.messages.get(record.message_id or 0)
            if kind == 7 and message is not None:
                self._edit(message, data)
                await self._dispatch_message("MESSAGE_UPDATE", message)
        elif kind == 8:
            choices = list(data.get("choices") or [])
            if len(choices) > 25:
                raise ApiError.invalid_form(
                    ["data", "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                )
            record.choices = choices
        elif kind == 9:
            record.modal = data
        if message is not None:
            record.original_id = message.id
            if kind in (4, 5):
                message.type = 20 if record.type == 2 else 0
                message.interaction_id = record.id
                await self._dispatch_message("MESSAGE_CREATE", message)
        callback = CallbackRecord(record.id, kind, data)
        record.callbacks.append(callback)
        self.callbacks.append(callback)
        if call.request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        answer: Json = {
            "id": str(record.id),
            "type": record.type,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(message and message.ephemeral),
        }
        if message is not None:
            answer["response_message_id"] = str(message.id)
        resource: Json = {"type": kind}
        if message is not None and kind != 6:
            resource["message"] = self._message_json(message)
        return json_response({"interaction": answer, "resource": resource})

    def _webhook_interaction(self, call: _Call) -> InteractionRecord:
        if call.params["app"] == str(self.application_id):
            for record in self.interactions.values():
                if record.token != call.params["token"]:
                    continue
                if time.monotonic() - record.created_at > self.interaction_token_lifetime:
                    raise ApiError(*INVALID_WEBHOOK_TOKEN)
                return record
        raise ApiError(*UNKNOWN_WEBHOOK)

    async def _followup(self, call: _Call) -> web.StreamResponse:
        record = self._webhook_interaction(call)
        if not record.callbacks:
            raise ApiError(*UNKNOWN_WEBHOOK)  # the webhook exists once the interaction is acked
        body: Json = call.body or {}
        check_content(body, [])
        check_not_empty(body)
        original = self.messages.get(record.original_id or 0)
        if original is not None and original.loading and not original.deleted:
            # Discord: the first follow-up after a defer replaces the "thinking" message.
            self._edit(original, body)
            await self._dispatch_message("MESSAGE_UPDATE", original)
            message = original
        else:
            message = self._new_bot_message(record.channel_id, record.guild_id, "followup", body)
            message.interaction_id = record.id
            message.type = 20 if record.type == 2 else 0
            record.followup_ids.append(message.id)
            await self._dispatch_message("MESSAGE_CREATE", message)
        if call.request.query.get("wait") in ("1", "true", "True"):
            return json_response(self._message_json(message))
        return web.Response(status=204)

    async def _webhook_message(self, call: _Call) -> web.StreamResponse:
        record = self._webhook_interaction(call)
        wanted = call.params["message"]
        message_id = record.original_id if wanted == "@original" else int(wanted)
        allowed = {record.original_id, *record.followup_ids}
        message = self.messages.get(message_id or 0)
        if message is None or message_id not in allowed or message.deleted:
            raise ApiError(*UNKNOWN_MESSAGE)
        return await self._message_method(call, message)
