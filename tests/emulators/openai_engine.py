"""Scripted stand-ins for OpenAI-compatible servers that are not Parley's engine.

``llama-server`` flavour: ``/health`` without slots, ``/props`` with ``total_slots`` and the
per-slot context, a text-only ``/tokenize`` beside ``/apply-template``, and ``timings`` on
the last chunk. ``bare`` flavour (like Ollama): only ``/v1/models`` and the chat route; the
finish chunk carries no usage, which comes in a chunk of its own when the request asks for
``stream_options.include_usage``. Either may demand an API key. Answers and token rate as in
``ScriptedEngine``, whose request records (``requests``, ``runs``, ``peak_busy``) it keeps.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web

from tests.emulators.scripted_engine import ScriptedEngine

Flavour = Literal["llama-server", "bare"]


class OpenAIStandIn(ScriptedEngine):
    def __init__(
        self, answer: str, *, flavour: Flavour, api_key: str | None = None,
        tokens_per_second: float = 200.0, slots: int = 4, n_ctx: int = 4096,
    ) -> None:  # fmt: skip
        super().__init__(answer, tokens_per_second=tokens_per_second, slots=slots, n_ctx=n_ctx)
        self.flavour = flavour
        self.api_key = api_key
        self.model_name = f"{flavour}-model"
        self.refused = 0  # requests without the right key

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._check_key])
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        if self.flavour == "llama-server":
            app.router.add_get("/health", self._health)
            app.router.add_get("/props", self._props)
            app.router.add_post("/apply-template", self._apply_template)
            app.router.add_post("/tokenize", self._tokenize_text)
        return app

    @web.middleware
    async def _check_key(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.refused += 1
            return web.json_response({"error": {"message": "Invalid API Key"}}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _props(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"total_slots": self.slots, "default_generation_settings": {"n_ctx": self.n_ctx}}
        )

    async def _models(self, request: web.Request) -> web.Response:
        card: dict[str, Any] = {"id": self.model_name, "object": "model"}
        if self.flavour == "bare":
            card["max_model_len"] = self.n_ctx  # as vLLM says it
        return web.json_response({"object": "list", "data": [card]})

    async def _apply_template(self, request: web.Request) -> web.Response:
        body = await request.json()
        turns = [f"<|{m['role']}|> {m['content']}" for m in body["messages"]]
        return web.json_response({"prompt": " ".join([*turns, "<|assistant|>"])})

    async def _tokenize_text(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"tokens": list(range(len(body.get("content", "").split())))})

    def final_events(
        self, body: dict[str, Any], completion_tokens: int, seconds: float
    ) -> list[dict[str, Any]]:
        choice = {"index": 0, "delta": {}, "finish_reason": "stop"}
        finish: dict[str, Any] = {"model": self.model_name, "choices": [choice]}
        if self.flavour == "llama-server":
            finish["timings"] = {
                "prompt_n": 10, "prompt_ms": 2.0, "cache_n": 3,
                "predicted_n": completion_tokens, "predicted_ms": seconds * 1000,
            }  # fmt: skip
        events = [finish]
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": completion_tokens,
                     "prompt_tokens_details": {"cached_tokens": 3}}  # fmt: skip
            events.append({"model": self.model_name, "choices": [], "usage": usage})
        return events
