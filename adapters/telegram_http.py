"""python-telegram-bot's transport to the Bot API on aiohttp instead of httpx.

Every Bot API call the bot makes (the long poll handing out messages, each placeholder, each
streamed edit) goes through this. PTB's default ``HTTPXRequest`` cost about 1.2 ms a call on
this machine against 0.35 ms for aiohttp, server side included (the same loopback POST, one
after another); on the message path that is the getUpdates answer and the final edit, and
under load the CPU every call takes from every other chat. aiohttp is already here (the engine
client, discord.py). Behaviour is PTB's: ``BaseRequest`` turns statuses into its errors
(429 → ``RetryAfter``, 401/404 → ``InvalidToken``); this maps the transport's own failures to
``TimedOut`` and ``NetworkError`` as ``HTTPXRequest`` does, and proxies come from the
environment (``HTTPS_PROXY``, ``NO_PROXY``) as with httpx.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

log = logging.getLogger(__name__)

# PTB's own HTTPXRequest defaults
READ_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
POOL_TIMEOUT = 1.0
JSON_BODY = {"Content-Type": "application/json"}


class AiohttpRequest(BaseRequest):
    """One connection pool of ``connections`` (PTB's Bot uses one for getUpdates, one of 256
    for everything else); ``before_request`` is awaited before each request is sent."""

    def __init__(
        self, connections: int = 256, read_timeout: float | None = READ_TIMEOUT,
        before_request: Callable[[], Awaitable[None]] | None = None,
    ) -> None:  # fmt: skip
        self._connections = connections
        self._read_timeout = read_timeout
        self._before_request = before_request
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str | None] = {}  # per scheme and host, from the environment

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                headers={"User-Agent": self.USER_AGENT},
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def _proxy_for(self, url: str) -> str | None:
        """Read once per host: aiohttp's ``trust_env`` reads the environment and ~/.netrc
        again on every request, in a thread, which cost more than the request itself."""
        origin = url.split("/", 3)[2] if "://" in url else url
        if origin not in self._proxies:
            self._proxies[origin] = _environment_proxy(url)
        return self._proxies[origin]

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: float | object | None = BaseRequest.DEFAULT_NONE,
        write_timeout: float | object | None = BaseRequest.DEFAULT_NONE,
        connect_timeout: float | object | None = BaseRequest.DEFAULT_NONE,
        pool_timeout: float | object | None = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """POST (or GET) ``request_data`` as JSON, or as a multipart form when it carries files.

        The Bot API takes either; a JSON body costs aiohttp 5 µs to build against 54 µs for the
        url-encoded form PTB's own transport sends (five fields, measured here), once per call.
        """
        if self._session is None or self._session.closed:
            raise RuntimeError("this AiohttpRequest is not initialized")
        if self._before_request is not None:
            await self._before_request()
        files = request_data.multipart_data if request_data else None
        data: aiohttp.FormData | bytes | None = None
        headers = None
        if request_data is not None and files:
            data = aiohttp.FormData(request_data.json_parameters)
            for name, (filename, content, mime) in files.items():
                data.add_field(name, content, filename=filename, content_type=mime)
        elif request_data is not None and (parameters := request_data.parameters):
            # ``parameters``, not PTB's ``json_payload``: that one sends objects as JSON strings
            data, headers = json.dumps(parameters).encode(), JSON_BODY
        read = _given(read_timeout, self._read_timeout)
        connect = _given(connect_timeout, CONNECT_TIMEOUT)
        pool = _given(pool_timeout, POOL_TIMEOUT)
        timeout = aiohttp.ClientTimeout(  # no total, as httpx; aiohttp has no write timeout
            total=None, sock_read=read, sock_connect=connect,
            connect=None if connect is None or pool is None else connect + pool,
        )  # fmt: skip
        try:
            async with self._session.request(
                method, url, data=data, headers=headers, timeout=timeout,
                proxy=self._proxy_for(url),
            ) as response:  # fmt: skip
                body = await response.read()
        except TimeoutError as exc:
            raise TimedOut from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc
        log.debug("%s %s: %d", method, url, response.status)  # token masked: common/redact.py
        return response.status, body


def _environment_proxy(url: str) -> str | None:
    """The proxy ``HTTPS_PROXY``/``HTTP_PROXY`` (less ``NO_PROXY``) name for ``url``."""
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _given(value: float | object | None, default: float | None) -> float | None:
    """A timeout passed to the call, else ours (PTB's ``DEFAULT_NONE`` means "not passed")."""
    if value is None or isinstance(value, int | float):
        return value
    return default
