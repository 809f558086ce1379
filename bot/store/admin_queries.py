"""Store queries for the operator (`parley admin`): usage, allowlist, people, history, stats.

Kept apart from bot/store/database.py, which serves the chat path; both share its connection and its
one-transaction-per-call rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.store.database import Store


@dataclass(frozen=True)
class Person:
    platform: str
    platform_user_id: str
    name: str
    messages: int
    banned: bool
    allowed: bool
    last_seen: str | None


@dataclass(frozen=True)
class UsageRow:
    key: str  # "platform:id" or a model name
    messages: int
    prompt_tokens: int
    completion_tokens: int
    mean_ttft_ms: float | None


async def allow(store: Store, platform: str, user_id: str) -> None:
    async with store.transaction() as db:
        await db.execute(
            "INSERT OR IGNORE INTO allowed_users (platform, platform_user_id) VALUES (?, ?)",
            (platform, user_id),
        )


async def is_allowed(store: Store, platform: str, user_id: str) -> bool:
    rows = await store.query(
        "SELECT 1 FROM allowed_users WHERE platform = ? AND platform_user_id = ?",
        (platform, user_id),
    )
    return bool(rows)


async def people(store: Store) -> list[Person]:
    """Everyone who wrote, was banned or was allowed, most recently active first."""
    rows = await store.query(
        """
        WITH ids AS (
            SELECT platform, platform_user_id FROM users
            UNION SELECT platform, platform_user_id FROM bans
            UNION SELECT platform, platform_user_id FROM allowed_users
        )
        SELECT ids.platform, ids.platform_user_id, COALESCE(u.name, ''),
               (SELECT COUNT(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id
                 WHERE c.user_id = u.id AND m.role = 'user'),
               EXISTS (SELECT 1 FROM bans b WHERE b.platform = ids.platform
                        AND b.platform_user_id = ids.platform_user_id),
               EXISTS (SELECT 1 FROM allowed_users a WHERE a.platform = ids.platform
                        AND a.platform_user_id = ids.platform_user_id),
               (SELECT MAX(m.created_at) FROM messages m
                  JOIN conversations c ON c.id = m.conversation_id WHERE c.user_id = u.id)
        FROM ids LEFT JOIN users u
          ON u.platform = ids.platform AND u.platform_user_id = ids.platform_user_id
        ORDER BY 7 DESC, 1, 2
        """,
        (),
    )
    return [Person(p, i, n, int(m), bool(b), bool(a), seen) for p, i, n, m, b, a, seen in rows]


async def history(store: Store, platform: str, user_id: str) -> list[dict[str, Any]]:
    """Every stored message of one person, all conversations, oldest first."""
    rows = await store.query(
        """
        SELECT c.id, c.chat_id, c.active, m.id, m.role, m.content, m.status, m.model,
               m.token_count, m.created_at
        FROM messages m JOIN conversations c ON c.id = m.conversation_id
        JOIN users u ON u.id = c.user_id
        WHERE u.platform = ? AND u.platform_user_id = ? ORDER BY m.id
        """,
        (platform, user_id),
    )
    keys = ("conversation", "chat", "active", "id", "role", "content", "status", "model",
            "tokens", "at")  # fmt: skip
    return [dict(zip(keys, row, strict=True)) for row in rows]


async def wipe(store: Store, platform: str, user_id: str) -> int:
    """Delete one person's conversations and messages; returns how many messages went."""
    async with store.transaction() as db:
        async with db.execute(
            "SELECT COUNT(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id"
            " JOIN users u ON u.id = c.user_id WHERE u.platform = ? AND u.platform_user_id = ?",
            (platform, user_id),
        ) as cursor:
            row = await cursor.fetchone()
        await db.execute(
            "DELETE FROM conversations WHERE user_id IN"
            " (SELECT id FROM users WHERE platform = ? AND platform_user_id = ?)",
            (platform, user_id),
        )
    return int(row[0]) if row else 0


async def usage(store: Store, by: str) -> list[UsageRow]:
    """Answered messages, tokens and mean time to first token, per person or per model."""
    key = "u.platform || ':' || u.platform_user_id" if by == "user" else "j.model"
    rows = await store.query(
        f"""
        SELECT {key}, COUNT(*), COALESCE(SUM(j.prompt_tokens), 0),
               COALESCE(SUM(j.completion_tokens), 0), AVG(j.ttft_ms)
        FROM jobs j JOIN users u ON u.id = j.user_id
        WHERE j.status = 'done' AND j.model IS NOT NULL
        GROUP BY 1 ORDER BY 2 DESC, 1
        """,  # key is one of two constants, never user input
        (),
    )
    return [UsageRow(str(k), int(n), int(p), int(c), t) for k, n, p, c, t in rows]
