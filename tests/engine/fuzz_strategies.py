"""Hypothesis strategies for the engine's HTTP contract: valid bodies, and bodies with one
field made wrong in type, range or shape; bytes that are not one UTF-8 JSON document.

Every ``BAD`` value is wrong by the contract, not merely unusual, so the tests can insist on a
4xx: a number where a boolean is expected, a numeric string where a number is, an int outside
what llama.cpp's int32 takes, NaN, a megabyte of key.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.engine.fuzz_engine import N_CTX, N_VOCAB

ROLES = ("system", "user", "assistant")

text = st.text(st.characters(codec="utf-8"), max_size=24)  # no lone surrogates
junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
finite_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)  # what a valid body may carry in fields the engine does not know
not_number = junk.filter(lambda v: v is None or isinstance(v, str | bool | list | dict))
not_null = junk.filter(lambda v: v is not None)
not_bool = junk.filter(lambda v: not isinstance(v, bool))
not_text = junk.filter(lambda v: not isinstance(v, str))
non_finite = st.sampled_from([float("nan"), float("inf"), float("-inf")])
bad_float = non_finite | st.sampled_from([1e39, -1e39])
fraction = st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v != int(v))


def floats_outside(low: float, high: float, *, open_low: bool = False) -> st.SearchStrategy[Any]:
    below = st.floats(max_value=low, exclude_max=not open_low, allow_nan=False)
    above = st.floats(min_value=high, exclude_min=True, allow_nan=False)
    return below | above | bad_float | not_number


def ints_outside(low: int, high: int) -> st.SearchStrategy[Any]:
    out = st.integers(max_value=low - 1) | st.integers(min_value=high + 1)
    return out | fraction | bad_float | not_number.filter(lambda v: v is not None)


message = st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": text}) | st.builds(
    lambda role, parts: {"role": role, "content": [{"type": "text", "text": p} for p in parts]},
    st.sampled_from(ROLES), st.lists(text, min_size=1, max_size=2),
)  # fmt: skip
bad_message = st.one_of(
    not_number.filter(lambda v: not isinstance(v, dict)),
    st.fixed_dictionaries({"role": junk.filter(lambda r: r not in ROLES), "content": text}),
    st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": junk.filter(
        lambda c: not isinstance(c, str | list))}),
    st.fixed_dictionaries({"content": text}),
    st.fixed_dictionaries({"role": st.sampled_from(ROLES)}),
    st.fixed_dictionaries({"role": st.just("user"), "content": st.sampled_from([
        [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}], [{"type": "text"}],
        [{"type": "text", "text": 5}], [{"type": "text", "text": None}], ["plain"], [None]])}),
)  # fmt: skip
VALID: dict[str, st.SearchStrategy[Any]] = {
    "stream": st.booleans(),
    "max_completion_tokens": st.integers(1, 8),
    "temperature": st.floats(0, 5) | st.integers(0, 5),
    "top_p": st.floats(0, 1, exclude_min=True),
    "top_k": st.integers(0, 1000),
    "min_p": st.floats(0, 1),
    "seed": st.none() | st.integers(-(2**63), 2**64) | st.just(7.0),
    "stop": st.none() | text | st.lists(text, max_size=16),
    "frequency_penalty": st.floats(-2, 2),
    "presence_penalty": st.floats(-2, 2),
    "repeat_penalty": st.floats(0, 5, exclude_min=True),
    "repeat_last_n": st.integers(-1, 4096),
    "prompt_cache_key": st.none() | st.text(max_size=40),
    "logit_bias": st.none()
    | st.dictionaries(st.integers(0, N_VOCAB - 1).map(str), st.floats(-100, 100), max_size=8),
    "model": st.none() | text,
    "user": finite_junk,  # fields the engine does not know are ignored, whatever they hold
    "tools": finite_junk,
}
BAD: dict[str, st.SearchStrategy[Any]] = {
    "messages": st.one_of(
        st.just([]),
        not_number.filter(lambda v: not isinstance(v, list)),
        st.tuples(st.lists(message, max_size=2), bad_message).map(lambda p: [*p[0], p[1]]),
    ),
    "stream": not_bool,
    "max_tokens": ints_outside(1, N_CTX),
    "max_completion_tokens": ints_outside(1, N_CTX),
    "temperature": floats_outside(0, 5),
    "top_p": floats_outside(0, 1, open_low=True),
    "top_k": ints_outside(0, 2**31 - 1),
    "min_p": floats_outside(0, 1),
    "seed": fraction | non_finite | not_number.filter(lambda v: v is not None),
    "stop": st.one_of(
        st.lists(st.just("x"), min_size=17, max_size=20),
        st.just("s" * 257),
        st.lists(not_text, min_size=1, max_size=2),
        not_null.filter(lambda v: not isinstance(v, str | list)),
    ),
    "frequency_penalty": floats_outside(-2, 2),
    "presence_penalty": floats_outside(-2, 2),
    "repeat_penalty": floats_outside(0, 5, open_low=True),
    "repeat_last_n": ints_outside(-1, 1 << 20),
    "prompt_cache_key": st.just("k" * 257) | not_text.filter(lambda v: v is not None),
    "logit_bias": st.one_of(
        st.dictionaries(
            st.sampled_from(["", "abc", "1.5", "1e3", "-1", "+7", " 7", "1_0", "\u0661"]),
            st.floats(-100, 100),
            min_size=1,
            max_size=2,
        ),
        st.dictionaries(st.integers(N_VOCAB, 2**40).map(str), st.just(1), min_size=1, max_size=2),
        st.dictionaries(st.sampled_from("0123456789"), floats_outside(-100, 100), min_size=1),
        st.just({str(i): 1 for i in range(1025)}),
        st.just({"k" * 100_000: 1}),
        not_null.filter(lambda v: not isinstance(v, dict)),
    ),
    "model": not_text.filter(lambda v: v is not None),
}


@st.composite
def valid_chat(draw: st.DrawFn) -> dict[str, Any]:
    body = {"messages": draw(st.lists(message, min_size=1, max_size=3))}
    body["max_tokens"] = draw(st.integers(1, 8))
    for name in draw(st.lists(st.sampled_from(sorted(VALID)), unique=True, max_size=6)):
        body[name] = draw(VALID[name])
    return body


@st.composite
def bad_chat(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with exactly one field made invalid (or the messages dropped)."""
    body = draw(valid_chat())
    field = draw(st.sampled_from([*sorted(BAD), "-messages"]))
    if field == "-messages":
        del body["messages"]
    else:
        body[field] = draw(BAD[field])
    return body


