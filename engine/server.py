"""aiohttp wrapper over ``EngineRuntime``: the OpenAI-compatible API, admin, health, metrics.

The server only parses, forwards and formats; scheduling lives in ``engine.core``. Every
error leaves as an OpenAI-style error object with a 4xx/5xx status, and the engine keeps
serving.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any

from aiohttp import web

from engine.api import (
    ChatCompletionRequest,
    Completion,
    ModelSwapRequest,
    TokenizeRequest,
    error_body,
    parse,
)
from engine.errors import EngineError, RequestError
from engine.metrics import EngineMetrics
from engine.requests import Delta, Event, Failed, Finished, Usage
from engine.runtime import EngineRuntime

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
RUNTIME = web.AppKey("runtime", EngineRuntime)
METRICS = web.AppKey("metrics", EngineMetrics)
ADMIN_TOKEN = web.AppKey("admin_token", str)


def create_app(runtime: EngineRuntime, admin_token: str = "") -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_errors_as_json])
    app[RUNTIME] = runtime
    app[METRICS] = EngineMetrics(
        lambda: runtime.core.load if runtime.core else (0, 0, 0),
        lambda: runtime.core.spill if runtime.core else None,
    )
    app[ADMIN_TOKEN] = admin_token
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/admin/model", admin_model)
    return app


@web.middleware
async def _errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except RequestError as exc:
        body = error_body(str(exc), exc.code, exc.code, exc.param)
        return web.json_response(body, status=exc.status)
    except EngineError as exc:
        return web.json_response(error_body(str(exc), "engine_error"), status=400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason if exc.status != 413 else (
            f"request body too large (limit {MAX_BODY_BYTES} bytes)"
        )  # fmt: skip
        return web.json_response(error_body(message, "invalid_request_error"), status=exc.status)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        body = error_body("internal engine error (see the engine log)", "server_error")
        return web.json_response(body, status=500)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from exc


async def chat_completions(request: web.Request) -> web.StreamResponse:
    runtime, stats = request.app[RUNTIME], request.app[METRICS]
    body = parse(ChatCompletionRequest, await _json_body(request))
    received = time.perf_counter()
    events: asyncio.Queue[Event] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def sink(event: Event) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    generation = await asyncio.to_thread(
        runtime.prepare, body.message_dicts(), body.sampling(), sink, body.prompt_cache_key
    )
    runtime.submit(generation)
    completion = Completion(runtime.model.info.name if runtime.model else "unknown")
    done = False
    try:
        if body.stream:
            response = await _stream(request, completion, events, received, stats)
        else:
            response = await _collect(completion, events, received, stats)
        done = True
        return response
    finally:
        if not done:  # client went away or the handler failed: free the sequence now
            runtime.cancel(generation.id)
            stats.requests.inc(reason="cancelled")


async def _stream(
    request: web.Request,
    completion: Completion,
    events: asyncio.Queue[Event],
    received: float,
    stats: EngineMetrics,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    await _sse(response, completion.chunk({"role": "assistant", "content": ""}))
    first = True
    while True:
        event = await events.get()
        text = []
        while isinstance(event, Delta):  # merge what already arrived into one chunk
            text.append(event.text)
            if events.empty():
                break
            event = events.get_nowait()
        if text:
            if first:
                stats.ttft.observe(time.perf_counter() - received)
                first = False
            await _sse(response, completion.chunk({"content": "".join(text)}))
        if isinstance(event, Finished):
            _record(stats, event.reason, event.usage)
            await _sse(response, completion.chunk({}, event.reason, event.usage))
            await response.write(b"data: [DONE]\n\n")
            break
        if isinstance(event, Failed):
            stats.requests.inc(reason="error")
            await _sse(response, error_body(event.message, "engine_error"))
            break
    await response.write_eof()
    return response


async def _collect(
    completion: Completion, events: asyncio.Queue[Event], received: float, stats: EngineMetrics
) -> web.Response:
    parts: list[str] = []
    while True:
        event = await events.get()
        if isinstance(event, Delta):
            if not parts:
                stats.ttft.observe(time.perf_counter() - received)
            parts.append(event.text)
        elif isinstance(event, Finished):
            _record(stats, event.reason, event.usage)
            return web.json_response(completion.whole("".join(parts), event.reason, event.usage))
        else:
            stats.requests.inc(reason="error")
            return web.json_response(error_body(event.message, "engine_error"), status=500)


async def _sse(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    await response.write(b"data: " + data.encode() + b"\n\n")


def _record(stats: EngineMetrics, reason: str, usage: Usage) -> None:
    stats.requests.inc(reason=reason)
    stats.prompt_tokens.inc(usage.prompt_tokens)
    stats.cached_tokens.inc(usage.cached_tokens)
    stats.completion_tokens.inc(usage.completion_tokens)
    if usage.decode_per_second > 0:
        stats.decode_rate.observe(usage.decode_per_second)


async def tokenize(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = parse(TokenizeRequest, await _json_body(request))
    if body.messages is not None:
        messages = [{"role": m.role, "content": m.content} for m in body.messages]
        tokens = await asyncio.to_thread(
            runtime.tokenize_chat, messages, body.add_generation_prompt
        )
    elif body.content is not None:
        tokens = await asyncio.to_thread(runtime.tokenize_text, body.content)
    else:
        raise RequestError("give either messages or content", param="messages")
    return web.json_response({"tokens": tokens, "pieces": runtime.describe_tokens(tokens)})


def _model_card(runtime: EngineRuntime) -> dict[str, Any]:
    if runtime.model is None or runtime.core is None:
        return {"id": runtime.config.model, "object": "model", "status": runtime.status}
    info = runtime.model.info
    return {
        "id": info.name,
        "object": "model",
        "owned_by": "parley",
        "created": int(runtime.started_at),
        "path": info.path,
        "n_ctx": runtime.core.backend.n_ctx_seq,
        "n_ctx_train": info.n_ctx_train,
        "architecture": info.architecture,
        "quantization": info.quantization,
        "description": info.description,
        "n_params": info.n_params,
        "size_bytes": info.size_bytes,
        "template_source": info.template_source,
        "eog_ids": list(info.eog_ids),
        "slots": runtime.core.backend.n_seq,
        "kv_cache_bytes": runtime.core.backend.kv_bytes,
        "kv_cache_ram_budget_bytes": runtime.core.spill.budget_bytes,
    }


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [_model_card(request.app[RUNTIME])]})


async def health(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    total, busy, queued = runtime.core.load if runtime.core else (0, 0, 0)
    body = {
        "status": runtime.status,
        "model": runtime.model.info.name if runtime.model else runtime.config.model,
        "slots_total": total,
        "slots_busy": busy,
        "queued": queued,
    }
    return web.json_response(body, status=200 if runtime.status == "ok" else 503)


async def metrics(request: web.Request) -> web.Response:
    text = request.app[METRICS].render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def admin_model(request: web.Request) -> web.Response:
    expected = request.app[ADMIN_TOKEN]
    if not expected:
        raise _AdminRefused(
            "admin endpoints are disabled: start the engine with ADMIN_TOKEN set", 403
        )
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise _AdminRefused("wrong or missing admin token (Authorization: Bearer …)", 401)
    body = parse(ModelSwapRequest, await _json_body(request))
    runtime = request.app[RUNTIME]
    seconds = await runtime.swap_model(body.model, cancel_running=body.cancel_running)
    return web.json_response({"model": _model_card(runtime), "seconds": round(seconds, 3)})


class _AdminRefused(RequestError):
    code = "unauthorized"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
