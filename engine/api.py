"""The engine's HTTP contract as types: parse request bodies at the edge, build OpenAI chunks.

Unknown fields are ignored (OpenAI clients send many); known fields are validated so a bad
value is a 400 with the field named, never a crash inside the scheduler. Types are checked the
way OpenAI's API checks them: ``"0.7"`` or ``true`` is not a number and ``1`` is not a boolean
(pydantic's lax mode would quietly convert them and hide the client's bug).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)

from engine.errors import RequestError
from engine.requests import SamplingParams, Usage

T = TypeVar("T", bound=BaseModel)

INT32_MAX = 2**31 - 1  # llama.cpp takes top_k as int32_t; ctypes would silently wrap above it
MAX_PENALTY_WINDOW = 1 << 20  # llama.cpp allocates a ring buffer of repeat_last_n tokens up front
MAX_MODEL_SPEC = 4096  # PATH_MAX: longer is no file name, and the OS would raise, not answer


def _json_number(value: Any) -> Any:
    """Only JSON numbers: refuse strings and booleans before pydantic's lax coercion."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a JSON number, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", str: "a string", list: "an array", dict: "an object"}
    names |= {int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


Number = Annotated[float, BeforeValidator(_json_number)]
Integer = Annotated[int, BeforeValidator(_json_number)]  # 2.0 is 2; 2.5 is refused


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
                if not isinstance(part.get("text"), str):
                    raise ValueError('a text content part needs "text": a string')
                parts.append(part["text"])
            return "".join(parts)
        return value


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    stream: StrictBool = False
    max_tokens: Integer | None = Field(default=None, ge=1)
    max_completion_tokens: Integer | None = Field(default=None, ge=1)
    temperature: Number = Field(default=0.8, ge=0.0, le=5.0)
    top_p: Number = Field(default=0.95, gt=0.0, le=1.0)
    top_k: Integer = Field(default=40, ge=0, le=INT32_MAX)
    min_p: Number = Field(default=0.05, ge=0.0, le=1.0)
    seed: Integer | None = None  # any integer: the backend keeps its low 32 bits
    stop: str | list[str] | None = None
    frequency_penalty: Number = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: Number = Field(default=0.0, ge=-2.0, le=2.0)
    repeat_penalty: Number = Field(default=1.0, gt=0.0, le=5.0)
    repeat_last_n: Integer = Field(default=64, ge=-1, le=MAX_PENALTY_WINDOW)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    logit_bias: dict[int, Number] | None = Field(default=None, max_length=1024)

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _token_id_keys(cls, value: Any) -> Any:
        """JSON keys are strings; only plain decimal token ids may become ints (pydantic alone
        would accept " 7", "+7" or "1_0")."""
        if not isinstance(value, dict):
            return value
        for key in value:
            if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 12):
                raise ValueError(f"keys must be token ids in decimal, got {_clip(str(key))!r}")
        return {int(key): bias for key, bias in value.items()}

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        for token, bias in (value or {}).items():
            if token < 0 or not -100 <= bias <= 100:
                raise ValueError("token ids must be >= 0 and biases within [-100, 100]")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _limit_stops(cls, value: Any) -> Any:
        """One message for every wrong shape (the union's own would name a branch, "stop.str")."""
        stops = [value] if isinstance(value, str) else value if value is not None else []
        if not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
            raise ValueError("must be a string or a list of strings")
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

    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    content: str | None = None
    add_generation_prompt: StrictBool = True


class ModelSwapRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=MAX_MODEL_SPEC)
    cancel_running: StrictBool = False

    @field_validator("model")
    @classmethod
    def _a_file_name(cls, value: str) -> str:
        """Refuse what no file system can name, before the loader trips over it."""
        if "\x00" in value:
            raise ValueError("a model path cannot contain a NUL character")
        if not value.strip():
            raise ValueError("give a model path, REPO_ID:FILENAME or demo")
        return value


def parse(model: type[T], body: Any) -> T:
    """Validate ``body`` into ``model``; a RequestError names the first bad field."""
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {_json_type(body)}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(_clip(str(p)) for p in first["loc"]) or "body"
        why = _clip(first["msg"].removeprefix("Value error, "), 300)
        raise RequestError(f"{where}: {why}", param=where) from exc


def _clip(text: str, limit: int = 40) -> str:
    """Keep an echoed key or message short: a client's megabyte key is not an error message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