BAD_UTF8 = [b"\xff", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]
LONE_SURROGATES = [b"\\ud800", b"\\udfff", b"\\uDBFF\\u0041", b"\\udc00\\ud800"]


@st.composite
def bad_bytes(draw: st.DrawFn) -> bytes:
    """Bytes that are not one JSON document in UTF-8: broken syntax, broken encoding, lone
    surrogates, NaN, nesting deeper than any parser should follow, or no body at all."""
    valid = encoded(draw(valid_chat()))
    kind = draw(st.sampled_from(
        ["cut", "binary", "utf8", "surrogate", "nan", "deep", "empty", "utf16", "big-int", "two"]
    ))  # fmt: skip
    if kind == "cut":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "binary":
        return draw(st.binary(max_size=64)).replace(b"{", b"").replace(b"[", b"") or b"\x00"
    if kind in ("utf8", "surrogate"):
        key = draw(st.sampled_from(["messages", "role", "content", "max_tokens"]))
        bad = draw(st.sampled_from(BAD_UTF8 if kind == "utf8" else LONE_SURROGATES))
        return valid.replace(f'"{key}"'.encode(), f'"{key}'.encode() + bad + b'"', 1)
    if kind == "nan":
        return valid.replace(b'"max_tokens": ', b'"max_tokens": NaN, "x": ', 1)
    if kind == "deep":
        depth = draw(st.sampled_from([1000, 5000, 100_000]))
        return b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "empty":
        return draw(st.sampled_from([b"", b" ", b"\r\n", b"null"]))
    if kind == "utf16":
        return valid.decode().encode(draw(st.sampled_from(["utf-16", "utf-32", "utf-16-le"])))
    if kind == "big-int":
        return valid.replace(b'"max_tokens": ', b'"max_tokens": ' + b"9" * 5000 + b', "x": ', 1)
    return valid + b" " + valid  # two documents


def encoded(body: Any) -> bytes:
    """JSON as Python writes it, NaN and Infinity literals included (they must be refused)."""
    return json.dumps(body, allow_nan=True).encode()
