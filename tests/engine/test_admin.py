"""Hot model swap over /admin/model on a real engine process."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from engine.demo_model import demo_model_path
from tests.conftest import ADMIN_TOKEN
from tests.engine.sse import stream_chat, user
from tests.engine_process import EngineProcess, start_engine

pytestmark = pytest.mark.model


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second GGUF: the demo under another name (hard-linked when the filesystem allows)."""
    target = tmp_path_factory.mktemp("models") / "other.gguf"
    try:
        os.link(demo_model_path(), target)
    except OSError:
        shutil.copyfile(demo_model_path(), target)
    return target


async def swap(
    http: aiohttp.ClientSession, engine: EngineProcess, model: str, token: str | None = ADMIN_TOKEN
) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(
        engine.url + "/admin/model", json={"model": model}, headers=headers
    ) as response:
        return response.status, await response.json()


async def test_admin_calls_without_the_right_token_are_refused(
    engine: EngineProcess, http: aiohttp.ClientSession, other_model: Path
) -> None:
    assert (await swap(http, engine, str(other_model), token=None))[0] == 401
    status, body = await swap(http, engine, str(other_model), token="wrong")
    assert status == 401 and "admin token" in body["error"]["message"]
    assert engine.get("/v1/models")["data"][0]["id"] == "demo"


async def test_a_swap_while_streaming_completes_the_reply_then_serves_the_new_model(
    engine: EngineProcess, http: aiohttp.ClientSession, other_model: Path
) -> None:
    streaming = asyncio.create_task(
        stream_chat(http, engine.url, messages=user("Tell a story."), max_tokens=40, seed=5)
    )
    while engine.get("/health")["slots_busy"] == 0:
        await asyncio.sleep(0.01)
    status, body = await swap(http, engine, str(other_model))
    reply = await streaming
    assert status == 200, body
    assert body["model"]["id"] == "other.gguf"
    assert reply.finish_reason == "length" and reply.usage["completion_tokens"] == 40
    assert engine.get("/v1/models")["data"][0]["id"] == "other.gguf"
    after = await stream_chat(http, engine.url, messages=user("Hi"), max_tokens=4)
    assert after.last["model"] == "other.gguf" and after.usage["completion_tokens"] == 4


async def test_a_model_that_fails_to_load_leaves_the_old_one_serving(
    engine: EngineProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    before = engine.get("/v1/models")["data"][0]["id"]
    status, body = await swap(http, engine, str(tmp_path / "missing.gguf"))
    assert status == 400 and "model file not found" in body["error"]["message"]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    status, body = await swap(http, engine, str(bad))
    assert status == 400 and "could not load" in body["error"]["message"]
    assert engine.get("/v1/models")["data"][0]["id"] == before
    reply = await stream_chat(http, engine.url, messages=user("Still there?"), max_tokens=3)
    assert reply.usage["completion_tokens"] == 3


async def test_admin_is_disabled_without_an_admin_token(http: aiohttp.ClientSession) -> None:
    bare = start_engine("--n-ctx", "256", "--parallel", "1", env={"ADMIN_TOKEN": ""})
    try:
        status, body = await swap(http, bare, "demo", token="anything")
        assert status == 403 and "ADMIN_TOKEN" in body["error"]["message"]
    finally:
        bare.stop()
