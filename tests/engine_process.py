"""Start the real engine (``python -m engine``) as a child process on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class EngineProcess:
    proc: subprocess.Popen[str]
    url: str
    log: IO[str]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def logs(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()


def start_engine(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> EngineProcess:
    log = tempfile.NamedTemporaryFile("w+", prefix="engine-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.wait(30)
        raise RuntimeError(f"engine did not start: {line!r} {Path(log.name).read_text()}")
    engine = EngineProcess(proc, line.split()[-1], log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"engine exited: {engine.logs()}")
        try:
            if engine.get("/health")["status"] == "ok":
                return engine
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    engine.stop()
    raise RuntimeError("engine did not become healthy")
