"""The engine's HTTP contract as types: parse request bodies at the edge, build OpenAI chunks.

Unknown fields are ignored (OpenAI clients send many); known fields are validated so a bad
value is a 400 with the field named, never a crash inside the scheduler.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.errors import RequestError
from engine.requests import SamplingParams, Usage

T = TypeVar("T", bound=BaseModel)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, value: Any) -> Any:
        """Accept OpenAI's list-of-parts form when every part is text."""
        if isinstance(value, list):
            parts = []
            for part in value:
                if not (isinstance(part, dict) and part.get("type") == "text"):
                    raise ValueError("only text content parts are supported")
                parts.append(str(part.get("text", "")))
            return "".join(parts)
        return value


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.8, ge=0.0, le=5.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    min_p: float = Field(default=0.05, ge=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    repeat_penalty: float = Field(default=1.0, gt=0.0, le=5.0)
    repeat_last_n: int = Field(default=64, ge=-1)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    logit_bias: dict[int, float] | None = Field(default=None, max_length=1024)

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        for token, bias in (value or {}).items():
            if token < 0 or not -100 <= bias <= 100:
                raise ValueError("token ids must be >= 0 and biases within [-100, 100]")
        return value

    @field_validator("stop")
    @classmethod
    def _limit_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 16 or any(len(s) > 256 for s in stops):
            raise ValueError("at most 16 stop strings of at most 256 characters")
        return value

    def sampling(self) -> SamplingParams:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            seed=self.seed,
            stop=tuple(s for s in stops if s),
            logit_bias=tuple(sorted((self.logit_bias or {}).items())),
        )

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    messages: list[ChatMessage] | None = None
    content: str | None = None
    add_generation_prompt: bool = True


class ModelSwapRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    cancel_running: bool = False


def parse(model: type[T], body: Any) -> T:
    """Validate ``body`` into ``model``; a RequestError names the first bad field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise RequestError(f"{where}: {first['msg']}", param=where) from exc


def error_body(
    message: str, kind: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "prompt_ms": round(usage.prompt_ms, 3),
        "decode_ms": round(usage.decode_ms, 3),
    }


class Completion:
    """Builds the OpenAI objects for one completion: streamed chunks or the whole response."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def chunk(
        self,
        delta: dict[str, str],
        finish_reason: str | None = None,
        usage: Usage | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if usage is not None:
            body["usage"] = usage_body(usage)
        return body

    def whole(self, text: str, finish_reason: str, usage: Usage) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage_body(usage),
        }
