"""The service's background work on replies: showing final texts, and queue positions.

A worker hands the final text to a tracked task and moves on, so a chat's pacing or a 429
never holds an engine slot; ``Deliveries.drain`` lets shutdown wait for them, bounded. Once the
platform has confirmed a final text, the task's ``on_shown`` records it (bot/store/jobs.py
``mark_shown``): a final text that never got there is shown again by the next start.
Queue positions are shown every few seconds, only to the front of the queue.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

from bot.chat.queue import FairQueue
from bot.chat.work import WorkItem
from bot.incoming import Outcome

log = logging.getLogger(__name__)


class Deliveries:
    """Final texts being shown, one task each."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self, item: WorkItem, outcome: Outcome,
        on_shown: Callable[[], Awaitable[None]] | None = None, last_try: bool = False,
    ) -> None:  # fmt: skip
        """Show ``outcome``'s final text; then, if the platform confirmed it (or refused it on
        the ``last_try``: no later start would fare better), ``on_shown``."""
        task = asyncio.create_task(
            _deliver(item, outcome, on_shown, last_try), name=f"reply-{item.job.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` s for the texts still being shown; cancel the rest."""
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace)
            for task in late:
                log.warning("a final reply could not be shown within %g s", grace)
                task.cancel()


async def _deliver(
    item: WorkItem, outcome: Outcome, on_shown: Callable[[], Awaitable[None]] | None,
    last_try: bool,
) -> None:  # fmt: skip
    try:
        await item.incoming.reply.finished(outcome)
    except Exception:  # the answer is stored all the same; the next start tries again
        log.exception("the final text of job %d could not be shown", item.job.id)
        if not last_try:
            return
    if on_shown is not None:
        try:
            await on_shown()
        except Exception:  # shown twice at worst: the next start shows the same text again
            log.exception("job %d was shown but could not be marked so", item.job.id)


async def show_positions(
    queue: FairQueue[WorkItem], every: float, shown: Callable[[], int]
) -> None:
    """Every ``every`` seconds, tell each queued message in the first ``shown()`` places whose
    place changed (the rest keep the place they were first shown until they get there)."""
    while True:
        await asyncio.sleep(every)
        for position, job in enumerate(itertools.islice(queue.jobs_in_order(), shown()), 1):
            item = job.payload
            if item.shown_position is not None and item.shown_position != position:
                item.shown_position = position
                try:
                    await item.incoming.reply.queued(position)
                except Exception as exc:  # a stale position is cosmetic
                    log.debug("queue position update failed: %s", exc)
