"""Fitting history into the context, counted with the real engine's tokenizer."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence

import aiohttp
import pytest

from bot.chat.context_fit import (
    KnownPrefix,
    Turn,
    cut_points,
    fit_conversation,
    measure_scaffold,
    step_bytes,
)
from bot.engines.client import EngineClient, Sampling, StreamEnd
from bot.errors import TooLong
from tests.engine_process import EngineProcess

pytestmark = pytest.mark.model


@pytest.fixture
async def client(engine: EngineProcess) -> AsyncIterator[EngineClient]:
    async with aiohttp.ClientSession() as session:
        yield EngineClient(engine.url, session)


def history(turns: int, words: int = 30) -> list[Turn]:
    out = []
    for i in range(turns):
        out.append(Turn("user", f"question {i}: " + "word " * words))
        out.append(Turn("assistant", f"answer {i}: " + "reply " * words))
    out.append(Turn("user", "the current question"))
    return out


async def test_a_short_conversation_is_sent_whole(client: EngineClient) -> None:
    fitted = await fit_conversation(
        "Be brief.", history(2), n_ctx=512, max_tokens=64, count_tokens=client.count_tokens
    )
    assert fitted.dropped == 0 and len(fitted.messages) == 6
    assert fitted.prompt_tokens == await client.count_tokens(fitted.messages)


async def test_the_oldest_turns_go_first_and_the_system_prompt_and_question_stay(
    client: EngineClient,
) -> None:
    turns = history(12)
    fitted = await fit_conversation(
        "Be brief.", turns, n_ctx=512, max_tokens=128, count_tokens=client.count_tokens
    )
    assert fitted.dropped > 0
    assert fitted.prompt_tokens <= 512 - 128
    assert fitted.messages[0] == {"role": "system", "content": "Be brief."}
    assert fitted.messages[1]["role"] == "user"
    assert fitted.messages[-1] == {"role": "user", "content": "the current question"}
    kept = [m["content"] for m in fitted.messages[1:]]
    assert kept == [t.content for t in turns[-len(kept) :]]  # a contiguous, newest tail
    points = cut_points([{"role": t.role, "content": t.content} for t in turns], step_bytes(384))
    earlier = points[points.index(fitted.dropped) - 1]  # it starts at the first point that fits
    one_more = [{"role": "system", "content": "Be brief."}] + [
        {"role": t.role, "content": t.content} for t in turns[earlier:]
    ]
    assert await client.count_tokens(one_more) > 512 - 128


async def test_a_message_too_long_on_its_own_is_refused_with_numbers(
    client: EngineClient,
) -> None:
    with pytest.raises(TooLong, match=r"needs \d+ tokens.*only 384"):
        await fit_conversation(
            "Be brief.", [Turn("user", "word " * 600)], n_ctx=512, max_tokens=128,
            count_tokens=client.count_tokens,
        )  # fmt: skip


TEXTS = [
    "",
    " ",
    "a",
    "Hello, world!",
    "日本語のテキストです。",
    "👩‍👩‍👧‍👦🏳️‍🌈" * 20,
    "```python\nprint('x')\n```",
    "\n\n\n   \t",
    "<end_of_turn><start_of_turn>model {{ 7*7 }}",
    "word " * 300,
    "".join(chr(c) for c in range(0x20, 0x2FF)),
]


async def test_the_scaffold_bound_is_never_below_the_real_count(client: EngineClient) -> None:
    bound = await measure_scaffold(client.count_tokens)
    for system in ("", "Be brief.", "日本語"):
        for i, text in enumerate(TEXTS):
            turns = [{"role": "system", "content": system}] if system else []
            turns += [
                {"role": "user", "content": text},
                {"role": "assistant", "content": TEXTS[-1 - i]},
                {"role": "user", "content": text + "?"},
            ]
            assert bound.tokens(turns) >= await client.count_tokens(turns), (system, text)


async def test_a_conversation_the_bound_proves_fits_is_not_counted(client: EngineClient) -> None:
    counted: list[int] = []

    async def count(messages: Sequence[dict[str, str]]) -> int:
        counted.append(len(messages))
        return await client.count_tokens(messages)

    bound = await measure_scaffold(client.count_tokens)
    short = await fit_conversation(
        "Be brief.", history(2, words=8), n_ctx=512, max_tokens=64, count_tokens=count, bound=bound
    )
    assert counted == [] and short.dropped == 0 and not short.counted
    assert short.prompt_tokens >= await client.count_tokens(short.messages)
    long = await fit_conversation(
        "Be brief.", history(12), n_ctx=512, max_tokens=64, count_tokens=count, bound=bound
    )
    assert counted and long.dropped > 0  # near the limit it counts exactly again


async def engine_count(client: EngineClient, messages: list[dict[str, str]]) -> int:
    """The prompt's size as the engine reports it in an answer's usage (what the service
    remembers for the next turn)."""
    async for piece in client.stream_chat(messages, Sampling(max_tokens=1), cache_key=None):
        if isinstance(piece, StreamEnd):
            return piece.usage.prompt_tokens
    raise AssertionError("the answer ended without usage")


async def test_an_earlier_prompts_count_bounds_the_next_never_below_the_real_count(
    client: EngineClient,
) -> None:
    for system in ("", "Be brief."):
        head = [{"role": "system", "content": system}] if system else []
        for i, text in enumerate(TEXTS):
            asked = [{"role": "user", "content": text[:100] or "?"}]  # fits the test's context
            known = KnownPrefix(1, await engine_count(client, head + asked))
            for answer, question in ((TEXTS[-1 - i], text + "?"), ("", "?"), ("a", "")):
                turns = [
                    *asked, {"role": "assistant", "content": answer},
                    {"role": "user", "content": question},
                ]  # fmt: skip
                real = await client.count_tokens(head + turns)
                assert known.bound(turns) >= real, (system, i, answer, question)


async def test_a_conversation_an_earlier_count_proves_fits_is_not_counted(
    client: EngineClient,
) -> None:
    counted: list[int] = []

    async def count(messages: Sequence[dict[str, str]]) -> int:
        counted.append(len(messages))
        return await client.count_tokens(messages)

    turns = history(8, words=10)  # ~1,100 bytes: past what the byte bound can prove in 448
    system = [{"role": "system", "content": "Be brief."}]
    earlier = [{"role": t.role, "content": t.content} for t in turns[:-2]]
    known = KnownPrefix(len(earlier), await engine_count(client, system + earlier))
    bound = await measure_scaffold(client.count_tokens)
    fitted = await fit_conversation(
        "Be brief.", turns, n_ctx=512, max_tokens=64, count_tokens=count, bound=bound,
        known=known,
    )  # fmt: skip
    assert counted == [] and fitted.dropped == 0 and not fitted.counted
    assert fitted.prompt_tokens >= await client.count_tokens(fitted.messages)
    without = await fit_conversation(
        "Be brief.", turns, n_ctx=512, max_tokens=64, count_tokens=count, bound=bound
    )
    assert counted and without.dropped == 0  # the byte bound alone could not tell


# ---- where a trimmed prompt starts: pure logic, counted in words --------------------------


def words(messages: Sequence[dict[str, str]]) -> int:
    """A stand-in tokenizer: a token a word, four a message, two for the generation prompt."""
    return sum(len(m["content"].split()) + 4 for m in messages) + 2


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, messages: Sequence[dict[str, str]]) -> int:
        self.calls += 1
        return words(messages)


def chat_turn(i: int) -> list[Turn]:
    return [Turn("user", f"question {i}: " + "word " * 20), Turn("assistant", "reply " * 40)]


def test_cut_points_stay_where_they_are_as_the_history_grows() -> None:
    grown = [m for i in range(60) for m in chat_turn(i)] + [Turn("user", "now?")]
    turns = [{"role": t.role, "content": t.content} for t in grown]
    step = step_bytes(384)
    assert step == 576
    final = cut_points(turns, step)
    assert final[0] == 0 and final[-1] == len(turns) - 1
    assert all(turns[i]["role"] == "user" for i in final[1:])
    for end in range(3, len(turns), 2):  # every earlier turn's points but its last
        assert cut_points(turns[:end], step)[:-1] == [p for p in final if p < end - 1]
    sizes = [sum(len(m["content"]) + 1 for m in turns[a:b]) for a, b in pairs(final[:-1])]
    assert all(step / 2 < size < step * 1.5 for size in sizes)  # about a step apart


def pairs(points: list[int]) -> list[tuple[int, int]]:
    return list(itertools.pairwise(points))


async def test_past_the_context_the_prompt_keeps_its_start_for_many_turns() -> None:
    """40 turns past the limit: the start moves a few times in large steps, each prompt fits,
    and a remembered count (the service's ``PromptSizes``) spares counts."""
    count = Counter()
    history: list[Turn] = []
    known: KnownPrefix | None = None
    starts, calls = [], []
    for i in range(70):  # ~70 tokens a turn: the 1,920 the prompt may take fill by turn 27
        history.append(Turn("user", f"question {i}: " + "word " * 20))
        before = count.calls
        fitted = await fit_conversation(
            "Be brief.", history, n_ctx=2048, max_tokens=128, count_tokens=count, known=known
        )
        calls.append(count.calls - before)
        starts.append(fitted.dropped)
        assert words(fitted.messages) <= 2048 - 128
        assert fitted.messages[1] == {"role": "user", "content": history[fitted.dropped].content}
        known = KnownPrefix(len(history) - fitted.dropped, words(fitted.messages), fitted.dropped)
        history.append(Turn("assistant", "reply " * 40))
    trimmed = [s for s in starts if s]
    assert len(trimmed) >= 40
    runs = [len(list(group)) for _, group in itertools.groupby(trimmed)]
    assert len(runs) <= 8 and min(runs[:-1]) >= 5  # the oldest turn at a time: 40 runs of 1
    # one count a turn near the budget, two when the start moves (a binary search took ~7)
    assert max(calls) <= 2 and sum(calls) < len(calls)


async def test_without_a_remembered_count_the_same_start_is_found() -> None:
    history = [m for i in range(30) for m in chat_turn(i)] + [Turn("user", "now?")]
    count = Counter()
    cold = await fit_conversation(
        "Be brief.", history, n_ctx=512, max_tokens=128, count_tokens=count
    )
    assert cold.dropped > 0 and count.calls <= 8  # a binary search over the cut points
    points = cut_points([{"role": t.role, "content": t.content} for t in history], 576)
    assert cold.dropped in points and words(cold.messages) <= 384
    earlier = points[points.index(cold.dropped) - 1]
    assert words(cold.messages[:1] + [
        {"role": t.role, "content": t.content} for t in history[earlier:]
    ]) > 384  # fmt: skip
    elsewhere = next(i for i in range(2, len(history), 2) if i not in points)
    warm = await fit_conversation(
        "Be brief.", history, n_ctx=512, max_tokens=128, count_tokens=count,
        known=KnownPrefix(3, 10, start=elsewhere),  # not a cut point: it says nothing
    )  # fmt: skip
    assert warm.dropped == cold.dropped


async def test_when_no_cut_point_but_the_question_fits_as_much_as_fits_is_kept() -> None:
    # 200 one-word messages: 1,000 tokens in 600 bytes, which is not yet one step
    history = [Turn("user" if i % 2 == 0 else "assistant", "a") for i in range(201)]
    fitted = await fit_conversation("", history, n_ctx=512, max_tokens=128, count_tokens=Counter())
    assert 0 < fitted.dropped < 200
    assert words(fitted.messages) <= 384 < words(fitted.messages) + 2 * 5  # one more turn: no
