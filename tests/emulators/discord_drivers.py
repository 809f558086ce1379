"""The user's side of the Discord emulator: slash commands, buttons, modals, messages, DMs.

A mixin of ``DiscordEmulator`` (tests/emulators/discord_api.py): each driver changes its records
(users, channels, messages, interactions) and sends the gateway event Discord would.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from tests.emulators.discord_models import (
    ALL_PERMISSIONS,
    InteractionRecord,
    Json,
    MessageRecord,
    channel_payload,
    command_options,
    member_payload,
    mentioned_ids,
)


class UserDrivers:
    """Drivers: what people do on Discord, as gateway events to the bot."""

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
