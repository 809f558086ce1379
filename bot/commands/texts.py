"""What the commands and buttons say, written once for every platform; and the two texts that
depend on the platform's facts (the /help listing, a long system prompt cut to one message).
Pure functions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.commands.shape import Command

ABOUT = "I answer with a language model running on my operator's machine."
TEXT_ONLY = "I can only read text messages."
NEW_CONVERSATION = "Started a new conversation."
STOPPING = "Stopping."
NOTHING_TO_STOP = "Nothing to stop."
ONLY_ADMINS_SWITCH = "Only the bot's admins can switch models."
PROMPT_SET = "Your system prompt is set."
PROMPT_DEFAULT = "Your system prompt is back to the default."
PROMPT_RESET_WORD = "reset"
PROMPT_SHOWN = "Your system prompt:\n"


def answering_with(model: str) -> str:
    return f"Answering with {model}."


def switching_to(model: str) -> str:
    return f"Switching to {model}… replies being written finish first."


def could_not_switch(why: object) -> str:
    return f"Could not switch: {why}"


def now_answering_with(model: str) -> str:
    return f"Now answering with {model}."


def only_the_asker(verb: str) -> str:
    return f"Only the person who asked can {verb} this answer."


def usage(command: Command) -> str:
    """``/name`` or ``/name [argument]``."""
    argument = f" [{command.argument.name}]" if command.argument else ""
    return f"/{command.name}{argument}"


def help_text(commands: Iterable[Command], how_to_talk: str) -> str:
    listing = "\n".join(f"{usage(c)} — {c.description}" for c in commands)
    return f"{ABOUT}\n{how_to_talk}\n\n{listing}"


def shown_prompt(prompt: str, message_limit: int) -> str:
    """/system's answer: the prompt, cut (and saying so) so that it fits one message."""
    if len(PROMPT_SHOWN) + len(prompt) <= message_limit:
        return PROMPT_SHOWN + prompt
    longest_tail = len(_cut_note(len(prompt)))  # the note never grows as more is kept
    kept = max(0, message_limit - len(PROMPT_SHOWN) - longest_tail)
    return PROMPT_SHOWN + prompt[:kept] + _cut_note(len(prompt) - kept)


def _cut_note(left_out: int) -> str:
    return f"… (and {left_out} more characters)"
