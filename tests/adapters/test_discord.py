"""Parley on Discord, end to end: the real adapter and discord.py against the Discord API
emulator on 127.0.0.1, the real engine process (or a scripted stand-in where the words must be
known), and a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.adapters.discord_harness import ADMIN, ALICE, BOB, discord_bot, serve
from tests.emulators.scripted_engine import ScriptedEngine
from tests.engine_process import EngineProcess

pytestmark = pytest.mark.model


async def test_commands_sync_and_chat_defers_then_streams_to_the_original_response(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with discord_bot(engine.url, tmp_path / "bot.db", max_tokens=160) as bot:
        synced = {c["name"] for c in bot.emu.synced_commands[None]}
        assert synced == {"chat", "reset", "stop", "model", "system", "help"}
        run = await bot.emu.run_slash_command("chat", {"prompt": "Tell a story"}, user_id=ALICE)
        original = await bot.emu.wait_for(lambda: run.original_id)
        answer = await bot.final(original)
        assert run.callback_types[0] == 5  # deferred
        streaming = [t for t in answer.history if t.endswith("▌")]
        assert len(streaming) >= 2
        for partial in streaming:
            assert answer.content.startswith(partial.removesuffix(" ▌").rstrip())
        assert bot.emu.typing
        with sqlite3.connect(bot.database) as db:
            stored = db.execute("SELECT content FROM messages WHERE role='assistant'").fetchone()
        assert stored[0].strip() == answer.content.strip()


async def test_a_long_answer_continues_in_follow_ups(tmp_path: Path) -> None:
    words = " ".join(f"word{i}" for i in range(900))
    scripted = ScriptedEngine(words, tokens_per_second=2000)
    async with (
        serve(scripted.app()) as url,
        discord_bot(url, tmp_path / "bot.db", max_tokens=2000) as bot,
    ):
        run = await bot.emu.run_slash_command("chat", {"prompt": "talk"}, user_id=ALICE)
        await bot.emu.wait_for(lambda: len(run.followup_ids) >= 3, 30)
        last = await bot.final(run.followup_ids[-1], 30)
        parts = [run.original_id, *run.followup_ids]
        texts = [bot.emu.messages[m].content for m in parts if m is not None]
        assert all(len(t) <= 2000 for t in texts)
        assert " ".join(" ".join(texts).split()) == words
        assert last.content.endswith("word899")
        assert all(not bot.emu.messages[m].components for m in parts if m is not None)


@pytest.mark.parametrize("refused", [False, True])
async def test_an_answer_outliving_its_interaction_token_goes_on_through_the_channel(
    tmp_path: Path, refused: bool
) -> None:
    """Shrunk to seconds: Discord refuses the token after 15 minutes, the bot leaves it at 14
    (a long answer, or one queued behind many). The same message is then edited as the bot's
    own channel message; one the channel refuses continues in a new message."""
    words = " ".join(f"word{i}" for i in range(60))
    scripted = ScriptedEngine(words, tokens_per_second=15)  # about 4 s
    async with (
        serve(scripted.app()) as url,
        discord_bot(url, tmp_path / "bot.db", max_tokens=200) as bot,
    ):
        bot.emu.interaction_token_lifetime = 2.5
        bot.adapter.interaction_token_life = 1.5
        if refused:
            bot.emu.fail_next("PATCH", "/channels/*/messages/*", "403")
        run = await bot.emu.run_slash_command("chat", {"prompt": "talk"}, user_id=ALICE)
        original = await bot.emu.wait_for(lambda: run.original_id)
        others = lambda: [m for m in bot.emu.bot_messages() if m.id != original]  # noqa: E731
        if refused:
            last = await bot.final((await bot.emu.wait_for(others, 30))[0].id, 30)
        else:
            last = await bot.final(original, 30)
            assert others() == []
        assert last.content == words and not last.components
        through_channel = bot.emu.requests_to("PATCH", f"/channels/*/messages/{last.id}")
        assert through_channel and all(r.status == 200 for r in through_channel)
        refusals = bot.emu.requests_to("PATCH", f"/channels/*/messages/{original}")
        assert [r.status for r in refusals][:1] == ([403] if refused else [200])
        assert not [r for r in bot.emu.requests if r.status == 401]  # never past the token
        with sqlite3.connect(bot.database) as db:
            stored = db.execute("SELECT content FROM messages WHERE role='assistant'").fetchone()
        assert stored[0] == words


async def test_a_reply_stored_by_an_earlier_version_as_original_is_posted_afresh(
    tmp_path: Path,
) -> None:
    """Before the response's message id was stored, a /chat reply's reference was
    "@original": no id to edit after a restart, so that answer starts a new message."""
    scripted = ScriptedEngine("hello")
    async with serve(scripted.app()) as url, discord_bot(url, tmp_path / "bot.db") as bot:
        old = bot.adapter.resume_reply(str(bot.emu.channel_id), str(ALICE), None, "@original")
        assert old is not None and old.reference() is None  # not bound to a message
        kept = bot.adapter.resume_reply(str(bot.emu.channel_id), str(ALICE), None, "4242")
        assert kept is not None and kept.reference() == "4242"


async def test_rate_limits_with_and_without_via_still_end_in_the_same_text(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with discord_bot(engine.url, tmp_path / "bot.db", max_tokens=80, seed=5) as bot:
        calm = await bot.emu.run_slash_command("chat", {"prompt": "The sea"}, user_id=ALICE)
        calm_text = (await bot.final(await bot.emu.wait_for(lambda: calm.original_id))).content
        bot.emu.fail_next("PATCH", "/webhooks/*", "429", times=1, via=True)
        bot.emu.fail_next("PATCH", "/webhooks/*", "429", times=2, via=False, retry_after=0.3)
        stormy = await bot.emu.run_slash_command("chat", {"prompt": "The sea"}, user_id=BOB)
        stormy_text = (await bot.final(await bot.emu.wait_for(lambda: stormy.original_id))).content
        assert stormy_text == calm_text
        assert len([r for r in bot.emu.requests if r.fault]) == 3


async def test_the_stop_button_ends_the_answer_and_goes_away(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with discord_bot(engine.url, tmp_path / "bot.db", max_tokens=400, temperature=0.8) as bot:
        run = await bot.emu.run_slash_command("chat", {"prompt": "A long tale"}, user_id=ALICE)
        original = await bot.emu.wait_for(lambda: run.original_id)
        record = await bot.emu.wait_for(
            lambda: bot.emu.messages[original] if bot.emu.messages[original].custom_ids() else None
        )
        button = next(iter(record.custom_ids()))
        edits = len(record.history)
        later = await bot.emu.wait_for(
            lambda: bot.emu.messages[original] if len(record.history) > edits else None
        )
        # one id for the reply's every edit: a press of the button an edit just showed, before
        # the bot has its response (and stored that edit's view), still reaches a stored view
        assert list(later.custom_ids()) == [button]
        stranger = await bot.emu.press_button(original, button, BOB)
        await bot.emu.wait_for(lambda: stranger.callbacks)
        assert bot.emu.messages[original].custom_ids()  # a stranger cannot stop it
        await bot.emu.press_button(original, button, ALICE)
        answer = await bot.final(original, 15)
        assert answer.content.endswith("⏹ stopped")


async def test_mentions_and_dms_are_answered_and_others_ignored(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with discord_bot(engine.url, tmp_path / "bot.db") as bot:
        ignored = await bot.emu.send_message(ALICE, None, "just talking")
        mention = await bot.emu.mention_bot(ALICE, None, "what is the sea?")
        dm = await bot.emu.send_dm(BOB, "hello in private")
        await bot.answer_to(mention)
        await bot.answer_to(dm)
        assert not any(m.reference_id == ignored for m in bot.emu.bot_messages())
        with sqlite3.connect(bot.database) as db:
            users = [r[0] for r in db.execute("SELECT content FROM messages WHERE role='user'")]
        assert sorted(users) == ["hello in private", "what is the sea?"]


async def test_a_gateway_reconnect_mid_answer_loses_nothing(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with discord_bot(engine.url, tmp_path / "bot.db", max_tokens=120) as bot:
        run = await bot.emu.run_slash_command("chat", {"prompt": "Go on"}, user_id=ALICE)
        original = await bot.emu.wait_for(lambda: run.original_id)
        await bot.emu.force_reconnect()
        await bot.final(original)
        after = await bot.emu.mention_bot(BOB, None, "still there?")
        await bot.answer_to(after)


async def test_reset_forgets(engine: EngineProcess, tmp_path: Path) -> None:
    async with discord_bot(engine.url, tmp_path / "bot.db") as bot:
        first = await bot.emu.run_slash_command("chat", {"prompt": "I am Ada"}, user_id=ALICE)
        await bot.final(await bot.emu.wait_for(lambda: first.original_id))
        reset = await bot.emu.run_slash_command("reset", {}, user_id=ALICE)
        await bot.emu.wait_for(lambda: reset.callbacks)
        second = await bot.emu.run_slash_command("chat", {"prompt": "Who am I?"}, user_id=ALICE)
        await bot.final(await bot.emu.wait_for(lambda: second.original_id))
    with sqlite3.connect(tmp_path / "bot.db") as db:
        conversations = [
            r[0] for r in db.execute("SELECT conversation_id FROM messages WHERE role='user'")
        ]
    assert len(set(conversations)) == 2


async def test_refusals_are_ephemeral_and_only_admins_switch_models(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with discord_bot(
        engine.url, tmp_path / "bot.db", discord_allowed_users=f"{ALICE}"
    ) as bot:
        refused = await bot.emu.run_slash_command("chat", {"prompt": "hi"}, user_id=BOB)
        await bot.emu.wait_for(lambda: refused.callbacks)
        message = bot.emu.messages[await bot.emu.wait_for(lambda: refused.original_id)]
        assert message.ephemeral and "not allowed" in message.content
        switch = await bot.emu.run_slash_command("model", {"name": "other"}, user_id=ALICE)
        await bot.emu.wait_for(lambda: switch.callbacks)
        message = bot.emu.messages[await bot.emu.wait_for(lambda: switch.original_id)]
        assert message.ephemeral and "Only the bot's admins" in message.content
        await bot.service.store.ban("discord", str(ALICE))
        banned = await bot.emu.run_slash_command("chat", {"prompt": "hi"}, user_id=ALICE)
        await bot.emu.wait_for(lambda: banned.callbacks)
        message = bot.emu.messages[await bot.emu.wait_for(lambda: banned.original_id)]
        assert message.ephemeral and "banned" in message.content
        admin = await bot.emu.run_slash_command("model", {"name": "demo"}, user_id=ADMIN)
        await bot.emu.wait_for(
            lambda: any("Now answering with demo" in m.content for m in bot.emu.messages.values()),
            60,
        )
        assert admin.callback_types[0] == 5
        await asyncio.sleep(0)


async def test_system_refuses_broken_text_and_shows_a_long_prompt_cut_to_fit(
    engine: EngineProcess, tmp_path: Path
) -> None:
    async with discord_bot(engine.url, tmp_path / "bot.db") as bot:

        async def system(text: str | None) -> str:
            options = {} if text is None else {"text": text}
            run = await bot.emu.run_slash_command("system", options, user_id=ALICE)
            return bot.emu.messages[await bot.emu.wait_for(lambda: run.original_id)].content

        assert "not valid Unicode" in await system("be \ud800 brief")
        assert await bot.service.system_prompt_for("discord", str(ALICE), "a") != "be \ud800 brief"
        assert "is set" in await system("x" * 3000)
        shown = await system(None)
        assert len(shown) <= 2000 and shown.endswith("more characters)")
