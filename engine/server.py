"""aiohttp wrapper over ``EngineRuntime``: the OpenAI-compatible API, admin, health, metrics.

The server only parses, forwards and formats; scheduling lives in ``engine.core``. Every
error leaves as an OpenAI-style error object with a 4xx/5xx status, and the engine keeps
serving.

Anyone who can reach the port may use the API unless an API key is set (``--api-key`` or
ENGINE_API_KEY): then every endpoint but ``/health``, ``/metrics`` (probes and scrapers) and
``/admin/model`` (its own ADMIN_TOKEN) wants ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from common.prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE
from engine.api import (
    ChatCompletionRequest,
    Completion,
    ModelSwapRequest,
    TokenizeRequest,
    error_body,
    parse,
)
from engine.errors import EngineError, RequestError
from engine.log_context import echo_request_id, request_id_middleware
from engine.metrics import EngineMetrics
from engine.model import cpu_features
from engine.requests import Delta, Event, Failed, Finished, Usage
from engine.runtime import EngineRuntime

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
RUNTIME = web.AppKey("runtime", EngineRuntime)
METRICS = web.AppKey("metrics", EngineMetrics)
ADMIN_TOKEN = web.AppKey("admin_token", str)
API_KEY = web.AppKey("api_key", str)
# what an API key does not guard: liveness and metrics for probes and scrapers, and the
# admin endpoint, which has a token of its own
OPEN_PATHS = frozenset({"/health", "/metrics", "/admin/model"})


def create_app(runtime: EngineRuntime, admin_token: str = "", api_key: str = "") -> web.Application:
    """The engine's HTTP app; ``api_key`` (empty: none) is required on the API endpoints."""
    # ids first (errors are logged with them), then errors as JSON (a refused key too)
    middlewares = [request_id_middleware, _errors_as_json, _api_key_required]
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
    app.on_response_prepare.append(echo_request_id)
    app[RUNTIME] = runtime
    app[METRICS] = EngineMetrics(
        lambda: runtime.core.load if runtime.core else (0, 0, 0),
        lambda: runtime.core.spill if runtime.core else None,
    )
    app[ADMIN_TOKEN] = admin_token
    app[API_KEY] = api_key
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
        return _http_error(request, exc)
    except web.RequestPayloadError as exc:  # a body aiohttp could not decode (chunks, gzip)
        cause = exc.__cause__
        detail = cause.message if isinstance(cause, HttpProcessingError) else str(exc)
        message = f"the request body could not be read: {str(detail).strip()[:300]}"
        return web.json_response(error_body(message, "invalid_request_error"), status=400)
    except ConnectionError:
        # The client went away (mid-upload or mid-stream): no one to answer, nothing to log
        # as an error. aiohttp's fallback would log a traceback and a 500 for it.
        log.debug("client left during %s %s", request.method, request.path)
        return web.Response(status=499, reason="Client Closed Request")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        body = error_body("internal engine error (see the engine log)", "server_error")
        return web.json_response(body, status=500)


