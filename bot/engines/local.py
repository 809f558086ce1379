"""Start and stop the local engine process the bot uses when ENGINE_URLS is empty.

The engine runs as ``python -P -m engine --port 0``, with Parley's own folder first on its path
and the working directory not on it: a folder there named ``engine/`` cannot run in its place
(issue 29). It prints ``listening on URL`` once bound,
and ``/health`` turns ``ok`` when the model is loaded. On Linux the child is asked to die
with its parent (PR_SET_PDEATHSIG), so even a ``kill -9`` of the bot leaves no orphan engine,
and runs in a session of its own: a terminal's Ctrl-C (SIGINT to the whole foreground group)
reaches only the bot, whose graceful stop lets the engine finish the answers being written.

Once started it is supervised: an exit (kill -9, OOM, a native assert) is seen at once, an
engine that stops answering ``/health`` within ``HUNG_AFTER`` s; either way it is killed and
started again, at once the first time and with growing pauses (``BACKOFF``) if it keeps
dying soon after a start. ``ready`` is clear while it is down, so workers wait instead of
failing, and the client's URL follows the new port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path

import aiohttp

from bot.engines.client import EngineClient
from bot.engines.log_file import RotatingLog, copy_stream
from bot.engines.progress import StartupView
from bot.errors import EngineUnavailable, ModelUnavailable
from bot.store.private_files import make_private_folder
from common.progress import LINES, PROGRESS_VARIABLE
from common.progress import parse as parse_progress

log = logging.getLogger(__name__)

# The folder holding Parley's packages (bot/ and engine/ side by side), installed or a checkout.
PACKAGES_ROOT = Path(__file__).resolve().parents[2]
EXIT_MODEL_UNAVAILABLE = 3  # the engine's exit code when the model cannot be downloaded
HEALTH_EVERY = 0.5  # seconds between liveness checks
HUNG_AFTER = 6.0  # seconds without a /health answer before a live process counts as hung
BACKOFF = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)  # pause before restart n, after quick deaths
STABLE_AFTER = 60.0  # seconds up after which a death counts as the first again


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the bot process dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalEngine:
    """A supervised ``python -m engine`` child. Use ``await start()`` then ``await stop()``."""

    def __init__(
        self, args: list[str], log_path: Path, env: dict[str, str] | None = None,
        api_key: str | None = None, view: StartupView | None = None,
    ) -> None:  # fmt: skip
        """``api_key``: the engine requires it (passed in its environment, never on its
        command line, which any user of the machine can read) and the client sends it.
        ``view`` shows its download and load progress (default: on stderr)."""
        self.args = args
        self.view = view if view is not None else StartupView()
        self.log_path = log_path
        self.api_key = api_key
        # extra environment, e.g. ADMIN_TOKEN read from .env
        self.env = {**(env or {}), **({"ENGINE_API_KEY": api_key} if api_key else {})}
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_tail: deque[str] = deque(maxlen=20)
        self._pump: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._timeout = 600.0
        self._started_at = 0.0
        self._client: EngineClient | None = None
        self.ready = asyncio.Event()  # set while the engine serves
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self, session: aiohttp.ClientSession, timeout: float) -> EngineClient:
        """Spawn the engine, wait until it serves, and supervise it from then on; raise
        EngineUnavailable (ModelUnavailable) with the engine's own error if it cannot start."""
        self._timeout = timeout
        client = self._client = EngineClient("http://127.0.0.1", session, api_key=self.api_key)
        await self._launch(client)
        self.ready.set()
        self._supervisor = asyncio.create_task(
            self._supervise(client), name="parley-engine-supervisor"
        )
        return client

    def use_model(self, spec: str) -> None:
        """Restarts load ``spec``: the model the engine was last switched to."""
        if "--model" in self.args:
            self.args[self.args.index("--model") + 1] = spec

    async def _launch(self, client: EngineClient) -> None:
        make_private_folder(self.log_path.parent)
        self._proc = await asyncio.create_subprocess_exec(
            *engine_command(), "--port", "0", *self.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=engine_environment({**os.environ, **self.env, PROGRESS_VARIABLE: LINES}),
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            start_new_session=True,  # Ctrl-C in a terminal signals the bot, which stops it
        )  # fmt: skip
        self._started_at = time.monotonic()
        self._pump = asyncio.create_task(self._copy_stderr())
        try:
            await self._until_served(client)
        finally:
            self.view.ready()

    async def _until_served(self, client: EngineClient) -> None:
        """Relay the engine's progress lines until it listens, then wait for its model."""
        assert self._proc is not None and self._proc.stdout is not None
        assert self._pump is not None
        line = (await self._proc.stdout.readline()).decode().strip()
        while (step := parse_progress(line)) is not None:
            self.view.progress(step)
            line = (await self._proc.stdout.readline()).decode().strip()
        if not line.startswith("listening on "):
            await self._proc.wait()
            await self._pump
            raise self._failure()
        self.url = client.base_url = line.split()[-1]
        self.view.loading()
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                await self._pump
                raise self._failure()
            with contextlib.suppress(EngineUnavailable):
                if (await client.health()).status == "ok":
                    return
            await asyncio.sleep(0.1)
        await self._kill()
        raise EngineUnavailable(f"the engine did not become ready within {self._timeout:.0f} s")

    async def _supervise(self, client: EngineClient) -> None:
        quick_deaths = 0
        while True:
            reason = await self._trouble(client)
            self.ready.clear()
            if time.monotonic() - self._started_at >= STABLE_AFTER:
                quick_deaths = 0
            await self._kill()
            for attempt in itertools.count(quick_deaths):
                pause = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                log.error("the engine %s; restarting it in %g s", reason, pause)
                await asyncio.sleep(pause)
                try:
                    await self._launch(client)
                    break
                except EngineUnavailable as exc:
                    reason = f"could not restart ({exc})"
            quick_deaths += 1
            self.restarts += 1
            log.warning("the engine is back (restart %d)", self.restarts)
            self.ready.set()

    async def _trouble(self, client: EngineClient) -> str:
        """Wait until the engine exits or stops answering; say which."""
        assert self._proc is not None
        proc, last_answer = self._proc, time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                code = await asyncio.wait_for(proc.wait(), HEALTH_EVERY)
                return f"exited with code {code}"
            try:
                await asyncio.wait_for(client.health(), HEALTH_EVERY * 2)
                last_answer = time.monotonic()
            except (EngineUnavailable, TimeoutError):
                if time.monotonic() - last_answer > HUNG_AFTER:
                    return f"stopped answering for {HUNG_AFTER:g} s"

    async def stop(self) -> None:
        """Stop supervising, then SIGTERM, then SIGKILL after 10 s; never leaves it running."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        self.ready.clear()
        await self._kill(grace=10.0)

    async def _kill(self, grace: float = 0.0) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if grace > 0:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), grace)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if self._pump is not None:
            await self._pump
            self._pump = None

    async def _copy_stderr(self) -> None:
        """Keep the engine's log in a rotating file (and its last lines for error messages)."""
        assert self._proc is not None and self._proc.stderr is not None
        with RotatingLog(self.log_path) as sink:
            await copy_stream(self._proc.stderr, sink, self._stderr_tail)

    def _failure(self) -> EngineUnavailable:
        assert self._proc is not None
        errors = [line for line in self._stderr_tail if ": error: " in line]
        reason = errors[-1].split(": error: ", 1)[1] if errors else "see " + str(self.log_path)
        if self._proc.returncode == EXIT_MODEL_UNAVAILABLE:
            return ModelUnavailable(reason)
        return EngineUnavailable(f"the engine failed to start: {reason}")


def engine_command() -> list[str]:
    """``python -P -m engine``: -P keeps the working directory off the engine's path."""
    return [sys.executable, "-P", "-m", "engine"]


def engine_environment(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` with Parley's own folder first on PYTHONPATH, so the engine found is
    Parley's even if another path entry holds a package named ``engine``."""
    rest = [entry for entry in environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return {**environ, "PYTHONPATH": os.pathsep.join([str(PACKAGES_ROOT), *rest])}
