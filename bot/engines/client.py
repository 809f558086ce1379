"""Talk to an engine over the HTTP contract in DESIGN.md (Parley's own or any OpenAI server).

The bot never imports engine internals: a local engine is a child process (``python -m
engine``) found through its ``listening on URL`` line, and everything else is HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from bot.chat.context_fit import estimate_tokens
from bot.errors import EngineRequestError, EngineUnavailable
from common.log_context import current_request_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """What the bot asks of every reply (settings, overridden per session by ``parley chat``)."""

    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    seed: int | None = None


@dataclass(frozen=True)
class Health:
    status: str
    model: str
    slots_total: int
    slots_busy: int
    queued: int


@dataclass(frozen=True)
class ModelCard:
    name: str
    n_ctx: int
    # What Parley's engine also says of it (others: absent), for ``parley chat``'s start-up lines.
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    prompt_ms: float = 0.0
    decode_ms: float = 0.0

    @property
    def prompt_per_second(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / (self.prompt_ms / 1000) if self.prompt_ms > 0 else 0.0

    @property
    def decode_per_second(self) -> float:
        steps = self.completion_tokens - 1
        return steps / (self.decode_ms / 1000) if self.decode_ms > 0 and steps > 0 else 0.0


@dataclass(frozen=True)
class StreamEnd:
    finish_reason: str
    usage: Usage
    model: str


Tokenizer = Literal["messages", "template", "estimate"]
TOKENIZER_SAYS: dict[Tokenizer, str] = {
    "messages": "exact (/tokenize with the chat template)",
    "template": "exact (/apply-template, then /tokenize)",
    "estimate": "estimated (no tokenizer endpoint; about 60% margin)",
}


class EngineClient:
    """One engine's HTTP API (Parley's, or an OpenAI-compatible server's). Safe to share
    between tasks of one event loop.

    ``model`` is sent as the request's model name (servers hosting several need it);
    ``tokenizer`` is how ``count_tokens`` counts: Parley's and vLLM's ``/tokenize`` take the
    messages, llama-server's takes text (so the template is applied first), and a server
    with neither gets a conservative estimate (bot/engines/probe.py finds out which).
    """

    def __init__(
        self, base_url: str, session: aiohttp.ClientSession, *,
        api_key: str | None = None, model: str | None = None,
    ) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self._session = session
        self.model_name = model
        self.tokenizer: Tokenizer = "messages"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def health(self) -> Health:
        body = await self._get("/health", ok_statuses=(200, 503))
        return Health(
            status=str(body.get("status", "error")),
            model=str(body.get("model", "")),
            slots_total=int(body.get("slots_total", 0)),
            slots_busy=int(body.get("slots_busy", 0)),
            queued=int(body.get("queued", 0)),
        )

    async def model(self) -> ModelCard:
        """The model served (the one named by ``model`` if the server lists several); n_ctx
        0 when the server does not say (Parley says ``n_ctx``, vLLM ``max_model_len``)."""
        cards = (await self._get("/v1/models")).get("data") or []
        card = next((c for c in cards if c.get("id") == self.model_name), None)
        card = card or (cards[0] if cards else {"id": self.model_name or "unknown"})
        n_ctx = card.get("n_ctx") or card.get("max_model_len") or 0
        return ModelCard(name=str(card["id"]), n_ctx=int(n_ctx), details=card)

    async def fetch(self, path: str) -> tuple[int, Any]:
        """GET ``path``: its status and JSON body (None if it is not JSON), for probing what
        kind of server this is; EngineUnavailable if it cannot be reached."""
        try:
            async with self._session.get(
                self.base_url + path, headers=self._headers, timeout=_PROBE
            ) as response:
                try:
                    return response.status, await response.json(content_type=None)
                except ValueError:
                    return response.status, None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailable(f"cannot reach the engine at {self.base_url}: {exc}") from exc

    async def count_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        """What the model would see for these messages, generation prompt included: exact
        where the server can tokenize, else an estimate that errs high."""
        if self.tokenizer == "estimate":
            return estimate_tokens(messages)
        if self.tokenizer == "template":
            prompt = (await self._post("/apply-template", {"messages": list(messages)}))["prompt"]
            body = await self._post("/tokenize", {"content": prompt, "add_special": True})
            return len(body["tokens"])
        payload: dict[str, Any] = {"messages": list(messages), "add_generation_prompt": True}
        if self.model_name:
            payload["model"] = self.model_name
        body = await self._post("/tokenize", payload)
        return int(body["count"]) if "count" in body else len(body["tokens"])

    async def stream_chat(
        self,
        messages: Sequence[dict[str, str]],
        sampling: Sampling,
        cache_key: str | None,
        started: asyncio.Event | None = None,
    ) -> AsyncIterator[str | StreamEnd]:
        """Yield text deltas, then one StreamEnd. Closing the iterator cancels the request.
        ``started`` is set once the engine has answered the request's headers: it has it."""
        body: dict[str, Any] = {
            "messages": list(messages),
            "stream": True,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "min_p": sampling.min_p,
            "repeat_penalty": sampling.repeat_penalty,
            "repeat_last_n": sampling.repeat_last_n,
            "seed": sampling.seed,
            "prompt_cache_key": cache_key,
            "stream_options": {"include_usage": True},  # OpenAI servers: usage at the end
        }
        if self.model_name:
            body["model"] = self.model_name
        try:
            async with self._session.post(
                f"{self.base_url}/v1/chat/completions", json=body, headers=self._traced(),
                timeout=_STREAM_TIMEOUT,
            ) as response:  # fmt: skip
                if response.status != 200:
                    raise EngineRequestError(await _error_message(response))
                if started is not None:
                    started.set()
                model, finish, usage = "", "", None
                async with contextlib.aclosing(_sse_chunks(response.content)) as chunks:
                    async for chunk in chunks:
                        if "error" in chunk:
                            raise EngineRequestError(str(chunk["error"].get("message", chunk)))
                        model = chunk.get("model") or model
                        if chunk.get("usage") or chunk.get("timings"):
                            usage = _usage(chunk.get("usage"), chunk.get("timings"))
                        for choice in chunk.get("choices") or ():
                            if text := (choice.get("delta") or {}).get("content"):
                                yield text
                            finish = choice.get("finish_reason") or finish
                        if finish and usage is not None:  # Parley: usage rides on the last chunk
                            break
                if finish:  # OpenAI servers send usage in a chunk of its own, then [DONE]
                    yield StreamEnd(finish, usage or Usage(), model)
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailable(f"lost the engine at {self.base_url}: {exc}") from exc
        raise EngineUnavailable(f"the engine at {self.base_url} ended the stream early")

    async def switch_model(self, spec: str, admin_token: str, *, now: bool = False) -> ModelCard:
        """Ask the engine to load ``spec``; running replies finish first unless ``now``."""
        headers = {**self._headers, "Authorization": f"Bearer {admin_token}"}
        payload = {"model": spec, "cancel_running": now}
        try:
            async with self._session.post(
                f"{self.base_url}/admin/model", json=payload, headers=headers, timeout=_SWAP
            ) as response:
                if response.status != 200:
                    raise EngineRequestError(await _error_message(response))
                card = (await response.json())["model"]
                return ModelCard(name=str(card["id"]), n_ctx=int(card.get("n_ctx", 4096)))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailable(f"cannot reach the engine at {self.base_url}: {exc}") from exc

    def _traced(self) -> dict[str, str]:
        """Headers with the current message's request id, so the engine logs it too."""
        if (request_id := current_request_id()) is None:
            return self._headers
        return {**self._headers, "X-Request-Id": request_id}

    async def _get(self, path: str, ok_statuses: tuple[int, ...] = (200,)) -> dict[str, Any]:
        try:
            async with self._session.get(
                self.base_url + path, headers=self._headers, timeout=_SHORT
            ) as response:
                if response.status not in ok_statuses:
                    raise EngineRequestError(await _error_message(response))
                body: dict[str, Any] = await response.json()
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailable(f"cannot reach the engine at {self.base_url}: {exc}") from exc

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._session.post(
                self.base_url + path, json=payload, headers=self._traced(), timeout=_SHORT
            ) as response:
                if response.status != 200:
                    raise EngineRequestError(await _error_message(response))
                body: dict[str, Any] = await response.json()
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailable(f"cannot reach the engine at {self.base_url}: {exc}") from exc


