"""What an adapter hands the bot, and what the bot calls back to show a reply.

Adapters parse their platform's events into ``Incoming`` and implement ``ReplySink`` (the
platform adapters through ``bot.replies.streamed_edits.StreamedReply``, the terminal by printing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bot.engines.client import Usage
from common.log_context import new_request_id

State = Literal["done", "stopped", "error"]


@dataclass(frozen=True)
class Outcome:
    """How a reply ended, for the sink's final rendering and the terminal's stats lines."""

    state: State
    text: str
    error: str | None = None
    usage: Usage | None = None
    model: str = ""
    dropped: int = 0  # history messages left out to fit the context


class ReplySink(Protocol):
    """One reply on one platform surface. Called from the bot's event loop."""

    async def notice(self, text: str) -> None:
        """A short standalone answer: a refusal, "busy", a command's result."""

    async def accepted(self, position: int | None) -> None:
        """The message is stored and queued: ``position`` is its 1-based place in the service
        order, or None when an answer starts right away. Deltas may arrive before this
        returns."""

    async def queued(self, position: int) -> None:
        """The request's place in the queue changed (told every few seconds, not each move)."""

    async def started(self) -> None:
        """A worker took the request: the answer is being written now (returns at once)."""

    def delta(self, text: str) -> None:
        """More of the answer (never blocks)."""

    async def restarted(self) -> None:
        """The engine died mid-answer and it is being written again: drop the text so far."""

    async def finished(self, outcome: Outcome) -> None:
        """The answer is complete, stopped or failed; show the final state."""

    def reference(self) -> str | None:
        """Where the reply is shown on the platform once accepted (its placeholder's id), so
        a restarted bot can finish it there; None if it cannot be found again."""


@dataclass(frozen=True)
class Incoming:
    """One user message, already stripped of platform details (mentions, commands)."""

    platform: str
    chat_id: str
    user_id: str
    user_name: str
    text: str
    reply: ReplySink
    source_ref: str | None = None  # the message's id on its platform
    # Follows the message through the bot's and the engine's log lines (X-Request-Id).
    request_id: str = field(default_factory=new_request_id)


NO_TEXT = "Send me some text and I'll answer."
NOT_UNICODE = (
    "I can't read that message: it has characters that are not valid Unicode (broken or "
    "half-encoded text), so nothing was stored. Please send it again as plain text."
)


def is_valid_unicode(text: str) -> bool:
    """False when ``text`` holds lone surrogates. A platform's JSON can carry them (``"\\ud800"``)
    and the terminal turns undecodable bytes into them, but they are not text: SQLite, UTF-8
    and the platforms' APIs all refuse them, so the bot must refuse them first."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# What shows as nothing at all: whitespace, C0/C1 controls (NUL included), and Unicode's
# Default_Ignorable_Code_Point set (zero-width spaces and joiners, word joiner, BOM, bidi marks,
# variation selectors, Hangul fillers, tags), plus the Braille blank, which apps use as an
# "invisible" character. A message of only these is empty to the person who sent it; answering
# it would spend an engine slot on a prompt the user cannot see.
_BLANK = re.compile(
    r"[\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    r"\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0"
    r"\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]*"
)


def is_blank(text: str) -> bool:
    """True when ``text`` has nothing a person could see (see ``_BLANK``)."""
    return _BLANK.fullmatch(text) is not None


def text_problem(text: str) -> str | None:
    """Why a message cannot be answered as it is (nothing visible, or not text), for the
    user."""
    if is_blank(text):
        return NO_TEXT
    return None if is_valid_unicode(text) else NOT_UNICODE