@web.middleware
async def _api_key_required(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse a request to a guarded endpoint without the API key. Decided by the route that
    matched, not by the path's text, so no spelling of a path slips past; a path that matches
    nothing goes on to its 404 (which names only public endpoints)."""
    expected = request.app[API_KEY]
    resource = request.match_info.route.resource
    guarded = resource is not None and resource.canonical not in OPEN_PATHS
    if expected and guarded and not _bearer_is(request, expected):
        message = "missing or wrong API key: send Authorization: Bearer <ENGINE_API_KEY>"
        # OpenAI's body for a bad key; RFC 9110 wants the scheme named on a 401
        body = error_body(message, "invalid_request_error", "invalid_api_key")
        return web.json_response(body, status=401, headers={"WWW-Authenticate": "Bearer"})
    response: web.StreamResponse = await handler(request)
    return response


def _bearer_is(request: web.Request, expected: str) -> bool:
    """Whether the request's ``Authorization: Bearer`` token is ``expected``, compared in
    constant time. aiohttp decodes header bytes that are not UTF-8 as surrogates: compare
    bytes, not text."""
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own 404/405/413 as OpenAI error objects, saying what would have worked."""
    message, headers, path = exc.reason, {}, request.path[:100]
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"{request.method} is not allowed on {path}; use {allowed}"
        headers["Allow"] = exc.headers["Allow"]
    elif exc.status == 404:
        routes = sorted(
            f"{route.method} {route.resource.canonical}"
            for route in request.app.router.routes()
            if route.method != "HEAD" and route.resource is not None
        )
        message = f"no such endpoint: {path}; the engine serves {', '.join(routes)}"
    elif exc.status == 413:
        message = f"request body too large (limit {MAX_BODY_BYTES} bytes)"
    body = error_body(message, "invalid_request_error")
    return web.json_response(body, status=exc.status, headers=headers)


async def _json_body(request: web.Request) -> Any:
    """One JSON document in UTF-8 (RFC 8259), whatever Content-Type says: curl -d labels JSON
    as a form, and llama-server and OpenAI clients accept that. A body that is not JSON gets a
    400 that says why, or a 415 when its declared media type already explains it."""
    raw = await request.read()
    try:
        return _decode_json(raw)
    except RequestError as exc:
        declared = request.content_type
        if not raw.strip() or declared.endswith(("/json", "+json")) or declared in _ANY_TYPE:
            raise
        raise _UnsupportedMediaType(
            f"{exc}; the engine takes JSON (Content-Type: application/json), not {declared[:80]}"
        ) from exc


_ANY_TYPE = ("", "*/*", "text/plain", "application/octet-stream")


def _decode_json(raw: bytes) -> Any:
    if not raw.strip():
        raise RequestError("the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RequestError(
            f"the request body is not UTF-8 (byte {exc.start} is {raw[exc.start]:#04x}); "
            "send JSON encoded as UTF-8"
        ) from exc
    try:
        body = json.loads(text, parse_constant=_no_constant)
    except RecursionError as exc:
        raise RequestError("the request body is not valid JSON: nested too deeply") from exc
    except ValueError as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from exc
    if _LONE_SURROGATE_HINT.search(text) and not _is_unicode(body):
        raise RequestError(
            "the request body has a lone UTF-16 surrogate escape (\\ud800-\\udfff "
            "without its pair), which is not a character; send valid Unicode text"
        )
    return body


_LONE_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]")  # cheap test before walking the body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (use a number or null)")


def _is_unicode(value: Any) -> bool:
    """True when every string in ``value`` (keys too) encodes to UTF-8. Iterative: json.loads
    already bounded the depth, but recursion here would double the stack it needs."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


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
            log.info("chat completion cancelled before it finished")
            runtime.cancel(generation.id)
            stats.ended("cancelled")


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
        pending = b""
        if text:
            if first:
                stats.ttft.observe(time.perf_counter() - received)
                first = False
            pending = _sse_bytes(completion.chunk({"content": "".join(text)}))
        if isinstance(event, Finished):  # the last text, the end and [DONE] in one write
            _record(stats, event.reason, event.usage)
            last = _sse_bytes(completion.chunk({}, event.reason, event.usage))
            await response.write_eof(pending + last + b"data: [DONE]\n\n")
            return response
        if pending:
            await response.write(pending)
        if isinstance(event, Failed):
            log.info("chat completion failed: %s", event.message)
            stats.ended("error")
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
            log.info("chat completion failed: %s", event.message)
            stats.ended("error")
            return web.json_response(error_body(event.message, "engine_error"), status=500)


async def _sse(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(_sse_bytes(payload))


def _sse_bytes(payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return b"data: " + data.encode() + b"\n\n"


def _record(stats: EngineMetrics, reason: str, usage: Usage) -> None:
    """Count a finished completion, and log its one INFO line (under its request id)."""
    log.info(
        "chat completion: %d prompt tokens (%d cached), %d generated, finish=%s, "
        "prompt %.0f ms, decode %.0f ms",
        usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, reason,
        usage.prompt_ms, usage.decode_ms,
        extra={
            "finish_reason": reason, "prompt_tokens": usage.prompt_tokens,
            "cached_tokens": usage.cached_tokens, "completion_tokens": usage.completion_tokens,
        },
    )  # fmt: skip
    stats.finished(reason, usage)


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
        "tensor_count": info.tensor_count,
        "load_seconds": round(runtime.model.load_seconds, 2),
        "cpu_features": cpu_features(),
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
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def admin_model(request: web.Request) -> web.Response:
    expected = request.app[ADMIN_TOKEN]
    if not expected:
        raise _AdminRefused(
            "admin endpoints are disabled: start the engine with ADMIN_TOKEN set", 403
        )
    if not _bearer_is(request, expected):
        raise _AdminRefused("wrong or missing admin token (Authorization: Bearer …)", 401)
    body = parse(ModelSwapRequest, await _json_body(request))
    runtime = request.app[RUNTIME]
    seconds = await runtime.swap_model(body.model, cancel_running=body.cancel_running)
    return web.json_response({"model": _model_card(runtime), "seconds": round(seconds, 3)})


class _UnsupportedMediaType(RequestError):
    status = 415


class _AdminRefused(RequestError):
    code = "unauthorized"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