_SHORT = aiohttp.ClientTimeout(total=60)
_PROBE = aiohttp.ClientTimeout(total=5)
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=600)
_SWAP = aiohttp.ClientTimeout(total=3600)  # a switch may download a model first


def _usage(body: dict[str, Any] | None, timings: dict[str, Any] | None = None) -> Usage:
    """Parley's usage, OpenAI's (cached tokens under ``prompt_tokens_details``), or
    llama-server's ``timings``, whichever the server sent."""
    body, timings = body or {}, timings or {}
    details = body.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(body.get("prompt_tokens") or timings.get("prompt_n", 0)),
        completion_tokens=int(body.get("completion_tokens") or timings.get("predicted_n", 0)),
        cached_tokens=int(
            body.get("cached_tokens") or details.get("cached_tokens") or timings.get("cache_n", 0)
        ),
        prompt_ms=float(body.get("prompt_ms") or timings.get("prompt_ms", 0.0)),
        decode_ms=float(body.get("decode_ms") or timings.get("predicted_ms", 0.0)),
    )


async def _sse_chunks(content: aiohttp.StreamReader) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON of each ``data:`` line of an event stream, until ``data: [DONE]``. Reads
    whatever has arrived and splits it here: per token, one read and one split, where
    aiohttp's line iterator took a buffer search and a join in Python."""
    rest = b""
    async for data in content.iter_any():
        lines = (rest + data).split(b"\n") if rest else data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            if not line.startswith(b"data: "):
                continue
            if line.startswith(b"data: [DONE]"):
                return
            yield json.loads(line[6:].decode())


async def _error_message(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError):
        return f"engine answered HTTP {response.status}"
