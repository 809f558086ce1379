"""Discord replies as ``ReplySurface``s: an interaction's response (slash commands) or a reply
message (DMs and mentions), each with a Stop button while the answer is being written.

Discord renders Markdown itself, so text goes out as is. Its 429s become ``RateLimited`` (the
reply controller waits and sends the newest text); discord.py retries the ones that carry a
``Via`` header by itself. Event-loop-only.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import discord

from bot.commands.buttons import STOP, button_data
from bot.commands.shape import Button
from bot.replies.streamed_edits import RateLimited

log = logging.getLogger(__name__)

LIMIT = 2000
EDIT_INTERVAL = 1.0  # Discord allows 5 edits per 5 s per message
TOKEN_LIFETIME = 15 * 60.0  # an interaction token can edit its messages for 15 minutes
TOKEN_MARGIN = 60.0
TOKEN_LIFE = TOKEN_LIFETIME - TOKEN_MARGIN  # how long a reply edits through its token

T = TypeVar("T")
OnPress = Callable[[discord.Interaction, str], Awaitable[None]]  # with the custom_id


class ButtonsView(discord.ui.View):
    """The buttons under an answer (bot/commands/buttons.py), each pressed through ``on_press``
    with its custom_id (who may press is decided there).

    Every edit sends a new view, and discord.py routes a press by custom_id to the view it
    stored at the last edit's *response*. So one reply keeps one ``custom_id`` per button: a
    press of the button an edit just showed, before its response is in, reaches the previous
    view.
    """

    def __init__(self, buttons: dict[Button, str], on_press: OnPress) -> None:
        """``buttons``: each button with its custom_id."""
        super().__init__(timeout=None)
        for button, custom_id in buttons.items():
            self.add_item(_PressableButton(button, custom_id, on_press))


class _PressableButton(discord.ui.Button[ButtonsView]):
    def __init__(self, button: Button, custom_id: str, on_press: OnPress) -> None:
        super().__init__(
            label=button.label, emoji=button.emoji, custom_id=custom_id,
            style=discord.ButtonStyle.secondary,
        )  # fmt: skip
        self.on_press = on_press

    async def callback(self, interaction: discord.Interaction) -> None:
        assert self.custom_id is not None
        await self.on_press(interaction, self.custom_id)


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

    def __init__(self, owner_id: int, on_press: OnPress) -> None:
        self.owner_id = owner_id
        self.on_press = on_press
        self.finishing = False
        self.stop_id = button_data(STOP, owner_id, nonce=secrets.token_hex(8))

    def finish(self) -> None:
        """The final edits go out without the Stop button."""
        self.finishing = True

    def _view(self) -> ButtonsView | None:
        return None if self.finishing else ButtonsView({STOP: self.stop_id}, self.on_press)


class MessageSurface(_Surface):
    """A reply to a DM or a mention, continued in the same channel past 2000 characters."""

    def __init__(
        self,
        message: discord.Message | discord.PartialMessage | None,
        on_press: OnPress,
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
        super().__init__(owner_id, on_press)
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

    The interaction's token edits them for 15 minutes. A reply still running after 14 (a long
    answer, or one queued behind many) goes on as the bot's own channel messages: its
    response and follow-ups are edited through the channel, as Discord allows for
    non-ephemeral interaction messages, and new parts are sent there. A message the channel
    refuses (a DM the bot cannot reach this way) continues in a new one.
    """

    def __init__(
        self,
        interaction: discord.Interaction,
        on_press: OnPress,
        clock: Callable[[], float] = time.monotonic,
        token_life: float = TOKEN_LIFE,
    ) -> None:
        super().__init__(interaction.user.id, on_press)
        self.interaction = interaction
        self.clock = clock
        self.started = clock()
        self.token_life = token_life  # seconds: after this, the channel instead of the token
        # the deferred response's message id, once shown: stored as the reply's reference,
        # so a later run of the bot can finish the answer in it (``MessageSurface``)
        self.original_id: str | None = None
        self.last_id: str | None = None  # the newest part, the one with the Stop button
        self.stand_ins: dict[str, str] = {}  # a message the channel refused -> its successor

    def _expiring(self) -> bool:
        return self.clock() - self.started > self.token_life

    async def send(self, text: str) -> str:
        view = self._view() or discord.utils.MISSING
        if self.last_id is not None:
            await self._drop_button(self.last_id)  # earlier parts are final
        if self._expiring():
            sent = str((await _call(self._channel().send(text, view=view))).id)
        elif self.original_id is None:
            shown = await _call(self.interaction.edit_original_response(content=text, view=view))
            sent = self.original_id = str(shown.id)
        else:
            message = await _call(self.interaction.followup.send(text, view=view, wait=True))
            sent = str(message.id)
        self.last_id = sent
        return sent

    async def edit(self, message_id: str, text: str) -> None:
        view = self._view()
        target = self.stand_ins.get(message_id, message_id)
        if self._expiring():
            await self._edit_in_channel(target, text, view)
        elif target == self.original_id:
            await _call(self.interaction.edit_original_response(content=text, view=view))
        else:
            followup = self.interaction.followup
            await _call(followup.edit_message(int(target), content=text, view=view))

    async def _edit_in_channel(self, message_id: str, text: str, view: ButtonsView | None) -> None:
        channel = self._channel()
        try:
            await _call(channel.get_partial_message(int(message_id)).edit(content=text, view=view))
        except (discord.NotFound, discord.Forbidden) as exc:
            if message_id in self.stand_ins.values():
                raise
            log.info("reply %s cannot be edited past its interaction token (%s); continuing "
                     "in a new message", message_id, exc)  # fmt: skip
            stand_in = str((await _call(channel.send(text, view=view or discord.utils.MISSING))).id)
            self.stand_ins[message_id] = stand_in
            if self.last_id == message_id:
                self.last_id = stand_in

    def _channel(self) -> discord.PartialMessageable:
        """Where the interaction was run: to send or edit there with the bot's own token."""
        interaction = self.interaction
        if interaction.channel_id is None:
            raise RuntimeError("this interaction has no channel to continue in")
        return interaction.client.get_partial_messageable(
            interaction.channel_id, guild_id=interaction.guild_id
        )

    async def _drop_button(self, message_id: str) -> None:
        target = self.stand_ins.get(message_id, message_id)
        try:
            if self._expiring():
                await _call(self._channel().get_partial_message(int(target)).edit(view=None))
            elif target == self.original_id:
                await _call(self.interaction.edit_original_response(view=None))
            else:
                await _call(self.interaction.followup.edit_message(int(target), view=None))
        except discord.HTTPException as exc:
            log.info("could not remove a Stop button: %s", exc)
