"""Final texts on their way to the platform, and the record that they got there.

A worker hands the final text to a tracked task and moves on, so a chat's pacing or a 429
never holds an engine slot; ``Deliveries.drain`` lets shutdown wait for them, bounded. Once the
platform has confirmed a final text (and the job is closed in the store), the job is marked
shown (bot/store/jobs.py ``mark_shown``): a final text that never got there is shown again by
the next start (bot/chat/resume.py).
"""

from __future__ import annotations

import asyncio
import logging

from bot.chat.work import WorkItem
from bot.incoming import Outcome
from bot.store.database import Store
from bot.store.jobs import mark_shown

log = logging.getLogger(__name__)


class Deliveries:
    """Final texts being shown, one task each."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self, item: WorkItem, outcome: Outcome) -> None:
        """Show a text that does not end the job (the job goes on later): nothing is marked."""
        self._start(item, outcome, None, last_try=False)

    def final(self, item: WorkItem, outcome: Outcome, closed: asyncio.Future[bool]) -> None:
        """Show the job's final text; once the platform confirmed it and ``closed`` says the
        job was closed in the store, mark it shown (not closed: the next start answers it)."""
        self._start(item, outcome, closed, last_try=False)

    def again(self, item: WorkItem, outcome: Outcome) -> None:
        """Show a closed job's stored final text once more, and mark it shown once the platform
        confirmed or refused it: a second refusal (the chat gone, the bot blocked) would come
        at every start."""
        closed = asyncio.get_running_loop().create_future()
        closed.set_result(True)
        self._start(item, outcome, closed, last_try=True)

    def _start(
        self, item: WorkItem, outcome: Outcome, closed: asyncio.Future[bool] | None,
        last_try: bool,
    ) -> None:  # fmt: skip
        task = asyncio.create_task(
            self._deliver(item, outcome, closed, last_try), name=f"reply-{item.job.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, item: WorkItem, outcome: Outcome, closed: asyncio.Future[bool] | None,
        last_try: bool,
    ) -> None:  # fmt: skip
        try:
            await item.incoming.reply.finished(outcome)
        except Exception:  # the answer is stored all the same; the next start tries again
            log.exception("the final text of job %d could not be shown", item.job.id)
            if not last_try:
                return
        if closed is None or not await closed:
            return
        try:
            await mark_shown(self.store, item.job)
        except Exception:  # shown twice at worst: the next start shows the same text again
            log.exception("job %d was shown but could not be marked so", item.job.id)

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` s for the texts still being shown; cancel the rest."""
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace)
            for task in late:
                log.warning("a final reply could not be shown within %g s", grace)
                task.cancel()
