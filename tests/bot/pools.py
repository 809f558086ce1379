"""A started engine pool over engine URLs, for tests that build a ChatService themselves."""

from __future__ import annotations

import aiohttp

from bot.engines.pool import EnginePool
from bot.engines.spec import parse_engine_spec


async def started_pool(urls: str, session: aiohttp.ClientSession) -> EnginePool:
    """``urls`` as in ENGINE_URLS; stop the pool (``await pool.stop()``) when done."""
    pool = EnginePool.of([parse_engine_spec(u) for u in urls.split(",")], session)
    await pool.start()
    return pool
