"""Discord replies as ``ReplySurface``s: an interaction's response (slash commands) or a reply
message (DMs and mentions), each with a Stop button while the answer is being written.

Discord renders Markdown itself, so text goes out as is. Its 429s become ``RateLimited`` (the
reply controller waits and sends the newest text); discord.py retries the ones that carry a
``Via`` header by itself.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import discord

from bot.replies import RateLimited

log = logging.getLogger(__name__)

LIMIT = 2000
EDIT_INTERVAL = 1.0  # Discord allows 5 edits per 5 s per message
TOKEN_LIFETIME = 15 * 60.0  # an interaction token can edit its messages for 15 minutes
TOKEN_MARGIN = 60.0
STOP_ID = "parley:stop"

T = TypeVar("T")
OnStop = Callable[[discord.Interaction], Awaitable[None]]


class StopView(discord.ui.View):
    """One Stop button; only the person who asked may press it.

    Every edit sends a new view, and discord.py routes a press by custom_id to the view it
    stored at the last edit's *response*. So one reply keeps one ``custom_id``: a press of the
    button an edit just showed, before its response is in, reaches the previous view.
    """

    def __init__(self, owner_id: int, on_stop: OnStop, custom_id: str) -> None:
        super().__init__(timeout=None)
        self.owner_id = owner_id
        self.on_stop = on_stop
        self.stop_button.custom_id = custom_id

    @discord.ui.button(label="Stop", emoji="⏹", style=discord.ButtonStyle.secondary)
    async def stop_button(
        self, interaction: discord.Interaction, button: discord.ui.Button[StopView]
    ) -> None:
        if interaction.user.id != self.owner_id:
            await interaction.response.send_message(
                "Only the person who asked can stop this answer.", ephemeral=True
            )
            return
        await interaction.response.defer()
        await self.on_stop(interaction)


async def _call(request: Awaitable[T]) -> T:
    """Discord's rate limits and dropped connections as ``RateLimited`` (the controller waits
    and sends the newest text; discord.py does not retry a dropped connection itself)."""
    try:
        return await request
    except discord.RateLimited as exc:
        raise RateLimited(exc.retry_after) from exc
    except discord.HTTPException as exc:
        if exc.status == 429:
            raise RateLimited(_retry_after(exc)) from exc
        raise
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("Discord connection problem (%s); retrying", exc)
        raise RateLimited(1.0) from exc


def _retry_after(exc: discord.HTTPException) -> float:
    headers = getattr(exc.response, "headers", {}) or {}
    try:
        return float(headers.get("Retry-After") or headers.get("X-RateLimit-Reset-After") or 1.0)
    except ValueError:
        return 1.0


class _Surface:
    limit = LIMIT
    min_edit_interval = EDIT_INTERVAL
    platform = "discord"  # for the metrics

    def __init__(self, owner_id: int, on_stop: OnStop) -> None:
        self.owner_id = owner_id
        self.on_stop = on_stop
        self.finishing = False
        self.stop_id = f"parley-stop:{secrets.token_hex(8)}"

    def finish(self) -> None:
        """The final edits go out without the Stop button."""
        self.finishing = True

    def _view(self) -> StopView | None:
        return None if self.finishing else StopView(self.owner_id, self.on_stop, self.stop_id)


class MessageSurface(_Surface):
    """A reply to a DM or a mention, continued in the same channel past 2000 characters."""

    def __init__(
        self,
        message: discord.Message | discord.PartialMessage | None,
        on_stop: OnStop,
        *,
        owner_id: int | None = None,
        placeholder: discord.PartialMessage | None = None,
        channel: discord.PartialMessageable | None = None,
    ) -> None:
        """``message`` is the user's. After a restart it is only known by id (a partial
        message: ``owner_id`` is its author) and ``placeholder`` is the reply posted then.
        With no message (a /chat answer whose interaction died with an earlier run) the
        answer is posted afresh in ``channel``, mentioning ``owner_id``."""
        if owner_id is None:
            assert isinstance(message, discord.Message)
            owner_id = message.author.id
        super().__init__(owner_id, on_stop)
        self.message = message
        self.channel = channel or (message.channel if message is not None else None)
        self.sent: dict[str, discord.Message | discord.PartialMessage] = {}
        self.resumed: str | None = None  # the earlier run's placeholder, until edited once
        self.moved: dict[str, str] = {}  # a placeholder that could not be edited -> its stand-in
        if placeholder is not None:
            self.resumed = str(placeholder.id)
            self.sent[self.resumed] = placeholder

    async def send(self, text: str) -> str:
        view = self._view() or discord.utils.MISSING
        if not self.sent and self.message is not None:
            posted = await _call(self.message.reply(text, view=view, mention_author=False))
        else:
            if self.sent:
                await _call(list(self.sent.values())[-1].edit(view=None))  # earlier parts final
            fresh = not self.sent and self.message is None
            assert self.channel is not None
            content = f"<@{self.owner_id}> {text}" if fresh else text
            posted = await _call(self.channel.send(content, view=view))
        self.sent[str(posted.id)] = posted
        return str(posted.id)

    async def edit(self, message_id: str, text: str) -> None:
        message_id = self.moved.get(message_id, message_id)
        try:
            self.sent[message_id] = await _call(
                self.sent[message_id].edit(content=text, view=self._view())
            )
        except (discord.NotFound, discord.Forbidden) as exc:
            if message_id != self.resumed:
                raise
            # deleted, or not the bot's to edit outside its interaction: answer afresh
            log.info("the earlier run's reply %s cannot be edited (%s): posting anew",
                     message_id, exc)  # fmt: skip
            del self.sent[message_id]
            self.moved[message_id] = await self.send(text)
        else:
            if message_id == self.resumed:
                self.resumed = None  # edited once: from here on it is an ordinary message


class InteractionSurface(_Surface):
    """A slash command's answer: the deferred original response, then follow-ups.

    An interaction token expires after 15 minutes; a reply still running after 14 continues
    in ordinary channel messages, so long answers never end in a failed edit.
    """

    def __init__(
        self,
        interaction: discord.Interaction,
        on_stop: OnStop,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(interaction.user.id, on_stop)
        self.interaction = interaction
        self.clock = clock
        self.started = clock()
        # the deferred response's message id, once shown: stored as the reply's reference,
        # so a later run of the bot can finish the answer in it (``MessageSurface``)
        self.original_id: str | None = None
        self.redirects: dict[str, discord.Message] = {}  # webhook message -> channel message
        self.followups: list[str] = []

    def _expiring(self) -> bool:
        return self.clock() - self.started > TOKEN_LIFETIME - TOKEN_MARGIN

    async def send(self, text: str) -> str:
        view = self._view() or discord.utils.MISSING
        if self._expiring():
            return str((await self._channel_send(text)).id)
        if self.original_id is None:
            shown = await _call(self.interaction.edit_original_response(content=text, view=view))
            self.original_id = str(shown.id)
            return self.original_id
        await self._drop_button(self.followups[-1] if self.followups else self.original_id)
        message = await _call(self.interaction.followup.send(text, view=view, wait=True))
        self.followups.append(str(message.id))
        return str(message.id)

    async def edit(self, message_id: str, text: str) -> None:
        view = self._view()
        if message_id in self.redirects or self._expiring():
            await self._edit_redirected(message_id, text)
        elif message_id == self.original_id:
            await _call(self.interaction.edit_original_response(content=text, view=view))
        else:
            await _call(
                self.interaction.followup.edit_message(int(message_id), content=text, view=view)
            )

    async def _edit_redirected(self, message_id: str, text: str) -> None:
        """Past the token's life: the rest of this message lives in a channel message."""
        channel_message = self.redirects.get(message_id)
        if channel_message is None:
            self.redirects[message_id] = await self._channel_send(text)
            return
        self.redirects[message_id] = await _call(
            channel_message.edit(content=text, view=self._view())
        )

    async def _channel_send(self, text: str) -> discord.Message:
        channel = self.interaction.channel
        if not isinstance(channel, discord.abc.Messageable):
            raise RuntimeError("this interaction has no channel to continue in")
        return await _call(channel.send(text, view=self._view() or discord.utils.MISSING))

    async def _drop_button(self, message_id: str) -> None:
        try:
            if message_id == self.original_id:
                await _call(self.interaction.edit_original_response(view=None))
            else:
                await _call(self.interaction.followup.edit_message(int(message_id), view=None))
        except discord.HTTPException as exc:
            log.info("could not remove a Stop button: %s", exc)
