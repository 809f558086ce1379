"""Telegram: python-telegram-bot handlers that parse an update and make one call to the bot.

Private chats: every text message is a turn. Groups: only messages that mention the bot or
reply to one of its messages (the mention is stripped). Commands: /start /help /reset /stop
/model /system. Answers stream into an edited message with an inline Stop button.
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
from adapters.telegram_surface import STOP_PREFIX, ChatPacer, TelegramSurface
from adapters.telegram_updates import PollingBot
from bot.chat.service import ChatService
from bot.errors import ConfigError, ParleyError
from bot.incoming import NOT_UNICODE, Incoming, is_valid_unicode
from bot.replies.platform import PlatformReply
from bot.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "telegram"
COMMANDS = [
    BotCommand("help", "what I can do"),
    BotCommand("reset", "start a new conversation"),
    BotCommand("stop", "stop the answer being written"),
    BotCommand("model", "show the model (admins: /model NAME switches)"),
    BotCommand("system", "show or set your system prompt (/system reset clears it)"),
]
HELP = (
    "I answer with a language model running on my operator's machine.\n"
    "Talk to me in a private chat, or mention me / reply to me in a group.\n\n"
    + "\n".join(f"/{c.command} — {c.description}" for c in COMMANDS)
)
TEXT_ONLY = "I can only read text messages."
SHOWN_PROMPT = 1900  # characters of a system prompt /system shows: 4096 UTF-16 units at worst
POLL_HOLD = 0.02  # seconds the next long poll waits at most for the last one's updates
Context = ContextTypes.DEFAULT_TYPE


class TelegramAdapter:
    platform = PLATFORM

    def __init__(self, settings: Settings, service: ChatService) -> None:
        assert settings.telegram_token is not None
        self.settings = settings
        self.service = service
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
        app.add_handler(CommandHandler(["start", "help"], self.on_help, filters=new_messages))
        app.add_handler(CommandHandler("reset", self.on_reset, filters=new_messages))
        app.add_handler(CommandHandler("stop", self.on_stop, filters=new_messages))
        app.add_handler(CommandHandler("model", self.on_model, filters=new_messages))
        app.add_handler(CommandHandler("system", self.on_system, filters=new_messages))
        app.add_handler(
            MessageHandler(new_messages & filters.TEXT & ~filters.COMMAND, self.on_text)
        )
        app.add_handler(MessageHandler(new_messages & ~filters.TEXT, self.on_other))
        app.add_handler(CallbackQueryHandler(self.on_stop_button, pattern=f"^{STOP_PREFIX}"))
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
        await self.application.bot.set_my_commands(COMMANDS)
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

    def _allowed(self, message: Message) -> bool:
        users, chats = self.settings.telegram_allowed_users, self.settings.telegram_allowed_chats
        user = message.from_user
        if user is None or user.is_bot:
            return False
        extra = (PLATFORM, str(user.id)) in self.service.allowed_at_runtime
        if users and user.id not in users and user.id not in self.settings.telegram_admin_ids:
            return extra
        return not chats or message.chat_id in chats

    def _is_admin(self, message: Message) -> bool:
        return message.from_user is not None and (
            message.from_user.id in self.settings.telegram_admin_ids
        )

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

    async def on_help(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is not None and self._allowed(message):
            await message.reply_text(HELP)

    async def on_reset(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None or not self._allowed(message) or message.from_user is None:
            return
        await self.service.reset(
            PLATFORM, str(message.chat_id), str(message.from_user.id), message.from_user.full_name
        )
        await message.reply_text("Started a new conversation.")

    async def on_stop(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None or not self._allowed(message) or message.from_user is None:
            return
        stopped = await self.service.cancel(
            PLATFORM, str(message.chat_id), str(message.from_user.id)
        )
        if not stopped:
            await message.reply_text("Nothing to stop.")

    async def on_stop_button(self, update: Update, context: Context) -> None:
        query = update.callback_query
        if query is None or query.message is None:
            return
        owner = (query.data or "").removeprefix(STOP_PREFIX)
        if owner != str(query.from_user.id):
            await query.answer("Only the person who asked can stop this answer.")
            return
        await self.service.cancel(PLATFORM, str(query.message.chat.id), owner)
        await query.answer("Stopping.")

    async def on_model(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None or not self._allowed(message):
            return
        wanted = " ".join(context.args or []).strip()
        if not wanted:
            await message.reply_text(f"Answering with {self.service.model}.")
            return
        if not self._is_admin(message):
            await message.reply_text("Only the bot's admins can switch models.")
            return
        await message.reply_text(f"Switching to {wanted}… replies being written finish first.")
        try:
            name = await self.service.switch_model(wanted)
        except ParleyError as exc:
            await message.reply_text(f"Could not switch: {exc}")
            return
        await message.reply_text(f"Now answering with {name}.")

    async def on_system(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None or not self._allowed(message) or message.from_user is None:
            return
        user = message.from_user
        # What follows "/system" (or "/system@bot"), after a space or a newline.
        text = "".join((message.text or "").split(maxsplit=1)[1:]).strip()
        if not is_valid_unicode(text):
            await message.reply_text(NOT_UNICODE)
        elif text.lower() == "reset":
            await self.service.set_system_prompt(PLATFORM, str(user.id), user.full_name, None)
            await message.reply_text("Your system prompt is back to the default.")
        elif text:
            await self.service.set_system_prompt(PLATFORM, str(user.id), user.full_name, text)
            await message.reply_text("Your system prompt is set.")
        else:
            current = await self.service.system_prompt_for(PLATFORM, str(user.id), user.full_name)
            await message.reply_text(f"Your system prompt:\n{_shown_prompt(current)}")

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


def _shown_prompt(prompt: str) -> str:
    """The prompt, cut to fit one Telegram message (a prompt set here can be 4096 long)."""
    if len(prompt) <= SHOWN_PROMPT:
        return prompt
    return f"{prompt[:SHOWN_PROMPT]}… (and {len(prompt) - SHOWN_PROMPT} more characters)"
