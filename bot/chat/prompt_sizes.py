"""Each conversation's last prompt size, as the engine counted it, so the next turn's fit
needs no ``/tokenize`` round trip (bot/chat/context_fit.py ``KnownPrefix``).

A byte bound alone stops proving a chat fits after some 3,000 bytes of history with a 4k
context: from then on every message paid a count of the whole history (an HTTP round trip,
the engine templating and tokenizing it) before its answer could start. The engine reports
the prompt's exact size with every answer; the next prompt is that one plus the answer and
the new message, which the byte bound covers tightly.

The count is reused only for the same model and system prompt, and only when the earlier
prompt's messages appear unbroken in the new history (same ids, in order: a reply stored
late or a wiped history makes it unusable). A trimmed prompt is remembered with the messages
it kept, so the next turn keeps the same start without a count while it still fits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from bot.chat.context_fit import KnownPrefix

REMEMBERED = 10_000  # conversations; each entry is a few dozen bytes


@dataclass(frozen=True)
class _Counted:
    model: str
    system: str
    ids: tuple[int, ...]  # the history messages it covered, in order
    tokens: int


class PromptSizes:
    """The last counted prompt of the most recently answered conversations."""

    def __init__(self, limit: int = REMEMBERED) -> None:
        self._limit = limit
        self._counted: OrderedDict[int, _Counted] = OrderedDict()

    def remember(
        self, conversation: int, model: str, system: str, ids: Sequence[int], tokens: int
    ) -> None:
        """The engine counted ``tokens`` for ``system`` and the messages ``ids`` (the history's
        last ones: all of them, or those a trimmed prompt kept)."""
        if tokens <= 0 or not ids:  # a server that reports no usage
            return
        self._counted[conversation] = _Counted(model, system, tuple(ids), tokens)
        self._counted.move_to_end(conversation)
        while len(self._counted) > self._limit:
            self._counted.popitem(last=False)

    def known(
        self, conversation: int, model: str, system: str, ids: Sequence[int]
    ) -> KnownPrefix | None:
        """The count to start from for a prompt of ``system`` and the messages ``ids``."""
        counted = self._counted.get(conversation)
        if counted is None or (counted.model, counted.system) != (model, system):
            return None
        try:
            start = list(ids).index(counted.ids[0])
        except ValueError:
            return None
        if tuple(ids[start : start + len(counted.ids)]) != counted.ids:
            return None
        return KnownPrefix(len(counted.ids), counted.tokens, start)
