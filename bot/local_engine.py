"""Start and stop the local engine process the bot uses when ENGINE_URLS is empty.

The engine runs as ``python -m engine --port 0``; it prints ``listening on URL`` once bound,
and ``/health`` turns ``ok`` when the model is loaded. On Linux the child is asked to die
with its parent (PR_SET_PDEATHSIG), so even a ``kill -9`` of the bot leaves no orphan engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path

import aiohttp

from bot.engine_client import EngineClient
from bot.errors import EngineUnavailable, ModelUnavailable

log = logging.getLogger(__name__)

EXIT_MODEL_UNAVAILABLE = 3  # the engine's exit code when the model cannot be downloaded


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the bot process dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalEngine:
    """A supervised ``python -m engine`` child. Use ``await start()`` then ``await stop()``."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.env = env  # extra environment, e.g. ADMIN_TOKEN read from .env
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_tail: deque[str] = deque(maxlen=20)
        self._pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self, session: aiohttp.ClientSession, timeout: float) -> EngineClient:
        """Spawn the engine and wait until it serves; raise EngineUnavailable with its error."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine", "--port", "0", *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(self.env or {})},
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )  # fmt: skip
        self._pump = asyncio.create_task(self._copy_stderr())
        assert self._proc.stdout is not None
        line = (await self._proc.stdout.readline()).decode().strip()
        if not line.startswith("listening on "):
            await self._proc.wait()
            await self._pump
            raise self._failure()
        self.url = line.split()[-1]
        client = EngineClient(self.url, session)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                await self._pump
                raise self._failure()
            with contextlib.suppress(EngineUnavailable):
                if (await client.health()).status == "ok":
                    return client
            await asyncio.sleep(0.1)
        await self.stop()
        raise EngineUnavailable(f"the engine did not become ready within {timeout:.0f} s")

    async def wait(self) -> int:
        """Wait for the engine to exit (it should not, while the bot runs)."""
        assert self._proc is not None
        return await self._proc.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; never leaves the child running."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._pump is not None:
            await self._pump

    async def _copy_stderr(self) -> None:
        """Keep the engine's log in a file (and its last lines for error messages)."""
        assert self._proc is not None and self._proc.stderr is not None
        with self.log_path.open("a", encoding="utf-8") as sink:
            async for raw in self._proc.stderr:
                line = raw.decode("utf-8", "replace")
                sink.write(line)
                sink.flush()
                if line.strip():
                    self._stderr_tail.append(line.strip())

    def _failure(self) -> EngineUnavailable:
        assert self._proc is not None
        errors = [line for line in self._stderr_tail if ": error: " in line]
        reason = errors[-1].split(": error: ", 1)[1] if errors else "see " + str(self.log_path)
        if self._proc.returncode == EXIT_MODEL_UNAVAILABLE:
            return ModelUnavailable(reason)
        return EngineUnavailable(f"the engine failed to start: {reason}")
