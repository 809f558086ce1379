"""The prompt-segment token cache: bounded by bytes, least recently used out first."""

from __future__ import annotations

from array import array

from engine.token_cache import TokenCache, _size


def test_the_least_recently_used_segment_leaves_first_within_the_budget() -> None:
    texts = [f"{i:03d}" * 40 for i in range(9)]
    cache = TokenCache(budget_bytes=8 * _size(texts[0], array("i", [1] * 10)))
    for text in texts[:8]:
        cache.put(text, False, [1] * 10)
    assert cache.get(texts[0], False) is not None  # the oldest is now the most recent
    cache.put(texts[8], False, [2] * 10)
    assert cache.get(texts[1], False) is None
    assert list(cache.get(texts[0], False) or []) == [1] * 10
    assert list(cache.get(texts[8], False) or []) == [2] * 10
    assert cache.used_bytes <= cache.budget_bytes and len(cache) == 8


def test_special_and_plain_tokenizations_of_the_same_text_are_kept_apart() -> None:
    cache = TokenCache()
    cache.put("<b>", True, [7])
    cache.put("<b>", False, [60, 61, 62])
    assert list(cache.get("<b>", True) or []) == [7]
    assert list(cache.get("<b>", False) or []) == [60, 61, 62]


def test_a_segment_too_big_for_the_cache_is_not_kept() -> None:
    cache = TokenCache(budget_bytes=8000)
    cache.put("x" * 2000, False, list(range(500)))  # over an eighth of the budget
    assert len(cache) == 0 and cache.used_bytes == 0
