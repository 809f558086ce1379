"""The Telegram emulator against the real python-telegram-bot client: if PTB accepts it here, the
adapter tests built on it exercise the same requests and errors they will meet in production."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import functools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.emulators.telegram_api import TelegramEmulator

ALICE = 501
App = Application[Any, Any, Any, Any, Any, Any]
STOP = InlineKeyboardMarkup([[InlineKeyboardButton("Stop", callback_data="stop")]])


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator() as emulator:
        yield emulator


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[Bot]:
    await emu.user_says("hello", chat_id=ALICE, user_id=ALICE)  # the chat exists from now on
    async with Bot(emu.token, base_url=f"{emu.base_url}/bot") as client:
        yield client


def build_app(emu: TelegramEmulator, token: str | None = None) -> App:
    return (
        ApplicationBuilder()
        .token(token or emu.token)
        .base_url(f"{emu.base_url}/bot")
        .base_file_url(f"{emu.base_url}/file/bot")
        .build()
    )


@contextlib.asynccontextmanager
async def running(
    app: App,
    on_error: Callable[[TelegramError], None] | None = None,
) -> AsyncIterator[None]:
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=1, error_callback=on_error)
        try:
            yield
        finally:
            await app.updater.stop()
            await app.stop()


async def test_message_reaches_handler_and_streamed_reply_is_recorded(
    emu: TelegramEmulator,
) -> None:
    async def reply(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None and update.message is not None
        await context.bot.send_chat_action(update.effective_chat.id, "typing")
        sent = await update.message.reply_text("…", reply_markup=STOP)
        await sent.edit_text("Hello", reply_markup=STOP)
        assert update.effective_user is not None
        await sent.edit_text(f"Hello, {update.effective_user.first_name}!")

    app = build_app(emu)
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, reply))
    async with running(app):
        await app.bot.set_my_commands([("stop", "Stop the answer")])
        user_message = await emu.user_says("hi there", chat_id=ALICE, user_id=ALICE)
        reply_record = await emu.wait_for(
            lambda: emu.messages.get((ALICE, user_message + 1)), timeout=5
        )
        await emu.wait_for(lambda: len(reply_record.texts) == 3)
        assert [c.command for c in await app.bot.get_my_commands()] == ["stop"]

    assert reply_record.texts == ["…", "Hello", "Hello, Alice!"]
    assert reply_record.parse_modes == [None, None, None]
    assert reply_record.reply_markup is None  # the last edit sent no keyboard, so it went away
    assert emu.chat_actions == [(ALICE, "typing")]
    assert emu.commands == [{"command": "stop", "description": "Stop the answer"}]
    methods = [c.method for c in emu.requests]
    assert methods[:2] == ["getMe", "deleteWebhook"]  # then polling and the handler's calls
    assert methods.index("getUpdates") < methods.index("sendChatAction")
    assert methods[-1] == "getUpdates" and emu.requests[-1].params["timeout"] == 0
    assert emu.pending_updates == 0  # PTB confirmed the update on shutdown


async def test_group_mention_and_command_entities_reach_ptb(emu: TelegramEmulator) -> None:
    seen: list[tuple[str, str]] = []

    async def on_mention(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        mentions = list(update.message.parse_entities(["mention"]).values())
        seen.append(("mention", mentions[0]))
        await update.message.reply_text("yes?")

    async def on_stop(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen.append(("command", "stop"))

    app = build_app(emu)
    app.add_handler(CommandHandler("stop", on_stop))
    app.add_handler(MessageHandler(filters.Entity("mention"), on_mention))
    async with running(app):
        group = functools.partial(emu.user_says, chat_id=-1001, user_id=ALICE, chat_type="group")
        asked = await group("@parley_bot what time is it?")
        await emu.wait_for(lambda: emu.bot_messages(-1001))
        await group("/stop@parley_bot")
        await emu.wait_for(lambda: len(seen) == 2)

    assert seen == [("mention", "@parley_bot"), ("command", "stop")]
    assert emu.bot_messages(-1001)[0].reply_to_message_id == asked  # PTB quotes in groups


async def test_get_updates_really_long_polls_and_honours_offset(
    emu: TelegramEmulator, bot: Bot
) -> None:
    loop = asyncio.get_running_loop()
    first = await bot.get_updates(timeout=0)
    assert [u.message.text for u in first if u.message] == ["hello"]
    offset = first[-1].update_id + 1

    started = loop.time()
    assert await bot.get_updates(offset=offset, timeout=1) == ()
    assert loop.time() - started >= 0.9  # nothing came, so it waited the whole timeout

    polling = asyncio.create_task(bot.get_updates(offset=offset, timeout=10))
    await asyncio.sleep(0.3)
    assert not polling.done()
    started = loop.time()
    await emu.user_says("wake up", chat_id=ALICE, user_id=ALICE)
    updates = await asyncio.wait_for(polling, 2)
    assert loop.time() - started < 1  # returned as soon as the update arrived
    assert [u.message.text for u in updates if u.message] == ["wake up"]

    for _ in range(3):
        await emu.user_says("more", chat_id=ALICE, user_id=ALICE)
    assert len(await bot.get_updates(offset=offset, limit=2, timeout=0)) == 2
    assert emu.pending_updates == 4  # unconfirmed until an offset goes past them
    assert await bot.get_updates(offset=updates[-1].update_id + 4, timeout=0) == ()
    assert emu.pending_updates == 0


async def test_a_dropped_long_poll_ends_and_hands_out_nothing(
    emu: TelegramEmulator, bot: Bot
) -> None:
    """A bot that exits mid poll leaves no poll behind to take the next update (and stamp it
    handed out) for a socket no one reads: bench/bot.py's floor runs after Parley's bot exits."""
    offset = (await bot.get_updates(timeout=0))[-1].update_id + 1
    polling = asyncio.create_task(bot.get_updates(offset=offset, timeout=10))
    await asyncio.sleep(0.3)
    polling.cancel()  # the client closes its connection, as a process that exits does
    with contextlib.suppress(asyncio.CancelledError):
        await polling
    await asyncio.sleep(0.1)
    await emu.user_says("anyone?", chat_id=ALICE, user_id=ALICE)
    await asyncio.sleep(0.2)
    assert len(emu.handed_out) == 1  # the fixture's "hello" only
    updates = await bot.get_updates(offset=offset, timeout=0)
    assert [u.message.text for u in updates if u.message] == ["anyone?"]
    assert len(emu.handed_out) == 2


async def test_user_drivers_produce_updates_ptb_parses(emu: TelegramEmulator, bot: Bot) -> None:
    bob_says = functools.partial(
        emu.user_says, chat_id=-1002, user_id=502, first_name="Bob", chat_type="group"
    )
    asked = await bob_says("question")
    answer = await bot.send_message(-1002, "answer")
    await bob_says("and?", reply_to_message_id=answer.message_id)
    await emu.user_sends_photo(chat_id=ALICE, user_id=ALICE, caption="look")
    await emu.user_sends_sticker(chat_id=ALICE, user_id=ALICE, emoji="🔥")
    await emu.user_edits(asked, "question, edited", chat_id=-1002)
    with pytest.raises(LookupError):
        await bob_says("?", reply_to_message_id=99)

    updates = (await bot.get_updates(timeout=0))[1:]  # after the fixture's "hello"
    assert [u.update_id for u in updates] == [2, 3, 4, 5, 6]
    first, reply, photo, sticker, edit = updates
    assert first.message is not None and first.message.chat.type == "group"
    assert first.message.from_user is not None and first.message.from_user.first_name == "Bob"
    assert (asked, answer.message_id) == (1, 2)  # ids count per chat, shared with the bot
    assert reply.message is not None and reply.message.reply_to_message is not None
    assert reply.message.reply_to_message.from_user == bot.bot  # a reply to the bot
    assert photo.message is not None and photo.message.caption == "look"
    assert photo.message.photo[-1].width == 800
    assert sticker.message is not None and sticker.message.sticker is not None
    assert sticker.message.sticker.emoji == "🔥"
    assert edit.edited_message is not None and edit.edited_message.text == "question, edited"
    assert edit.edited_message.message_id == asked


async def test_429_surfaces_as_retry_after(
    emu: TelegramEmulator, bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # else RetryAfter warns about int seconds
    emu.fail_next("sendMessage", "429", retry_after=7)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(ALICE, "too fast")
    assert caught.value.retry_after == dtm.timedelta(seconds=7)
    assert (await bot.send_message(ALICE, "later")).text == "later"
    assert [c.fault for c in emu.calls("sendMessage")] == ["429", None]


async def test_edit_rules_match_telegram(emu: TelegramEmulator, bot: Bot) -> None:
    sent = await bot.send_message(ALICE, "partial", reply_markup=STOP)
    with pytest.raises(BadRequest, match=r"^Message is not modified: specified new message"):
        await sent.edit_text("partial", reply_markup=STOP)
    await sent.edit_text("partial")  # same text, but no keyboard: that is a change
    assert emu.messages[(ALICE, sent.message_id)].reply_markup is None
    with pytest.raises(BadRequest, match=r"^Message is not modified"):
        await sent.edit_reply_markup(None)
    with pytest.raises(BadRequest, match=r"^Message to edit not found"):
        await bot.edit_message_text("x", chat_id=ALICE, message_id=999)
    assert await sent.delete()
    with pytest.raises(BadRequest, match=r"^Message to delete not found"):
        await sent.delete()
    with pytest.raises(BadRequest, match=r"^Message to edit not found"):
        await sent.edit_text("gone")
    record = emu.messages[(ALICE, sent.message_id)]
    assert record.deleted and record.texts == ["partial", "partial"]


async def test_text_limits_and_parse_errors(emu: TelegramEmulator, bot: Bot) -> None:
    assert len((await bot.send_message(ALICE, "a" * 4096)).text or "") == 4096
    with pytest.raises(BadRequest, match=r"^Message is too long$"):
        await bot.send_message(ALICE, "a" * 4097)
    with pytest.raises(BadRequest, match=r"^Message text is empty$"):
        await bot.send_message(ALICE, "  \n")
    # PTB capitalises Telegram's description, which lower-cases the rest of it.
    with pytest.raises(BadRequest, match=r"^Can't parse entities: character '\.' is reserved"):
        await bot.send_message(ALICE, "Done.", parse_mode="MarkdownV2")
    with pytest.raises(BadRequest, match=r"^Can't parse entities: can't find end of bold"):
        await bot.send_message(ALICE, "*bold", parse_mode="MarkdownV2")
    with pytest.raises(BadRequest, match=r"^Can't parse entities: can't find end tag"):
        await bot.send_message(ALICE, "<b>bold", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"^Can't parse entities: unsupported start tag"):
        await bot.send_message(ALICE, "1 <2 and 3 > 2", parse_mode="HTML")

    good = await bot.send_message(ALICE, "*Done* in `1.5s`\\!", parse_mode="MarkdownV2")
    assert good.text == "Done in 1.5s!"
    assert [(e.type, e.offset, e.length) for e in good.entities] == [("bold", 0, 4), ("code", 8, 4)]
    html = await bot.send_message(ALICE, "<b>1 &lt; 2</b> &amp; <i>ok</i>", parse_mode="HTML")
    assert html.text == "1 < 2 & ok"
    assert emu.messages[(ALICE, html.message_id)].parse_modes == ["HTML"]
    # The plain-text fallback an adapter sends after a parse error goes through.
    assert (await bot.send_message(ALICE, "Done.")).text == "Done."


async def test_the_length_limit_counts_utf16_units_of_the_visible_text(
    emu: TelegramEmulator, bot: Bot
) -> None:
    """As Telegram counts it: UTF-16 code units (an emoji outside the BMP is two), of the text
    left after entity parsing (tags and entities do not count)."""
    assert (await bot.send_message(ALICE, "😀" * 2048)).text == "😀" * 2048  # 4096 units
    with pytest.raises(BadRequest, match=r"^Message is too long$"):
        await bot.send_message(ALICE, "😀" * 2048 + "a")
    tagged = await bot.send_message(ALICE, "<b>" + "&lt;" * 4096 + "</b>", parse_mode="HTML")
    assert tagged.text == "<" * 4096
    with pytest.raises(BadRequest, match=r"^Message is too long$"):
        # 4049 characters, 4098 units
        await tagged.edit_text("<i>" + "日本" * 2000 + "🎉" * 49 + "</i>", parse_mode="HTML")
    assert emu.messages[(ALICE, tagged.message_id)].texts == ["<b>" + "&lt;" * 4096 + "</b>"]


async def test_raw_http_json_and_form_bodies_and_error_format(emu: TelegramEmulator) -> None:
    await emu.user_says("hi", chat_id=ALICE, user_id=ALICE)
    keyboard = {"inline_keyboard": [[{"text": "Stop", "callback_data": "stop"}]]}
    api = f"{emu.base_url}/bot{emu.token}"
    async with aiohttp.ClientSession() as http:
        sent = await http.post(f"{api}/sendMessage", json={"chat_id": ALICE, "text": "1"})
        assert (await sent.json())["result"]["text"] == "1"  # a string field stays a string
        form = {"chat_id": str(ALICE), "text": "2", "reply_markup": json.dumps(keyboard)}
        sent = await http.post(f"{api}/sendMessage", data=form)
        assert (await sent.json())["result"]["reply_markup"] == keyboard
        wrong = await http.post(f"{emu.base_url}/bot1:nope/getMe")
        assert wrong.status == 401
        assert await wrong.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
        emu.fail_next("getMe", "429", retry_after=3)
        limited = await http.get(f"{api}/getMe")
        assert limited.status == 429
        assert await limited.json() == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 3",
            "parameters": {"retry_after": 3},
        }
        unknown_chat = await http.post(f"{api}/sendMessage", data={"chat_id": "7", "text": "x"})
        assert (await unknown_chat.json())["description"] == "Bad Request: chat not found"
    assert [m.texts for m in emu.bot_messages(ALICE)] == [["1"], ["2"]]


async def test_wrong_token_is_invalid_token_at_initialize(emu: TelegramEmulator) -> None:
    app = build_app(emu, token="999:not-the-token")
    with pytest.raises(InvalidToken, match="was rejected by the server"):
        await app.initialize()
    # Application.shutdown() is a no-op after a failed initialize; the bot's HTTP clients are not.
    await app.bot.shutdown()
    assert [c.method for c in emu.requests] == ["getMe"]


async def test_button_press_reaches_handler_and_answer_is_recorded(
    emu: TelegramEmulator,
) -> None:
    pressed: list[str] = []

    async def answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text("Working…", reply_markup=STOP)

    async def stop(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.data is not None
        pressed.append(query.data)
        await query.answer("Stopped")
        await query.edit_message_reply_markup(None)

    app = build_app(emu)
    app.add_handler(MessageHandler(filters.TEXT, answer))
    app.add_handler(CallbackQueryHandler(stop))
    async with running(app):
        await emu.user_says("write a poem", chat_id=ALICE, user_id=ALICE)
        (reply,) = await emu.wait_for(lambda: emu.bot_messages(ALICE))
        query_id = await emu.press_button(reply.message_id, "stop", ALICE, ALICE)
        await emu.wait_for(lambda: emu.callback_answers and reply.reply_markup is None)

    assert pressed == ["stop"]
    assert [(a.callback_query_id, a.text) for a in emu.callback_answers] == [(query_id, "Stopped")]
    with pytest.raises(LookupError):  # the button is gone, so nobody can press it
        await emu.press_button(reply.message_id, "stop", ALICE, ALICE)


async def test_502_and_dropped_connection_are_network_errors(
    emu: TelegramEmulator, bot: Bot
) -> None:
    emu.fail_next("sendMessage", "502")
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(ALICE, "x")
    emu.fail_next("sendMessage", "drop")
    with pytest.raises(NetworkError, match="RemoteProtocolError"):
        await bot.send_message(ALICE, "x")
    assert (await bot.send_message(ALICE, "fine")).message_id > 0


async def test_polling_survives_502_and_dropped_connection(emu: TelegramEmulator) -> None:
    errors: list[TelegramError] = []
    heard: list[str] = []

    async def listen(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        heard.append(update.message.text)

    app = build_app(emu)
    app.add_handler(MessageHandler(filters.TEXT, listen))
    async with running(app, on_error=errors.append):
        emu.fail_next("getUpdates", "502")
        emu.fail_next("getUpdates", "drop")
        await emu.user_says("before", chat_id=ALICE, user_id=ALICE)  # ends the poll in flight
        await emu.wait_for(lambda: len(errors) == 2, timeout=5)
        await emu.user_says("after", chat_id=ALICE, user_id=ALICE)
        await emu.wait_for(lambda: heard == ["before", "after"], timeout=5)

    assert all(type(e) is NetworkError for e in errors)
    assert "Bad Gateway" in str(errors[0]) and "RemoteProtocolError" in str(errors[1])
