"""Running a command: who may (access, then admins-only arguments), what each says, and the
parsing of "/name[@bot] argument" lines; on a real service answering from a scripted engine."""

from __future__ import annotations

import pytest

from bot.chat.access import BANNED, NOT_ALLOWED, Access, Asker, PlatformRules
from bot.chat.service import ChatService
from bot.commands import (
    COMMANDS,
    CommandCall,
    Place,
    Reply,
    find_command,
    run_command,
    split_command,
)
from bot.commands import texts as say
from tests.bot.scripted_service import scripted  # noqa: F401 (a fixture)
from tests.emulators.scripted_engine import ScriptedEngine

PLACE = Place(message_limit=200, how_to_talk="Write to me.")
ADMIN, ALICE, BOB = "1", "2", "3"
RULES = {"test": PlatformRules(users=frozenset({ALICE}), admins=frozenset({ADMIN}))}


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("/reset", ("reset", "")),
        ("  /System@parley_bot  be brief \n and kind ", ("system", "be brief \n and kind")),
        ("/model\nsmall.gguf", ("model", "small.gguf")),
        ("/", None),
        ("hello /reset", None),
        ("", None),
    ],
)
def test_a_command_line_is_split_into_its_name_and_argument(
    line: str, parsed: tuple[str, str] | None
) -> None:
    assert split_command(line) == parsed


async def run(
    service: ChatService, user: str, name: str, argument: str = "", said: list[str] | None = None
) -> Reply:
    """``name`` used by ``user``; what it said on the way goes to ``said`` (none by default)."""

    async def progress(text: str) -> None:
        (said if said is not None else unexpected).append(text)

    unexpected: list[str] = []
    command = find_command(name)
    assert command is not None
    call = CommandCall(service, Asker("test", user, "chat"), user, argument, PLACE, progress)
    reply = await run_command(command, call, Access(RULES, service))
    assert unexpected == []
    return reply


async def test_strangers_and_banned_people_get_a_quiet_refusal_and_change_nothing(
    scripted: tuple[ScriptedEngine, ChatService],  # noqa: F811
) -> None:
    _, service = scripted
    assert await run(service, BOB, "system", "Be a pirate.") == Reply(NOT_ALLOWED, quiet=True)
    await service.store.ban("test", ALICE)
    assert await run(service, ALICE, "reset") == Reply(BANNED, quiet=True)
    assert await service.system_prompt_for("test", BOB, "") == service.system_prompt
    service.allowed_at_runtime.add(("test", BOB))
    assert await run(service, BOB, "help") == Reply(say.help_text(COMMANDS, PLACE.how_to_talk))


async def test_only_admins_may_give_model_a_name_and_anyone_may_see_it(
    scripted: tuple[ScriptedEngine, ChatService],  # noqa: F811
) -> None:
    _, service = scripted
    assert await run(service, ALICE, "model") == Reply(say.answering_with(service.model))
    assert await run(service, ALICE, "model", "other.gguf") == Reply(say.ONLY_ADMINS_SWITCH)
    said: list[str] = []
    refused = await run(service, ADMIN, "model", "other.gguf", said)  # no ADMIN_TOKEN here
    assert said == [say.switching_to("other.gguf")]
    assert refused.text.startswith("Could not switch: ") and "ADMIN_TOKEN" in refused.text


async def test_system_sets_shows_cut_and_resets_a_prompt(
    scripted: tuple[ScriptedEngine, ChatService],  # noqa: F811
) -> None:
    _, service = scripted
    assert await run(service, ALICE, "system", "x" * 500) == Reply(say.PROMPT_SET)
    shown = await run(service, ALICE, "system")
    assert shown.text == say.shown_prompt("x" * 500, PLACE.message_limit)
    assert len(shown.text) <= PLACE.message_limit
    assert await run(service, ALICE, "system", "RESET") == Reply(say.PROMPT_DEFAULT)
    assert await service.system_prompt_for("test", ALICE, "") == service.system_prompt


async def test_stop_with_nothing_running_says_so(
    scripted: tuple[ScriptedEngine, ChatService],  # noqa: F811
) -> None:
    _, service = scripted
    assert await run(service, ALICE, "stop") == Reply(say.NOTHING_TO_STOP)
