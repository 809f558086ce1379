"""The chat service's calls beside the message path: a person's settings (/reset, /system)
and what the operator reads and does (`parley admin`, /model). Mixed into ``ChatService``
(bot/chat/service.py), whose state they use; thin, and kept apart from the answering."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from bot.chat.queue import FairQueue
from bot.chat.work import WorkItem, job_rows
from bot.chat.workers import Workers
from bot.engines.pool import EnginePool
from bot.errors import ParleyError
from bot.models.catalog import resolve_model
from bot.store.database import Store
from bot.store.rows import SYSTEM_PROMPT_KEY

MODEL_KEY = "model"  # the operator's last model choice, used again after a restart


class ServiceCalls:
    """Event-loop-only, as the service."""

    store: Store
    engines: EnginePool
    queue: FairQueue[WorkItem]
    models_dir: Path | None
    on_model_switch: Callable[[str], None] | None
    workers: Workers
    _admin_token: str | None
    _switching: asyncio.Lock

    # ---- a person's settings ----------------------------------------------------------

    async def reset(self, platform: str, chat_id: str, user_id: str, user_name: str) -> None:
        """/reset: a fresh conversation; the old messages stay stored but are not sent."""
        user = await self.store.user(platform, user_id, user_name)
        await self.store.reset_conversation(user, chat_id)

    async def system_prompt_for(self, platform: str, user_id: str, user_name: str) -> str:
        user = await self.store.user(platform, user_id, user_name)
        custom = await self.store.get_user_setting(user.id, SYSTEM_PROMPT_KEY)
        return custom if custom is not None else self.workers.system_prompt

    async def set_system_prompt(
        self, platform: str, user_id: str, user_name: str, prompt: str | None
    ) -> None:
        """Per-user system prompt; None restores the default."""
        user = await self.store.user(platform, user_id, user_name)
        await self.store.set_user_setting(user.id, SYSTEM_PROMPT_KEY, prompt)

    # ---- the operator's -----------------------------------------------------------------

    def load(self) -> tuple[int, int]:
        """(queued, running) jobs right now."""
        return len(self.queue), len(self.workers.running)

    def tokens_per_second(self) -> float:
        return self.workers.written.per_second()

    def jobs(self) -> list[dict[str, object]]:
        """Running then queued jobs, for `parley admin queue`."""
        return job_rows(list(self.workers.running.values()), self.queue.jobs_in_order())

    async def is_banned(self, platform: str, user_id: str) -> bool:
        return await self.store.is_banned(platform, user_id)

    async def switch_model(self, spec: str, *, now: bool = False) -> str:
        """Load another model in the engines without a restart; persisted for the next start.

        Replies being written finish on the old model (``now`` stops them); queued ones are
        answered by the new one. A model that fails to load leaves the old one answering and
        raises EngineRequestError saying why.
        """
        if self._admin_token is None:
            raise ParleyError("switching models needs ADMIN_TOKEN (the engine's admin token)")
        spec = resolve_model(self.models_dir, spec)
        async with self._switching:
            card = await self.engines.switch_model(spec, self._admin_token, now=now)
            await self.store.set_setting(MODEL_KEY, spec)
            if self.on_model_switch is not None:
                self.on_model_switch(spec)
            return card.name
