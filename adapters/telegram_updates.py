"""Long polling that survives what python-telegram-bot cannot read. Runs on the bot's event loop,
inside PTB's Updater task (and its last call at stop); nothing here is thread-safe.

PTB's ``Bot.get_updates`` parses a getUpdates answer in one go (``Update.de_list``), so one update
it cannot parse (a message without ``chat`` or ``date``) fails the whole batch; the Updater logs
the batch at CRITICAL and asks again at once for the same offset, for ever: about 300 requests a
second, a megabyte of log a second, nothing else answered, and a restart fetches it again. An
answer that is not the Bot API's ``{"ok": true, "result": [...]}`` (a JSON array, say) fails
outside PTB's ``TelegramError`` family, which the Updater's retry loop does not back off on
either (about 940 requests a second).

``PollingBot.get_updates`` owns both. It parses each update on its own, skips one that fails
(one WARNING naming its update id) and confirms it with the next request's offset even when it
was the last of its batch. A malformed answer yields no updates, and the next request waits
first: 0.5 s, doubling up to 30 s, none once an answer is good; one WARNING per streak. The
backoff is here and not in PTB's retry loop because that loop's sleep is one ``Updater.stop()``
cannot interrupt, while a wait inside ``get_updates`` is cancelled with the poll.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ExtBot
from telegram.request import BaseRequest

from bot.metrics import METRICS

if TYPE_CHECKING:
    from telegram._utils.types import ODVInput

log = logging.getLogger(__name__)

SKIPPED = "parley_telegram_updates_skipped_total"
MALFORMED = "parley_telegram_malformed_answers_total"
FIRST_BACKOFF = 0.5  # seconds before asking again after the first malformed answer of a streak
MAX_BACKOFF = 30.0
DETAIL = 200  # characters of an error a log line quotes: enough to say what was wrong


class MalformedAnswer(Exception):
    """A getUpdates answer that is not ``{"ok": true, "result": [update, ...]}``, or one that
    holds nothing the next request's offset would move past (so it would come back at once)."""


