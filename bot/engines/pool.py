"""The engines the bot answers with, and which one takes the next answer.

One engine (the local child, or one URL) is the common case; ENGINE_URLS may name several,
Parley's own or OpenAI-compatible. Each has a capacity (answers at once: a Parley engine's
slots, else ``max_concurrency``), and the pool routes each job to the engine with the most
free room, except that a conversation goes back to the engine that last answered it while
that one has room: its KV cache is there, so the follow-up's prompt is mostly cached.

An engine that fails a health check or drops a stream leaves the rotation at once; its
watcher re-checks it every ``RECHECK_EVERY`` s and it rejoins when healthy (re-probed: it
may have been replaced by another kind of server). Jobs still queued simply go to the
others; the service retries a running one once, on whichever engine has room.
Event-loop-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from bot.chat.context_fit import ScaffoldBound, measure_scaffold
from bot.engines.client import TOKENIZER_SAYS, EngineClient, ModelCard
from bot.engines.probe import Kind, check, probe
from bot.engines.spec import EngineSpec
from bot.errors import EngineLoading, EngineUnavailable, ParleyError

log = logging.getLogger(__name__)

HEALTH_EVERY = 2.0  # seconds between checks of an engine in rotation
RECHECK_EVERY = 0.5  # seconds between checks of an engine out of rotation
HOMES_KEPT = 10_000  # conversations whose engine is remembered
# Connections opened to an engine as it joins the rotation, one per slot (at most this many):
# the first answers at each new level of concurrency then find one open instead of each
# waiting for a connect (and, to a remote engine over TLS, a handshake). bench/bot.py's
# overhead phase had opened 5 of its 9 engine connections on users' first messages (their
# engine requests p90 1.06 ms against 0.53 for later ones); its p99 moved within noise.
WARM_CONNECTIONS = 32
# How long an idle connection to an engine is kept (aiohttp's default is 15 s): a burst that
# comes within a minute of the last finds its connections open. Below the 75 s after which
# aiohttp servers, Parley's engine among them, close idle ones, so the bot's side lets go first.
KEEPALIVE_SECONDS = 60.0


class EngineSupervisor(Protocol):
    """What the pool needs of a supervised engine (bot/engines/local.py)."""

    ready: asyncio.Event  # set while the engine serves


@dataclass(eq=False)
class Engine:
    """One engine and what the pool knows of it."""

    spec: EngineSpec
    client: EngineClient
    supervisor: EngineSupervisor | None = None  # the local engine's restarter
    kind: Kind | None = None  # None until first probed
    capacity: int = 0
    model: str = ""
    n_ctx: int = 0
    busy: int = 0
    up: bool = False
    reason: str = "not checked yet"  # why it is out of rotation
    loading: bool = False  # it answers, but is loading its model
    jobs: int = 0
    failures: int = 0
    poke: asyncio.Event = field(default_factory=asyncio.Event)  # check it now
    bounds: dict[str, ScaffoldBound] = field(default_factory=dict)  # per model

    @property
    def url(self) -> str:
        return self.client.base_url  # a restarted local engine has a new port

    @property
    def free(self) -> int:
        return self.capacity - self.busy if self.up else 0


class EnginePool:
    def __init__(self, engines: Sequence[Engine]) -> None:
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        self.engines = list(engines)
        self.limit: int | None = None  # at most this many answers at once in all (tests)
        self._homes: OrderedDict[str, Engine] = OrderedDict()
        self._changed = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []

    @classmethod
    def of(cls, specs: Sequence[EngineSpec], session: aiohttp.ClientSession) -> EnginePool:
        """A pool over ENGINE_URLS entries (not yet started)."""
        return cls([
            Engine(spec, EngineClient(spec.url, session, api_key=spec.api_key, model=spec.model))
            for spec in specs
        ])  # fmt: skip

    async def start(self, wait: float = 0.0) -> None:
        """Probe every engine, waiting up to ``wait`` s while none serves but some are
        loading their model; EngineUnavailable naming each one's trouble if none serves.
        Those down now are watched and join when they serve."""
        deadline = time.monotonic() + wait
        await asyncio.gather(*(self._refresh(engine) for engine in self.engines))
        while not any(e.up for e in self.engines) and time.monotonic() < deadline:
            loading = [e for e in self.engines if e.loading]
            if not loading:
                break
            log.info("waiting for %s to load", ", ".join(e.url for e in loading))
            await asyncio.sleep(RECHECK_EVERY)
            await asyncio.gather(*(self._refresh(engine) for engine in loading))
        if not any(engine.up for engine in self.engines):
            if len(self.engines) == 1:
                raise EngineUnavailable(self.engines[0].reason)
            troubles = "; ".join(f"{e.url}: {e.reason}" for e in self.engines)
            raise EngineUnavailable(f"no engine is serving ({troubles})")
        self._watchers = [
            asyncio.create_task(self._watch(engine), name=f"parley-engine-watch-{index}")
            for index, engine in enumerate(self.engines)
        ]

    async def stop(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        for watcher in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        self._watchers.clear()

    # ---- routing ----------------------------------------------------------------------

    @property
    def primary(self) -> Engine:
        """The engine whose model is shown as "the" model: the first one serving."""
        return next((engine for engine in self.engines if engine.up), self.engines[0])

    def room(self) -> int:
        """How many answers could start now."""
        free = sum(engine.free for engine in self.engines)
        if self.limit is not None:
            free = min(free, self.limit - sum(engine.busy for engine in self.engines))
        return max(free, 0)

    def has_room(self) -> bool:
        return self.room() > 0

    async def wait_for_room(self) -> None:
        while not self.has_room():
            self._changed.clear()
            await self._changed.wait()

    def lease(self, key: str) -> Engine | None:
        """Take a slot for conversation ``key``: its engine if that has room, else the one
        with the most room; None if none has any. Give it back with ``release``."""
        if not self.has_room():
            return None
        engine = self._homes.get(key)
        if engine is None or engine.free <= 0:
            engine = max(self.engines, key=lambda e: (e.free, e.capacity))
        engine.busy += 1
        engine.jobs += 1
        self._homes[key] = engine
        self._homes.move_to_end(key)
        if len(self._homes) > HOMES_KEPT:
            self._homes.popitem(last=False)
        return engine

    async def acquire(
        self, key: str, timeout: float, cancelled: asyncio.Event | None = None
    ) -> Engine | None:
        """``lease``, waiting up to ``timeout`` s for room; EngineUnavailable if none comes,
        None as soon as ``cancelled`` is set (/stop, or the bot stopping)."""
        deadline = time.monotonic() + timeout
        stop = cancelled or asyncio.Event()
        while (engine := self.lease(key)) is None and not stop.is_set():
            room = asyncio.ensure_future(self.wait_for_room())
            stopping = asyncio.ensure_future(stop.wait())
            left = max(deadline - time.monotonic(), 0.0)
            done, _ = await asyncio.wait(
                {room, stopping}, timeout=left, return_when="FIRST_COMPLETED"
            )
            room.cancel()
            stopping.cancel()
            if not done:
                troubles = "; ".join(f"{e.url}: {e.reason}" for e in self.engines if not e.up)
                raise EngineUnavailable(f"no engine came back ({troubles})")
        return engine

    def release(self, engine: Engine) -> None:
        engine.busy -= 1
        self._changed.set()

    def lost(self, engine: Engine, reason: str) -> None:
        """An answer on ``engine`` failed on the connection: its slot back, and the engine
        out of rotation."""
        self.release(engine)
        self.failed(engine, reason)

    async def scaffold_bound(self, engine: Engine) -> ScaffoldBound | None:
        """The engine's template size, measured on its model's first use (None if it cannot
        say: every turn is then counted)."""
        if engine.model not in engine.bounds:
            try:
                engine.bounds[engine.model] = await measure_scaffold(engine.client.count_tokens)
            except EngineUnavailable:
                raise
            except ParleyError as exc:
                log.debug("no scaffold bound for %s: %s", engine.url, exc)
                return None
        return engine.bounds[engine.model]

    def failed(self, engine: Engine, reason: str) -> None:
        """A request to ``engine`` failed on the connection: out of rotation until its
        watcher finds it healthy again."""
        engine.failures += 1
        self._down(engine, reason)
        engine.poke.set()

    # ---- what the operator sees -------------------------------------------------------

    def describe(self) -> list[dict[str, object]]:
        """One row per engine for `parley admin status` (no API keys)."""
        return [
            {
                "url": e.url, "kind": e.kind or "unknown", "up": e.up,
                "status": "ok" if e.up else e.reason, "model": e.model, "n_ctx": e.n_ctx,
                "slots_busy": e.busy, "slots_total": e.capacity, "jobs": e.jobs,
                "failures": e.failures,
                "tokens": TOKENIZER_SAYS[e.client.tokenizer] if e.kind else "not probed yet",
            }
            for e in self.engines
        ]  # fmt: skip

    async def switch_model(self, spec: str, admin_token: str, *, now: bool) -> ModelCard:
        """Load ``spec`` on every Parley engine (OpenAI servers choose their own model)."""
        targets = [e for e in self.engines if e.kind == "parley"]
        if not targets:
            raise ParleyError(
                "these engines are OpenAI-compatible servers: switch the model on the server itself"
            )
        cards = await asyncio.gather(
            *(e.client.switch_model(spec, admin_token, now=now) for e in targets)
        )
        for engine, card in zip(targets, cards, strict=True):
            engine.model, engine.n_ctx = card.name, engine.spec.n_ctx or card.n_ctx
        return cards[0]

    # ---- health -----------------------------------------------------------------------

    async def _watch(self, engine: Engine) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                pause = HEALTH_EVERY if engine.up else RECHECK_EVERY
                await asyncio.wait_for(engine.poke.wait(), pause)
            engine.poke.clear()
            if engine.up:
                await self._recheck(engine)
            else:
                await self._refresh(engine)

    async def _recheck(self, engine: Engine) -> None:
        reason = await self._trouble(engine)
        if reason is not None:
            self._down(engine, reason)

    async def _refresh(self, engine: Engine) -> None:
        """(Re)probe an engine out of rotation; it joins if it serves."""
        if engine.supervisor is not None and not engine.supervisor.ready.is_set():
            engine.reason = "restarting"
            return
        try:
            facts = await probe(engine.client, engine.spec)
        except (EngineUnavailable, ParleyError, KeyError, TypeError, ValueError) as exc:
            engine.reason = str(exc) or type(exc).__name__
            engine.loading = isinstance(exc, EngineLoading)
            return
        engine.loading = False
        engine.kind, engine.capacity, engine.model = facts.kind, facts.capacity, facts.model
        engine.n_ctx, engine.client.tokenizer = facts.n_ctx, facts.tokenizer
        if not engine.up:
            if engine.reason != "not checked yet":
                log.warning("engine %s is back in rotation", engine.url)
            engine.up, engine.reason = True, ""
            await self._warm(engine)
            self._changed.set()

    async def _warm(self, engine: Engine) -> None:
        """Open a connection per slot (see ``WARM_CONNECTIONS``): requests sent at once each
        take an idle connection or open one."""
        count = min(engine.capacity, WARM_CONNECTIONS)
        await asyncio.gather(
            *(engine.client.fetch("/health") for _ in range(count)), return_exceptions=True
        )

    async def _trouble(self, engine: Engine) -> str | None:
        """Why an engine in rotation should leave it, if it should. A supervised (local)
        engine is already polled twice a second by its supervisor: its word is enough."""
        if engine.supervisor is not None:
            return None if engine.supervisor.ready.is_set() else "restarting"
        assert engine.kind is not None
        return await check(engine.client, engine.kind)

    def _down(self, engine: Engine, reason: str) -> None:
        if engine.up:
            log.warning("engine %s is out of rotation: %s", engine.url, reason)
        engine.up, engine.reason = False, reason
        self._changed.set()
