"""One Telegram reply as a ``ReplySurface``: HTML rendering with a plain-text fallback,
per-chat pacing, flood-control and network-error handling, and the inline Stop button.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

# PTB 22 warns on every flood-control error unless it may hand out timedeltas, which this
# adapter reads anyway (see _retry_after); opt in before telegram is imported.
os.environ.setdefault("PTB_TIMEDELTA", "1")

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut
from telegram.warnings import PTBUserWarning

from adapters.telegram_format import to_html
from bot.commands.buttons import BUTTONS, STOP, button_data
from bot.replies.split import utf16_units
from bot.replies.streamed_edits import RateLimited

log = logging.getLogger(__name__)

# Telegram allows 4096 UTF-16 units of visible text. The Markdown is measured before rendering,
# which may lengthen it a little (a rule line, padded table columns): keep a margin. to_html
# sends the Markdown as text where the rendering would still be too long.
LIMIT = 4000
EDIT_INTERVAL = 1.0  # seconds between updates of one chat
NETWORK_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0)
# How long a sendMessage may take to answer. Not the 5 s other calls get: a send is not safe
# to repeat (Telegram may have posted it and only answered late, and a second send leaves the
# first as a stray "…" for ever), while an edit is. The user sees the message as soon as
# Telegram posts it; only its id, which the stream needs, waits.
SEND_READ_TIMEOUT = 60.0
BUTTON_DATA = rf"^({'|'.join(button.id for button in BUTTONS)}):"  # a press of one of them

T = TypeVar("T")

# Sends and edits need nothing of Telegram's answer but the message id, so they go through
# ``do_api_request``, which returns the raw JSON: the typed methods build a ``Message`` from
# every answer (0.33 ms of CPU each here, once per streamed edit, time every other chat waits).
# PTB warns that typed methods exist for these two; that is known.
warnings.filterwarnings(
    "ignore", r"Please use 'Bot\.(send_message|edit_message_text)'", PTBUserWarning
)


class ChatPacer:
    """At most one send/edit per chat per interval, shared by every reply in that chat."""

    def __init__(self, interval: float = EDIT_INTERVAL) -> None:
        self.interval = interval
        self._next: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def wait(self, chat_id: int) -> None:
        async with self._locks.setdefault(chat_id, asyncio.Lock()):
            delay = self._next.get(chat_id, 0.0) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next[chat_id] = time.monotonic() + self.interval


def stop_button(user_id: int) -> InlineKeyboardMarkup:
    label = f"{STOP.emoji} {STOP.label}"
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=button_data(STOP, user_id))]]
    )


class TelegramSurface:
    """Messages of one answer in one chat. Event-loop-only."""

    limit = LIMIT
    length = staticmethod(utf16_units)  # how Telegram measures a message
    min_edit_interval = EDIT_INTERVAL
    platform = "telegram"  # for the metrics

    def __init__(
        self, bot: Bot, chat_id: int, reply_to: int, user_id: int, pacer: ChatPacer
    ) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.reply_to = reply_to
        self.pacer = pacer
        self.button = stop_button(user_id)
        self.finishing = False  # set before the final edit: the Stop button goes away
        self._with_button: set[int] = set()  # messages showing the Stop button now
        self.resumed: str | None = None  # an earlier run's placeholder, until edited once
        self.moved: dict[str, str] = {}  # a placeholder that could not be edited -> its successor

    async def send(self, text: str) -> str:
        await self.cleanup()  # a continuation: earlier parts are final now
        markup = None if self.finishing else self.button
        replying = ReplyParameters(self.reply_to, allow_sending_without_reply=True)
        message = await self._render(
            lambda body, mode: self._call(
                "send_message", chat_id=self.chat_id, text=body, parse_mode=mode,
                reply_markup=markup, reply_parameters=replying,
            ),
            text,
        )  # fmt: skip
        message_id = int(message["message_id"])
        if markup is not None:
            self._with_button.add(message_id)
        return str(message_id)

    async def edit(self, message_id: str, text: str) -> None:
        message_id = self.moved.get(message_id, message_id)
        try:
            await self._edit(message_id, text)
        except BadRequest as exc:
            gone = "message to edit not found" in exc.message.lower()
            if message_id != self.resumed or not gone:
                raise
            log.info("the earlier run's reply %s is gone (%s): replying anew", message_id, exc)
            self.resumed = None
            self.moved[message_id] = await self.send(text)
        else:
            if message_id == self.resumed:
                self.resumed = None  # edited once: from here on it is an ordinary message

    async def _edit(self, message_id: str, text: str) -> None:
        markup = None if self.finishing else self.button
        try:
            await self._render(
                lambda body, mode: self._call(
                    "edit_message_text", chat_id=self.chat_id, message_id=int(message_id),
                    text=body, parse_mode=mode, reply_markup=markup,
                ),
                text,
            )  # fmt: skip
        except BadRequest as exc:
            if "not modified" not in exc.message.lower():
                raise
        if markup is None:
            self._with_button.discard(int(message_id))
        else:
            self._with_button.add(int(message_id))

    async def _call(self, method: str, **params: Any) -> Any:
        """A Bot API call's raw answer (PTB's errors as usual; None values are left out)."""
        if method == "send_message":
            return await self.bot.do_api_request(
                method, api_kwargs=params, read_timeout=SEND_READ_TIMEOUT
            )
        return await self.bot.do_api_request(method, api_kwargs=params)

    async def typing(self) -> None:
        await self.bot.send_chat_action(self.chat_id, "typing")

    async def _render(self, call: Callable[[str, str | None], Awaitable[T]], text: str) -> T:
        """Send as HTML; if Telegram cannot parse the entities, send the plain text instead."""
        try:
            return await self._paced(lambda: call(to_html(text), ParseMode.HTML))
        except BadRequest as exc:
            if "can't parse entities" not in exc.message.lower():
                raise
            log.info("Telegram refused the formatting (%s); sending plain text", exc.message)
            return await self._paced(lambda: call(text, None))

    async def _paced(self, call: Callable[[], Awaitable[T]]) -> T:
        """Per-chat pace; flood control becomes RateLimited; network errors are retried."""
        for delay in (*NETWORK_RETRIES, None):
            await self.pacer.wait(self.chat_id)
            try:
                return await call()
            except RetryAfter as exc:
                raise RateLimited(_retry_after(exc)) from exc
            except (NetworkError, TimedOut) as exc:
                if isinstance(exc, BadRequest) or delay is None:
                    raise
                log.info("Telegram network error (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def finish(self) -> None:
        """From now on (the final edits) messages are shown without the Stop button."""
        self.finishing = True

    async def cleanup(self) -> None:
        """Remove the Stop button wherever it is still shown (e.g. the final text equalled
        the last shown text, so no final edit carried the change)."""
        for message_id in sorted(self._with_button):
            try:
                await self._paced(
                    lambda m=message_id: self.bot.edit_message_reply_markup(  # type: ignore[misc]
                        self.chat_id, m, reply_markup=None
                    )
                )
            except BadRequest as exc:
                if "not modified" not in exc.message.lower():
                    log.info("could not remove a Stop button: %s", exc.message)
            except Exception as exc:  # a stale button is cosmetic; never fail the reply for it
                log.info("could not remove a Stop button: %s", exc)
            self._with_button.discard(message_id)


def _retry_after(exc: RetryAfter) -> float:
    """Seconds to wait. PTB 22 warns when ``retry_after`` is read as an int, so read the
    timedelta it stores (falling back to the public attribute on other versions)."""
    value = getattr(exc, "_retry_after", None)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    public = exc.retry_after
    return public.total_seconds() if isinstance(public, dt.timedelta) else float(public)
