"""Secrets never leave the process: not in the bot's or the engine's log (even at debug, where
python-telegram-bot and httpx print the Bot API URL with the token in it), not in printed
errors, not in `parley admin` output or exported history.

The end-to-end tests run the real `parley run` as a subprocess against the Telegram and
Discord emulators with known secret values, then grep everything it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.errors import EX_CONFIG
from bot.settings import load_settings
from common.redact import MASK, Redactor, environment_secrets, settings_secrets
from tests.adapters.discord_harness import serve
from tests.adapters.test_console import base_env
from tests.emulators.discord_api import DiscordEmulator
from tests.emulators.scripted_engine import ScriptedEngine
from tests.emulators.telegram_api import TelegramEmulator
from tests.engine_process import ROOT

TELEGRAM = "424242:AAEsecretTelegramTokenValue_x"
DISCORD = "MTIz.secret-discord.TokenValue"
ADMIN = "admin-secret-Q9zW"
HF = "hf_secretHubTokenValue"
HUB = "hf_otherHubTokenValue"
BAD_TELEGRAM = "999:AAEwrongTelegramTokenValue"
BAD_DISCORD = "MTk5.wrong-discord.TokenValue"
SECRETS = (TELEGRAM, DISCORD, ADMIN, HF, HUB, BAD_TELEGRAM, BAD_DISCORD)
ALICE = 1001  # Telegram
CAROL = 7002  # Discord


def assert_clean(where: str, text: str, secrets: Iterable[str] = SECRETS) -> None:
    leaked = [line for line in text.splitlines() if any(s in line for s in secrets)]
    assert not leaked, f"{where} shows a secret:\n" + "\n".join(leaked[:5])


def printed_error(output: str) -> str:
    """The one error line `parley` printed (debug log lines may come before and after it)."""
    errors = [line for line in output.splitlines() if line.startswith("parley: ")]
    assert len(errors) == 1, output[-2000:]
    return errors[0]


def logged(redactor: logging.Filter, emit: Iterable[tuple[str, tuple[object, ...]]]) -> str:
    """What a handler with ``redactor`` writes for these (message, args) records."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(redactor)
    logger = logging.getLogger(f"test_secrets.{id(stream)}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    for message, args in emit:
        logger.debug(message, *args)
    try:
        raise RuntimeError(f"failed calling https://api.example/{ADMIN}/x")
    except RuntimeError:
        logger.exception("boom", stack_info=True)
    logger.removeHandler(handler)
    return stream.getvalue()


# ---- the filter ----------------------------------------------------------------------------


def test_known_values_and_token_shapes_are_masked_in_messages_args_and_tracebacks() -> None:
    redactor = Redactor()
    redactor.add(ADMIN, SecretStr(HF), None, "", "  ")
    text = logged(redactor, [
        ("Set Bot API URL: https://api.telegram.org/bot%s", (TELEGRAM,)),
        ("HTTP Request: POST https://api.telegram.org/bot424242:AAE-x_y/getMe", ()),
        ("file at https://api.telegram.org/file/bot1:abc/photos/1.jpg", ()),
        ("PATCH http://d/api/v10/webhooks/123/aW50ZXJhY3Rpb24.abc-_/messages/@original", ()),
        ("POST http://d/api/v10/interactions/9/aW50.x_y/callback?with_response=1", ()),
        ("event %s", ({"t": "INTERACTION_CREATE", "d": {"token": "aW50.secret"}},)),
        ("cannot reach http://parley:hunter2@10.0.0.2:8080/v1", ()),
        ("headers %r and %s", ({"Authorization": f"Bearer {ADMIN}"}, HF)),
    ])  # fmt: skip
    assert_clean("log", text, [ADMIN, HF, TELEGRAM, "AAE-x_y", "1:abc", "hunter2", "aW50."])
    assert "bot***/getMe" in text and "file/bot***/photos" in text
    assert "webhooks/123/***/messages" in text and "interactions/9/***/callback" in text
    assert "http://***@10.0.0.2:8080" in text and "RuntimeError" in text
    assert text.count(MASK) >= 10


def test_the_longest_secret_is_masked_whole_and_words_are_not_secrets() -> None:
    redactor = Redactor()
    redactor.add("secret-1")
    redactor.add("secret-1234", "wrong")  # added late: still counts; "wrong" is too short
    assert redactor.redact("x secret-1234 y secret-1 z wrong") == "x *** y *** z wrong"


def test_secrets_come_from_settings_environment_and_the_hub_token_file(tmp_path: Path) -> None:
    settings = load_settings(
        model="demo", database_path=tmp_path / "bot.db", telegram_token=TELEGRAM,
        discord_token=DISCORD, admin_token=ADMIN,
    )  # fmt: skip
    assert sorted(settings_secrets(settings)) == sorted([TELEGRAM, DISCORD, ADMIN])
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text("hf_fromTheTokenFile\n")
    env = {"HF_TOKEN": HF, "HUGGING_FACE_HUB_TOKEN": HUB, "HF_HOME": str(tmp_path / "hf")}
    assert sorted(environment_secrets(env)) == sorted([HF, HUB, "hf_fromTheTokenFile"])


def test_the_engine_masks_its_admin_and_hub_tokens() -> None:
    engine_filter = Redactor()  # what the engine's setup_logging installs, from its environ
    engine_filter.add(*environment_secrets({"ADMIN_TOKEN": ADMIN, "HF_TOKEN": HF, "MODEL": "demo"}))
    text = logged(engine_filter, [("admin %s hub %s model %s", (ADMIN, HF, "demo"))])
    assert_clean("engine log", text, [ADMIN, HF])
    assert "admin *** hub *** model demo" in text


def test_the_engine_process_masks_its_log_and_printed_errors(tmp_path: Path) -> None:
    """The engine installs its filter on the root handlers, and prints errors through it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ADMIN_TOKEN": ADMIN, "HF_TOKEN": HF}
    code = (
        "import logging, os, sys\n"
        "from engine.cli import setup_logging\n"
        "setup_logging('debug')\n"
        "logging.getLogger('engine').debug('token %s', os.environ['ADMIN_TOKEN'])\n"
        "sys.exit(__import__('engine.cli').cli.main(sys.argv[1:]))\n"
    )
    missing = tmp_path / f"{HF}-{ADMIN}" / "model.gguf"
    result = subprocess.run(
        [sys.executable, "-c", code, "--model", str(missing)], capture_output=True, text=True,
        env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert_clean("engine stderr", result.stderr)
    assert "token ***" in result.stderr and "error: " in result.stderr
    assert "***-***" in result.stderr  # the path in the error, masked


def test_an_engine_url_with_a_password_stays_out_of_the_startup_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    env = {**base_env(tmp_path), "ENGINE_URLS": f"http://parley:hunter2@127.0.0.1:{port}",
           "TELEGRAM_TOKEN": TELEGRAM, "ADMIN_TOKEN": ADMIN, "LOG_LEVEL": "debug"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "parley", "run"], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    error = printed_error(result.stderr)
    assert error.startswith("parley: cannot reach the engine at http://***@127.0.0.1"), error
    assert_clean("parley run", result.stdout + result.stderr, [*SECRETS, "hunter2"])


# ---- the real bot --------------------------------------------------------------------------


async def parley(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    """A `parley` command to its end: exit code and stdout + stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parley", *args, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


def bot_env(tmp_path: Path, telegram: TelegramEmulator, discord: DiscordEmulator) -> dict[str, str]:
    return {
        **base_env(tmp_path), "LOG_LEVEL": "debug", "MAX_TOKENS": "8",
        "TELEGRAM_TOKEN": telegram.token, "TELEGRAM_API_BASE_URL": telegram.base_url,
        "DISCORD_TOKEN": discord.token, "DISCORD_API_BASE_URL": f"{discord.base_url}/api/v10",
        "DISCORD_GATEWAY_URL": discord.gateway_url, "ADMIN_TOKEN": ADMIN,
        "HF_TOKEN": HF, "HUGGING_FACE_HUB_TOKEN": HUB,
    }  # fmt: skip


def telegram_answered(emu: TelegramEmulator, asked: int) -> bool:
    return any(
        m.reply_to_message_id == asked and m.reply_markup is None and "▌" not in m.text
        and m.text != "…" and not m.text.startswith("⏳") for m in emu.bot_messages(ALICE)
    )  # fmt: skip


def discord_answered(emu: DiscordEmulator, original: int | None) -> bool:
    message = emu.messages.get(original) if original is not None else None
    if message is None or not message.content or message.components:
        return False
    return "▌" not in message.content and message.content != "…"


async def test_rejected_tokens_are_one_clear_line_and_never_shown(tmp_path: Path) -> None:
    scripted = ScriptedEngine("hello")
    async with (
        serve(scripted.app()) as engine_url,
        TelegramEmulator(token=TELEGRAM) as telegram,
        DiscordEmulator(token=DISCORD) as discord,
    ):
        env = {**bot_env(tmp_path, telegram, discord), "ENGINE_URLS": engine_url}
        code, out = await parley(tmp_path, {**env, "TELEGRAM_TOKEN": BAD_TELEGRAM}, "run")
        assert code == EX_CONFIG  # fix the token: a service manager must not just retry
        assert printed_error(out).startswith("parley: Telegram rejected TELEGRAM_TOKEN")
        assert_clean("a run with a rejected Telegram token", out)
        assert "DEBUG telegram" in out and "/bot***/getMe" in out  # debug logs, masked
        without_telegram = {k: v for k, v in env.items() if k != "TELEGRAM_TOKEN"}
        code, out = await parley(
            tmp_path, {**without_telegram, "DISCORD_TOKEN": BAD_DISCORD}, "run"
        )
        assert code == EX_CONFIG
        assert printed_error(out).startswith("parley: Discord rejected DISCORD_TOKEN")
        assert "DEBUG discord" in out
        assert_clean("a run with a rejected Discord token", out)


@pytest.mark.model
async def test_a_debug_run_answering_on_both_platforms_never_shows_a_secret(
    tmp_path: Path,
) -> None:
    async with (
        TelegramEmulator(token=TELEGRAM) as telegram,
        DiscordEmulator(token=DISCORD) as discord,
    ):
        env = bot_env(tmp_path, telegram, discord)
        bot = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "parley", "run", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert bot.stdout is not None and bot.stderr is not None
        stderr = asyncio.create_task(bot.stderr.read())  # drained as it goes: debug is chatty
        try:
            banner = (await asyncio.wait_for(bot.stdout.readline(), 180)).decode()
            assert "answering on Telegram, Discord" in banner, banner
            asked = await telegram.user_says("Hello", chat_id=ALICE, user_id=ALICE)
            await telegram.wait_for(lambda: telegram_answered(telegram, asked), 90)
            run = await discord.run_slash_command("chat", {"prompt": "Hi"}, user_id=CAROL)
            await discord.wait_for(lambda: discord_answered(discord, run.original_id), 90)
            outputs = {"parley admin status": (await parley(tmp_path, env, "admin", "status"))}
            for args in (("status", "--json"), ("queue", "--json"), ("users", "list", "--json"),
                         ("stats", "--json"), ("history", "show", f"telegram:{ALICE}"),
                         ("history", "show", f"discord:{CAROL}", "--json")):  # fmt: skip
                outputs["parley admin " + " ".join(args)] = await parley(
                    tmp_path, env, "admin", *args
                )
            export = tmp_path / "alice.jsonl"
            outputs["export"] = await parley(
                tmp_path, env, "admin", "history", "export", f"telegram:{ALICE}", "-o", str(export)
            )
            wrong = {**env, "ADMIN_TOKEN": "not-" + ADMIN}
            refused = await parley(tmp_path, wrong, "admin", "status")
        finally:
            if bot.returncode is None:
                bot.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bot.wait(), 60)
            if bot.returncode is None:
                bot.kill()
            code = await bot.wait()
        interaction_tokens = [record.token for record in discord.interactions.values()]
    log = (await stderr).decode()
    assert code == 0, f"SIGTERM: exit {code} (-9: killed after 60 s); its log ends:\n{log[-8000:]}"
    for name, (status, text) in outputs.items():
        assert status == 0, f"{name}: {text}"
        assert_clean(name, text, [*SECRETS, *interaction_tokens])
    assert "http://127.0.0.1:" in outputs["parley admin status"][1]  # the engine: loopback only
    assert refused[0] == 1 and "wrong admin token" in refused[1]
    assert_clean("a refused admin call", refused[1], [*SECRETS, "not-" + ADMIN])
    history = export.read_text(encoding="utf-8")
    assert '"role": "assistant"' in history
    assert_clean("exported history", history, [*SECRETS, *interaction_tokens])
    engine_log = (tmp_path / "engine.log").read_text(encoding="utf-8")
    assert "aiohttp.access" in engine_log
    assert_clean("engine.log", engine_log, [*SECRETS, *interaction_tokens])
    assert_clean("the bot's log", log, [*SECRETS, *interaction_tokens])
    # The bot logged at debug what would have leaked, masked: both platforms' URLs and events.
    assert "/bot***/getUpdates" in log and "/interactions/" in log and "'token': '***'" in log
