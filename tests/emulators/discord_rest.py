"""The Discord emulator's REST endpoints: identity, commands, channels, messages, interactions.

A mixin of ``DiscordEmulator`` (tests/emulators/discord_api.py), which routes each request
here and owns the records these handlers read and change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.emulators.discord_models import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    ApiError,
    CallbackRecord,
    ChannelRecord,
    InteractionRecord,
    Json,
    MessageRecord,
    application_payload,
    channel_payload,
    check_content,
    check_not_empty,
    json_response,
    mentioned_ids,
)

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
class RestCall:
    request: web.Request
    params: dict[str, str]
    body: Any


class RestHandlers:
    """Handlers: one per route, each answering as Discord would."""

    # ----------------------------------------------------------------- REST: identity, commands

    async def _get_me(self, call: RestCall) -> web.StreamResponse:
        return json_response({**self.users[self.bot_id], "mfa_enabled": False, "email": None})

    async def _get_app(self, call: RestCall) -> web.StreamResponse:
        owner, bot = self.users[self.owner_id], self.users[self.bot_id]
        return json_response(
            application_payload(self.application_id, owner, bot, self._app_flags())
        )

    async def _get_gateway(self, call: RestCall) -> web.StreamResponse:
        if call.request.match_info["tail"].endswith("bot"):
            limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
            return json_response(
                {"url": self.gateway_url, "shards": 1, "session_start_limit": limit}
            )
        return json_response({"url": self.gateway_url})

    async def _get_user(self, call: RestCall) -> web.StreamResponse:
        user = self.users.get(int(call.params["user_id"]))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(user)

    async def _create_dm(self, call: RestCall) -> web.StreamResponse:
        recipient = int((call.body or {}).get("recipient_id") or 0)
        if recipient not in self.users or recipient == self.bot_id:
            raise ApiError.invalid_form(["recipient_id"], "NUMBER_TYPE_COERCE", "Unknown user")
        channel = self.channels[self.dm_channel(recipient)]
        return json_response(channel_payload(channel, self.users))

    def _scope(self, call: RestCall) -> int | None:
        if call.params["app"] != str(self.application_id):
            raise ApiError(403, 50001, "Missing Access")
        guild = call.params.get("guild_id")
        if guild is not None and guild != str(self.guild_id):
            raise ApiError(404, 10004, "Unknown Guild")
        return int(guild) if guild is not None else None

    async def _get_commands(self, call: RestCall) -> web.StreamResponse:
        return json_response(self.synced_commands.get(self._scope(call), []))

    async def _put_commands(self, call: RestCall) -> web.StreamResponse:
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

    def _channel(self, call: RestCall) -> ChannelRecord:
        channel = self.channels.get(int(call.params["channel_id"]))
        if channel is None:
            raise ApiError(*UNKNOWN_CHANNEL)
        return channel

    async def _get_channel(self, call: RestCall) -> web.StreamResponse:
        return json_response(channel_payload(self._channel(call), self.users))

    async def _typing(self, call: RestCall) -> web.StreamResponse:
        self.typing.append((self._channel(call).id, time.monotonic()))
        return web.Response(status=204)

    async def _create_message(self, call: RestCall) -> web.StreamResponse:
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

    async def _channel_message(self, call: RestCall) -> web.StreamResponse:
        channel = self._channel(call)
        record = self.messages.get(int(call.params["message"]))
        if record is None or record.channel_id != channel.id or record.deleted:
            raise ApiError(*UNKNOWN_MESSAGE)
        if record.ephemeral:  # only its interaction's webhook can reach it
            raise ApiError(*UNKNOWN_MESSAGE)
        return await self._message_method(call, record)

    async def _message_method(self, call: RestCall, record: MessageRecord) -> web.StreamResponse:
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

    async def _callback(self, call: RestCall) -> web.StreamResponse:
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

    def _webhook_interaction(self, call: RestCall) -> InteractionRecord:
        if call.params["app"] == str(self.application_id):
            for record in self.interactions.values():
                if record.token != call.params["token"]:
                    continue
                if time.monotonic() - record.created_at > self.interaction_token_lifetime:
                    raise ApiError(*INVALID_WEBHOOK_TOKEN)
                return record
        raise ApiError(*UNKNOWN_WEBHOOK)

    async def _followup(self, call: RestCall) -> web.StreamResponse:
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

    async def _webhook_message(self, call: RestCall) -> web.StreamResponse:
        record = self._webhook_interaction(call)
        wanted = call.params["message"]
        message_id = record.original_id if wanted == "@original" else int(wanted)
        allowed = {record.original_id, *record.followup_ids}
        message = self.messages.get(message_id or 0)
        if message is None or message_id not in allowed or message.deleted:
            raise ApiError(*UNKNOWN_MESSAGE)
        return await self._message_method(call, message)
