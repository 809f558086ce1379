"""Incremental detokenization: UTF-8 split across tokens, stop strings split across tokens."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.textstream import TextStream


def feed_all(stream: TextStream, pieces: list[bytes]) -> str:
    out = "".join(stream.feed(p) for p in pieces)
    return out + stream.flush()


def test_a_multibyte_character_split_across_tokens_is_never_emitted_half() -> None:
    stream = TextStream()
    euro = "€".encode()
    assert stream.feed(b"a" + euro[:1]) == "a"
    assert stream.feed(euro[1:2]) == ""
    assert stream.feed(euro[2:]) == "€"


def test_a_stop_string_inside_one_piece_cuts_the_text_there() -> None:
    stream = TextStream(["<|end|>"])
    assert stream.feed(b"hello<|end|>world") == "hello"
    assert stream.stopped
    assert stream.feed(b"more") == "" and stream.flush() == ""


def test_a_stop_string_across_pieces_is_held_back_and_never_leaks() -> None:
    stream = TextStream(["STOP"])
    assert stream.feed(b"abc ST") == "abc "
    assert stream.feed(b"O") == ""
    assert stream.feed(b"P tail") == ""
    assert stream.stopped


def test_a_false_start_is_released_once_it_cannot_be_a_stop() -> None:
    stream = TextStream(["STOP"])
    assert stream.feed(b"ST") == ""
    assert stream.feed(b"AR") == "STAR"


def test_the_earliest_of_several_stop_strings_wins() -> None:
    stream = TextStream(["b", "abc"])
    assert stream.feed(b"xxab") == "xxa"


@given(st.text(max_size=60), st.lists(st.integers(min_value=1, max_value=5), max_size=40))
def test_any_split_of_the_bytes_gives_back_the_same_text(text: str, cuts: list[int]) -> None:
    data = text.encode()
    pieces, i = [], 0
    for size in cuts:
        pieces.append(data[i : i + size])
        i += size
    pieces.append(data[i:])
    assert feed_all(TextStream(), pieces) == text


@given(
    st.text(alphabet="abc", max_size=40),
    st.text(alphabet="abc", min_size=1, max_size=4),
    st.lists(st.integers(min_value=1, max_value=4), max_size=40),
)
def test_stop_strings_match_whole_text_semantics(text: str, stop: str, cuts: list[int]) -> None:
    data = text.encode()
    pieces, i = [], 0
    for size in cuts:
        pieces.append(data[i : i + size])
        i += size
    pieces.append(data[i:])
    expected = text[: text.find(stop)] if stop in text else text
    assert feed_all(TextStream([stop]), pieces) == expected
