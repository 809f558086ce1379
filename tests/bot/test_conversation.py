"""Fitting history into the context, counted with the real engine's tokenizer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import aiohttp
import pytest

from bot.conversation import KnownPrefix, Turn, fit_conversation, measure_scaffold
from bot.engine_client import EngineClient, Sampling, StreamEnd
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
    one_more = [{"role": "system", "content": "Be brief."}] + [
        {"role": t.role, "content": t.content} for t in turns[-len(kept) - 2 :]
    ]
    assert await client.count_tokens(one_more) > 512 - 128  # it kept as much as fits


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
            asked = [{"role": "user", "content": text[:200] or "?"}]  # fits the test's context
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
