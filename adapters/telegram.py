"""Telegram: python-telegram-bot handlers that parse an update and make one call to the bot.

Private chats: every text message is a turn. Groups: only messages that mention the bot or
reply to one of its messages (the mention is stripped). Commands are bot/commands' (and /start,
Telegram's first message, is /help); the command menu is generated from them. Answers stream
into an edited message with an inline Stop button. Runs on the bot's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telegram import BotCommand, Message, Update
from telegram.constants import ChatType, MessageEntityType
from telegram.error import InvalidToken, NetworkError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from adapters.telegram_http import AiohttpRequest
from adapters.telegram_surface import BUTTON_DATA, ChatPacer, TelegramSurface
from adapters.telegram_updates import PollingBot
from bot.chat.access import Access, Asker
from bot.chat.service import ChatService
from bot.commands import (
    COMMANDS,
    CommandCall,
    Place,
    find_command,
    press_button,
    run_command,
    split_command,
)
from bot.commands.texts import TEXT_ONLY
from bot.errors import ConfigError, ParleyError
from bot.incoming import Incoming, is_valid_unicode
from bot.replies.platform import PlatformReply
from bot.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "telegram"
ALIASES = {"start": "help"}  # Telegram opens a bot's private chat with /start
PLACE = Place(
    message_limit=4096 // 2,  # Telegram counts UTF-16 units: an emoji may take two
    how_to_talk="Talk to me in a private chat, or mention me / reply to me in a group.",
)
POLL_HOLD = 0.02  # seconds the next long poll waits at most for the last one's updates
Context = ContextTypes.DEFAULT_TYPE


class TelegramAdapter:
    platform = PLATFORM

    def __init__(self, settings: Settings, service: ChatService) -> None:
        assert settings.telegram_token is not None
        self.settings = settings
        self.service = service
        self.access = Access.from_settings(settings, service)
        self.pacer = ChatPacer()
        base = settings.telegram_api_base_url.rstrip("/")
        # PTB's Bot, less what stops polling for good (adapters/telegram_updates.py)
        self._poller = bot = PollingBot(
            settings.telegram_token.get_secret_value(),
            base_url=f"{base}/bot",
            base_file_url=f"{base}/file/bot",
            request=AiohttpRequest(),
            get_updates_request=AiohttpRequest(connections=1, before_request=self._handled),
        )
        self.application: Application = (  # type: ignore[type-arg]
            ApplicationBuilder().bot(bot).concurrent_updates(True).build()
        )
        self._register()

    async def _handled(self) -> None:
        """Hold the next long poll until the updates the last one brought are handled (a
        message stored and with the engine, its placeholder posted), at most ``POLL_HOLD`` s.
        Sent at once, the poll's request and the API's answer to it took the CPU from them:
        on two cores, bench/bot.py read the bot's overhead per message 0.5-0.9 ms lower
        (p50, three A/B pairs).
        A message sent meanwhile is fetched up to ``POLL_HOLD`` later, with any others."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_HOLD):  # no task: join() returns at once if idle
                await self.application.update_queue.join()

    def _register(self) -> None:
        """Every handler, in one place."""
        app = self.application
        new_messages = filters.UpdateType.MESSAGE
        names = [command.name for command in COMMANDS] + list(ALIASES)
        app.add_handler(CommandHandler(names, self.on_command, filters=new_messages))
        app.add_handler(
            MessageHandler(new_messages & filters.TEXT & ~filters.COMMAND, self.on_text)
        )
        app.add_handler(MessageHandler(new_messages & ~filters.TEXT, self.on_other))
        app.add_handler(CallbackQueryHandler(self.on_button, pattern=BUTTON_DATA))
        app.add_error_handler(self.on_error)

    async def on_error(self, update: object, context: Context) -> None:
        """A handler failed in a way the bot did not foresee (a bug): one ERROR line with the
        update's id and the traceback, in place of python-telegram-bot's "No error handlers
        are registered" dump; the updates after it are handled as usual."""
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("handling Telegram update %s failed", update_id, exc_info=context.error)

    async def start(self) -> None:
        """Connect; a rejected token or an unreachable API is one clear ParleyError."""
        try:
            await self.application.initialize()
        except InvalidToken as exc:
            await self.application.bot.shutdown()
            raise ConfigError("Telegram rejected TELEGRAM_TOKEN; check it with @BotFather") from exc
        except NetworkError as exc:
            await self.application.bot.shutdown()
            where = self.settings.telegram_api_base_url
            raise ParleyError(f"cannot reach the Telegram Bot API at {where}: {exc}") from exc
        await self.application.bot.set_my_commands(
            [BotCommand(command.name, command.description) for command in COMMANDS]
        )
        await self.application.start()
        assert self.application.updater is not None
        await self.application.updater.start_polling(
            drop_pending_updates=not self.settings.telegram_answer_backlog
        )
        log.info("Telegram: polling as @%s", self.application.bot.username)

    async def stop(self) -> None:
        self._poller.stop_backing_off()  # the Updater's last call need not wait out a backoff
        if self.application.updater is not None and self.application.updater.running:
            await self.application.updater.stop()
        if self.application.running:
            await self.application.stop()
        await self.application.shutdown()

    # ---- access -----------------------------------------------------------------------

    def _asker(self, message: Message) -> Asker | None:
        """Who sent ``message``, or None for no one the bot answers (channels, other bots)."""
        user = message.from_user
        if user is None or user.is_bot:
            return None
        return Asker(PLATFORM, str(user.id), str(message.chat_id))

    def _allowed(self, message: Message) -> bool:
        asker = self._asker(message)
        return asker is not None and self.access.may_talk(asker)

    def _addressed(self, message: Message) -> str | None:
        """The text meant for the bot, or None when a group message is not for it."""
        text = message.text or ""
        if message.chat.type == ChatType.PRIVATE:
            return text
        username = f"@{self.application.bot.username}".lower()
        to_bot = self._for_me(message)
        if not is_valid_unicode(text):  # PTB cannot cut entities out of it; the bot refuses it
            return text if to_bot or username in text.lower() else None
        mentioned = any(
            entity.type == MessageEntityType.MENTION and mention.lower() == username
            for entity, mention in message.parse_entities([MessageEntityType.MENTION]).items()
        )
        if not (mentioned or to_bot):
            return None
        if mentioned:
            for entity, mention in message.parse_entities([MessageEntityType.MENTION]).items():
                if mention.lower() == username:
                    text = text[: entity.offset] + text[entity.offset + entity.length :]
        return " ".join(text.split(" ")).strip()

    # ---- handlers: parse the update, make one call --------------------------------------

    async def on_text(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None or not self._allowed(message):
            return
        text = self._addressed(message)
        if text is None:
            return
        await self.service.handle(self._incoming(message, text))

    async def on_other(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None or not self._allowed(message) or not self._for_me(message):
            return
        await message.reply_text(TEXT_ONLY)

    async def on_command(self, update: Update, context: Context) -> None:
        """Any command of bot/commands; a refusal (quiet) leaves strangers unanswered."""
        message = update.effective_message
        if message is None or message.from_user is None or (asker := self._asker(message)) is None:
            return
        name, argument = split_command(message.text or "") or ("", "")
        command = find_command(ALIASES.get(name, name))
        if command is None:
            return

        async def progress(text: str) -> None:
            await message.reply_text(text)

        user_name = message.from_user.full_name
        call = CommandCall(self.service, asker, user_name, argument, PLACE, progress)
        reply = await run_command(command, call, self.access)
        if not reply.quiet:
            await message.reply_text(reply.text)

    async def on_button(self, update: Update, context: Context) -> None:
        """A press of a button under an answer: every press gets its answer (a toast)."""
        query = update.callback_query
        if query is None or query.message is None:
            return
        reply = await press_button(
            self.service, PLATFORM, str(query.message.chat.id), str(query.from_user.id),
            query.data or "",
        )  # fmt: skip
        await query.answer(reply.text if reply is not None else None)

    def _for_me(self, message: Message) -> bool:
        """Private chats, or group messages replying to the bot (mentions are checked apart)."""
        if message.chat.type == ChatType.PRIVATE:
            return True
        replied = message.reply_to_message
        return (
            replied is not None
            and replied.from_user is not None
            and (replied.from_user.id == self.application.bot.id)
        )

    def _incoming(self, message: Message, text: str) -> Incoming:
        assert message.from_user is not None
        surface = TelegramSurface(
            self.application.bot, message.chat_id, message.message_id, message.from_user.id,
            self.pacer,
        )  # fmt: skip
        reply = _reply(surface)
        user = message.from_user
        return Incoming(
            PLATFORM, str(message.chat_id), str(user.id), user.full_name, text, reply,
            str(message.message_id),
        )  # fmt: skip

    def resume_reply(
        self, chat_id: str, user_id: str, source_ref: str | None, reply_ref: str | None
    ) -> PlatformReply | None:
        """The reply to user message ``source_ref`` an earlier run of the bot was writing,
        in its placeholder ``reply_ref`` (a new reply if it was never posted)."""
        if source_ref is None:
            return None  # stored before replies could be found again
        surface = TelegramSurface(
            self.application.bot, int(chat_id), int(source_ref), int(user_id), self.pacer
        )
        return _reply(surface, reply_ref)


def _reply(surface: TelegramSurface, resumed_in: str | None = None) -> PlatformReply:
    """A reply on ``surface``: a new placeholder, or the earlier run's ``resumed_in`` (a new
    reply after all if the user deleted that one meanwhile)."""
    reply = PlatformReply(
        surface, typing=surface.typing, before_finish=surface.finish, on_done=surface.cleanup
    )
    if resumed_in is not None:
        surface.resumed = resumed_in
        reply.resume_in(resumed_in)
    return reply
