"""Wiring: settings -> store -> engines (spawned or remote) -> chat service -> adapters.

``Parley`` is an async context manager: entering starts everything, leaving stops it in
reverse order (the local engine last, so no orphan process is left even on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from bot.admin.api import admin_socket_path, serve_admin, token_path
from bot.chat.access import LIST_SETTINGS, admin_keys, open_to_anyone
from bot.chat.limits import UserLimits
from bot.chat.resume import resume_jobs
from bot.chat.service import ChatService
from bot.chat.service_calls import MODEL_KEY
from bot.engines.client import EngineClient, Sampling
from bot.engines.local import LocalEngine
from bot.engines.pool import KEEPALIVE_SECONDS, Engine, EnginePool
from bot.engines.spec import EngineSpec, parse_engine_spec, with_default_key
from bot.errors import ModelUnavailable
from bot.http_guard import ConnectionGuard, GuardedServer, serve_guarded
from bot.incoming import ReplySink
from bot.metrics import EngineLoad, Live, create_metrics_app
from bot.settings import DEMO_MODEL, Settings
from bot.store import admin_queries as store_admin
from bot.store.database import Store
from common import redact
from parley.stop_watchdog import StopWatchdog

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0  # seconds running answers get to finish when the bot is stopped
# seconds after which a stop that has not finished ends the process (parley/stop_watchdog.py):
# past the sum of its graces (answers, final texts, the engine's), under a service manager's
STOP_DEADLINE = 40.0


@dataclass(frozen=True)
class SessionOverrides:
    """``parley chat`` flags that override settings for one session."""

    model: str | None = None
    system_prompt: str | None = None
    sampling: Sampling | None = None


def sampling_from(settings: Settings) -> Sampling:
    return Sampling(
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        min_p=settings.min_p,
        repeat_penalty=settings.repeat_penalty,
        repeat_last_n=settings.repeat_last_n,
        seed=settings.seed,
    )


class Parley:
    def __init__(self, settings: Settings, overrides: SessionOverrides | None = None) -> None:
        self.settings = settings
        self.overrides = overrides or SessionOverrides()
        self.session: aiohttp.ClientSession | None = None
        self.store: Store | None = None
        self.engine: LocalEngine | None = None
        self.engines: EnginePool | None = None
        self.service: ChatService | None = None
        self.model_name = ""
        # The engine's admin token: the configured one, or a fresh secret for our own engine,
        # so in-chat /model switches work without extra setup.
        configured = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.admin_token = configured or (None if settings.engine_urls else secrets.token_urlsafe())
        self.admin_token_given = configured is not None
        self.admin_info: dict[str, Any] = {"adapters": ["terminal"], "model_spec": ""}
        self.admin_runner: web.AppRunner | None = None
        self.metrics_server: GuardedServer | None = None
        self.metrics_url = ""

    async def __aenter__(self) -> ChatService:
        connector = aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_SECONDS)
        self.session = aiohttp.ClientSession(connector=connector)
        try:
            return await self._start(self.session)
        except BaseException:
            await self.close()
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _start(self, session: aiohttp.ClientSession) -> ChatService:
        settings = self.settings
        self.store = await Store.open(settings.database_path.expanduser())
        if settings.metrics_port is not None:  # alive while the engines load; ready once up
            self.metrics_server = await serve_metrics(
                self, settings.metrics_host, settings.metrics_port
            )
            self.metrics_url = self.metrics_server.url
        self.engines = engines = await self._engines(session)
        self.model_name = engines.primary.model
        service = ChatService(
            self.store,
            engines,
            sampling=self.overrides.sampling or sampling_from(settings),
            system_prompt=(
                self.overrides.system_prompt
                if self.overrides.system_prompt is not None
                else settings.system_prompt
            ),
            max_pending_per_user=settings.max_pending_per_user,
            max_pending_total=settings.max_pending_total,
            admin_token=self.admin_token,
            models_dir=settings.models_dir,
            engine_wait=settings.engine_start_timeout,
            on_model_switch=self.engine.use_model if self.engine else None,
            limits=UserLimits(
                settings.rate_limit_per_minute, settings.daily_token_quota, admin_keys(settings)
            ),
        )
        service.start()
        self.service = service
        for row in await store_admin.people(self.store):
            if row.allowed:
                service.allowed_at_runtime.add((row.platform, row.platform_user_id))
        self.admin_runner = await serve_admin(
            service, self.admin_socket, self.admin_token or secrets.token_urlsafe(),
            self.admin_info, write_token=not self.admin_token_given,
        )  # fmt: skip
        return service

    async def _engines(self, session: aiohttp.ClientSession) -> EnginePool:
        """The ENGINE_URLS engines, or a local one; started (probed and watched)."""
        if self.settings.engine_urls:
            specs = [
                with_default_key(parse_engine_spec(entry), self.settings.engine_api_key)
                for entry in self.settings.engine_urls
            ]
            redact.REDACTOR.add(*(spec.api_key for spec in specs if spec.api_key))
            pool = EnginePool.of(specs, session)
        else:
            client = await self._local_engine(session)
            pool = EnginePool([Engine(EngineSpec(client.base_url), client, self.engine)])
        await pool.start(wait=self.settings.engine_start_timeout)
        return pool

    async def _local_engine(self, session: aiohttp.ClientSession) -> EngineClient:
        """Spawn the local engine (falling back to demo when the model cannot be had)."""
        assert self.store is not None
        chosen = await self.store.get_setting(MODEL_KEY)  # the last `/model` switch, if any
        model = self.overrides.model or chosen or self.settings.model
        self.admin_info["model_spec"] = model
        try:
            return await self._spawn(session, model)
        except ModelUnavailable as exc:
            if model == DEMO_MODEL:
                raise
            print(f"parley: {exc}; using the demo model instead", file=sys.stderr, flush=True)
            return await self._spawn(session, DEMO_MODEL)

    async def _spawn(self, session: aiohttp.ClientSession, model: str) -> EngineClient:
        settings = self.settings
        args = ["--model", model, "--n-ctx", str(settings.engine_n_ctx)]
        args += ["--parallel", str(settings.engine_parallel)]
        args += ["--kv-cache-ram-mb", str(settings.kv_cache_ram_mb)]
        # .env is not in the child's environment: pass what the operator chose. Unset, the
        # engine.log file keeps INFO (model loads, one line per answer): the bot's default of
        # warning is for the terminal.
        args += ["--log-format", settings.log_format]
        if "log_level" in settings.model_fields_set:
            args += ["--log-level", settings.log_level]
        if settings.engine_threads:
            args += ["--threads", str(settings.engine_threads)]
        if settings.engine_n_gpu_layers is not None:
            args += ["--n-gpu-layers", str(settings.engine_n_gpu_layers)]
        log_path = settings.database_path.expanduser().parent / "engine.log"
        env = {"ADMIN_TOKEN": self.admin_token} if self.admin_token else {}
        key = settings.engine_api_key.get_secret_value() if settings.engine_api_key else None
        self.engine = LocalEngine(args, log_path=log_path, env=env, api_key=key)
        return await self.engine.start(session, settings.engine_start_timeout)

    @property
    def admin_socket(self) -> Path:
        return admin_socket_path(self.settings)

    async def close(self) -> None:
        """Close what was started, each part even if one before it failed: a part left open
        (the store's thread, the engine) would keep the process from ever exiting."""
        metrics, admin, service = self.metrics_server, self.admin_runner, self.service
        engines, engine, store, session = self.engines, self.engine, self.store, self.session
        await close_all([
            ("the metrics server", None if metrics is None else metrics.close),
            ("the admin socket", None if admin is None else self._close_admin),
            ("the answers", None if service is None else service.stop),
            ("the engines' watchers", None if engines is None else engines.stop),
            ("the local engine", None if engine is None else engine.stop),
            ("the store", None if store is None else store.close),
            ("the HTTP session", None if session is None else session.close),
        ])  # fmt: skip

    async def _close_admin(self) -> None:
        assert self.admin_runner is not None
        await self.admin_runner.cleanup()
        self.admin_socket.unlink(missing_ok=True)
        token_path(self.admin_socket).unlink(missing_ok=True)


async def close_all(parts: list[tuple[str, Callable[[], Awaitable[object]] | None]]) -> None:
    """Await each part's close in order (None: never started), logging any that fails."""
    for name, close in parts:
        if close is None:
            continue
        try:
            await close()
        except Exception:
            log.exception("closing %s failed", name)


async def serve_metrics(app: Parley, host: str, port: int) -> GuardedServer:
    """``/metrics`` and ``/healthz`` (bot/metrics.py), from before the engines are up (so a
    long model download is not mistaken for a dead bot). Its connections are bounded in
    number and idle time (bot/http_guard.py): idle sockets cannot fill the bot's fds."""

    def live() -> Live:
        queued, running = app.service.load() if app.service else (0, 0)
        engines = [
            EngineLoad(redact.redact(e.url), e.up, e.capacity, e.busy, e.jobs, e.failures)
            for e in (app.engines.engines if app.engines else ())
        ]
        restarts = app.engine.restarts if app.engine else 0
        return Live(queued, running, restarts, engines)

    def ready() -> tuple[bool, list[str]]:
        if app.engines is None or app.service is None:
            return False, ["starting: waiting for the engine to load its model"]
        if (fault := app.service.storage.fault) is not None:
            return False, [f"the database cannot be written: {fault}"]
        if any(engine.up for engine in app.engines.engines):
            return True, []
        return False, [f"no engine is serving ({e.url}: {e.reason})" for e in app.engines.engines]

    guard = ConnectionGuard()
    metrics_app = create_metrics_app(live, ready, middlewares=[guard.middleware])
    return await serve_guarded(metrics_app, host, port, guard)


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, settings, clients: most of the heap) out
    of the garbage collector's sight. A full collection then scans only what answering
    creates; each one stalls every chat. Measured over one bot bench run: the longest
    collections went from 52-82 ms to 13-29 ms, their total from 157 to 72 ms."""
    gc.collect()
    gc.freeze()


class PlatformAdapter(Protocol):
    platform: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def resume_reply(
        self, chat_id: str, user_id: str, source_ref: str | None, reply_ref: str | None
    ) -> ReplySink | None: ...


async def run_platforms(
    settings: Settings, service: ChatService, info: dict[str, Any] | None = None
) -> int:
    """Run every platform with a token until SIGINT/SIGTERM, then stop them cleanly. The
    process's last act: from the signal on, it ends within STOP_DEADLINE s, however stuck."""
    adapters: list[PlatformAdapter] = []
    if settings.telegram_token is not None:
        from adapters.telegram import TelegramAdapter

        adapters.append(TelegramAdapter(settings, service))
    if settings.discord_token is not None:
        from adapters.discord import DiscordAdapter

        adapters.append(DiscordAdapter(settings, service))
    for platform in open_to_anyone(settings):
        log.warning(
            "%s: anyone may talk to the bot and spend this machine's compute; set %s to "
            "choose who may", platform.capitalize(), LIST_SETTINGS[platform],
        )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: list[PlatformAdapter] = []
    try:
        for adapter in adapters:
            await adapter.start()
            started.append(adapter)
            await resume_jobs(
                service, adapter.platform, adapter.resume_reply, settings.resume_max_age
            )
        freeze_startup_objects()
        names = ", ".join(type(a).__name__.removesuffix("Adapter") for a in adapters)
        if info is not None:
            info["adapters"] = [type(a).__name__.removesuffix("Adapter").lower() for a in adapters]
        print(f"Parley is answering on {names} with {service.model}. Ctrl-C stops.", flush=True)
        await stop.wait()
    finally:
        StopWatchdog(STOP_DEADLINE).arm()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        # while the platforms are up: answers being written get SHUTDOWN_GRACE s, the rest
        # are interrupted with a note and written again by the next start
        await service.stop(grace=SHUTDOWN_GRACE, resumable=True)
        for adapter in reversed(started):
            try:
                await adapter.stop()
            except Exception:
                log.exception("stopping %s failed", type(adapter).__name__)
    return 0
