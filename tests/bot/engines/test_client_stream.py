"""The engine client reads an event stream in whatever pieces TCP delivers: a line split
across reads, a character split between its bytes, CRLF line ends, comments and ``event:``
lines, usage in a chunk of its own (OpenAI servers). A loopback server writes the raw bytes
piece by piece, each read on its own by the client."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from bot.engines.client import EngineClient, Sampling, StreamEnd
from bot.errors import EngineRequestError, EngineUnavailable
from tests.adapters.discord_harness import serve


def _data(payload: dict[str, object], end: bytes = b"\n\n") -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + end


def _delta(text: str) -> dict[str, object]:
    return {"model": "m", "choices": [{"index": 0, "delta": {"content": text}}]}


def _pieces_of(body: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


@asynccontextmanager
async def _stream_in_pieces(pieces: list[bytes]) -> AsyncIterator[str]:
    """A server whose chat completion is ``pieces``, each written (and read) on its own."""

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(0.01)  # the client reads it before the next one is written
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with serve(app) as url:
        yield url


async def _read(pieces: list[bytes]) -> list[str | StreamEnd]:
    async with aiohttp.ClientSession() as session, _stream_in_pieces(pieces) as url:
        client = EngineClient(url, session)
        ask = [{"role": "user", "content": "hi"}]
        return [piece async for piece in client.stream_chat(ask, Sampling(), None)]


async def test_lines_and_characters_split_across_reads_come_out_whole() -> None:
    body = (
        _data(_delta("Grüße "))
        + b": a comment line\r\n\r\n"
        + b"event: message\r\n"
        + _data(_delta("aus 😀 Köln"), b"\r\n\r\n")
        + _data({"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        + _data(
            {"model": "m", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
        )
        + b"data: [DONE]\n\n"
    )
    umlaut = body.index("ü".encode()) + 1  # between the two bytes of "ü"
    emoji = body.index("😀".encode()) + 2
    cuts = [3, umlaut, body.index(b"comment"), emoji, body.index(b"[DONE]") + 2]
    pieces = _pieces_of(body, cuts)
    assert b"".join(pieces) == body and len(pieces) == 6

    read = await _read(pieces)

    assert "".join(p for p in read if isinstance(p, str)) == "Grüße aus 😀 Köln"
    end = read[-1]
    assert isinstance(end, StreamEnd)
    assert (end.finish_reason, end.model) == ("stop", "m")
    assert (end.usage.prompt_tokens, end.usage.completion_tokens) == (7, 3)


async def test_a_stream_cut_off_mid_line_is_an_engine_lost_not_an_answer() -> None:
    body = _data(_delta("half an ")) + b'data: {"choices": [{"delta": {"content": "ans'
    with pytest.raises(EngineUnavailable, match="ended the stream early"):
        await _read(_pieces_of(body, [len(body) - 5]))


async def test_an_error_event_in_the_stream_is_the_engines_message() -> None:
    body = _data(_delta("so")) + _data({"error": {"message": "out of memory"}})
    with pytest.raises(EngineRequestError, match="out of memory"):
        await _read(_pieces_of(body, [len(body) - 10]))
