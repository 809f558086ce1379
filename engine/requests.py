"""Typed messages between the HTTP layer and the scheduler thread.

A request goes in with a ``sink``; the scheduler calls the sink (from its own thread) with
``Delta`` events and exactly one final ``Finished`` or ``Failed``. The HTTP layer turns the
sink into an asyncio queue; tests can use a plain list.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from common.log_context import current_request_id

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling; defaults follow llama.cpp's, ``temperature <= 0`` means greedy."""

    max_tokens: int | None = None
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()  # OpenAI's; -100 bans a token


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    prompt_ms: float
    decode_ms: float

    @property
    def prompt_per_second(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / (self.prompt_ms / 1000) if self.prompt_ms > 0 else 0.0

    @property
    def decode_per_second(self) -> float:
        # The first token comes out of prompt processing; the rest are decode steps.
        steps = self.completion_tokens - 1
        return steps / (self.decode_ms / 1000) if self.decode_ms > 0 and steps > 0 else 0.0


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: str
    usage: Usage


@dataclass(frozen=True)
class Failed:
    message: str


Event = Delta | Finished | Failed
Sink = Callable[[Event], None]

_ids = itertools.count(1)


@dataclass
class GenerationRequest:
    """One completion to run. ``prompt`` is tokenized by the model current at submit time;
    ``messages`` let the scheduler re-tokenize if the model was swapped while it waited."""

    prompt: list[int]
    params: SamplingParams
    sink: Sink
    messages: list[dict[str, str]] | None = None
    cache_key: str | None = None
    model_generation: int = 0
    id: int = field(default_factory=lambda: next(_ids))
    # The client's X-Request-Id, for the scheduler thread's log lines about this request (it
    # serves every request, so no context of one): taken from the context it is made in.
    request_id: str | None = field(default_factory=current_request_id)
