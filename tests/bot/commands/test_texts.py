"""The texts that depend on the platform: /help's listing and /system's cut of a long prompt."""

from __future__ import annotations

import pytest

from bot.commands import COMMANDS
from bot.commands.texts import ABOUT, PROMPT_SHOWN, help_text, shown_prompt, usage


@pytest.mark.parametrize("limit", [2048, 2000, 120])
@pytest.mark.parametrize("length", [0, 10, 119, 1980, 1981, 2100, 5000, 123_456])
def test_a_shown_prompt_always_fits_one_message_and_says_what_it_left_out(
    limit: int, length: int
) -> None:
    prompt = "".join(chr(ord("a") + i % 26) for i in range(length))
    shown = shown_prompt(prompt, limit)
    assert len(shown) <= limit
    assert shown.startswith(PROMPT_SHOWN)
    body = shown.removeprefix(PROMPT_SHOWN)
    if len(PROMPT_SHOWN) + length <= limit:
        assert body == prompt
    else:
        kept, note = body.split("…", 1)
        assert prompt.startswith(kept) and len(kept) > limit // 2  # most of the room is prompt
        assert note == f" (and {length - len(kept)} more characters)"


def test_help_lists_every_command_with_its_argument_after_how_to_talk_here() -> None:
    text = help_text(COMMANDS, "DM me.")
    assert text.startswith(f"{ABOUT}\nDM me.\n\n")
    lines = text.split("\n\n", 1)[1].splitlines()
    assert lines == [f"{usage(c)} — {c.description}" for c in COMMANDS]
    assert "/model [name] — " in text and "/reset — " in text


def test_every_command_fits_both_platforms_menus() -> None:
    for command in COMMANDS:
        assert command.name.isascii() and command.name.islower() and len(command.name) <= 32
        assert 0 < len(command.description) <= 100
        if command.argument is not None:
            assert command.argument.name.islower() and len(command.argument.description) <= 100
    assert len({c.name for c in COMMANDS}) == len(COMMANDS)
