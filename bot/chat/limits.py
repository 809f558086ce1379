"""Per-user limits against greedy or hostile users: messages a minute, and tokens a day.

Both are settings (``RATE_LIMIT_PER_MINUTE``, ``DAILY_TOKEN_QUOTA``; 0 turns one off) and
admins are exempt. A refused message is not stored, and the reply says when the user can
continue. The rate is counted in memory (a restart forgets it); the quota from the stored
jobs' usage (prompt + completion tokens) since midnight UTC, so it survives restarts.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bot.chat.access import OPERATOR_PLATFORMS, user_key
from bot.store.database import Store

WINDOW = 60.0  # seconds: the rate limit counts messages over the last minute

_TOKENS_TODAY = """
SELECT COALESCE(SUM(COALESCE(j.prompt_tokens, 0) + COALESCE(j.completion_tokens, 0)), 0)
FROM jobs j JOIN users u ON u.id = j.user_id
WHERE u.platform = ? AND u.platform_user_id = ? AND j.created_at >= ?
"""


class UserLimits:
    def __init__(
        self,
        per_minute: int,
        daily_tokens: int,
        exempt: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``exempt``: user keys (bot/chat/access.py: admins) that no limit applies to."""
        self.per_minute = per_minute
        self.daily_tokens = daily_tokens
        self.exempt = exempt
        self._clock = clock
        self._now = now
        self._sent: dict[str, deque[float]] = {}

    async def refusal(self, store: Store, platform: str, user_id: str) -> str | None:
        """Why this user may not send a message now (counting it if they may), or None."""
        key = user_key(platform, user_id)
        if key in self.exempt or platform in OPERATOR_PLATFORMS:
            return None
        if self.daily_tokens:
            now = self._now()
            midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
            since = midnight.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            rows = await store.query(_TOKENS_TODAY, (platform, user_id, since))
            if int(rows[0][0]) >= self.daily_tokens:
                return _quota_text(self.daily_tokens, midnight + timedelta(days=1) - now)
        if self.per_minute:
            return self._rate(key)
        return None

    def _rate(self, key: str) -> str | None:
        now = self._clock()
        sent = self._sent.setdefault(key, deque())
        while sent and sent[0] <= now - WINDOW:
            sent.popleft()
        if len(sent) >= self.per_minute:
            wait = math.ceil(sent[0] + WINDOW - now)
            return (
                f"You're sending messages faster than {self.per_minute} a minute; "
                f"you can send the next one in {wait} s."
            )
        sent.append(now)
        if len(self._sent) > 10_000:  # forget people who have not written for a minute
            for idle in [k for k, times in self._sent.items() if times[-1] <= now - WINDOW]:
                del self._sent[idle]
        return None


def _quota_text(limit: int, left: timedelta) -> str:
    minutes = max(1, math.ceil(left.total_seconds() / 60))
    when = f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
    return (
        f"You've used your {limit:,} tokens for today. You can continue at midnight UTC, in {when}."
    )
