"""The floor under the bot's overhead: the least a python-telegram-bot bot can do per message.

Run as a script, this is a relay with the same libraries and settings as Parley's Telegram
adapter (long polling, concurrent updates, its aiohttp transport) and nothing else: no store,
queue, limits, fitting or streamed edits. Each text message is POSTed to the engine as one user
turn, the stream read to its end, and the answer sent as one reply. ``measure`` runs it through
the same conversations as the bot's overhead phase, in the same run, so Parley ÷ floor says how
much of the overhead is Parley's own and how much is the libraries, loopback HTTP and this
machine.

Usage (bench/bot.py starts it): python bench/bot_floor.py, with TELEGRAM_TOKEN,
TELEGRAM_API_BASE_URL and ENGINE_URLS in the environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from telegram import Update
from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters

from adapters.telegram_http import AiohttpRequest

if TYPE_CHECKING:
    from tests.emulators.scripted_engine import ScriptedEngine
    from tests.emulators.telegram_api import TelegramEmulator


async def relay() -> None:
    base = os.environ["TELEGRAM_API_BASE_URL"].rstrip("/")
    engine = os.environ["ENGINE_URLS"].rstrip("/") + "/v1/chat/completions"
    app = (
        ApplicationBuilder().token(os.environ["TELEGRAM_TOKEN"]).base_url(f"{base}/bot")
        .base_file_url(f"{base}/file/bot").request(AiohttpRequest())
        .get_updates_request(AiohttpRequest(connections=1)).concurrent_updates(True).build()
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:

        async def answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            message = update.message
            assert message is not None and message.text is not None
            body = {"messages": [{"role": "user", "content": message.text}], "stream": True}
            text: list[str] = []
            async with session.post(engine, json=body) as response:
                async for raw in response.content:
                    if not raw.startswith(b"data: ") or raw.startswith(b"data: [DONE]"):
                        continue
                    choice: dict[str, Any] = json.loads(raw[6:])["choices"][0]
                    text.append(choice["delta"].get("content") or "")
                    if choice.get("finish_reason"):
                        break
            await message.reply_text("".join(text), do_quote=True)

        app.add_handler(MessageHandler(filters.TEXT, answer))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with app:
            await app.start()
            assert app.updater is not None
            await app.updater.start_polling()
            await stop.wait()
            await app.updater.stop()
            await app.stop()


async def measure(
    emu: TelegramEmulator, engine: ScriptedEngine, engine_url: str, workdir: Path,
    rounds: list[range], count: int, tokens: int,
) -> dict[str, float]:  # fmt: skip
    """The relay through ``count`` messages from each user of each round at once (as the
    overhead phase): p50/p99 of (engine request - update handed out) + (reply sent - final
    event), and the p50 of each half."""
    from bench.bot_load import (
        conversations_in_rounds,
        first_means,
        hold_idle,
        percentile,
        start_bot,
        tag_of,
        words,
    )

    command = [sys.executable, str(Path(__file__).resolve())]
    polled_before = len(emu.requests)
    relay_process = await start_bot(emu, engine_url, workdir, command=command)
    try:
        await emu.wait_for(  # start_bot saw the bot's old polls: wait for the relay's own
            lambda: any(c.method == "getUpdates" for c in emu.requests[polled_before:]) or None,
            60,
        )
        engine.answer, engine.tokens_per_second = words(tokens), 1000
        engine.before_finish = hold_idle()  # as Parley's final events are held for pacing
        first_run, first_call = len(engine.runs), len(emu.requests)
        sent = await conversations_in_rounds(emu, rounds, count)
    finally:
        await relay_process.stop()
    runs = {tag_of(run): run for run in engine.runs[first_run:]}
    replied = {
        (int(c.params["chat_id"]), int(c.params["reply_parameters"]["message_id"])): c.at
        for c in emu.requests[first_call:] if c.method == "sendMessage"
    }  # fmt: skip
    totals, ingress, egress = [], [], []
    for (user, index), message in sent.items():
        run = runs[(user, index)]
        assert run.finish is not None
        ingress.append((run.received - emu.handed_out[(user, message.message_id)]) * 1000)
        egress.append((replied[(user, message.message_id)] - run.finish) * 1000)
        totals.append(ingress[-1] + egress[-1])
    first, later = first_means(sent, totals)
    return {
        "p50": percentile(totals, 50), "p99": percentile(totals, 99), "messages": len(totals),
        "ingress_p50": percentile(ingress, 50), "egress_p50": percentile(egress, 50),
        "first_ratio": first / later,
    }  # fmt: skip


if __name__ == "__main__":
    asyncio.run(relay())
