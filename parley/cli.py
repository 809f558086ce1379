"""``parley``: the command-line entry point (run / chat / engine).

Subcommands import lazily, so ``parley engine`` never imports the bot and vice versa.
Errors end as one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import stat
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from bot.errors import EX_CONFIG, ConfigError, ParleyError
from common import log_context, redact
from common.environment import export_dotenv
from common.version import parley_version

T = TypeVar("T")

USAGE = """usage: parley COMMAND [ARGS...]

commands:
  run       run the bot on every configured platform (no token set: the terminal chat)
  chat      chat with the model in this terminal
  engine    serve a GGUF model over the OpenAI-compatible HTTP API
  admin     manage the running bot: status, models, queue, users, history, stats

'parley COMMAND --help' explains each one; 'parley --version' names the version.
"""


def chat_parser(prog: str = "parley chat") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Chat with the model in this terminal: streamed answers, memory across "
        "turns, prompt and generation speed after each answer.",
        epilog="example: printf 'Hello\\n' | parley chat --model demo -n 32",
    )
    p.add_argument("--model", help="a .gguf path, REPO_ID:FILENAME, or demo (default: MODEL)")
    p.add_argument("--system", help="system prompt for this session")
    p.add_argument("-n", "--max-tokens", type=int, help="most tokens per answer")
    p.add_argument("--temperature", type=float, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-p", type=float, help="nucleus sampling threshold")
    p.add_argument("--seed", type=int, help="random seed, for repeatable answers")
    p.add_argument("--repeat-penalty", type=float, help="penalty for repeated tokens (1 = off)")
    p.add_argument(
        "--repeat-last-n", type=int, help="how many recent tokens the penalty sees (-1: all)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    export_dotenv()  # HF_TOKEN, HF_HOME, proxies... in .env reach huggingface_hub and the engine
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        print(f"parley {parley_version()}")
        return 0
    command, rest = args[0], args[1:]
    if command == "engine":
        from engine.cli import main as engine_main

        return engine_main(rest)
    if command == "admin":
        from bot.admin.cli import main as admin_main

        return admin_main(rest)
    if command in ("chat", "run"):
        options = chat_parser(f"parley {command}").parse_args(rest)
        try:
            return run_loop(_chat_or_run(command, options))
        except ParleyError as exc:
            print(f"parley: {redact.redact(str(exc))}", file=sys.stderr, flush=True)
            if not isinstance(exc, ConfigError):
                return 1
            hold_after_config_error()
            return EX_CONFIG
    print(f"parley: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


# Set in the Docker image: Docker's `restart: unless-stopped` cannot be told that exit 78 means
# "fix the settings" (systemd's RestartPreventExitStatus can), and would restart for ever.
HOLD_VARIABLE = "PARLEY_ON_CONFIG_ERROR"


def hold_after_config_error() -> None:
    """With PARLEY_ON_CONFIG_ERROR=wait, stay up (saying so once) until SIGTERM or SIGINT
    instead of exiting at once: a container then shows the one line that says what to fix,
    unhealthy, instead of restarting into the same error for ever."""
    if os.environ.get(HOLD_VARIABLE, "exit") != "wait":
        return
    print(
        "parley: waiting for a stop: fix the settings, then recreate the container "
        "(docker compose up -d)",
        file=sys.stderr, flush=True,
    )  # fmt: skip
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    signal.sigwait(signals)


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop where it is installed, else on asyncio's own loop.

    The bot is event-loop bound (about 100 loop turns a message): on uvloop, bench/bot.py read
    overhead per message p50 0.91x and p99 0.86x of asyncio's, in two A/B pairs.
    """
    try:
        import uvloop
    except ImportError:  # e.g. Windows, which uvloop does not support
        return asyncio.run(main)
    return uvloop.run(main)


async def _chat_or_run(command: str, options: argparse.Namespace) -> int:
    from adapters.console import PLATFORM as CONSOLE
    from adapters.console import Console, startup_lines
    from bot.chat.resume import resume_jobs
    from bot.settings import load_settings
    from parley.app import Parley, SessionOverrides, run_platforms, sampling_from

    overrides_given = {
        key: value
        for key, value in {
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "seed": options.seed,
            "repeat_penalty": options.repeat_penalty,
            "repeat_last_n": options.repeat_last_n,
        }.items()
        if value is not None
    }
    if options.model is not None:
        overrides_given["model"] = options.model
    redact.install()  # before settings: a ConfigError is printed through it
    settings = load_settings(**overrides_given)
    log_context.setup_logging(settings.log_level, settings.log_format, redact.redact)
    redact.install(redact.settings_secrets(settings))  # every root handler, masked
    platforms = command == "run" and bool(settings.platform_tokens)
    if command == "run" and not platforms:
        if _no_input():  # a service or container without a token: nothing would ever happen
            raise ConfigError(NOTHING_TO_RUN)
        print("No DISCORD_TOKEN or TELEGRAM_TOKEN set: opening the terminal chat.", flush=True)
        if not sys.stdin.isatty():  # piped: say why it will end with the input
            print("(Input is not a terminal: the chat ends with it. Set a platform token to "
                  "run the bots.)", flush=True)  # fmt: skip
    overrides = SessionOverrides(
        model=options.model, system_prompt=options.system, sampling=sampling_from(settings)
    )
    app = Parley(settings, overrides)
    redact.REDACTOR.add(app.admin_token)  # the one it made for its own engine, if any
    async with app as service:
        if platforms:
            return await run_platforms(settings, service, app.admin_info)
        # an earlier terminal session's unfinished answer cannot be shown again: close it
        await resume_jobs(service, CONSOLE, lambda *_: None, settings.resume_max_age)
        assert app.engines is not None and overrides.sampling is not None
        card = await app.engines.primary.client.model()
        print("\n".join(startup_lines(card, overrides.sampling)), file=sys.stderr, flush=True)
        return await Console(service, app.model_name).run()


NOTHING_TO_RUN = (
    "nothing to run: set TELEGRAM_TOKEN or DISCORD_TOKEN (in .env or the environment) for "
    "the bots; the terminal chat needs a terminal or piped input (parley chat)"
)


def _no_input() -> bool:
    """Whether stdin is closed or /dev/null (a service's or container's), so no chat can begin."""
    try:
        here, null = os.fstat(sys.stdin.fileno()), os.stat(os.devnull)
    except (AttributeError, OSError, ValueError):  # no stdin at all
        return True
    return stat.S_ISCHR(here.st_mode) and here.st_rdev == null.st_rdev

