"""What kind of server an engine URL is, and whether it serves right now.

Parley's engine says everything in ``/health`` (its slots) and ``/v1/models`` (its context).
An OpenAI-compatible server says less: llama-server has ``/health``, ``/props`` (slots and
context per slot) and a text-only ``/tokenize`` beside ``/apply-template``; vLLM has
``/health``, ``max_model_len`` in ``/v1/models`` and a ``/tokenize`` that takes messages;
Ollama has only ``/v1/models``. What none of them say comes from the ENGINE_URLS entry's
options, else from the defaults below (logged, so the operator knows to set them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from bot.engines.client import EngineClient, Tokenizer
from bot.engines.spec import EngineSpec
from bot.errors import EngineLoading, EngineRequestError, EngineUnavailable

log = logging.getLogger(__name__)

Kind = Literal["parley", "openai"]
DEFAULT_CONCURRENCY = 4  # answers at once on a server that does not say (max_concurrency=)
DEFAULT_N_CTX = 4096  # context on a server that does not say (n_ctx=)
_PROBE_MESSAGES = [{"role": "user", "content": "hello"}]


@dataclass(frozen=True)
class EngineFacts:
    kind: Kind
    capacity: int
    model: str
    n_ctx: int
    tokenizer: Tokenizer


async def probe(client: EngineClient, spec: EngineSpec) -> EngineFacts:
    """Find out what ``client`` talks to; EngineUnavailable saying why if it cannot serve."""
    status, health = await client.fetch("/health")
    if isinstance(health, dict) and "slots_total" in health:
        if health.get("status") != "ok":
            raise EngineLoading(f"{spec.url} is {health.get('status', 'not ready')}")
        card = await client.model()
        slots = int(health["slots_total"])
        capacity = min(spec.max_concurrency or slots, slots)
        return EngineFacts("parley", capacity, card.name, spec.n_ctx or card.n_ctx, "messages")
    _raise_for_health(spec, status)
    card = await client.model()
    props = await _props(client)
    settings = props.get("default_generation_settings") or {}
    capacity = spec.max_concurrency or int(props.get("total_slots") or 0)
    n_ctx = spec.n_ctx or card.n_ctx or int(settings.get("n_ctx") or 0)
    if not capacity:
        log.warning(
            "%s does not say how many answers it runs at once; using %d "
            "(set ;max_concurrency= in ENGINE_URLS)", spec.url, DEFAULT_CONCURRENCY,
        )  # fmt: skip
    if not n_ctx:
        log.warning(
            "%s does not say its context size; using %d (set ;n_ctx= in ENGINE_URLS)",
            spec.url, DEFAULT_N_CTX,
        )  # fmt: skip
    tokenizer = await _tokenizer(client)
    return EngineFacts(
        "openai", capacity or DEFAULT_CONCURRENCY, card.name, n_ctx or DEFAULT_N_CTX, tokenizer
    )


async def check(client: EngineClient, kind: Kind) -> str | None:
    """None if the engine serves now, else why not (for the log and `parley admin status`)."""
    try:
        status, body = await client.fetch("/health")
        if kind == "parley":
            ok = isinstance(body, dict) and body.get("status") == "ok"
            return None if ok else f"health says {_status_of(body, status)}"
        if status == 404:  # Ollama has no /health: a model list means it serves
            status, body = await client.fetch("/v1/models")
        return None if status == 200 else f"health answered HTTP {status}"
    except EngineUnavailable as exc:
        return str(exc)


def _raise_for_health(spec: EngineSpec, status: int) -> None:
    if status in (401, 403):
        raise EngineUnavailable(f"{spec.url} refused the API key (HTTP {status}; ;api_key=)")
    if status == 503:  # llama-server and vLLM while they load
        raise EngineLoading(f"{spec.url} is loading (health answered HTTP 503)")
    if status >= 500:
        raise EngineUnavailable(f"{spec.url} is failing (health answered HTTP {status})")


async def _props(client: EngineClient) -> dict[str, Any]:
    """llama-server's ``/props`` (slots, context per slot); empty elsewhere."""
    status, body = await client.fetch("/props")
    return body if status == 200 and isinstance(body, dict) else {}


async def _tokenizer(client: EngineClient) -> Tokenizer:
    """The best way this server can count a conversation's tokens."""
    ways: tuple[Tokenizer, ...] = ("messages", "template")
    for way in ways:
        client.tokenizer = way
        try:
            if await client.count_tokens(_PROBE_MESSAGES) > 0:
                return way
        except (EngineRequestError, KeyError, TypeError, ValueError):
            pass
    client.tokenizer = "estimate"
    return "estimate"


def _status_of(body: Any, status: int) -> str:
    if isinstance(body, dict) and body.get("status"):
        return str(body["status"])
    return f"HTTP {status}"
