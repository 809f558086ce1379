"""Discord: slash commands, DMs and mentions, each parsed and handed to the bot in one call.

Slash commands (synced at start, globally or to DISCORD_GUILD_IDS): /chat, and one per command
of bot/commands, generated from its definition. DMs and messages that mention the bot are
answered too (DISCORD_REPLY_TO_MENTIONS). No privileged intent is needed: Discord delivers the
content of DMs and of mentions anyway. Runs on the bot's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

import discord
import yarl
from discord import app_commands

from adapters.discord_surface import LIMIT, TOKEN_LIFE, InteractionSurface, MessageSurface
from bot.chat.access import Access, Asker
from bot.chat.service import ChatService
from bot.commands import COMMANDS, Argument, Command, CommandCall, Place, press_button, run_command
from bot.commands.texts import TEXT_ONLY
from bot.errors import ConfigError, ParleyError
from bot.incoming import Incoming
from bot.replies.platform import PlatformReply
from bot.replies.streamed_edits import ReplySurface
from bot.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "discord"
PLACE = Place(
    message_limit=LIMIT,
    how_to_talk="`/chat prompt:` asks me something (or DM me, or mention me).",
)
SUGGESTIONS = 25  # Discord shows at most 25 autocomplete choices, names of 100 characters
READY_TIMEOUT = 60.0
Suggest = Callable[
    [discord.Interaction[Any], str], Coroutine[Any, Any, list[app_commands.Choice[str]]]
]


class DiscordAdapter:
    platform = PLATFORM

    def __init__(self, settings: Settings, service: ChatService) -> None:
        assert settings.discord_token is not None
        self.settings = settings
        self.service = service
        self.access = Access.from_settings(settings, service)
        discord.http.Route.BASE = settings.discord_api_base_url.rstrip("/")
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)
        intents = discord.Intents.none()
        intents.guilds = True
        intents.dm_messages = True
        intents.guild_messages = settings.discord_reply_to_mentions
        self.client = discord.Client(intents=intents)
        self.tree = app_commands.CommandTree(self.client)
        self._connection: asyncio.Task[None] | None = None
        # how long a /chat reply edits through its interaction token before the channel
        self.interaction_token_life = TOKEN_LIFE
        self._register()

    # ---- lifecycle ----------------------------------------------------------------------

    def resume_reply(
        self, chat_id: str, user_id: str, source_ref: str | None, reply_ref: str | None
    ) -> PlatformReply | None:
        """The reply an earlier run was writing, continued in its placeholder ``reply_ref``:
        to the DM or mention ``source_ref``, or (no ``source_ref``) a /chat answer, whose
        interaction token died with that process. That one is edited as a plain channel
        message, and posted afresh, mentioning the user, if it cannot be (gone, or never
        shown)."""
        channel = self.client.get_partial_messageable(int(chat_id))
        if reply_ref is not None and not reply_ref.isdigit():
            reply_ref = None  # an earlier version's "@original": no id to edit
        placeholder = channel.get_partial_message(int(reply_ref)) if reply_ref else None
        asked = channel.get_partial_message(int(source_ref)) if source_ref else None
        surface = MessageSurface(
            asked, self._button_pressed, owner_id=int(user_id), placeholder=placeholder,
            channel=channel,
        )  # fmt: skip
        reply = self._reply(surface, int(chat_id))
        if reply_ref is not None:
            reply.resume_in(reply_ref)
        return reply

    async def start(self) -> None:
        """Log in, connect, sync the commands; a bad token is one clear ParleyError."""
        assert self.settings.discord_token is not None
        try:
            await self.client.login(self.settings.discord_token.get_secret_value())
        except discord.LoginFailure as exc:
            await self.client.close()
            raise ConfigError(
                "Discord rejected DISCORD_TOKEN; check it in the developer portal"
            ) from exc
        self._connection = asyncio.create_task(self.client.connect(reconnect=True))
        ready = asyncio.create_task(self.client.wait_until_ready())
        await asyncio.wait({ready, self._connection}, timeout=READY_TIMEOUT,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if not ready.done():
            ready.cancel()
            await self.stop()
            raise ParleyError("could not connect to the Discord gateway")
        await self._sync_commands()
        log.info("Discord: connected as %s", self.client.user)

    async def stop(self) -> None:
        await self.client.close()
        if self._connection is not None:
            try:
                await self._connection
            except Exception as exc:
                log.info("Discord connection ended with %s", exc)

    async def _sync_commands(self) -> None:
        guild_ids = self.settings.discord_guild_ids
        if not guild_ids:
            await self.tree.sync()
            return
        for guild_id in guild_ids:  # guild commands update at once; global ones take a while
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)

    # ---- registration -------------------------------------------------------------------

    def _register(self) -> None:
        """Every command and event, in one place: /chat, then bot/commands' commands."""
        self.tree.command(name="chat", description="Ask me something")(self.chat)
        for command in COMMANDS:
            self.tree.add_command(self._slash_command(command))
        self.client.event(self.on_message)

    def _slash_command(self, command: Command) -> app_commands.Command[Any, ..., None]:
        """``command`` as a slash command; its argument an optional text option."""
        argument = command.argument
        if argument is None:

            async def run(interaction: discord.Interaction) -> None:
                await self._run(command, interaction, None)

            return app_commands.Command(
                name=command.name, description=command.description, callback=run
            )

        @app_commands.rename(value=argument.name)
        @app_commands.describe(value=argument.description)
        async def run_with(interaction: discord.Interaction, value: str | None = None) -> None:
            await self._run(command, interaction, value)

        slash: app_commands.Command[Any, ..., None] = app_commands.Command(
            name=command.name, description=command.description, callback=run_with
        )
        if argument.suggestions is not None:
            slash.autocomplete("value")(self._suggest(argument))
        return slash

    def _suggest(self, argument: Argument) -> Suggest:
        suggestions = argument.suggestions
        assert suggestions is not None

        async def suggest(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            values = [v for v in suggestions(self.service) if current.lower() in v.lower()]
            return [app_commands.Choice(name=v[-100:], value=v) for v in values[:SUGGESTIONS]]

        return suggest

    # ---- access -------------------------------------------------------------------------

    def _asker(self, user: discord.User | discord.Member, channel_id: int | None) -> Asker:
        roles = frozenset(str(role.id) for role in getattr(user, "roles", []))
        return Asker(PLATFORM, str(user.id), str(channel_id), roles)

    # ---- slash commands -----------------------------------------------------------------

    @app_commands.describe(prompt="What do you want to ask?")
    async def chat(self, interaction: discord.Interaction, prompt: str) -> None:
        asker = self._asker(interaction.user, interaction.channel_id)
        if refusal := await self.access.refusal(asker):
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        surface = InteractionSurface(
            interaction, self._button_pressed, token_life=self.interaction_token_life
        )
        await self.service.handle(self._incoming(interaction.user, interaction.channel_id,
                                                 prompt, surface))  # fmt: skip

    async def _run(
        self, command: Command, interaction: discord.Interaction, argument: str | None
    ) -> None:
        """One command of bot/commands: a slow one shows Discord's "thinking…" meanwhile."""

        async def progress(text: str) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)

        user = interaction.user
        asker = self._asker(user, interaction.channel_id)
        call = CommandCall(
            self.service, asker, user.display_name, (argument or "").strip(), PLACE, progress
        )
        reply = await run_command(command, call, self.access)
        if interaction.response.is_done():
            await interaction.followup.send(reply.text, ephemeral=reply.private)
        else:
            await interaction.response.send_message(reply.text, ephemeral=reply.private)

    # ---- DMs and mentions ---------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user
        if message.author.bot or me is None or message.author.id == me.id:
            return
        direct = message.guild is None
        mentioned = self.settings.discord_reply_to_mentions and me in message.mentions
        if not (direct or mentioned):
            return
        if await self.access.refusal(self._asker(message.author, message.channel.id)):
            return
        text = re.sub(rf"<@!?{me.id}>", "", message.content).strip()
        if not text:
            if message.attachments or message.stickers:
                await message.reply(TEXT_ONLY, mention_author=False)
            return
        surface = MessageSurface(message, self._button_pressed)
        try:
            await self.service.handle(
                self._incoming(message.author, message.channel.id, text, surface, str(message.id))
            )
        except discord.Forbidden:
            await self._explain_missing_permissions(message)

    async def _explain_missing_permissions(self, message: discord.Message) -> None:
        """The bot may not post in that channel: tell the user privately."""
        try:
            await message.author.send(
                f"I can't post in #{getattr(message.channel, 'name', 'that channel')}: "
                "I'm missing permissions there. Ask an admin, or talk to me here."
            )
        except discord.HTTPException as exc:
            log.info("could not explain missing permissions: %s", exc)

    # ---- shared -------------------------------------------------------------------------

    async def _button_pressed(self, interaction: discord.Interaction, data: str) -> None:
        """A press of the button ``data`` names (bot/commands/buttons.py decides)."""
        reply = await press_button(self.service, PLATFORM, str(interaction.channel_id),
                                   str(interaction.user.id), data)  # fmt: skip
        if reply is None or reply.quiet:
            await interaction.response.defer()  # the answer shows it
        else:
            await interaction.response.send_message(reply.text, ephemeral=reply.private)

    def _incoming(
        self,
        user: discord.User | discord.Member,
        channel_id: int | None,
        text: str,
        surface: InteractionSurface | MessageSurface,
        source_ref: str | None = None,
    ) -> Incoming:
        reply = self._reply(surface, channel_id or 0)
        return Incoming(
            PLATFORM, str(channel_id), str(user.id), user.display_name, text, reply, source_ref
        )

    def _reply(
        self, surface: InteractionSurface | MessageSurface, channel_id: int
    ) -> PlatformReply:
        async def typing() -> None:
            await self.client.http.send_typing(channel_id)

        reply_surface: ReplySurface = surface
        return PlatformReply(reply_surface, typing=typing, before_finish=surface.finish)
