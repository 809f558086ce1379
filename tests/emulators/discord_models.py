"""Records and payload builders shared by the Discord REST and gateway emulators.

Also the stateless REST helpers (JSON responses, body parsing, validation).

Payloads carry every key discord.py 2.7 reads with ``data[...]`` (not just ``.get``), so the real
client parses them without KeyErrors. Records are what tests assert on: they keep history (every
content a message ever had) rather than only the latest state.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

Json = dict[str, Any]

DISCORD_EPOCH_MS = 1420070400000
CONTENT_LIMIT = 2000
ALL_PERMISSIONS = "2251799813685247"

# Gateway intents the emulator acts on (values from Discord's docs).
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Message flags.
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7

_MENTION = re.compile(r"<@!?(\d+)>")


class Snowflakes:
    """Monotonic snowflake ids with real timestamps, so ``created_at`` is sane in the client."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(candidate, self._last + 1)
        return self._last


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def mentioned_ids(content: str) -> list[int]:
    """User ids written as ``<@id>``/``<@!id>`` in the text, in order, without repeats."""
    return list(dict.fromkeys(int(m) for m in _MENTION.findall(content)))


class ApiError(Exception):
    """A Discord error response: ``{"message", "code"[, "errors"]}`` with an HTTP status."""

    def __init__(self, status: int, code: int, message: str, errors: Json | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: Json = {"message": message, "code": code}
        if errors is not None:
            self.body["errors"] = errors

    @classmethod
    def invalid_form(cls, path: list[str], code: str, message: str) -> ApiError:
        """50035 with Discord's nested ``errors`` tree: ``{"a": {"b": {"_errors": [...]}}}``."""
        tree: Json = {"_errors": [{"code": code, "message": message}]}
        for key in reversed(path):
            tree = {key: tree}
        return cls(400, 50035, "Invalid Form Body", tree)


def check_content(payload: Json, path: list[str]) -> None:
    content = payload.get("content")
    if isinstance(content, str) and len(content) > CONTENT_LIMIT:
        raise ApiError.invalid_form(
            [*path, "content"], "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length."
        )


@dataclass
class ChannelRecord:
    id: int
    type: int  # 0 guild text, 1 DM
    name: str = ""
    guild_id: int | None = None
    recipient_id: int | None = None


@dataclass
class MessageRecord:
    """One message as Discord stores it, plus every content and payload it went through."""

    id: int
    channel_id: int
    guild_id: int | None
    author: Json
    source: str  # "user" (sent by a driver), "channel", "original", "followup"
    content: str = ""
    history: list[str] = field(default_factory=list)
    components: list[Json] = field(default_factory=list)
    embeds: list[Json] = field(default_factory=list)
    attachments: list[Json] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    mentions: list[int] = field(default_factory=list)
    reference_id: int | None = None
    interaction_id: int | None = None
    payloads: list[Json] = field(default_factory=list)
    deleted: bool = False
    created_at: float = field(default_factory=time.monotonic)
    edited_at: list[float] = field(default_factory=list)

    @property
    def author_id(self) -> int:
        return int(self.author["id"])

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """A deferred response still showing "thinking…"."""
        return bool(self.flags & FLAG_LOADING)

    def custom_ids(self) -> dict[str, int]:
        """custom_id -> component type, through action rows and containers."""
        found: dict[str, int] = {}

        def walk(items: list[Json]) -> None:
            for item in items:
                if "custom_id" in item:
                    found[str(item["custom_id"])] = int(item["type"])
                walk(item.get("components") or [])
                if isinstance(item.get("component"), dict):
                    walk([item["component"]])
                if isinstance(item.get("accessory"), dict):
                    walk([item["accessory"]])

        walk(self.components)
        return found

    def apply(self, payload: Json) -> None:
        """Apply a create/edit body: only keys present change, as with Discord's PATCH."""
        self.payloads.append(payload)
        if "content" in payload:
            self.content = payload["content"] or ""
            self.history.append(self.content)
        if "components" in payload:
            self.components = list(payload["components"] or [])
        if "embeds" in payload:
            self.embeds = list(payload["embeds"] or [])
        if "attachments" in payload:
            self.attachments = list(payload["attachments"] or [])


@dataclass
class CallbackRecord:
    interaction_id: int
    type: int
    data: Json
    at: float = field(default_factory=time.monotonic)


@dataclass
class InteractionRecord:
    """An INTERACTION_CREATE the emulator sent, and how the bot answered it."""

    id: int
    token: str
    type: int  # 2 command, 3 component, 4 autocomplete, 5 modal submit
    user_id: int
    channel_id: int
    guild_id: int | None
    data: Json
    message_id: int | None = None  # the message a component/modal belongs to
    callbacks: list[CallbackRecord] = field(default_factory=list)
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    choices: list[Json] | None = None
    modal: Json | None = None
    created_at: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str | None:
        return self.data.get("name")

    @property
    def callback_types(self) -> list[int]:
        return [c.type for c in self.callbacks]


@dataclass
class RequestRecord:
    method: str
    path: str  # relative to /api/v10, without the query
    query: dict[str, str]
    body: Any
    status: int = 0
    fault: str | None = None


@dataclass
class Fault:
    method: str
    pattern: str
    kind: str
    times: int
    retry_after: float
    via: bool


def user_payload(user_id: int, name: str, *, bot: bool = False) -> Json:
    return {
        "id": str(user_id),
        "username": name,
        "global_name": None if bot else name.title(),
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "system": False,
        "public_flags": 0,
        "flags": 0,
    }


def member_payload(user: Json, *, permissions: bool = False) -> Json:
    member: Json = {
        "user": user,
        "roles": [],
        "joined_at": now_iso(),
        "nick": None,
        "avatar": None,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
    }
    if permissions:
        member["permissions"] = ALL_PERMISSIONS
    return member


def channel_payload(channel: ChannelRecord, users: dict[int, Json]) -> Json:
    if channel.type == 1:
        recipient = users[channel.recipient_id or 0]
        return {
            "id": str(channel.id),
            "type": 1,
            "recipients": [recipient],
            "last_message_id": None,
            "flags": 0,
        }
    return {
        "id": str(channel.id),
        "type": channel.type,
        "guild_id": str(channel.guild_id),
        "name": channel.name,
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "topic": None,
        "rate_limit_per_user": 0,
        "parent_id": None,
        "last_message_id": None,
        "flags": 0,
    }


def role_payload(role_id: int) -> Json:
    return {
        "id": str(role_id),
        "name": "@everyone",
        "color": 0,
        "hoist": False,
        "position": 0,
        "permissions": "1071698660929",
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def message_payload(
    record: MessageRecord, users: dict[int, Json], *, referenced: Json | None = None
) -> Json:
    data: Json = {
        "id": str(record.id),
        "channel_id": str(record.channel_id),
        "author": record.author,
        "content": record.content,
        "timestamp": now_iso(),
        "edited_timestamp": now_iso() if record.edited_at else None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [users[i] for i in record.mentions if i in users],
        "mention_roles": [],
        "attachments": record.attachments,
        "embeds": record.embeds,
        "components": record.components,
        "pinned": False,
        "type": record.type,
        "flags": record.flags,
    }
    if record.guild_id is not None:
        data["guild_id"] = str(record.guild_id)
    if record.reference_id is not None:
        data["message_reference"] = {
            "type": 0,
            "message_id": str(record.reference_id),
            "channel_id": str(record.channel_id),
        }
        if record.guild_id is not None:
            data["message_reference"]["guild_id"] = str(record.guild_id)
        data["referenced_message"] = referenced
    if record.source in ("original", "followup", "channel") and record.author.get("bot"):
        data["application_id"] = record.author["id"]
    if record.source in ("original", "followup"):
        data["webhook_id"] = record.author["id"]
    return data


def ready_payload(
    bot: Json, guild_id: int, session_id: str, resume_url: str, app_id: int, app_flags: int
) -> Json:
    """READY: discord.py needs user, guilds, session_id, resume_gateway_url and application."""
    return {
        "v": 10,
        "user": {**bot, "mfa_enabled": False, "email": None},
        "guilds": [{"id": str(guild_id), "unavailable": True}],
        "session_id": session_id,
        "resume_gateway_url": resume_url,
        "session_type": "normal",
        "application": {"id": str(app_id), "flags": app_flags},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": [],
        "user_settings": {},
        "_trace": ["parley-emulator"],
    }


def guild_payload(guild_id: int, owner_id: int, channels: list[Json], members: list[Json]) -> Json:
    return {
        "id": str(guild_id),
        "name": "Parley Test Guild",
        "icon": None,
        "owner_id": str(owner_id),
        "unavailable": False,
        "large": False,
        "member_count": len(members),
        "joined_at": now_iso(),
        "roles": [role_payload(guild_id)],
        "channels": channels,
        "members": members,
        "threads": [],
        "emojis": [],
        "stickers": [],
        "features": [],
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "preferred_locale": "en-US",
        "system_channel_id": None,
        "system_channel_flags": 0,
    }


def application_payload(app_id: int, owner: Json, bot: Json, flags: int) -> Json:
    """GET oauth2/applications/@me; interactions_endpoint_url must be None for gateway bots."""
    return {
        "id": str(app_id),
        "name": "Parley",
        "description": "",
        "icon": None,
        "bot_public": True,
        "bot_require_code_grant": False,
        "owner": owner,
        "team": None,
        "verify_key": "0" * 64,
        "flags": flags,
        "bot": bot,
        "summary": "",
        "interactions_endpoint_url": None,
        "redirect_uris": [],
        "tags": [],
    }


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    # body= (not text=) keeps the header exactly "application/json": discord.py compares it
    # verbatim and hands back a str when a charset is appended.
    out = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=out)


class RateLimitedError(ApiError):
    """A full bucket: a real 429 (with ``Via``), which discord.py waits out and retries."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(429, 0, "You are being rate limited.")
        self.retry_after = retry_after


def check_not_empty(body: Json) -> None:
    if not any(
        body.get(k)
        for k in ("content", "embeds", "components", "attachments", "sticker_ids", "poll")
    ):
        raise ApiError(400, 50006, "Cannot send an empty message")


def command_options(values: Mapping[str, Any], spec: list[Json]) -> list[Json]:
    """Typed option list; nested mappings become subcommands (type 1) or groups (type 2)."""
    by_name = {o["name"]: o for o in spec}
    out: list[Json] = []
    for name, value in values.items():
        known = by_name.get(name, {})
        if isinstance(value, Mapping):
            nested = known.get("options") or []
            is_group = any(isinstance(v, Mapping) for v in value.values())
            kind = int(known.get("type") or (2 if is_group else 1))
            out.append({"name": name, "type": kind, "options": command_options(value, nested)})
            continue
        if "type" in known:
            kind = int(known["type"])
        elif isinstance(value, bool):
            kind = 5
        elif isinstance(value, int):
            kind = 4
        elif isinstance(value, float):
            kind = 10
        else:
            kind = 3
        out.append({"name": name, "type": kind, "value": value})
    return out


async def read_body(request: web.Request) -> Any:
    """JSON body, or ``payload_json`` plus attachment names from a multipart upload."""
    if not request.can_read_body:
        return None
    if request.content_type == "multipart/form-data":
        payload: Any = {}
        files: list[str] = []
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "payload_json":
                payload = json.loads(await part.text())
            else:
                files.append(part.filename or str(part.name))
                await part.release()
        if isinstance(payload, dict) and files:
            payload.setdefault(
                "attachments", [{"id": i, "filename": f} for i, f in enumerate(files)]
            )
        return payload
    raw = await request.read()
    return json.loads(raw) if raw else None
