"""Who may talk and who is an admin: one rule for every platform (bot/chat/access.py), asked
of a real service for the people allowed at runtime and the bans."""

from __future__ import annotations

import pytest

from bot.chat.access import (
    BANNED,
    NOT_ALLOWED,
    Access,
    Asker,
    PlatformRules,
    admin_keys,
    open_to_anyone,
    platform_rules,
    split_user_key,
    user_key,
)
from bot.chat.service import ChatService
from bot.settings import load_settings
from tests.bot.scripted_service import scripted  # noqa: F401 (a fixture)
from tests.emulators.scripted_engine import ScriptedEngine

LISTED = PlatformRules(
    users=frozenset({"alice"}), chats=frozenset({"home"}), roles=frozenset({"crew"}),
    admins=frozenset({"admin"}),
)  # fmt: skip
OPEN = PlatformRules()


@pytest.mark.parametrize(
    ("rules", "user", "chat", "roles", "may"),
    [
        (OPEN, "anyone", "anywhere", (), True),  # no lists: everyone
        (LISTED, "alice", "home", (), True),
        (LISTED, "alice", "elsewhere", (), False),  # listed people, in listed chats only
        (LISTED, "bob", "home", (), False),
        (LISTED, "bob", "home", ("crew",), True),  # or holding a listed role
        (LISTED, "admin", "elsewhere", (), True),  # admins anywhere
        (LISTED, "runtime", "elsewhere", (), True),  # `parley admin users allow`: anywhere
        (PlatformRules(chats=frozenset({"home"})), "bob", "home", (), True),
    ],
)
async def test_one_rule_decides_who_may_talk(
    scripted: tuple[ScriptedEngine, ChatService],  # noqa: F811
    rules: PlatformRules, user: str, chat: str, roles: tuple[str, ...], may: bool,
) -> None:  # fmt: skip
    _, service = scripted
    service.allowed_at_runtime.add(("chat", "runtime"))
    access = Access({"chat": rules}, service)
    asker = Asker("chat", user, chat, frozenset(roles))
    assert access.may_talk(asker) is may
    assert await access.refusal(asker) == (None if may else NOT_ALLOWED)
    assert access.is_admin(asker) is (user == "admin" and rules is LISTED)


async def test_a_ban_shuts_out_even_an_admin_and_the_terminal_is_the_operators(
    scripted: tuple[ScriptedEngine, ChatService],  # noqa: F811
) -> None:
    _, service = scripted
    access = Access({"chat": LISTED}, service)
    admin = Asker("chat", "admin", "home")
    await service.store.ban("chat", "admin")
    assert access.may_talk(admin) and await access.refusal(admin) == BANNED
    operator = Asker("console", "root", "terminal")
    assert access.is_admin(operator) and await access.refusal(operator) is None
    assert not access.is_admin(Asker("elsewhere", "someone", "x"))  # no rules: talk, not admin


def test_the_settings_lists_and_the_user_key() -> None:
    settings = load_settings(
        telegram_allowed_users="5,6", telegram_allowed_chats="-100", telegram_admin_ids="1",
        discord_allowed_roles="9", discord_admin_ids="2,3",
    )  # fmt: skip
    rules = platform_rules(settings)
    assert rules["telegram"] == PlatformRules(
        users=frozenset({"5", "6"}), chats=frozenset({"-100"}), admins=frozenset({"1"})
    )
    assert rules["discord"].roles == frozenset({"9"}) and not rules["discord"].chats
    assert admin_keys(settings) == {"telegram:1", "discord:2", "discord:3"}
    assert user_key("discord", "2") == "discord:2"
    assert split_user_key("discord:2") == ("discord", "2")
    assert split_user_key("discord") is None and split_user_key(":2") is None


def test_a_platform_without_lists_is_open_to_anyone() -> None:
    both = {"telegram_token": "1:tok", "discord_token": "d-token"}
    assert open_to_anyone(load_settings(**both)) == ["discord", "telegram"]
    closed = load_settings(**both, telegram_allowed_chats="-100", discord_allowed_roles="9")
    assert open_to_anyone(closed) == []
    assert open_to_anyone(load_settings(telegram_allowed_users="5")) == []  # no token: no bot
    assert open_to_anyone(load_settings(telegram_token="1:tok", discord_allowed_users="5")) == [
        "telegram"
    ]
