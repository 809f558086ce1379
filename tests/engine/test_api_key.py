"""ENGINE_API_KEY: with a key the engine serves its API only to requests that carry it
(``Authorization: Bearer``), keeps /health and /metrics open for probes and scrapers and
/admin/model on its own token; the bot's engine client sends the key. The real HTTP app and
runtime over the scripted byte model (tests/engine/fuzz_engine.py), on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from bot.engines.client import EngineClient, Sampling, StreamEnd
from bot.errors import EngineRequestError
from engine.runtime import EngineConfig
from engine.server import create_app
from tests.engine.fuzz_engine import FuzzRuntime

KEY = "sk-test-engine-key-0123456789"
MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = {"messages": MESSAGES, "max_tokens": 4}
GUARDED = [
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/tokenize", {"content": "hi"}),
    ("GET", "/v1/models", None),
]


@pytest.fixture(scope="module")
def runtime() -> Iterator[FuzzRuntime]:
    runtime = FuzzRuntime(EngineConfig(model="fake", max_queue=8))
    runtime.load()
    yield runtime
    runtime.stop()


@pytest.fixture
async def engine_url(runtime: FuzzRuntime) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(runtime, admin_token="admin-token-1234", api_key=KEY))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _call(
    http: aiohttp.ClientSession, url: str, method: str, path: str, body: object, key: str | None
) -> tuple[int, dict[str, object], str]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with http.request(method, url + path, json=body, headers=headers) as response:
        return response.status, await response.json(), response.headers.get("WWW-Authenticate", "")


@pytest.mark.parametrize(("method", "path", "body"), GUARDED, ids=[p for _, p, _ in GUARDED])
async def test_the_api_wants_the_key(engine_url: str, method: str, path: str, body: object) -> None:
    async with aiohttp.ClientSession() as http:
        for key in (None, "", "wrong-key-of-some-length", KEY + "x", f"{KEY[:-1]}\u00e9"):
            status, reply, challenge = await _call(http, engine_url, method, path, body, key)
            assert status == 401, (key, reply)
            assert reply["error"]["code"] == "invalid_api_key"  # type: ignore[index]
            assert "ENGINE_API_KEY" in reply["error"]["message"]  # type: ignore[index]
            assert KEY not in str(reply)
            assert challenge == "Bearer"
        status, reply, _ = await _call(http, engine_url, method, path, body, KEY)
        assert status == 200, reply


async def test_health_and_metrics_stay_open_and_admin_keeps_its_own_token(
    engine_url: str,
) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/health", "/metrics"):
            async with http.get(engine_url + path) as response:
                assert response.status == 200, path
        # the API key is not the admin token, nor the other way round
        for token in (KEY, None):
            status, _, _ = await _call(
                http, engine_url, "POST", "/admin/model", {"model": "fake"}, token
            )
            assert status == 401
        status, _, _ = await _call(http, engine_url, "POST", "/v1/models", None, None)
        assert status in (401, 405)  # never served without the key
        status, _, _ = await _call(http, engine_url, "GET", "/no/such/path", None, None)
        assert status == 404


async def test_the_bots_client_sends_the_key(engine_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        keyed = EngineClient(engine_url, session, api_key=KEY)
        assert (await keyed.model()).name == "fake"
        assert await keyed.count_tokens(MESSAGES) > 0
        stream = keyed.stream_chat(MESSAGES, Sampling(max_tokens=4), "conversation-1")
        parts = [part async for part in stream]
        assert isinstance(parts[-1], StreamEnd) and parts[-1].usage.completion_tokens > 0
        with pytest.raises(EngineRequestError, match="ENGINE_API_KEY"):
            await EngineClient(engine_url, session).model()
