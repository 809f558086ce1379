"""Talk to an engine over the HTTP contract in DESIGN.md (Parley's own or any OpenAI server).

The bot never imports engine internals: a local engine is a child process (``python -m
engine``) found through its ``listening on URL`` line, and everything else is HTTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.errors import EngineRequestError, EngineUnavailable

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


class EngineClient:
    """One engine's HTTP API. Safe to share between tasks of one event loop."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session

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
        body = await self._get("/v1/models")
        card = body["data"][0]
        return ModelCard(name=str(card["id"]), n_ctx=int(card.get("n_ctx", 4096)))

    async def count_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        """Exactly what the model would see for these messages, generation prompt included."""
        body = await self._post("/tokenize", {"messages": list(messages)})
        return len(body["tokens"])

    async def stream_chat(
        self, messages: Sequence[dict[str, str]], sampling: Sampling, cache_key: str | None
    ) -> AsyncIterator[str | StreamEnd]:
        """Yield text deltas, then one StreamEnd. Closing the iterator cancels the request."""
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
        }
        try:
            async with self._session.post(
                f"{self.base_url}/v1/chat/completions", json=body, timeout=_STREAM_TIMEOUT
            ) as response:
                if response.status != 200:
                    raise EngineRequestError(await _error_message(response))
                model = ""
                async for raw in response.content:
                    if not raw.startswith(b"data: ") or raw.startswith(b"data: [DONE]"):
                        continue
                    chunk = json.loads(raw[6:])
                    if "error" in chunk:
                        raise EngineRequestError(str(chunk["error"].get("message", chunk)))
                    model = chunk.get("model", model)
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content")
                    if text:
                        yield text
                    if choice.get("finish_reason"):
                        yield StreamEnd(choice["finish_reason"], _usage(chunk.get("usage")), model)
                        return
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailable(f"lost the engine at {self.base_url}: {exc}") from exc
        raise EngineUnavailable(f"the engine at {self.base_url} ended the stream early")

    async def switch_model(self, spec: str, admin_token: str, *, now: bool = False) -> ModelCard:
        """Ask the engine to load ``spec``; running replies finish first unless ``now``."""
        headers = {"Authorization": f"Bearer {admin_token}"}
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

    async def _get(self, path: str, ok_statuses: tuple[int, ...] = (200,)) -> dict[str, Any]:
        try:
            async with self._session.get(self.base_url + path, timeout=_SHORT) as response:
                if response.status not in ok_statuses:
                    raise EngineRequestError(await _error_message(response))
                body: dict[str, Any] = await response.json()
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailable(f"cannot reach the engine at {self.base_url}: {exc}") from exc

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._session.post(
                self.base_url + path, json=payload, timeout=_SHORT
            ) as response:
                if response.status != 200:
                    raise EngineRequestError(await _error_message(response))
                body: dict[str, Any] = await response.json()
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailable(f"cannot reach the engine at {self.base_url}: {exc}") from exc


_SHORT = aiohttp.ClientTimeout(total=60)
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=600)
_SWAP = aiohttp.ClientTimeout(total=3600)  # a switch may download a model first


def _usage(body: dict[str, Any] | None) -> Usage:
    if not body:
        return Usage()
    return Usage(
        prompt_tokens=int(body.get("prompt_tokens", 0)),
        completion_tokens=int(body.get("completion_tokens", 0)),
        cached_tokens=int(
            body.get("cached_tokens", body.get("prompt_tokens_details", {}).get("cached_tokens", 0))
        ),
        prompt_ms=float(body.get("prompt_ms", 0.0)),
        decode_ms=float(body.get("decode_ms", 0.0)),
    )


async def _error_message(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError):
        return f"engine answered HTTP {response.status}"
