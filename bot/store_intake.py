"""Accepting one user message in one write transaction: the hot path of every message.

``Store.user``, ``active_conversation`` and ``add_user_message_with_job`` do the same in
three transactions; each aiosqlite statement is a round trip to its thread (about 0.2 ms
with the event loop busy), and those three plus the ban check took 3.3 ms of the 6.6 ms
between an update arriving and the engine request (bench/bot.py). Here it is seven
statements, each one round trip (``execute_fetchall``, ``RETURNING``), committed before the
job is queued, as DESIGN.md asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.store import (
    Conversation,
    Job,
    Message,
    Store,
    User,
    _insert_message,
    _job,
    _new_conversation,
    _now,
)


@dataclass(frozen=True)
class Accepted:
    user: User
    conversation: Conversation
    message: Message
    job: Job


async def accept_message(
    store: Store, platform: str, platform_user_id: str, name: str, chat_id: str, content: str
) -> Accepted | None:
    """Store the message and its queued job for the user's active conversation in this chat
    (user and conversation created when new); None, storing nothing, if the user is banned."""
    now = _now()
    async with store.transaction() as db:
        banned = await db.execute_fetchall(
            "SELECT 1 FROM bans WHERE platform = ? AND platform_user_id = ?",
            (platform, platform_user_id),
        )
        if list(banned):
            return None
        (row,) = await db.execute_fetchall(
            "INSERT INTO users (platform, platform_user_id, name, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (platform, platform_user_id) DO UPDATE SET name = excluded.name"
            " RETURNING id",
            (platform, platform_user_id, name, now),
        )
        user = User(int(row[0]), platform, platform_user_id, name)
        found = list(
            await db.execute_fetchall(
                "SELECT id FROM conversations"
                " WHERE user_id = ? AND platform = ? AND chat_id = ? AND active = 1",
                (user.id, platform, chat_id),
            )
        )
        if found:
            conversation = Conversation(int(found[0][0]), user.id, platform, chat_id)
        else:
            conversation = await _new_conversation(db, user, chat_id)
        message = await _insert_message(
            db, conversation.id, "user", content, "complete", None, None
        )
        (row,) = await db.execute_fetchall(
            "INSERT INTO jobs (message_id, user_id, status, created_at, updated_at)"
            " VALUES (?, ?, 'queued', ?, ?) RETURNING id",
            (message.id, user.id, now, now),
        )
        job = _job((row[0], message.id, user.id, conversation.id, "queued", None, None, now))
    return Accepted(user, conversation, message, job)
