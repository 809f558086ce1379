"""Request ids on the engine's HTTP requests: the ``X-Request-Id`` a client sends, bound for the
request's task and echoed in its response, and the access log without the health polls.

A client may name its request with an ``X-Request-Id`` header (the bot sends the id of the
user message it answers); ``request_id_middleware`` binds it to ``REQUEST_ID`` for the
request's task (and echoes it in the response), so every line logged while serving it,
aiohttp's access line included, carries it. Work the scheduler thread does for a request
logs the id it was submitted with (``GenerationRequest.request_id``) through ``extra=``.
The log formats and the request-id filter are the bot's too: common/log_context.py.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from common.log_context import REQUEST_ID, new_request_id

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
# What a client's id may be: short, and nothing that could forge or break a log line.
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def valid_request_id(value: str | None) -> str | None:
    """``value`` if it is a usable id (at most 64 of ``A-Z a-z 0-9 . _ -``), else None."""
    return value if value is not None and _VALID_ID.fullmatch(value) else None


def current_request_id() -> str | None:
    return REQUEST_ID.get()


@web.middleware
async def request_id_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Bind the client's ``X-Request-Id`` (or a new id, when it has none or an unusable one)
    for this request. aiohttp runs each request in its own task, so the binding is not reset
    here on purpose: it lasts to the task's end, and the access line aiohttp logs after the
    handler returns carries it too; the next request on the connection starts clean."""
    request_id = valid_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
    request[REQUEST_ID_KEY] = request_id
    REQUEST_ID.set(request_id)
    response: web.StreamResponse = await handler(request)
    return response


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: every response names the id its lines were logged
    under (streams too: this runs before their headers go out)."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


QUIET_PATHS = frozenset({"/health", "/metrics"})  # polled every few seconds by the bot


class QuietAccessLogger(AccessLogger):
    """aiohttp's access line, except for successful health and metrics polls: a supervised
    engine is polled twice a second, which would add ~200,000 lines a day to its log."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.path in QUIET_PATHS and response.status < 400:
            return
        super().log(request, response, time)
