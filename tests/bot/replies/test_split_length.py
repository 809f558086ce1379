"""The splitter under a platform's length measure: Telegram's UTF-16 units, where an emoji
outside the BMP is two, against Discord's characters."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.replies.split import (
    MIN_LIMIT,
    characters,
    fit,
    live_text,
    split_chunks,
    split_message,
    split_parts,
    utf16_units,
)

TOKENS = ["word", "😀", "👨‍👩‍👧", "日本語", " ", ". ", "\n", "\n\n", "```python\n", "```\n"]
TOKENS += ["🎉" * 40]


def test_utf16_units_count_as_telegram_does() -> None:
    assert utf16_units("abc") == characters("abc") == 3
    assert utf16_units("日本") == 2  # in the BMP: one unit each
    assert utf16_units("😀") == 2 and characters("😀") == 1
    assert utf16_units("👨‍👩‍👧") == 8  # three emoji and two joiners
    assert fit("😀" * 10, 7, utf16_units) == 3
    assert fit("😀" * 10, 7, characters) == 7


def test_emoji_are_split_by_units_where_the_platform_counts_units() -> None:
    assert split_message("😀" * 100, MIN_LIMIT, utf16_units) == ["😀" * 32] * 3 + ["😀" * 4]
    assert split_message("😀" * 100, MIN_LIMIT) == ["😀" * 64, "😀" * 36]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join), st.integers(MIN_LIMIT, 300))
def test_every_chunk_and_its_live_text_fit_in_utf16_units(text: str, limit: int) -> None:
    chunks = split_chunks(text, limit, utf16_units)
    assert "".join(chunk.body for chunk in chunks) == text
    for chunk, after in split_parts(text, limit, None, utf16_units):
        assert chunk.body and utf16_units(chunk.text) <= limit
        assert utf16_units(live_text(chunk, after, limit, utf16_units)) <= limit
