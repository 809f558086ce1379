"""Long polling for Telegram updates: one task in place of python-telegram-bot's Updater.

The Updater runs every getUpdates as two tasks under ``asyncio.wait`` (the call and its stop
event) and builds the next poll as soon as the last one's updates are queued: all of it in
the moments the bot is storing a message and asking the engine, on a CPU the Bot API's answer
then needs too. Here one task polls, hands the updates to the Application's queue (its way
in for updates fetched by someone else), and waits until they are handled, at most ``hold``
seconds, before it polls again. Failures are retried as the Updater retries them: at once
after a timeout, after Telegram's ``retry_after`` under flood control, else after a delay
growing to 30 s; a token Telegram stops accepting ends polling with an error in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from telegram.error import InvalidToken, RetryAfter, TelegramError, TimedOut
from telegram.ext import Application

from adapters.telegram_surface import retry_after_s

log = logging.getLogger(__name__)

LONG_POLL = 10  # seconds one getUpdates waits for news (python-telegram-bot's default)
POLL_HOLD = 0.02  # seconds the next long poll waits at most for the last one's updates
RETRY_MAX = 30.0  # seconds: the longest wait between failed polls
REVOKED = (
    "Telegram no longer accepts TELEGRAM_TOKEN (revoked?); polling stopped. "
    "Check the token with @BotFather and restart the bot."
)


class UpdatePoller:
    """Fetches updates for ``application`` from ``start`` until ``stop``."""

    def __init__(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        self._application = application
        self._offset: int | None = None  # the first update not yet handed to the application
        self._task: asyncio.Task[None] | None = None

    async def start(self, drop_pending: bool) -> None:
        """Remove any webhook (Telegram refuses getUpdates while one is set), dropping the
        updates that waited for the bot if ``drop_pending``, then poll in the background."""
        await self._application.bot.delete_webhook(drop_pending_updates=drop_pending)
        self._task = asyncio.create_task(self._poll(), name="parley-telegram-poll")

    async def stop(self) -> None:
        """Stop polling, and tell Telegram the updates handed out are taken, so a restarted
        bot is not given them again."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._offset is None:
            return
        try:
            await self._application.bot.get_updates(offset=self._offset, timeout=0, limit=1)
        except TelegramError as exc:
            log.warning("Telegram: could not confirm the last updates (%s): a restart may be "
                        "given them again", exc)  # fmt: skip

    async def _poll(self) -> None:
        delay = 0.0  # after the last failure
        while True:
            try:
                updates = await self._application.bot.get_updates(
                    offset=self._offset, timeout=LONG_POLL
                )
            except InvalidToken:
                log.error(REVOKED)
                return
            except RetryAfter as exc:
                await asyncio.sleep(retry_after_s(exc))
                continue
            except TimedOut:
                continue  # the long poll outlived its read timeout: poll again at once
            except Exception as exc:  # the network, the API, or an answer it cannot read
                delay = min(RETRY_MAX, max(1.0, delay * 1.5))
                log.warning("Telegram: getUpdates failed (%s); polling again in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            delay = 0.0
            if not updates:
                continue
            for update in updates:
                self._application.update_queue.put_nowait(update)
            self._offset = updates[-1].update_id + 1
            await self._handled()

    async def _handled(self) -> None:
        """Until the updates handed out are handled (a message stored and with the engine,
        its placeholder posted), at most ``POLL_HOLD`` s. Sent at once, the next poll's
        request and the API's answer to it took the CPU from them: on two cores,
        bench/bot.py read the bot's overhead per message 0.5-0.9 ms lower (p50, three A/B
        pairs). A message sent meanwhile is fetched up to ``POLL_HOLD`` later."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_HOLD):
                await self._application.update_queue.join()
