"""Routing between engines (pure logic), and what the pool learns of each kind of server:
Parley's engine, a llama-server stand-in and a bare OpenAI-compatible one, on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from bot.engines.client import EngineClient, Sampling, StreamEnd
from bot.engines.pool import HEALTH_EVERY, RECHECK_EVERY, Engine, EnginePool
from bot.engines.probe import DEFAULT_CONCURRENCY, check, probe
from bot.engines.spec import EngineSpec, parse_engine_spec
from bot.errors import EngineUnavailable, ParleyError
from tests.adapters.discord_harness import serve
from tests.emulators.openai_engine import OpenAIStandIn
from tests.emulators.scripted_engine import ScriptedEngine
from tests.engine_process import EngineProcess

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def pool_of(session: aiohttp.ClientSession, *capacities: int) -> EnginePool:
    """Engines already known to serve (no probing): routing alone."""
    engines = []
    for index, capacity in enumerate(capacities):
        client = EngineClient(f"http://127.0.0.1:{9000 + index}", session)
        engines.append(Engine(EngineSpec(client.base_url), client, kind="parley",
                              capacity=capacity, up=True, reason=""))  # fmt: skip
    return EnginePool(engines)


async def test_jobs_go_to_the_engine_with_the_most_room_until_all_are_full(
    session: aiohttp.ClientSession,
) -> None:
    pool = pool_of(session, 1, 2, 4)
    small, middle, large = pool.engines
    taken = [pool.lease(f"conversation-{n}") for n in range(7)]
    assert taken[:3] == [large, large, large]  # 4 free, then 3, then 2 (= middle's 2: larger wins)
    assert (small.busy, middle.busy, large.busy) == (1, 2, 4)
    assert pool.lease("conversation-8") is None and not pool.has_room()
    pool.release(middle)
    assert pool.lease("conversation-9") is middle


async def test_a_conversation_goes_back_to_its_engine_while_that_has_room(
    session: aiohttp.ClientSession,
) -> None:
    pool = pool_of(session, 1, 1)
    first, second = pool.engines
    assert pool.lease("alice") is first
    assert pool.lease("bob") is second
    pool.release(first)
    pool.release(second)
    assert pool.lease("bob") is second  # both idle: bob's cache is on the second
    assert pool.lease("alice") is first
    pool.release(first)
    assert pool.lease("carol") is first
    assert pool.lease("alice") is None  # alice's engine is full, and so is the other


async def test_a_failed_engine_leaves_the_rotation(session: aiohttp.ClientSession) -> None:
    pool = pool_of(session, 2, 2)
    first, second = pool.engines
    engine = pool.lease("alice")
    assert engine is first
    pool.release(first)
    pool.failed(first, "lost the engine")
    assert not first.up and first.failures == 1 and first.reason == "lost the engine"
    assert pool.lease("alice") is second  # its home is down: elsewhere, and that is home now
    assert pool.lease("bob") is second and pool.lease("carol") is None
    with pytest.raises(EngineUnavailable, match="no engine came back"):
        await pool.acquire("dave", timeout=0.05)


async def test_waiting_for_an_engine_ends_as_soon_as_the_answer_is_stopped(
    session: aiohttp.ClientSession,
) -> None:
    pool = pool_of(session, 1)
    (only,) = pool.engines
    assert pool.lease("alice") is only  # full: bob's retry has to wait
    stopped = asyncio.Event()
    waiting = asyncio.create_task(pool.acquire("bob", timeout=60, cancelled=stopped))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    stopped.set()  # /stop, or SIGTERM's grace running out
    assert await asyncio.wait_for(waiting, 1) is None and only.busy == 1
    pool.release(only)
    assert await pool.acquire("bob", timeout=1, cancelled=asyncio.Event()) is only


async def test_a_limit_caps_answers_across_engines(session: aiohttp.ClientSession) -> None:
    pool = pool_of(session, 4, 4)
    pool.limit = 3
    assert [pool.lease(str(n)) is not None for n in range(4)] == [True, True, True, False]


@pytest.mark.model
async def test_a_parley_engine_reports_its_slots_and_context(
    engine: EngineProcess, session: aiohttp.ClientSession
) -> None:
    client = EngineClient(engine.url, session)
    facts = await probe(client, EngineSpec(engine.url))
    assert facts.kind == "parley" and facts.tokenizer == "messages" and facts.model == "demo"
    assert facts.capacity == engine.get("/health")["slots_total"]
    assert facts.n_ctx == engine.get("/v1/models")["data"][0]["n_ctx"]
    capped = await probe(client, EngineSpec(engine.url, max_concurrency=1))
    assert capped.capacity == 1
    assert await check(client, "parley") is None


async def test_llama_server_is_counted_exactly_through_its_template(
    session: aiohttp.ClientSession,
) -> None:
    stand_in = OpenAIStandIn("one two three", flavour="llama-server", slots=3, n_ctx=2048)
    async with serve(stand_in.app()) as url:
        client = EngineClient(url, session)
        facts = await probe(client, EngineSpec(url))
        assert (facts.kind, facts.capacity, facts.n_ctx) == ("openai", 3, 2048)
        assert facts.tokenizer == client.tokenizer == "template"
        # "<|user|> hello there <|assistant|>": four words, the stand-in's tokens
        assert await client.count_tokens(HELLO) == 4
        assert await check(client, "openai") is None
        pieces = [p async for p in client.stream_chat(HELLO, Sampling(max_tokens=8), "c-1")]
    end = pieces[-1]
    assert "".join(p for p in pieces if isinstance(p, str)) == "one two three"
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop"
    assert (end.usage.prompt_tokens, end.usage.completion_tokens, end.usage.cached_tokens) == (
        10, 3, 3,
    )  # fmt: skip
    assert end.usage.decode_ms > 0  # from llama-server's timings
    assert stand_in.requests[0]["stream_options"] == {"include_usage": True}


async def test_a_bare_server_gets_estimates_defaults_and_its_model_name(
    session: aiohttp.ClientSession,
) -> None:
    stand_in = OpenAIStandIn("fine thanks", flavour="bare", n_ctx=8192, api_key="sk-test-1")
    async with serve(stand_in.app()) as url:
        with pytest.raises(EngineUnavailable, match="refused the API key"):
            await probe(EngineClient(url, session), EngineSpec(url))
        spec = parse_engine_spec(f"{url};api_key=sk-test-1;model=bare-model")
        client = EngineClient(url, session, api_key=spec.api_key, model=spec.model)
        refused = stand_in.refused
        facts = await probe(client, spec)
        assert (facts.capacity, facts.n_ctx, facts.tokenizer) == (
            DEFAULT_CONCURRENCY,
            8192,
            "estimate",
        )
        assert facts.model == "bare-model"
        estimate = await client.count_tokens(HELLO)
        assert estimate >= 2 * 2  # errs high: "hello there" is two tokens in most tokenizers
        assert await check(client, "openai") is None  # no /health: its model list answers
        pieces = [p async for p in client.stream_chat(HELLO, Sampling(max_tokens=8), None)]
        assert stand_in.refused == refused  # the key went with every request
    end = pieces[-1]
    assert isinstance(end, StreamEnd) and end.usage.completion_tokens == 2
    assert end.usage.cached_tokens == 3  # OpenAI's prompt_tokens_details
    assert stand_in.requests[0]["model"] == "bare-model"
    capped = await _probe_capped(session, stand_in)
    assert capped == 2


async def _probe_capped(session: aiohttp.ClientSession, stand_in: OpenAIStandIn) -> int:
    async with serve(stand_in.app()) as url:
        spec = parse_engine_spec(f"{url};api_key=sk-test-1;max_concurrency=2")
        client = EngineClient(url, session, api_key=spec.api_key)
        return (await probe(client, spec)).capacity


async def test_the_pool_starts_with_the_engines_that_serve_and_says_why_not(
    session: aiohttp.ClientSession,
) -> None:
    stand_in = OpenAIStandIn("ok", flavour="llama-server", slots=2)
    async with serve(stand_in.app()) as url:
        pool = EnginePool.of(
            [parse_engine_spec(url), parse_engine_spec("http://127.0.0.1:9")], session
        )
        await pool.start()
        try:
            up, down = pool.describe()
            assert up["up"] and up["slots_total"] == 2 and up["kind"] == "openai"
            assert up["tokens"] == "exact (/apply-template, then /tokenize)"
            assert not down["up"] and "cannot reach" in str(down["status"])
            assert down["tokens"] == "not probed yet"
        finally:
            await pool.stop()
    alone = EnginePool.of([parse_engine_spec("http://127.0.0.1:9")], session)
    with pytest.raises(
        EngineUnavailable, match=r"cannot reach the engine at http://127\.0\.0\.1:9"
    ):
        await alone.start()


class FlakyStandIn(OpenAIStandIn):
    """A llama-server whose health check fails while ``failing`` is set."""

    failing = False

    async def _health(self, request: web.Request) -> web.Response:
        if self.failing:
            return web.json_response({"error": {"message": "slot error"}}, status=500)
        return await super()._health(request)


async def test_an_engine_failing_its_health_check_leaves_and_rejoins_when_healthy(
    session: aiohttp.ClientSession,
) -> None:
    flaky, steady = (
        FlakyStandIn("ok", flavour="llama-server", slots=1),
        OpenAIStandIn("ok", flavour="llama-server", slots=1),
    )
    async with serve(flaky.app()) as flaky_url, serve(steady.app()) as steady_url:
        pool = EnginePool.of([parse_engine_spec(flaky_url), parse_engine_spec(steady_url)], session)
        await pool.start()
        try:
            first, second = pool.engines
            assert first.up and second.up
            flaky.failing = True
            await _until(lambda: not first.up, HEALTH_EVERY + 2)
            assert "HTTP 500" in first.reason
            assert pool.lease("alice") is second and pool.lease("bob") is None
            flaky.failing = False
            await _until(lambda: first.up, RECHECK_EVERY + 2)
            assert pool.lease("bob") is first  # back in rotation
        finally:
            await pool.stop()


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_model_switches_are_refused_for_servers_that_choose_their_own(
    session: aiohttp.ClientSession,
) -> None:
    stand_in = OpenAIStandIn("ok", flavour="llama-server", slots=1)
    async with serve(stand_in.app()) as url:
        pool = EnginePool.of([parse_engine_spec(url)], session)
        await pool.start()
        try:
            with pytest.raises(ParleyError, match="switch the model on the server itself"):
                await pool.switch_model("demo", "token", now=False)
        finally:
            await pool.stop()


async def test_an_engine_joins_with_a_connection_open_per_slot(
    session: aiohttp.ClientSession,
) -> None:
    """The first answers at once each find a connection open: none waits for a connect."""
    engine = ScriptedEngine("one two three", tokens_per_second=1000, slots=4)
    async with serve(engine.app()) as url:
        pool = EnginePool.of([parse_engine_spec(url)], session)
        await pool.start()
        try:
            assert len(engine.peers) == 4
            leased = [pool.lease(f"conversation-{n}") for n in range(4)]

            async def answer(taken: Engine | None) -> None:
                assert taken is not None
                async for _ in taken.client.stream_chat(HELLO, Sampling(max_tokens=8), None):
                    pass

            await asyncio.gather(*map(answer, leased))
            assert engine.peak_busy == 4 and len(engine.peers) == 4
        finally:
            await pool.stop()
