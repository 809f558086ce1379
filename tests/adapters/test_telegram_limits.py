"""Parley's replies stay within Telegram's limit as Telegram counts it (UTF-16 units of the
visible text): a long emoji-heavy answer streams through the real adapter, python-telegram-bot
and the splitter into the Bot API emulator, which refuses a message that is too long."""

from __future__ import annotations

from pathlib import Path

from tests.adapters.discord_harness import serve
from tests.adapters.telegram_harness import ALICE, is_final, plain, telegram_bot
from tests.emulators.scripted_engine import ScriptedEngine
from tests.emulators.telegram_api import BotMessage
from tests.emulators.telegram_models import MAX_TEXT, parse_text, utf16_len

WORDS = ["🎉🎉🎉", "日本語", "👨‍👩‍👧", "**bold**", "naïve", "😀"]


async def test_a_long_emoji_heavy_answer_is_split_within_telegrams_limit(tmp_path: Path) -> None:
    answer = " ".join(WORDS * 250)  # 1,500 words, 7,749 characters, 9,499 UTF-16 units
    assert len(answer) < 2 * MAX_TEXT < utf16_len(answer)
    expected = answer.replace("**", "").split()
    scripted = ScriptedEngine(answer, tokens_per_second=1000)
    async with (
        serve(scripted.app()) as url,
        telegram_bot(url, tmp_path / "bot.db", max_tokens=1500) as bot,
    ):
        asked = await bot.emu.user_says("Celebrate", chat_id=ALICE, user_id=ALICE)

        def answered() -> list[BotMessage] | None:
            parts = bot.replies_to(asked, ALICE)
            done = parts and all(is_final(part) for part in parts)
            shown = " ".join(plain(part.text) for part in parts).split()
            return parts if done and shown == expected else None

        parts = await bot.emu.wait_for(answered, timeout=60)
        assert len(parts) >= 3
        assert all(part.parse_modes[-1] == "HTML" for part in parts)  # no plain-text fallback
        assert any("<b>bold</b>" in part.text for part in parts)
        for call in bot.emu.requests:  # every text Parley sent, refused or not
            if call.method in ("sendMessage", "editMessageText"):
                visible, _ = parse_text(call.params["text"], call.params.get("parse_mode"))
                assert utf16_len(visible) <= MAX_TEXT
