"""The chat commands: /help, /reset, /stop, /model [name], /system [text]. Each is defined
here once and appears on Telegram, Discord and the terminal. Runs on the bot's event loop."""

from __future__ import annotations

from bot.chat.service import ChatService
from bot.commands import texts
from bot.commands.shape import Argument, Command, CommandCall, Reply
from bot.errors import ParleyError
from bot.incoming import NOT_UNICODE, is_valid_unicode
from bot.models.catalog import offered_models


async def show_help(call: CommandCall) -> Reply:
    return Reply(texts.help_text(COMMANDS, call.place.how_to_talk))


async def reset(call: CommandCall) -> Reply:
    """A fresh conversation; the old messages stay stored but are not sent again."""
    asker = call.asker
    await call.service.reset(asker.platform, asker.chat_id, asker.user_id, call.user_name)
    return Reply(texts.NEW_CONVERSATION)


async def stop(call: CommandCall) -> Reply:
    """Stop the asker's answers in this chat, running and queued."""
    asker = call.asker
    if await call.service.cancel(asker.platform, asker.chat_id, asker.user_id):
        return Reply(texts.STOPPING, quiet=True)  # the answer itself ends "⏹ stopped"
    return Reply(texts.NOTHING_TO_STOP)


async def model(call: CommandCall) -> Reply:
    """Show the model; with a name (admins only: see its Argument), switch every engine."""
    wanted = call.argument
    if not wanted:
        return Reply(texts.answering_with(call.service.model))
    await call.progress(texts.switching_to(wanted))
    try:
        loaded = await call.service.switch_model(wanted)
    except ParleyError as exc:
        return Reply(texts.could_not_switch(exc))
    return Reply(texts.now_answering_with(loaded))


async def system(call: CommandCall) -> Reply:
    """Show the asker's system prompt, set it, or ("reset") go back to the default."""
    asker, text = call.asker, call.argument
    if not is_valid_unicode(text):
        return Reply(NOT_UNICODE)
    if not text:
        current = await call.service.system_prompt_for(
            asker.platform, asker.user_id, call.user_name
        )
        return Reply(texts.shown_prompt(current, call.place.message_limit))
    reset_it = text.lower() == texts.PROMPT_RESET_WORD
    await call.service.set_system_prompt(
        asker.platform, asker.user_id, call.user_name, None if reset_it else text
    )
    return Reply(texts.PROMPT_DEFAULT if reset_it else texts.PROMPT_SET)


def model_names(service: ChatService) -> list[str]:
    return offered_models(service.models_dir, service.model)


MODEL_NAME = Argument(
    "name",
    "Model to switch to (admins only)",
    admins_only=texts.ONLY_ADMINS_SWITCH,
    suggestions=model_names,
)
PROMPT_TEXT = Argument("text", "New system prompt; 'reset' restores the default")

COMMANDS: tuple[Command, ...] = (
    Command("help", "What I can do", show_help),
    Command("reset", "Start a new conversation", reset),
    Command("stop", "Stop the answer I'm writing", stop),
    Command("model", "Show the model; admins can switch it", model, MODEL_NAME),
    Command(
        "system", "Show or set your system prompt; reset restores the default", system, PROMPT_TEXT
    ),
)


def find_command(name: str) -> Command | None:
    return next((c for c in COMMANDS if c.name == name), None)
