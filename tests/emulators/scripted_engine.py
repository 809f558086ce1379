"""A scripted stand-in for an engine: the same HTTP contract, a known answer at a fixed rate.

For tests (and benchmarks) where the model's words must be known in advance — a reply long
enough to split, a precise token rate — while the bot, adapters and platforms stay real.
Tokens are whitespace-separated words; ``/tokenize`` counts words the same way. Each chat
request is recorded as a ``Run`` with ``time.perf_counter`` stamps, and ``before_finish`` may hold
the final event back (benchmarks use both to time the bot around inference).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler


@dataclass
class Run:
    """One chat request: when it arrived, its headers, first token and final event were sent."""

    body: dict[str, Any]
    received: float
    answered: float | None = None
    first_token: float | None = None
    finish: float | None = None


class ScriptedEngine:
    def __init__(
        self, answer: str, *, tokens_per_second: float = 200.0, slots: int = 4, n_ctx: int = 4096
    ) -> None:
        self.answer = answer
        self.tokens_per_second = tokens_per_second
        self.slots = slots
        self.n_ctx = n_ctx
        self.busy = 0
        self.peak_busy = 0  # most answers streamed at once
        self.requests: list[dict[str, Any]] = []
        self.cancelled = 0
        self.tokenized = 0  # /tokenize calls
        self.runs: list[Run] = []
        self.peers: set[Any] = set()  # the client ends of the connections requests came on
        # Awaited after the last token, before the final event (e.g. to let a platform's pacing
        # pass, so what follows the final event can be timed on its own).
        self.before_finish: Callable[[Run], Awaitable[None]] | None = None
        # Awaited before the response's headers (as servers that answer only with the first
        # token do); ``Run.answered`` notes when they went out.
        self.before_headers: Callable[[Run], Awaitable[None]] | None = None

    def app(self) -> web.Application:
        @web.middleware
        async def note_peer(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.transport is not None:
                self.peers.add(request.transport.get_extra_info("peername"))
            return await handler(request)

        app = web.Application(middlewares=[note_peer])
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "model": "scripted", "slots_total": self.slots,
             "slots_busy": self.busy, "queued": 0}
        )  # fmt: skip

    async def _models(self, request: web.Request) -> web.Response:
        card = {"id": "scripted", "object": "model", "n_ctx": self.n_ctx}
        return web.json_response({"object": "list", "data": [card]})

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.tokenized += 1
        tokens = len(body["content"].split()) if "content" in body else count(body["messages"])
        return web.json_response({"tokens": list(range(tokens)), "pieces": []})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        received = time.perf_counter()
        body = await request.json()
        self.requests.append(body)
        run = Run(body, received)
        self.runs.append(run)
        pieces = re.findall(r"\S+\s*|\s+", self.answer)[: body.get("max_tokens") or None]
        if self.before_headers is not None:
            await self.before_headers(run)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        run.answered = time.perf_counter()
        self.busy += 1
        self.peak_busy = max(self.peak_busy, self.busy)
        started = time.perf_counter()
        try:
            for piece in pieces:
                await asyncio.sleep(1 / self.tokens_per_second)
                await _event(response, {"model": "scripted",
                                        "choices": [{"delta": {"content": piece}}]})  # fmt: skip
                run.first_token = run.first_token or time.perf_counter()
            if self.before_finish is not None:
                await self.before_finish(run)
            run.finish = time.perf_counter()
            finals = self.final_events(body, len(pieces), run.finish - started)
            # as Parley's engine: the last events, [DONE] and the body's end in one write
            await response.write_eof(b"".join(map(_sse, finals)) + b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled += 1
            raise
        finally:
            self.busy -= 1
        return response

    def final_events(
        self, body: dict[str, Any], completion_tokens: int, seconds: float
    ) -> list[dict[str, Any]]:
        """Parley's last chunk: the finish reason with usage and timings on it."""
        usage = {
            "prompt_tokens": count(body["messages"]), "completion_tokens": completion_tokens,
            "cached_tokens": 0, "prompt_ms": 1.0, "decode_ms": seconds * 1000,
        }  # fmt: skip
        return [{"model": "scripted", "usage": usage,
                 "choices": [{"delta": {}, "finish_reason": "stop"}]}]  # fmt: skip


def count(messages: list[dict[str, str]]) -> int:
    """The prompt's tokens: its words, and 4 for each message's template."""
    return sum(len(m["content"].split()) + 4 for m in messages)


async def _event(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(_sse(payload))


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
