"""Fit a conversation into the model's context: system prompt + as much history as fits.

Counting uses the engine's own tokenizer and chat template (``/tokenize``), so the budget is
exact. When an upper bound already proves the conversation fits (``ScaffoldBound``: every
token of content text covers at least one UTF-8 byte; ``KnownPrefix``: the engine's count of
the conversation's last prompt, plus that bound on what came since), the count is skipped:
most turns of most chats are far below the context, and each count is an HTTP round trip
plus the engine tokenizing the whole history. The oldest turns go first; the system prompt
and the current message are never dropped. A current message that cannot fit even alone is
refused with the numbers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bot.errors import TooLong

CountTokens = Callable[[Sequence[dict[str, str]]], Awaitable[int]]


class Turn(NamedTuple):
    """One history message as the prompt sees it: a tuple, as one is built per stored message
    for every answer (0.18 µs against a frozen dataclass's 0.30)."""

    role: str
    content: str


@dataclass(frozen=True)
class FittedConversation:
    messages: list[dict[str, str]]
    prompt_tokens: int  # exact, or an upper bound when ``counted`` is False
    dropped: int  # history messages left out
    counted: bool = True


PER_MESSAGE = 8  # scaffolding tokens one message may add (Gemma, ChatML, Llama 3 add 4-6)
MARGIN = 16


@dataclass(frozen=True)
class ScaffoldBound:
    """An upper bound on a conversation's tokens without tokenizing it: the template's fixed
    tokens (``fixed``, measured once per model on an empty conversation), ``PER_MESSAGE``
    per message, and one token per UTF-8 byte of content (plus one for a leading-space
    marker), plus ``MARGIN``."""

    fixed: int

    def tokens(self, messages: Sequence[dict[str, str]]) -> int:
        content = sum(len(m["content"].encode()) + 1 for m in messages)
        return self.fixed + MARGIN + PER_MESSAGE * len(messages) + content


@dataclass(frozen=True)
class KnownPrefix:
    """The engine's own count (``tokens``, from its usage) of an earlier prompt of this
    conversation: the same system prompt and its first ``turns`` history messages, with the
    template's generation prompt. What came after is bounded as ``ScaffoldBound`` does it."""

    turns: int
    tokens: int

    def bound(self, history: Sequence[dict[str, str]]) -> int:
        """An upper bound on the prompt of ``history``, which starts with those turns: the
        counted prompt in place of the template's fixed tokens."""
        return ScaffoldBound(self.tokens).tokens(history[self.turns :])


ESTIMATE_BYTES_PER_TOKEN = 2.5  # real tokenizers average ~4 bytes of English a token
ESTIMATE_FIXED = 32  # a template's fixed tokens, generously


def estimate_tokens(messages: Sequence[dict[str, str]]) -> int:
    """A count that errs high, for servers that cannot tokenize for us: about 60% above the
    real count for English (a CJK character is 3 bytes, about a token: still above)."""
    content = sum(len(m["content"].encode()) for m in messages)
    return (
        ESTIMATE_FIXED + PER_MESSAGE * len(messages) + int(content / ESTIMATE_BYTES_PER_TOKEN) + 1
    )


async def measure_scaffold(count_tokens: CountTokens) -> ScaffoldBound:
    """The template's tokens around an empty system and user message."""
    empty = [{"role": "system", "content": ""}, {"role": "user", "content": ""}]
    return ScaffoldBound(await count_tokens(empty))


async def fit_conversation(
    system_prompt: str,
    history: Sequence[Turn],
    *,
    n_ctx: int,
    max_tokens: int,
    count_tokens: CountTokens,
    bound: ScaffoldBound | None = None,
    known: KnownPrefix | None = None,
) -> FittedConversation:
    """``history`` ends with the current user message. Budget: n_ctx - max_tokens.

    Costs nothing when ``bound`` or ``known`` (an earlier prompt's count, with the same
    system prompt) proves everything fits, one token count when it fits anyway, and a binary
    search (log2 of the history length) when older turns must go.
    """
    if not history:
        raise ValueError("history must end with the current message")
    budget = n_ctx - max_tokens
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    turns = [{"role": t.role, "content": t.content} for t in history]

    if bound is not None and (upper := bound.tokens(system + turns)) <= budget:
        return FittedConversation(system + turns, upper, 0, counted=False)
    if known is not None and known.turns <= len(turns) and (upper := known.bound(turns)) <= budget:
        return FittedConversation(system + turns, upper, 0, counted=False)
    sizes: dict[int, int] = {}

    async def cost(dropped: int) -> int:
        if dropped not in sizes:
            sizes[dropped] = await count_tokens(system + _start_with_user(turns[dropped:]))
        return sizes[dropped]

    if await cost(0) <= budget:
        return FittedConversation(system + turns, await cost(0), 0)
    alone = await cost(len(turns) - 1)
    if alone > budget:
        raise await _too_long(system, alone, n_ctx, max_tokens, count_tokens)
    low, high = 1, len(turns) - 1  # the fewest dropped messages that fit lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        if await cost(middle) <= budget:
            high = middle
        else:
            low = middle + 1
    kept = _start_with_user(turns[high:])
    return FittedConversation(system + kept, await cost(high), len(turns) - len(kept))


async def _too_long(
    system: list[dict[str, str]], alone: int, n_ctx: int, max_tokens: int, count: CountTokens
) -> TooLong:
    """Name what is too long: a system prompt that cannot fit with any message, else the
    message (with the system prompt's share, which the user may not know about)."""
    budget = n_ctx - max_tokens
    room = f"only {budget} are available ({n_ctx} minus {max_tokens} for the answer)"
    share = ""
    if system:
        prompt = await count([*system, {"role": "user", "content": ""}])
        if prompt > budget:
            return TooLong(
                f"Your system prompt is too long for this model: it needs {prompt} tokens of "
                f"context but {room}. Please set a shorter one."
            )
        share = f" ({prompt} of them for the system prompt)"
    return TooLong(
        f"Your message is too long for this model: it needs {alone} tokens of context"
        f"{share} but {room}. Please shorten it."
    )


def _start_with_user(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """Templates such as Gemma's expect the first turn after the system prompt to be the user's."""
    start = 0
    while start < len(turns) - 1 and turns[start]["role"] != "user":
        start += 1
    return turns[start:]
