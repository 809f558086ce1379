"""Parley on Telegram, end to end: the real adapter and python-telegram-bot against the Bot
API emulator on 127.0.0.1, the real engine process on the demo model and a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from adapters.telegram_surface import ChatPacer, TelegramSurface
from bot.replies.streamed_edits import StreamedReply
from tests.adapters.discord_harness import serve
from tests.adapters.telegram_harness import (
    ADMIN,
    ALICE,
    BOB,
    GROUP,
    is_final,
    plain,
    telegram_bot,
)
from tests.emulators.scripted_engine import ScriptedEngine
from tests.emulators.telegram_api import TelegramEmulator
from tests.engine_process import EngineProcess

pytestmark = pytest.mark.model


async def test_a_private_message_gets_a_placeholder_growing_edits_and_a_final_text(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with telegram_bot(engine, tmp_path / "bot.db", max_tokens=160) as bot:
        asked = await bot.emu.user_says("Tell me a story", chat_id=ALICE, user_id=ALICE)
        answer = await bot.answer_to(asked, ALICE)
        texts = [plain(t) for t in answer.texts]
        assert texts[0] == "…"
        streaming = [t for t in texts[1:] if t.endswith("▌")]
        assert len(streaming) >= 2
        final = texts[-1]
        for partial in streaming:
            # (after a blank line the cursor starts a paragraph of its own: no space before it)
            assert final.startswith(partial.removesuffix("▌").rstrip())
        assert len(set(streaming)) == len(streaming)  # never an unchanged edit
        assert bot.emu.chat_actions and bot.emu.chat_actions[0] == (ALICE, "typing")
        assert {c["command"] for c in bot.emu.commands} >= {"reset", "stop", "model", "system"}
        with sqlite3.connect(bot.database) as db:
            stored = db.execute("SELECT content FROM messages WHERE role='assistant'").fetchone()
        assert stored[0].strip() == final.strip()


async def test_an_answer_that_can_start_at_once_asks_the_engine_before_its_placeholder(
    tmp_path: Path,
) -> None:
    """The engine starts on the answer first; the "…" (a slower Bot API call) follows. The
    job is begun in the transaction that accepts the message: started once, as recorded."""
    scripted = ScriptedEngine("Hello there, friend", tokens_per_second=100)
    async with serve(scripted.app()) as url, telegram_bot(url, tmp_path / "bot.db") as bot:
        for turn, chat in enumerate((ALICE, BOB, ALICE)):
            asked = await bot.emu.user_says(f"Hi {turn}", chat_id=chat, user_id=chat)
            answer = await bot.answer_to(asked, chat)
            assert plain(answer.text) == "Hello there, friend"
            placeholder = bot.emu.calls("sendMessage")[turn]
            assert placeholder.params["text"] == "…"
            assert scripted.runs[turn].received < placeholder.at
        # the second turn of alice's chat was sent with the first one's answer
        history = [m["content"] for m in scripted.runs[2].body["messages"]]
        assert history[-3:] == ["Hi 0", "Hello there, friend", "Hi 2"]
    with sqlite3.connect(tmp_path / "bot.db") as db:
        jobs = db.execute("SELECT status, attempts FROM jobs ORDER BY id").fetchall()
    assert jobs == [("done", 1)] * 3


async def test_a_rate_limited_edit_still_ends_in_the_same_final_text(
    engine: EngineProcess, tmp_path: Path
) -> None:
    """The text shown after a 429 storm is the whole answer the engine streamed. (Compared with
    the stored answer of the same reply, not with another user's: llama.cpp's float sums depend
    on where a sequence's cells sit in the shared cache, so two conversations can differ.)"""
    async with telegram_bot(engine, tmp_path / "bot.db", max_tokens=100, seed=3) as bot:
        first = await bot.emu.user_says("Describe the sea", chat_id=ALICE, user_id=ALICE)
        calm = plain((await bot.answer_to(first, ALICE)).text)
        bot.emu.fail_next("editMessageText", "429", times=2, retry_after=1)
        second = await bot.emu.user_says("Describe the sea", chat_id=BOB, user_id=BOB)
        stormy = plain((await bot.answer_to(second, BOB)).text)
        with sqlite3.connect(bot.database) as db:
            stored = dict(
                db.execute(
                    "SELECT u.platform_user_id, m.content FROM messages m"
                    " JOIN conversations c ON c.id = m.conversation_id"
                    " JOIN users u ON u.id = c.user_id WHERE m.role = 'assistant'"
                ).fetchall()
            )
        assert len(stormy) > 100  # a whole answer, not a fragment
        assert stormy.strip() == stored[str(BOB)].strip()
        assert calm.strip() == stored[str(ALICE)].strip()
        assert len([c for c in bot.emu.calls("editMessageText") if c.fault]) == 2


async def test_groups_answer_only_mentions_and_replies_to_the_bot(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with telegram_bot(engine, tmp_path / "bot.db") as bot:
        said = {"chat_id": GROUP, "chat_type": "supergroup", "group_title": "Friends"}
        ignored = await bot.emu.user_says("just chatting", user_id=ALICE, **said)  # type: ignore[arg-type]
        asked = await bot.emu.user_says("@parley_bot hello there", user_id=ALICE, **said)  # type: ignore[arg-type]
        answer = await bot.answer_to(asked, GROUP)
        follow = await bot.emu.user_says(
            "and more",
            user_id=BOB,
            reply_to_message_id=answer.message_id,
            **said,  # type: ignore[arg-type]
        )
        await bot.answer_to(follow, GROUP)
        assert bot.replies_to(ignored, GROUP) == []
        with sqlite3.connect(bot.database) as db:
            users = db.execute("SELECT content FROM messages WHERE role='user' ORDER BY id")
            assert [r[0] for r in users] == ["hello there", "and more"]
            conversations = db.execute("SELECT COUNT(DISTINCT conversation_id) FROM messages")
            assert conversations.fetchone()[0] == 2  # two people, two histories


async def test_a_reply_deleted_mid_answer_is_stored_and_not_posted_again(tmp_path: Path) -> None:
    """The user deletes the half-written answer: its later edits fail, the bot neither posts
    it again nor stops answering, and the whole answer is in the history."""
    words = " ".join(f"w{i}" for i in range(40))
    scripted = ScriptedEngine(words, tokens_per_second=20)  # about 2 s
    async with (
        serve(scripted.app()) as url,
        telegram_bot(url, tmp_path / "bot.db", max_tokens=200) as bot,
    ):
        await bot.emu.user_says("Hi", chat_id=ALICE, user_id=ALICE)
        reply = await bot.emu.wait_for(
            lambda: next((m for m in bot.emu.bot_messages(ALICE) if "w3" in m.text), None), 20
        )
        bot.emu.user_deletes(ALICE, reply.message_id)

        def history() -> list[str]:
            with sqlite3.connect(bot.database) as db:
                rows = db.execute("SELECT content FROM messages WHERE role = 'assistant'")
                return [row[0] for row in rows]

        assert await bot.emu.wait_for(lambda: history() == [words] or None, 20)
        again = await bot.emu.user_says("Again", chat_id=ALICE, user_id=ALICE)
        assert plain((await bot.answer_to(again, ALICE)).text) == words
        assert [m.deleted for m in bot.emu.bot_messages(ALICE)] == [True, False]


async def test_the_stop_button_ends_generation_and_goes_away(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with telegram_bot(engine, tmp_path / "bot.db", max_tokens=400, temperature=0.8) as bot:
        asked = await bot.emu.user_says("Write a long story", chat_id=ALICE, user_id=ALICE)
        placeholder = await bot.emu.wait_for(lambda: next(iter(bot.replies_to(asked, ALICE)), None))
        await bot.emu.wait_for(lambda: "▌" in placeholder.text or None, 30)
        stranger = await bot.emu.press_button(placeholder.message_id, f"stop:{ALICE}", BOB, ALICE)
        await bot.emu.wait_for(
            lambda: any(a.callback_query_id == stranger for a in bot.emu.callback_answers)
        )
        assert placeholder.reply_markup is not None  # a stranger cannot stop it
        await bot.emu.press_button(placeholder.message_id, f"stop:{ALICE}", ALICE, ALICE)
        answer = await bot.answer_to(asked, ALICE, timeout=10)
        assert plain(answer.text).endswith("⏹ stopped")
        assert all(m.reply_markup is None for m in bot.emu.bot_messages(ALICE))
        assert len(bot.emu.callback_answers) == 2


async def test_reset_forgets_and_history_survives_a_restart(
    engine: EngineProcess, tmp_path: Path
) -> None:
    database = tmp_path / "bot.db"
    async with telegram_bot(engine, database) as bot:
        await bot.answer_to(
            await bot.emu.user_says("I am Ada", chat_id=ALICE, user_id=ALICE), ALICE
        )
        emu = bot.emu
        async with telegram_bot(engine, database, emu=emu) as _:
            pass  # a second bot process start on the same database (restart)
    async with telegram_bot(engine, database) as bot:
        await bot.answer_to(
            await bot.emu.user_says("Who am I?", chat_id=ALICE, user_id=ALICE), ALICE
        )
        await bot.emu.user_says("/reset", chat_id=ALICE, user_id=ALICE)
        await bot.emu.wait_for(
            lambda: any("new conversation" in m.text for m in bot.emu.bot_messages(ALICE))
        )
        await bot.answer_to(await bot.emu.user_says("Hello", chat_id=ALICE, user_id=ALICE), ALICE)
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT content, conversation_id FROM messages WHERE role='user' ORDER BY id"
        ).fetchall()
    (_, first), (_, after_restart), (_, after_reset) = rows
    assert first == after_restart != after_reset


async def test_people_not_allowed_get_nothing_and_others_cannot_switch_models(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with telegram_bot(engine, tmp_path / "bot.db", telegram_allowed_users=f"{ALICE}") as bot:
        await bot.emu.user_says("hello", chat_id=BOB, user_id=BOB, first_name="Bob")
        await bot.emu.user_says("/model other.gguf", chat_id=ALICE, user_id=ALICE)
        refusal = await bot.emu.wait_for(
            lambda: next((m for m in bot.emu.bot_messages(ALICE) if "admins" in m.text), None)
        )
        assert "Only the bot's admins" in refusal.text
        await bot.emu.user_says("/model", chat_id=ALICE, user_id=ALICE)
        await bot.emu.wait_for(
            lambda: any("Answering with demo" in m.text for m in bot.emu.bot_messages(ALICE))
        )
        await asyncio.sleep(0.3)
        assert bot.emu.bot_messages(BOB) == []
        assert engine.get("/v1/models")["data"][0]["id"] == "demo"


async def test_an_admin_switches_models_from_the_chat(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with telegram_bot(engine, tmp_path / "bot.db") as bot:
        await bot.emu.user_says("/model demo", chat_id=ADMIN, user_id=ADMIN)
        await bot.emu.wait_for(
            lambda: any("Now answering with demo" in m.text for m in bot.emu.bot_messages(ADMIN)),
            60,
        )


async def test_photos_get_a_text_only_reply_and_edits_are_ignored(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with telegram_bot(engine, tmp_path / "bot.db") as bot:
        await bot.emu.user_sends_photo(chat_id=ALICE, user_id=ALICE)
        await bot.emu.wait_for(
            lambda: any("only read text" in m.text for m in bot.emu.bot_messages(ALICE))
        )
        asked = await bot.emu.user_says("Hi", chat_id=ALICE, user_id=ALICE)
        await bot.answer_to(asked, ALICE)
        await bot.emu.user_edits(asked, "Hi, edited", chat_id=ALICE)
        await asyncio.sleep(0.5)
        assert len(bot.replies_to(asked, ALICE)) == 1
        with sqlite3.connect(bot.database) as db:
            assert db.execute("SELECT COUNT(*) FROM messages WHERE role='user'").fetchone()[0] == 1


async def test_a_reply_longer_than_telegram_allows_continues_in_new_messages() -> None:
    async with TelegramEmulator() as emu:
        from telegram import Bot
        from telegram.request import HTTPXRequest

        bot = Bot(emu.token, base_url=f"{emu.base_url}/bot", request=HTTPXRequest())
        async with bot:
            await emu.user_says("Write a lot", chat_id=ALICE, user_id=ALICE)
            first = await bot.send_message(ALICE, "…")
            surface = TelegramSurface(bot, ALICE, 0, ALICE, ChatPacer(0.0))
            surface.min_edit_interval = 0.0  # type: ignore[misc]
            reply = StreamedReply(surface, str(first.message_id), first_text="…")
            paragraph = "**Bold** words & <tags> in a paragraph that goes on. " * 8
            text = "\n\n".join(paragraph for _ in range(22))
            for start in range(0, len(text), 500):
                reply.append(text[start : start + 500])
            surface.finish()
            await reply.finish("done")
            await surface.cleanup()
        messages = emu.bot_messages(ALICE)
        assert len(messages) >= 3
        assert all(len(plain(m.text)) <= 4096 for m in messages)
        assert all(is_final(m) for m in messages)
        shown = "".join(plain(m.text) for m in messages)
        assert shown.replace("\n", "").replace(" ", "") == (
            text.replace("**", "").replace("\n", "").replace(" ", "")
        )


async def test_a_rejected_token_is_one_clear_error(engine: EngineProcess, tmp_path: Path) -> None:
    from adapters.telegram import TelegramAdapter
    from bot.errors import ParleyError
    from bot.settings import load_settings
    from parley.app import Parley

    async with TelegramEmulator() as emu:
        settings = load_settings(
            telegram_token="999:wrong", telegram_api_base_url=emu.base_url,
            database_path=tmp_path / "bot.db", engine_urls=engine.url,
        )  # fmt: skip
        async with Parley(settings) as service:
            with pytest.raises(ParleyError, match="rejected TELEGRAM_TOKEN"):
                await TelegramAdapter(settings, service).start()


async def test_parley_run_answers_on_telegram_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    import signal
    import sys

    from tests.adapters.test_console import base_env

    async with TelegramEmulator() as emu:
        env = {
            **base_env(tmp_path),
            "TELEGRAM_TOKEN": emu.token,
            "TELEGRAM_API_BASE_URL": emu.base_url,
            "MAX_TOKENS": "8",
        }
        bot = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "parley", "run", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert bot.stdout is not None
            banner = await asyncio.wait_for(bot.stdout.readline(), 120)
            assert b"answering on Telegram" in banner
            asked = await emu.user_says("Hello", chat_id=ALICE, user_id=ALICE)
            await emu.wait_for(
                lambda: any(
                    m.reply_to_message_id == asked and is_final(m) for m in emu.bot_messages(ALICE)
                ),
                60,
            )
        finally:
            if bot.returncode is None:
                bot.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(bot.wait(), 30)
        assert code == 0
        stderr = (await bot.stderr.read()).decode() if bot.stderr else ""
        assert emu.token not in stderr
        # no TELEGRAM_ALLOWED_USERS/CHATS: the operator is told anyone may use it (issue 29)
        assert "Telegram: anyone may talk to the bot" in stderr
