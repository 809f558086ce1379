"""Fuzz the engine's HTTP contract: a malformed request gets a 4xx with a JSON error a person
can act on, never a 5xx, a hang or a logged crash, and the engine keeps serving afterwards.

The real app, runtime and scheduler run over a scripted model (see ``fuzz_engine``), so about
2,000 examples (4,500 requests) take half a minute. Hypothesis is derandomized with bounded
example counts, so CI sends the same inputs every run; each ``@example`` is an input that once
got a 5xx, a hang or a logged traceback.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.server import MAX_BODY_BYTES
from tests.engine.fuzz_engine import (
    ADMIN,
    Engine,
    Reply,
    refused,
    serve_engine,
    still_serving,
    user,
)
from tests.engine.fuzz_strategies import (
    BAD,
    bad_bytes,
    bad_chat,
    encoded,
    junk,
    message,
    not_bool,
    not_text,
    text,
    valid_chat,
)


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with serve_engine() as served:
        yield served


def sse_events(body: bytes) -> list[Any]:
    lines = [line for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert lines and lines[-1] == b"data: [DONE]", body[-300:]
    return [json.loads(line[6:]) for line in lines[:-1]]


# ---- /v1/chat/completions --------------------------------------------------------------------


@fuzz(200)
@given(body=valid_chat())
def test_a_valid_completion_is_served(engine: Engine, body: dict[str, Any]) -> None:
    reply = engine.post("/v1/chat/completions", body)
    assert reply.status == 200, reply.body[:300]
    limit = body.get("max_completion_tokens") or body["max_tokens"]
    if body.get("stream"):
        last = sse_events(reply.body)[-1]
        assert last["choices"][0]["finish_reason"] in ("stop", "length")
    else:
        last = reply.json()
        assert isinstance(last["choices"][0]["message"]["content"], str)
    assert last["usage"]["completion_tokens"] <= limit
    still_serving(engine)


HI = [user("hi")]


@fuzz(400)
@given(body=bad_chat())
@example({"messages": HI, "top_k": 2**40})  # wrapped to int32 by ctypes
@example({"messages": HI, "repeat_last_n": 2**31 - 1, "repeat_penalty": 1.1})  # 8 GiB buffer
@example({"messages": HI, "temperature": "0.5", "stream": "yes", "seed": True})  # coerced
@example({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})
@example({"messages": HI, "logit_bias": {" 7": 1}})
@example({"messages": HI, "logit_bias": {"k" * 100_000: 1}})  # echoed whole in the error
def test_a_malformed_completion_is_refused(engine: Engine, body: dict[str, Any]) -> None:
    raw = encoded(body)
    error = refused(engine.post("/v1/chat/completions", raw), 400)
    assert error["param"] or b"NaN" in raw or b"Infinity" in raw, error  # the field is named
    still_serving(engine)


@fuzz(150)
@given(body=junk | st.dictionaries(st.text(max_size=10), junk, max_size=4))
def test_any_json_that_is_not_a_request_is_refused(engine: Engine, body: Any) -> None:
    for path in ("/v1/chat/completions", "/tokenize"):
        refused(engine.post(path, encoded(body)), 400)
    still_serving(engine)


@fuzz(250)
@given(raw=bad_bytes(), stream=st.booleans())
@example(b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", False)  # RecursionError
@example(b'{"messages": [{"role": "user", "content": "\\ud800"}]}', False)
@example(b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}', False)  # CESU-8
def test_bytes_that_are_not_one_utf8_json_document_are_refused(
    engine: Engine, raw: bytes, stream: bool
) -> None:
    if stream:
        raw = raw.replace(b'"messages"', b'"stream": true, "messages"', 1)
    refused(engine.post("/v1/chat/completions", raw), 400)
    still_serving(engine)


def test_a_long_conversation_is_judged_in_linear_time(engine: Engine) -> None:
    """20,000 messages once took hours of template work, holding the tokenizer lock."""
    started = time.perf_counter()
    reply = engine.post("/v1/chat/completions", {"messages": [user("")] * 20_000})
    assert refused(reply, 400)["code"] == "context_length_exceeded"
    assert time.perf_counter() - started < 10
    still_serving(engine)


@fuzz(30)
@given(extra=st.integers(-64, 64), kind=st.sampled_from(["content", "junk", "chunked"]))
def test_bodies_over_the_limit_get_413_and_under_it_are_judged_on_content(
    engine: Engine, extra: int, kind: str
) -> None:
    size = MAX_BODY_BYTES + extra
    head = b'{"messages": [{"role": "user", "content": "'
    body = head + b"x" * (size - len(head) - 4) + b'"}]}' if kind != "junk" else b"x" * size
    headers = {"Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=30)
    if kind == "chunked":
        chunks = iter([body[: size // 2], body[size // 2 :]])
        conn.request("POST", "/v1/chat/completions", chunks, headers, encode_chunked=True)
    else:
        conn.request("POST", "/v1/chat/completions", body, headers)
    response = conn.getresponse()
    reply = Reply(response.status, response.headers, response.read())
    conn.close()
    if size > MAX_BODY_BYTES:
        assert "limit" in refused(reply, 413)["message"]
    else:  # a prompt of a million bytes cannot fit a 512-token window
        refused(reply, 400)
    still_serving(engine)


CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "text/plain", "", "application/xml",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "*/*",
    "application/json; charset=latin-1", "\u00e9/\u00e9", "application/vnd.api+json",
]  # fmt: skip


@fuzz(120)
@given(
    content_type=st.sampled_from(CONTENT_TYPES)
    | st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=30),
    encoding=st.sampled_from([None, "gzip", "deflate", "identity", "bogus"]),
    valid=st.booleans(),
)
@example("application/json", "gzip", True)  # not gzip: aiohttp's decode error was a 500
def test_content_type_and_encoding_headers_never_crash(
    engine: Engine, content_type: str, encoding: str | None, valid: bool
) -> None:
    """A JSON body is accepted whatever media type it claims (curl -d says form-urlencoded);
    a body that is not JSON is refused, 415 when the declared type says why."""
    body = encoded({"messages": HI, "max_tokens": 2}) if valid else b"a=1&b=2"
    headers: dict[str, str | bytes] = {"Content-Type": content_type.encode("latin-1")}
    if encoding:
        headers["Content-Encoding"] = encoding
    reply = engine.request("POST", "/v1/chat/completions", body, headers)
    if valid and encoding in (None, "identity", "bogus"):  # aiohttp passes unknown codings
        assert reply.status == 200, reply.body[:300]
    else:
        refused(reply, 400, 415)
    still_serving(engine)


@fuzz(60)
@given(cut=st.integers(0, 400), stream=st.booleans())
@example(0, False)  # hung up mid-upload: aiohttp logged a traceback and a 500
def test_a_client_that_hangs_up_frees_its_slot(engine: Engine, cut: int, stream: bool) -> None:
    body = encoded({"messages": [user("go")], "max_tokens": 64, "stream": stream})
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall((head + body)[: len(head) + min(cut, len(body))])
        if cut >= len(body) and stream:
            sock.recv(200)
    deadline = time.monotonic() + 5
    while (health := engine.request("GET", "/health").json())["slots_busy"] or health["queued"]:
        assert time.monotonic() < deadline, health
        time.sleep(0.01)
    still_serving(engine)


# ---- /tokenize ------------------------------------------------------------------------------

tokenize_bodies = st.one_of(
    st.fixed_dictionaries({"content": text}),
    st.fixed_dictionaries({"messages": st.lists(message, min_size=1, max_size=3)},
                          optional={"add_generation_prompt": st.booleans()}),
)  # fmt: skip
bad_tokenize = st.one_of(
    st.fixed_dictionaries({"content": not_text.filter(lambda v: v is not None)}),
    st.fixed_dictionaries({"messages": BAD["messages"].filter(lambda v: v is not None)}),
    st.fixed_dictionaries({"content": text, "add_generation_prompt": not_bool}),
    st.dictionaries(st.sampled_from(["add_generation_prompt", "x"]), st.booleans()),
)


@fuzz(120)
@given(body=tokenize_bodies)
def test_tokenize_answers_tokens_and_pieces(engine: Engine, body: dict[str, Any]) -> None:
    reply = engine.post("/tokenize", body)
    assert reply.status == 200, reply.body[:300]
    answer = reply.json()
    assert [p["id"] for p in answer["pieces"]] == answer["tokens"]
    if "content" in body:
        assert len(answer["tokens"]) == len(body["content"].encode())


@fuzz(200)
@given(body=bad_tokenize)
@example({"messages": []})  # the template's own error, about "element 0"
def test_a_malformed_tokenize_is_refused(engine: Engine, body: dict[str, Any]) -> None:
    refused(engine.post("/tokenize", encoded(body)), 400)
    still_serving(engine)


# ---- routes, methods, GET endpoints -----------------------------------------------------------

ROUTES = {
    "/v1/chat/completions": "POST", "/tokenize": "POST", "/admin/model": "POST",
    "/v1/models": "GET", "/health": "GET", "/metrics": "GET",
}  # fmt: skip
paths = st.sampled_from(sorted(ROUTES)) | st.lists(st.text(max_size=8), min_size=1, max_size=4).map(
    lambda parts: "/" + "/".join(quote(p, safe="") for p in parts)
)


@fuzz(200)
@given(
    path=paths,
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    query=st.none() | st.text(max_size=20).map(lambda q: quote(q, safe="=&")),
)
def test_unknown_routes_and_wrong_methods_get_a_json_4xx(
    engine: Engine, path: str, method: str, query: str | None
) -> None:
    reply = engine.request(method, path + (f"?{query}" if query else ""), b"{}")
    if ROUTES.get(path) == method:
        return  # the routes themselves are fuzzed above
    if path in ROUTES:
        refused(reply, 405)
        assert ROUTES[path] in reply.headers.get("Allow", ""), reply.headers
    else:
        refused(reply, 404)
    still_serving(engine)


@fuzz(60)
@given(
    path=st.sampled_from(["/health", "/v1/models", "/metrics"]),
    query=st.text(max_size=30).map(lambda q: quote(q, safe="=&")),
    body=st.binary(max_size=40),
    accept=st.sampled_from(["*/*", "text/html", "application/xml", "\u00ff"]),
)
def test_the_get_endpoints_ignore_junk_queries_bodies_and_headers(
    engine: Engine, path: str, query: str, body: bytes, accept: str
) -> None:
    reply = engine.request("GET", f"{path}?{query}", body, {"Accept": accept.encode("latin-1")})
    assert reply.status == 200, reply.body[:300]
    assert path == "/metrics" or reply.json()
    still_serving(engine)


# ---- /admin/model ----------------------------------------------------------------------------

AUTH = {"Authorization": f"Bearer {ADMIN}"}
model_specs = st.one_of(
    st.sampled_from([
        "/nonexistent/model.gguf", "/", "/etc", __file__, "~/x.gguf", "owner/name:file.gguf",
        "owner/na..me:f", "a/" * 3000, "-", ":", "a/b:", "ow/n:" + "f" * 300,
    ]),
    text.filter(lambda t: t.strip() not in ("", "demo", "fake")),
)  # fmt: skip
bad_swap = st.one_of(
    junk.filter(lambda v: not isinstance(v, dict)),
    st.fixed_dictionaries({"model": not_text}),
    st.fixed_dictionaries({"model": st.sampled_from(["", "  "])}),
    st.fixed_dictionaries({"model": st.just("demo"), "cancel_running": not_bool}),
    st.fixed_dictionaries({"cancel_running": st.booleans()}),
)
header_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=24)
tokens = st.sampled_from([None, "", "wrong", ADMIN + "x", ADMIN[:-1], "Bearer"]) | header_text


@fuzz(120)
@given(
    token=tokens | st.sampled_from([b"\xff", b"\xfe" + ADMIN.encode()]),
    scheme=st.sampled_from(["Bearer ", "bearer ", "", "Basic "]),
    body=st.just({"model": "demo"}) | bad_swap,
)
@example(b"\xff", "Bearer ", {"model": "demo"})  # not UTF-8: the token compare raised
def test_admin_without_the_token_is_refused_before_the_body_is_read(
    engine: Engine, token: str | bytes | None, scheme: str, body: Any
) -> None:
    headers: dict[str, str | bytes] = {}
    if token is not None:
        headers["Authorization"] = scheme.encode() + (
            token if isinstance(token, bytes) else token.encode()
        )
    refused(engine.post("/admin/model", encoded(body), headers), 401)
    closed = engine.request("POST", "/admin/model", encoded(body), AUTH, port=engine.closed_port)
    assert "ADMIN_TOKEN" in refused(closed, 403)["message"]
    still_serving(engine)


@fuzz(150)
@given(
    body=bad_swap
    | st.fixed_dictionaries({"model": model_specs}, optional={"cancel_running": st.booleans()})
)
@example({"model": "a b/c:d.gguf"})  # huggingface_hub's HFValidationError
@example({"model": "x" * 300})  # OSError: file name too long
@example({"model": "x" * 5000})
@example({"model": "~nosuchuser/x.gguf"})  # RuntimeError from Path.expanduser
@example({"model": "nul\x00byte.gguf"})
def test_admin_with_the_token_refuses_bad_bodies_and_unloadable_models(
    engine: Engine, body: Any
) -> None:
    refused(engine.post("/admin/model", encoded(body), AUTH), 400)
    still_serving(engine)


def test_admin_with_the_token_swaps_and_the_engine_serves_the_new_model(engine: Engine) -> None:
    for name in ("demo", "fake"):
        reply = engine.post("/admin/model", {"model": name}, AUTH)
        assert reply.status == 200, reply.body[:300]
        assert engine.request("GET", "/v1/models").json()["data"][0]["id"] == name
        still_serving(engine)


def test_framing_errors_below_http_leave_the_engine_serving(engine: Engine) -> None:
    """aiohttp answers these itself with a plain-text 400 before the app runs."""
    garbage = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
        b"GET / HTTP/9.9\r\n\r\n", b"NOT A REQUEST\r\n\r\n", b"GET /\xff HTTP/1.1\r\n\r\n",
        b"POST /tokenize HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /tokenize HTTP/1.1\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /tokenize HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"GET /health HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
        b"POST /tokenize HTTP/1.1\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}",
    ]  # fmt: skip
    for raw in garbage:
        with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert not answer or answer[:12] in (b"HTTP/1.0 400", b"HTTP/1.1 400"), answer[:200]
    still_serving(engine)
