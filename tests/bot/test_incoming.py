"""``text_problem``: which messages the bot refuses before storing them, and why."""

from __future__ import annotations

import pytest

from bot.incoming import NO_TEXT, NOT_UNICODE, is_blank, text_problem

INVISIBLE = [
    "",
    " \t\n\r\x0b\x0c",
    "\x00",
    "\x00" * 50,
    "\x00 \x00\n",
    "\u200b",  # zero-width space
    "\u200b\u200c\u200d\u2060\ufeff",  # ZWSP, ZWNJ, ZWJ, word joiner, BOM
    "\u200e\u200f\u202a\u202e\u2066\u2069",  # bidi marks and embeddings
    "\u00ad\u034f\u061c\u180e",  # soft hyphen, grapheme joiner, Arabic letter mark, MVS
    "\ufe0f\ufe00",  # variation selectors
    "\u3164\u115f\u1160\uffa0",  # Hangul fillers
    "\u2800",  # Braille blank
    "\U000e0001\U000e0041",  # tags
    "\u00a0\u2003\u3000\u2028\u2029\x85",  # no-break, em and ideographic spaces, separators
    "\x07\x1b\x7f\x9b",  # controls
    " \u200b\x00\ufeff \u2060\n",
]
VISIBLE = [
    "a",
    "\x00a\x00",
    "zero\u200bwidth",
    "\u200b.\u200b",
    "👍",
    "👨\u200d👩\u200d👧",  # ZWJ inside an emoji sequence
    "\u0600",  # a format character that shows (Arabic number sign)
    "مرحبا\u200f",
    "\ue000",  # private use: shows in some fonts
]


@pytest.mark.parametrize("text", INVISIBLE, ids=ascii)
def test_a_message_with_nothing_visible_is_refused_as_empty(text: str) -> None:
    assert is_blank(text)
    assert text_problem(text) == NO_TEXT


@pytest.mark.parametrize("text", VISIBLE, ids=ascii)
def test_a_message_with_something_visible_is_answered(text: str) -> None:
    assert not is_blank(text)
    assert text_problem(text) is None


def test_broken_unicode_is_refused_as_such_even_among_invisible_characters() -> None:
    assert text_problem("\u200b\ud800\u200b") == NOT_UNICODE
    assert text_problem("hi \udfff") == NOT_UNICODE
