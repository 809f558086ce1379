"""A tiny SSE client for the engine's streaming endpoint."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Stream:
    chunks: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(
            c["choices"][0]["delta"].get("content", "") for c in self.chunks if "choices" in c
        )

    @property
    def content_times(self) -> list[float]:
        return [
            t
            for c, t in zip(self.chunks, self.times, strict=True)
            if "choices" in c and c["choices"][0]["delta"].get("content")
        ]

    @property
    def last(self) -> dict[str, Any]:
        return self.chunks[-1]

    @property
    def finish_reason(self) -> str | None:
        reason: str | None = self.last["choices"][0]["finish_reason"]
        return reason

    @property
    def usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = self.last["usage"]
        return usage


async def stream_chat(session: aiohttp.ClientSession, base_url: str, **body: Any) -> Stream:
    out = Stream()
    async with session.post(
        f"{base_url}/v1/chat/completions", json={"stream": True, **body}
    ) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[len(b"data: ") :]
            if data == b"[DONE]":
                out.done = True
                break
            out.chunks.append(json.loads(data))
            out.times.append(time.perf_counter())
    return out


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# The demo model (SmolLM2-135M-Instruct) ends its answers by itself: a test that needs an answer
# of exactly max_tokens bans its end tokens (<|endoftext|>, <|im_end|>), as an OpenAI client may.
NO_END = {"0": -100, "2": -100}