class PollingBot(ExtBot[None]):
    """PTB's ExtBot whose ``get_updates`` skips what it cannot parse and backs off on malformed
    answers; every other call is ExtBot's own."""

    __slots__ = ("_backoff", "_confirm_below", "_retry_at", "_stopping", "_updates_request")

    def __init__(
        self, token: str, *, base_url: str, base_file_url: str, request: BaseRequest,
        get_updates_request: BaseRequest,
    ) -> None:  # fmt: skip
        super().__init__(
            token, base_url=base_url, base_file_url=base_file_url, request=request,
            get_updates_request=get_updates_request,
        )  # fmt: skip
        self._updates_request = get_updates_request
        self._confirm_below = 0  # an offset that confirms every update skipped so far
        self._backoff = 0.0  # the wait after the last malformed answer; 0 after a good one
        self._retry_at = 0.0  # event-loop time before which the next request waits
        self._stopping = False

    def stop_backing_off(self) -> None:
        """Ask at once from now on: the Updater's last call at stop (which confirms the offset)
        must not wait out a backoff."""
        self._stopping = True

    async def get_updates(
        self,
        offset: int | None = None,
        limit: int | None = None,
        timeout: int | dtm.timedelta | None = None,
        allowed_updates: Sequence[str] | None = None,
        *,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        api_kwargs: dict[str, Any] | None = None,
    ) -> tuple[Update, ...]:
        """The updates after ``offset`` that PTB can read, as ``Bot.get_updates`` returns them;
        none for a malformed answer. Transport and API errors raise as in PTB."""
        loop = asyncio.get_running_loop()
        if (wait := self._retry_at - loop.time()) > 0 and not self._stopping:
            await asyncio.sleep(wait)
        if self._confirm_below and (offset is None or offset >= 0):  # < 0 counts from the end
            offset = max(offset or 0, self._confirm_below)
        data = dict(timeout=timeout, offset=offset, limit=limit, allowed_updates=allowed_updates)
        try:
            answer = await self._post(
                "getUpdates", data, read_timeout=self._read_timeout(read_timeout, timeout),
                write_timeout=write_timeout, connect_timeout=connect_timeout,
                pool_timeout=pool_timeout, api_kwargs=api_kwargs,
            )  # fmt: skip
            updates = self._parse(_result_list(answer), offset)
        except TelegramError:
            raise
        except Exception as exc:
            # The transport turns its own failures into TelegramErrors (NetworkError, TimedOut),
            # so anything else failed on the answer's shape: PTB reads ``answer["result"]``.
            self._malformed(exc, loop.time())
            return ()
        if self._backoff:
            log.info("Telegram: getUpdates answers are well-formed again")
            self._backoff = 0.0
        return updates

    def _read_timeout(self, given: ODVInput[float], timeout: int | dtm.timedelta | None) -> float:
        """As ``Bot.get_updates``: the transport's read timeout plus the long poll's own wait."""
        if isinstance(given, int | float) or given is None:
            base = given or 0.0
        else:  # not passed
            base = self._updates_request.read_timeout or 0.0
        wait = timeout.total_seconds() if isinstance(timeout, dtm.timedelta) else timeout or 0
        return base + wait

    def _parse(self, answer: list[object], offset: int | None) -> tuple[Update, ...]:
        """Each update on its own: one PTB cannot read is skipped and confirmed later, so the
        ones around it are still answered."""
        updates: list[Update] = []
        confirmable = False  # anything the next offset moves past
        nameless = 0  # items without an update id: the next offset confirms them, if anything
        for item in answer:
            if not isinstance(item, dict) or type(item.get("update_id")) is not int:  # not bool
                nameless += 1
                continue
            update_id: int = item["update_id"]
            if offset is not None and offset > 0 and update_id < offset:
                continue  # confirmed already: the Bot API hands out none below the offset
            confirmable = True
            try:
                update = Update.de_json(item, self)
                self.insert_callback_data(update)
            except Exception as exc:  # whatever PTB's constructors raise: TypeError, KeyError…
                self._skip(update_id, exc)
                continue
            updates.append(update)
        if answer and not confirmable:
            raise MalformedAnswer("it holds no update with a new update_id")
        if nameless:
            log.warning("Telegram: skipped %d getUpdates items without an update_id", nameless)
            METRICS.count(SKIPPED, nameless)
        return tuple(updates)

    def _skip(self, update_id: int, exc: Exception) -> None:
        """Log once (the next offset confirms it, so it is not fetched again) and count."""
        log.warning(
            "Telegram: skipped update %d, which python-telegram-bot cannot read (%s); "
            "the updates after it are answered", update_id, _detail(exc),
        )  # fmt: skip
        METRICS.count(SKIPPED)
        self._confirm_below = max(self._confirm_below, update_id + 1)

    def _malformed(self, exc: Exception, now: float) -> None:
        """Back off before the next request; log the first malformed answer of a streak only."""
        if not self._backoff:
            log.warning(
                "Telegram: a getUpdates answer is malformed (%s); asking again after 0.5 s, "
                "doubling up to 30 s, without logging each one", _detail(exc),
            )  # fmt: skip
        METRICS.count(MALFORMED)
        self._backoff = min(MAX_BACKOFF, self._backoff * 2 or FIRST_BACKOFF)
        self._retry_at = now + self._backoff


def _result_list(answer: object) -> list[object]:
    """The ``result`` of a getUpdates answer must be a list of updates (PTB reads ``None`` as
    none, so a server answering that at once would be asked again at once, for ever)."""
    if not isinstance(answer, list):
        raise MalformedAnswer(f"its result is {type(answer).__name__}, not a list")
    return answer


def _detail(exc: Exception) -> str:
    """What went wrong, cut short: a parse error can quote part of an update."""
    text = str(exc) if isinstance(exc, MalformedAnswer) else f"{type(exc).__name__}: {exc}"
    return text[:DETAIL]
