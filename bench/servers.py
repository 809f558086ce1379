"""Start the servers under test on loopback: Parley's engine, and llama-server when it is built.

Each benchmark phase gets a fresh server, so one phase's cached conversations cannot help or
hurt the next. Memory is read from ``/proc/PID/status`` (VmHWM: the peak resident set).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import Target
from bot.models.gguf_info import read_gguf_info
from engine.template import ARCHITECTURE_TEMPLATES, BUILTIN_TEMPLATES
from tests.engine_process import start_engine


@dataclass(frozen=True)
class ServerShape:
    """The same shape for both servers: sequences, context per sequence, threads, RAM cache,
    and (when set) the shortest cached stretch moved back past a trimmed gap."""

    parallel: int
    n_ctx: int
    threads: int
    cache_ram_mb: int = 1024
    cache_reuse: int | None = None  # None: each server's default (llama-server's is off)


@dataclass
class Running:
    target: Target
    pid: int
    card: dict[str, Any]

    def memory_mb(self) -> dict[str, float]:
        """Current and peak resident memory of the server process, in MiB."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
        return {"rss_mb": fields["VmRSS"], "peak_rss_mb": fields["VmHWM"]}

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.target.url + "/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
        return 0.0


@contextmanager
def parley(model: Path, shape: ServerShape) -> Iterator[Running]:
    engine = start_engine(
        "--model", str(model), "--parallel", str(shape.parallel), "--n-ctx", str(shape.n_ctx),
        "--threads", str(shape.threads), "--kv-cache-ram-mb", str(shape.cache_ram_mb),
        *([] if shape.cache_reuse is None else ["--cache-reuse", str(shape.cache_reuse)]),
    )  # fmt: skip
    try:
        card = engine.get("/v1/models")["data"][0]
        ban = {str(token): -100 for token in card["eog_ids"]}
        yield Running(Target("parley", engine.url, ban), engine.proc.pid, card)
    finally:
        engine.stop()


@contextmanager
def llama_server(binary: Path, model: Path, shape: ServerShape) -> Iterator[Running]:
    """llama.cpp's own server with the same slots, total KV cells, threads and RAM cache."""
    port = _free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-np", str(shape.parallel), "-c", str(shape.parallel * shape.n_ctx),
            "-t", str(shape.threads), "-tb", str(shape.threads),
            "--cache-ram", str(shape.cache_ram_mb), "--no-webui", *same_template(model),
            *_cache_reuse(shape),
        ],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "LLAMA_ARG_N_GPU_LAYERS": "0"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, Path(log.name))
        yield Running(Target("llama-server", url, {}), proc.pid, {})
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _cache_reuse(shape: ServerShape) -> list[str]:
    """llama-server's --cache-reuse, with the full sliding-window cache it needs to move cells
    (llama_memory_can_shift; Parley's engine always keeps the full window for this)."""
    if shape.cache_reuse is None:
        return []
    return ["--cache-reuse", str(shape.cache_reuse), "--swa-full"]


def same_template(model: Path) -> list[str]:
    """llama-server's arguments for the chat template Parley's engine uses on ``model``.

    A GGUF without ``tokenizer.chat_template`` (Gemma 3 270M has none) gets Parley's built-in
    template for its architecture, where llama-server falls back to ChatML: a Gemma model then
    reads ``<|im_start|>`` split into plain-text pieces (41 prompt tokens for a message Parley's
    Gemma template makes 28 of). Same template, same prompt: the ratios compare the servers.
    """
    info = read_gguf_info(model)
    builtin = ARCHITECTURE_TEMPLATES.get(info.architecture)
    if info.has_chat_template or builtin is None:
        return []  # both read the GGUF's own (or Parley refuses the model)
    with tempfile.NamedTemporaryFile("w", prefix="parley-", suffix=".jinja", delete=False) as f:
        f.write(BUILTIN_TEMPLATES[builtin])
    return ["--chat-template-file", f.name]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    raise RuntimeError("llama-server did not become healthy in 120 s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
