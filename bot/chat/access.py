"""Who may talk to the bot and who is its admin, decided here for every platform; and the one
owner of the ``platform:id`` user key.

The rule, the same on every platform: an admin, or someone allowed at runtime (`parley admin
users allow`), may talk anywhere; anyone else needs an allowed chat (when chats are listed) and
to be a listed user or hold a listed role (when users or roles are listed). A ban overrides it
all. The terminal's one user is the operator: always allowed, an admin. Rate limits and quotas
are counted beside the queue (bot/chat/limits.py), for the people this lets in.

Adapters ask ``Access`` before a command or a message reaches the bot; the service refuses
banned people's messages itself (in the transaction that would store them). Event-loop-only:
``refusal`` reads bans from the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Protocol

from bot.settings import Settings

NOT_ALLOWED = "You are not allowed to use this bot here."
BANNED = "You have been banned from using this bot."
OPERATOR_PLATFORMS = frozenset({"console"})  # the terminal's one user runs the bot


def user_key(platform: str, user_id: str) -> str:
    """A person as the bot names them across chats: "platform:id" (fairness, limits, admin)."""
    return f"{platform}:{user_id}"


def split_user_key(key: str) -> tuple[str, str] | None:
    """``user_key``'s parts again, or None when ``key`` is not one."""
    platform, _, user_id = key.partition(":")
    return (platform, user_id) if platform and user_id else None


@dataclass(frozen=True)
class Asker:
    """Who asks, where: ids as the platform gives them, as strings."""

    platform: str
    user_id: str
    chat_id: str
    roles: frozenset[str] = frozenset()  # Discord roles; other platforms have none


@dataclass(frozen=True)
class PlatformRules:
    """One platform's lists from the settings; an empty list limits nothing."""

    users: frozenset[str] = frozenset()
    chats: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    admins: frozenset[str] = frozenset()


def _ids(numbers: Iterable[int]) -> frozenset[str]:
    return frozenset(str(number) for number in numbers)


def platform_rules(settings: Settings) -> dict[str, PlatformRules]:
    """Each platform's lists, from TELEGRAM_* and DISCORD_* settings."""
    return {
        "telegram": PlatformRules(
            users=_ids(settings.telegram_allowed_users),
            chats=_ids(settings.telegram_allowed_chats),
            admins=_ids(settings.telegram_admin_ids),
        ),
        "discord": PlatformRules(
            users=_ids(settings.discord_allowed_users),
            chats=_ids(settings.discord_allowed_channels),
            roles=_ids(settings.discord_allowed_roles),
            admins=_ids(settings.discord_admin_ids),
        ),
    }


# The settings that close each platform to strangers, for the warning ``open_to_anyone`` feeds.
LIST_SETTINGS = {
    "telegram": "TELEGRAM_ALLOWED_USERS or TELEGRAM_ALLOWED_CHATS",
    "discord": "DISCORD_ALLOWED_USERS, DISCORD_ALLOWED_ROLES or DISCORD_ALLOWED_CHANNELS",
}


def open_to_anyone(settings: Settings) -> list[str]:
    """The platforms with a token whose lists let anyone in: no users, roles or chats listed,
    so whoever finds the bot may use it and spend this machine's compute."""
    rules = platform_rules(settings)
    return [
        platform
        for platform in settings.platform_tokens
        if not (rules[platform].users or rules[platform].roles or rules[platform].chats)
    ]


def admin_keys(settings: Settings) -> frozenset[str]:
    """Every platform's admins as user keys (no limit applies to them)."""
    return frozenset(
        user_key(platform, admin)
        for platform, rules in platform_rules(settings).items()
        for admin in rules.admins
    )


class People(Protocol):
    """What the running bot knows of people beyond the settings (the chat service)."""

    @property
    def allowed_at_runtime(self) -> Set[tuple[str, str]]:
        """(platform, user id) pairs `parley admin users allow` let in."""

    async def is_banned(self, platform: str, user_id: str) -> bool:
        """Whether `parley admin users ban` shut this person out."""


class Access:
    """The decision. Cheap to ask (``may_talk`` and ``is_admin`` read memory only)."""

    def __init__(self, rules: Mapping[str, PlatformRules], people: People) -> None:
        """``rules``: per platform; a platform without rules lets everyone talk."""
        self.rules = rules
        self.people = people

    @classmethod
    def from_settings(cls, settings: Settings, people: People) -> Access:
        return cls(platform_rules(settings), people)

    def is_admin(self, asker: Asker) -> bool:
        if asker.platform in OPERATOR_PLATFORMS:
            return True
        rules = self.rules.get(asker.platform)
        return rules is not None and asker.user_id in rules.admins

    def may_talk(self, asker: Asker) -> bool:
        """The lists' answer (bans aside: see ``refusal``)."""
        rules = self.rules.get(asker.platform)
        if rules is None or self.is_admin(asker):
            return True
        if (asker.platform, asker.user_id) in self.people.allowed_at_runtime:
            return True
        if rules.chats and asker.chat_id not in rules.chats:
            return False
        if not rules.users and not rules.roles:
            return True
        return asker.user_id in rules.users or bool(asker.roles & rules.roles)

    async def refusal(self, asker: Asker) -> str | None:
        """Why ``asker`` may not use the bot here (not listed, or banned), or None."""
        if not self.may_talk(asker):
            return NOT_ALLOWED
        if await self.people.is_banned(asker.platform, asker.user_id):
            return BANNED
        return None
