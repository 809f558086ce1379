"""The shape of a chat command and of a button: what each is (``Command``, ``Button``), what it
is called with (``CommandCall``, ``Press``) and what it answers (``Reply``). Platform-neutral;
the values are plain data, used on the bot's event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.chat.access import Asker
from bot.chat.service import ChatService


@dataclass(frozen=True)
class Reply:
    """What a command or a button press answers, for the adapter to show."""

    text: str
    # Said only where the platform requires an answer (a Discord interaction, a button press):
    # an acknowledgement the chat shows anyway ("Stopping.": the answer ends "⏹ stopped"), or
    # an access refusal, which a chat keeps from strangers by saying nothing.
    quiet: bool = False
    # Shown to the asker alone where the platform can (Discord's ephemeral responses).
    private: bool = True


@dataclass(frozen=True)
class Place:
    """What a command needs to know of the platform it answers on (constants per adapter)."""

    message_limit: int  # characters one message holds whatever they are
    how_to_talk: str  # /help's line on how to talk to the bot here


@dataclass(frozen=True)
class CommandCall:
    """One use of a command, parsed by an adapter."""

    service: ChatService
    asker: Asker
    user_name: str
    argument: str  # what follows the command, stripped ("" when nothing)
    place: Place
    # Tells the asker that a slow step begins (a message, or Discord's "thinking…").
    progress: Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Argument:
    """A command's one optional text argument."""

    name: str
    description: str  # at most 100 characters (Discord's limit)
    # When set, only admins may give the argument; others get this refusal.
    admins_only: str | None = None
    # Values to offer while it is typed (Discord's autocomplete).
    suggestions: Callable[[ChatService], list[str]] | None = None


@dataclass(frozen=True)
class Command:
    name: str  # lowercase letters, digits and "_", at most 32 (Telegram's and Discord's rule)
    description: str  # one line, at most 100 characters: menus and /help show it
    run: Callable[[CommandCall], Awaitable[Reply]]
    argument: Argument | None = None
    admins_only: str | None = None  # when set, only admins may use it; others get this refusal


@dataclass(frozen=True)
class Press:
    """A press of a button on an answer, by the person who asked for that answer."""

    service: ChatService
    platform: str
    chat_id: str
    owner_id: str


@dataclass(frozen=True)
class Button:
    """A button under an answer; only the person who asked for the answer may press it."""

    id: str  # the first field of its callback data / custom_id: letters only
    label: str
    emoji: str
    verb: str  # "Only the person who asked can {verb} this answer."
    run: Callable[[Press], Awaitable[Reply]]
