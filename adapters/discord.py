"""Discord: slash commands, DMs and mentions, each parsed and handed to the bot in one call.

Slash commands (synced at start, globally or to DISCORD_GUILD_IDS): /chat /reset /stop /model
/system /help. DMs and messages that mention the bot are answered too (DISCORD_REPLY_TO_MENTIONS).
No privileged intent is needed: Discord delivers the content of DMs and of mentions anyway.
"""

from __future__ import annotations

import asyncio
import logging
import re

import discord
import yarl
from discord import app_commands

from adapters.discord_surface import TOKEN_LIFE, InteractionSurface, MessageSurface
from bot.chat.service import ChatService
from bot.errors import ConfigError, ParleyError
from bot.incoming import NOT_UNICODE, Incoming, is_valid_unicode
from bot.models.catalog import offered_models
from bot.replies.platform import PlatformReply
from bot.replies.streamed_edits import ReplySurface
from bot.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "discord"
SHOWN_PROMPT = 1900  # a Discord message holds 2,000 characters
HELP = (
    "I answer with a language model running on my operator's machine.\n"
    "`/chat prompt:` asks me something (or DM me, or mention me).\n"
    "`/reset` starts a new conversation · `/stop` stops my answer · `/model` shows the model · "
    "`/system` shows or sets your system prompt"
)
TEXT_ONLY = "I can only read text messages."
READY_TIMEOUT = 60.0


class DiscordAdapter:
    platform = PLATFORM

    def __init__(self, settings: Settings, service: ChatService) -> None:
        assert settings.discord_token is not None
        self.settings = settings
        self.service = service
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
            asked, self._stop_pressed, owner_id=int(user_id), placeholder=placeholder,
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
        """Every command and event, in one place."""
        tree = self.tree
        tree.command(name="chat", description="Ask me something")(self.chat)
        tree.command(name="reset", description="Start a new conversation")(self.reset)
        tree.command(name="stop", description="Stop the answer I'm writing")(self.stop_command)
        model = tree.command(name="model", description="Show the model; admins can switch it")(
            self.model
        )
        model.autocomplete("name")(self.model_names)
        tree.command(name="system", description="Show or set your system prompt")(self.system)
        tree.command(name="help", description="What I can do")(self.help)
        self.client.event(self.on_message)

    # ---- access -------------------------------------------------------------------------

    def _allowed(self, user: discord.User | discord.Member, channel_id: int | None) -> bool:
        """Admins always; else the channel must be allowed, and the user or one of their roles."""
        settings = self.settings
        if user.id in settings.discord_admin_ids:
            return True
        if (PLATFORM, str(user.id)) in self.service.allowed_at_runtime:
            return True  # `parley admin users allow`
        channels = settings.discord_allowed_channels
        if channels and channel_id not in channels:
            return False
        if not settings.discord_allowed_users and not settings.discord_allowed_roles:
            return True
        roles = {role.id for role in getattr(user, "roles", [])}
        return user.id in settings.discord_allowed_users or bool(
            roles & set(settings.discord_allowed_roles)
        )

    async def _refusal(self, interaction: discord.Interaction) -> str | None:
        if not self._allowed(interaction.user, interaction.channel_id):
            return "You are not allowed to use this bot here."
        if await self.service.is_banned(PLATFORM, str(interaction.user.id)):
            return "You have been banned from using this bot."
        return None

    # ---- slash commands -----------------------------------------------------------------

    @app_commands.describe(prompt="What do you want to ask?")
    async def chat(self, interaction: discord.Interaction, prompt: str) -> None:
        if refusal := await self._refusal(interaction):
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        surface = InteractionSurface(
            interaction, self._stop_pressed, token_life=self.interaction_token_life
        )
        await self.service.handle(self._incoming(interaction.user, interaction.channel_id,
                                                 prompt, surface))  # fmt: skip

    async def reset(self, interaction: discord.Interaction) -> None:
        if refusal := await self._refusal(interaction):
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        user = interaction.user
        await self.service.reset(PLATFORM, str(interaction.channel_id), str(user.id),
                                 user.display_name)  # fmt: skip
        await interaction.response.send_message("Started a new conversation.", ephemeral=True)

    async def stop_command(self, interaction: discord.Interaction) -> None:
        count = await self.service.cancel(
            PLATFORM, str(interaction.channel_id), str(interaction.user.id)
        )
        text = "Stopping." if count else "Nothing to stop."
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.describe(name="Model to switch to (admins only)")
    async def model(self, interaction: discord.Interaction, name: str | None = None) -> None:
        if not name:
            await interaction.response.send_message(
                f"Answering with {self.service.model}.", ephemeral=True
            )
            return
        if interaction.user.id not in self.settings.discord_admin_ids:
            await interaction.response.send_message(
                "Only the bot's admins can switch models.", ephemeral=True
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            loaded = await self.service.switch_model(name)
        except ParleyError as exc:
            await interaction.followup.send(f"Could not switch: {exc}", ephemeral=True)
            return
        await interaction.followup.send(f"Now answering with {loaded}.", ephemeral=True)

    async def model_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = offered_models(self.service.models_dir, self.service.model)
        matching = [n for n in names if current.lower() in n.lower()][:25]
        return [app_commands.Choice(name=n[-100:], value=n) for n in matching]

    @app_commands.describe(text="New system prompt; 'reset' restores the default")
    async def system(self, interaction: discord.Interaction, text: str | None = None) -> None:
        user = interaction.user
        if text is None:
            current = await self.service.system_prompt_for(PLATFORM, str(user.id),
                                                           user.display_name)  # fmt: skip
            shown = current if len(current) <= SHOWN_PROMPT else current[:SHOWN_PROMPT] + "…"
            await interaction.response.send_message(f"Your system prompt:\n{shown}",
                                                    ephemeral=True)  # fmt: skip
            return
        if not is_valid_unicode(text):
            await interaction.response.send_message(NOT_UNICODE, ephemeral=True)
            return
        prompt = None if text.strip().lower() == "reset" else text
        await self.service.set_system_prompt(PLATFORM, str(user.id), user.display_name, prompt)
        done = "back to the default" if prompt is None else "set"
        await interaction.response.send_message(f"Your system prompt is {done}.", ephemeral=True)

    async def help(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(HELP, ephemeral=True)

    # ---- DMs and mentions ---------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user
        if message.author.bot or me is None or message.author.id == me.id:
            return
        direct = message.guild is None
        mentioned = self.settings.discord_reply_to_mentions and me in message.mentions
        if not (direct or mentioned) or not self._allowed(message.author, message.channel.id):
            return
        if await self.service.is_banned(PLATFORM, str(message.author.id)):
            return
        text = re.sub(rf"<@!?{me.id}>", "", message.content).strip()
        if not text:
            if message.attachments or message.stickers:
                await message.reply(TEXT_ONLY, mention_author=False)
            return
        surface = MessageSurface(message, self._stop_pressed)
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

    async def _stop_pressed(self, interaction: discord.Interaction) -> None:
        await self.service.cancel(PLATFORM, str(interaction.channel_id), str(interaction.user.id))

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
