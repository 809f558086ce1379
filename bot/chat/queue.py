"""A fair job queue: users take turns, and each user's own jobs keep their order.

Start-time fair queueing: a user's job gets the round after that user's previous job (or
the round being served now, if they have been idle), and jobs run in (round, arrival) order.
Someone who queues ten messages gets rounds 0..9, someone arriving later with one message
gets the current round, so they go next, not after the ten, even if the first user was
served a moment ago. Positions are read off that order, so "queued (#n)" is what the user
will actually see; the chat service shows them now and then (``position``), not on every move,
which with a thousand queued jobs would mean a million updates. Event-loop-only.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bot.errors import QueueFull

UserKey = str
T = TypeVar("T")


@dataclass(eq=False)
class QueuedJob(Generic[T]):
    """A unit of work for one user; ``payload`` is what the worker needs."""

    id: int
    user: UserKey
    payload: T
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    order: tuple[int, int] = (0, 0)  # (round, arrival), set by the queue


class FairQueue(Generic[T]):
    def __init__(self, max_per_user: int, max_total: int) -> None:
        self.max_per_user = max_per_user
        self.max_total = max_total
        self._jobs: list[QueuedJob[T]] = []  # sorted by ``order``
        self._last_round: dict[UserKey, int] = {}
        self._round = 0  # the round of the job served last
        self._arrivals = itertools.count()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._jobs)

    def pending_for(self, user: UserKey) -> int:
        return sum(1 for job in self._jobs if job.user == user)

    def check_room(self, user: UserKey, running_for_user: int = 0) -> None:
        """Raise QueueFull (with a message for the user) if ``user`` may not add a job now."""
        if self.pending_for(user) + running_for_user >= self.max_per_user:
            raise QueueFull(
                f"You already have {self.max_per_user} messages waiting for an answer; "
                "wait for them (or /stop) and try again."
            )
        if len(self._jobs) >= self.max_total:
            raise QueueFull("I'm busy right now; please try again in a minute.")

    def put(self, job: QueuedJob[T]) -> int:
        """Enqueue and return the job's 1-based position in the service order."""
        previous = self._last_round.get(job.user)
        start = self._round if previous is None else max(self._round, previous + 1)
        self._last_round[job.user] = start
        job.order = (start, next(self._arrivals))
        bisect.insort(self._jobs, job, key=lambda queued: queued.order)
        self._ready.set()
        return self._jobs.index(job) + 1

    async def get(self) -> QueuedJob[T]:
        """The next job in fair order; waits while the queue is empty."""
        await self.wait()
        return self.take()

    async def wait(self) -> None:
        """Until the queue holds a job."""
        while not self._jobs:
            self._ready.clear()
            await self._ready.wait()

    def peek(self) -> QueuedJob[T] | None:
        """The job ``take`` would return, left in place; None if the queue is empty."""
        return self._jobs[0] if self._jobs else None

    def take(self) -> QueuedJob[T]:
        """The next job in fair order, now; IndexError if the queue is empty."""
        job = self._jobs.pop(0)
        self._round = job.order[0]
        self._forget_idle_users()
        return job

    def remove(self, job_id: int) -> QueuedJob[T] | None:
        """Take a queued job out (cancellation); None if it is not queued."""
        for job in self._jobs:
            if job.id == job_id:
                self._jobs.remove(job)
                return job
        return None

    def jobs_in_order(self) -> list[QueuedJob[T]]:
        return list(self._jobs)

    def jobs_of(self, user: UserKey) -> list[QueuedJob[T]]:
        return [job for job in self._jobs if job.user == user]

    def position(self, job_id: int) -> int | None:
        for index, job in enumerate(self._jobs):
            if job.id == job_id:
                return index + 1
        return None

    def _forget_idle_users(self) -> None:
        """A user whose last round has passed starts at the current round anyway."""
        if len(self._last_round) > 4 * len(self._jobs) + 64:
            self._last_round = {u: r for u, r in self._last_round.items() if r >= self._round}
