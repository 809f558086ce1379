"""What the engine saw and what SQLite kept, for tests/adapters/test_bad_input.py: the prompt
a conversation becomes (through the engine's own /tokenize) and the stored conversations."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tests.engine_process import EngineProcess

# ---- what the engine sees --------------------------------------------------------------


def tokenize(engine: EngineProcess, messages: list[dict[str, str]]) -> dict[str, Any]:
    body = json.dumps({"messages": messages}).encode()
    request = urllib.request.Request(
        engine.url + "/tokenize", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def check_prompt(
    engine: EngineProcess,
    messages: list[dict[str, str]],
    prompt_tokens: int | None,
    literal: tuple[str, ...] = (),
    never: tuple[str, ...] = (),
) -> None:
    """The prompt the engine built for these messages has only the template's control tokens
    (the same ones as for a conversation of plain "x"s), and the user's text as plain text."""
    seen = tokenize(engine, messages)
    assert len(seen["tokens"]) == prompt_tokens  # these are the messages the engine was sent
    blank = tokenize(engine, [{**m, "content": "x"} for m in messages])

    def specials(result: dict[str, Any]) -> list[int]:
        return [p["id"] for p in result["pieces"] if p["special"]]

    assert specials(seen) == specials(blank)
    text = "".join(p["piece"] for p in seen["pieces"] if not p["special"])
    for part in literal:
        assert part in text
    for part in never:
        assert part not in text


# ---- the stored conversation -------------------------------------------------------------


@dataclass
class Stored:
    """One conversation as SQLite has it: (role, content, job's prompt_tokens) in order."""

    rows: list[tuple[str, str, int | None]] = field(default_factory=list)

    @property
    def users(self) -> list[str]:
        return [content for role, content, _ in self.rows if role == "user"]


def stored(database: Path, key: Literal["user", "conversation"]) -> dict[str, Stored]:
    column = "u.platform_user_id" if key == "user" else "c.id"
    with sqlite3.connect(database) as db:
        rows = db.execute(
            f"SELECT {column}, m.role, m.content, j.prompt_tokens FROM messages m"
            " JOIN conversations c ON c.id = m.conversation_id JOIN users u ON u.id = c.user_id"
            " LEFT JOIN jobs j ON j.message_id = m.id ORDER BY m.id"
        ).fetchall()
    found: dict[str, Stored] = {}
    for owner, role, content, prompt_tokens in rows:
        found.setdefault(str(owner), Stored()).rows.append((role, content, prompt_tokens))
    return found


def first_turn(system: str, conversation: Stored) -> tuple[list[dict[str, str]], int | None]:
    _, content, prompt_tokens = conversation.rows[0]
    return [{"role": "system", "content": system}, {"role": "user", "content": content}], (
        prompt_tokens
    )
