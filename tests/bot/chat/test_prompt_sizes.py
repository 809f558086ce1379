"""A long conversation is not tokenized again on every turn: the engine's count of its last
prompt, plus a byte bound on what came since, proves the next one fits. The count is only
trusted for the same model, system prompt and history."""

from __future__ import annotations

import itertools

from bot.chat.context_fit import KnownPrefix
from bot.chat.prompt_sizes import PromptSizes
from bot.chat.service import ChatService
from tests.bot.scripted_service import ask, scripted
from tests.emulators.scripted_engine import ScriptedEngine

__all__ = ["scripted"]  # the fixture


def test_a_count_is_reused_only_for_the_same_model_system_prompt_and_history() -> None:
    sizes = PromptSizes()
    sizes.remember(7, "gemma", "Be brief.", [1, 2, 3], 120)
    assert sizes.known(7, "gemma", "Be brief.", [1, 2, 3, 4, 5]) == KnownPrefix(3, 120)
    assert sizes.known(7, "gemma", "Be brief.", [1, 2, 3]) == KnownPrefix(3, 120)
    assert sizes.known(7, "llama", "Be brief.", [1, 2, 3, 4, 5]) is None  # another tokenizer
    assert sizes.known(7, "gemma", "Be long.", [1, 2, 3, 4, 5]) is None  # another prompt
    assert sizes.known(7, "gemma", "Be brief.", [1, 4, 3, 5]) is None  # a reply stored late
    assert sizes.known(7, "gemma", "Be brief.", [2, 3, 4]) is None  # the oldest one wiped
    assert sizes.known(8, "gemma", "Be brief.", [1, 2, 3, 4, 5]) is None  # another chat
    sizes.remember(9, "gemma", "", [1], 0)  # a server that reports no usage
    assert sizes.known(9, "gemma", "", [1, 2, 3]) is None


def test_it_remembers_the_most_recently_answered_conversations() -> None:
    sizes = PromptSizes(limit=2)
    for conversation in (1, 2, 3):
        sizes.remember(conversation, "m", "", [conversation], 10)
    sizes.remember(2, "m", "", [2, 5], 20)  # answered again: the newest
    sizes.remember(4, "m", "", [4], 10)
    assert sizes.known(3, "m", "", [3]) is None and sizes.known(1, "m", "", [1]) is None
    assert sizes.known(2, "m", "", [2, 5, 6]) == KnownPrefix(2, 20)
    assert sizes.known(4, "m", "", [4]) == KnownPrefix(1, 10)


def test_the_bound_adds_what_came_since_to_the_known_count() -> None:
    known = KnownPrefix(turns=1, tokens=100)
    later = [{"role": "assistant", "content": "héllo"}, {"role": "user", "content": "ok"}]
    history = [{"role": "user", "content": "counted already"}, *later]
    # 16 margin + 8 a message + its UTF-8 bytes + 1 each
    assert known.bound(history) == 100 + 16 + (8 + 6 + 1) + (8 + 2 + 1)


async def test_a_long_conversation_is_not_tokenized_on_every_turn(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    engine, service = scripted
    for turn in range(8):  # from the third turn on the history is past the byte bound
        await ask(service, f"question {turn} please")
    assert len(engine.requests) == 8
    assert [len(r["messages"]) for r in engine.requests] == [2 + 2 * t for t in range(8)]
    assert engine.tokenized == 1  # the template's size, once: no turn was counted
    await service.set_system_prompt("test", "alice", "Alice", "Be very brief.")
    await ask(service, "and now?")  # another system prompt: the earlier count says nothing
    assert engine.tokenized == 2
    await ask(service, "again?")
    assert engine.tokenized == 2


async def test_near_the_context_it_counts_again_and_drops_the_oldest_turns(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    engine, service = scripted
    for turn in range(20):  # 20 answers of 44 tokens: past the 940 the prompt may take
        await ask(service, f"question {turn} please")
    counted = engine.tokenized
    assert counted > 1
    last = engine.requests[-1]["messages"]
    assert last[0] == {"role": "system", "content": "Be brief."}
    assert last[-1]["content"] == "question 19 please" and len(last) < 2 + 2 * 19  # dropped
    prompt = sum(len(m["content"].split()) + 4 for m in last)
    assert prompt <= 1000 - 60


async def test_past_the_context_the_prompt_keeps_its_start_and_is_rarely_counted(
    scripted: tuple[ScriptedEngine, ChatService],
) -> None:
    """Trimmed prompts are remembered with the turns they kept: the next turn keeps the same
    start (the engine's cached prefix stays valid) and needs one count to know it still fits,
    two when the start moves on (the binary search over every message took ~6)."""
    engine, service = scripted
    counts = []
    for turn in range(45):  # ~51 tokens a turn: the 940 the prompt may take fill by turn 18
        before = engine.tokenized
        await ask(service, f"question {turn} please")
        counts.append(engine.tokenized - before)
    firsts = [r["messages"][1]["content"] for r in engine.requests]
    trimmed = [first for first in firsts if first != "question 0 please"]
    assert len(trimmed) >= 25
    starts = [len(list(group)) for _, group in itertools.groupby(trimmed)]
    assert min(starts[:-1]) >= 3  # dropping the oldest turn each time moved it every turn
    assert max(counts) <= 2 and sum(counts[-len(trimmed) :]) <= len(trimmed) + len(starts)
