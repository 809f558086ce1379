"""Fit a conversation into the model's context: system prompt + as much history as fits.

Counting uses the engine's own tokenizer and chat template (``/tokenize``), so the budget is
exact. When an upper bound already proves the conversation fits (``ScaffoldBound``: every
token of content text covers at least one UTF-8 byte; ``KnownPrefix``: the engine's count of
the conversation's last prompt, plus that bound on what came since), the count is skipped:
most turns of most chats are far below the context, and each count is an HTTP round trip
plus the engine tokenizing the whole history. The oldest turns go first; the system prompt
and the current message are never dropped. A current message that cannot fit even alone is
refused with the numbers.

Trimming cuts at stable points in large steps (``cut_points``), not one turn at a time: the
engine reuses a prompt's KV only up to the first token that differs from its cached one, and
a start that moved every turn made it evaluate the whole history again on every turn (the
soak: 4,016 prompt tokens, 16 cached, 61 s before the first token). With a fixed start the
next turns only add their own tokens, until the history outgrows the budget again and the
start jumps a whole step (the engine moves the cached turns after the cut back, so even that
turn is cheap where it can: engine/kv_reuse.py).
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
    conversation: the same system prompt and ``turns`` history messages from ``start`` on
    (the first ones, unless it was trimmed), with the template's generation prompt. What came
    after is bounded as ``ScaffoldBound`` does it."""

    turns: int
    tokens: int
    start: int = 0

    def bound(self, history: Sequence[dict[str, str]]) -> int:
        """An upper bound on the prompt of ``history[start:]``, which starts with those turns:
        the counted prompt in place of the template's fixed tokens."""
        return ScaffoldBound(self.tokens).tokens(history[self.start + self.turns :])


STEP_OF_BUDGET = 0.5  # a trimming step: about half the history's budget...
STEP_BYTES_PER_TOKEN = 3.0  # ...counted in bytes: English runs ~4 bytes a token, so a step is
# ~3/8 of the budget there, and denser text (code, CJK) takes a larger share


def step_bytes(budget: int, step_of_budget: float = STEP_OF_BUDGET) -> int:
    """The bytes of history between two cut points, for a prompt budget of ``budget`` tokens
    (with ``step_of_budget`` 0, every user message is one: the oldest turn goes first)."""
    return max(int(budget * step_of_budget * STEP_BYTES_PER_TOKEN), 1)


def cut_points(history: Sequence[dict[str, str]], step: int) -> list[int]:
    """Where a trimmed prompt may start: 0, the first user message after each ``step`` bytes of
    history, and the current (last) message alone.

    History only grows at its end, so these points stay where they are turn after turn: a
    prompt that starts at one keeps starting there until the history outgrows the budget.
    """
    points, seen, mark = [0], 0, step
    for index, message in enumerate(history[:-1]):
        if seen >= mark and message["role"] == "user":
            points.append(index)
            mark = (seen // step + 1) * step
        seen += len(message["content"].encode()) + 1
    if len(history) - 1 > points[-1]:
        points.append(len(history) - 1)
    return points


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
    step_of_budget: float = STEP_OF_BUDGET,
) -> FittedConversation:
    """``history`` ends with the current user message. Budget: n_ctx - max_tokens.

    The prompt starts at the first of ``cut_points`` (``step_of_budget`` apart) whose rest
    fits. Costs nothing when
    ``bound`` or ``known`` (an earlier prompt's count, with the same system prompt) proves
    the start it had still fits, one token count when it fits anyway, two when the start
    moves one step, and a binary search over the cut points otherwise (a first long turn).
    """
    if not history:
        raise ValueError("history must end with the current message")
    budget = n_ctx - max_tokens
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    turns = [{"role": t.role, "content": t.content} for t in history]

    if bound is not None and (upper := bound.tokens(system + turns)) <= budget:
        return FittedConversation(system + turns, upper, 0, counted=False)
    points = cut_points(turns, step_bytes(budget, step_of_budget))
    if known is not None and known.start not in points[:-1]:
        known = None  # not a start this fit would choose: its count proves nothing here
    if known is not None and known.start + known.turns <= len(turns):
        start = known.start
        if (upper := known.bound(turns)) <= budget:
            return FittedConversation(system + turns[start:], upper, start, counted=False)
    sizes: dict[int, int] = {}

    async def cost(start: int) -> int:
        if start not in sizes:
            sizes[start] = await count_tokens(system + turns[start:])
        return sizes[start]

    async def fits(start: int) -> bool:
        return await cost(start) <= budget

    # Earlier points than the known start did not fit last turn, and history only grew.
    first = points.index(known.start) if known is not None else 0
    found = await _first_fitting(points[first:], fits)
    if found is None:
        raise await _too_long(system, await cost(len(turns) - 1), n_ctx, max_tokens, count_tokens)
    if found == len(turns) - 1 and found > 0:
        found = await _closest_fit(turns, points[points.index(found) - 1], fits)
    return FittedConversation(system + turns[found:], await cost(found), found)


async def _first_fitting(
    points: Sequence[int], fits: Callable[[int], Awaitable[bool]]
) -> int | None:
    """The first of ``points`` that fits (fitting only gets easier along them), None if the
    last does not. Tried in the order the answer is likely in: the first (the start the
    prompt had), the next (one step on), then a binary search over the rest."""
    for point in points[:2]:
        if await fits(point):
            return point
    rest = list(points[2:])
    if not rest or not await fits(rest[-1]):
        return None
    return await _bisect(rest, fits)


async def _bisect(candidates: Sequence[int], fits: Callable[[int], Awaitable[bool]]) -> int:
    """The first of ``candidates`` that fits, given that the last one does (fitting only
    gets easier along them)."""
    low, high = 0, len(candidates) - 1
    while low < high:
        middle = (low + high) // 2
        if await fits(candidates[middle]):
            high = middle
        else:
            low = middle + 1
    return candidates[high]


async def _closest_fit(
    turns: Sequence[dict[str, str]], after: int, fits: Callable[[int], Awaitable[bool]]
) -> int:
    """The earliest user message after ``after`` whose rest fits: when no cut point but the
    current message alone fits (single messages longer than a step), keep what still fits
    rather than nothing. The current message itself always fits here."""
    starts = [i for i in range(after + 1, len(turns)) if turns[i]["role"] == "user"]
    return await _bisect(starts, fits)


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
