"""The fair queue: round-robin across users, FIFO within a user, limits, positions."""

from __future__ import annotations

import pytest

from bot.chat.queue import FairQueue, QueuedJob
from bot.errors import QueueFull


def job(job_id: int, user: str) -> QueuedJob[str]:
    return QueuedJob(job_id, user, f"{user}-{job_id}")


async def drain(queue: FairQueue[str]) -> list[str]:
    return [(await queue.get()).payload for _ in range(len(queue))]


async def test_another_users_single_job_runs_second_behind_a_flood() -> None:
    queue: FairQueue[str] = FairQueue(max_per_user=10, max_total=100)
    for i in range(5):
        queue.put(job(i, "alice"))
    queue.put(job(99, "bob"))
    assert await drain(queue) == [
        "alice-0", "bob-99", "alice-1", "alice-2", "alice-3", "alice-4",
    ]  # fmt: skip


async def test_each_user_is_served_in_turn_and_in_order() -> None:
    queue: FairQueue[str] = FairQueue(max_per_user=10, max_total=100)
    for i, user in enumerate(["a", "a", "b", "c", "b", "a"]):
        queue.put(job(i, user))
    assert await drain(queue) == ["a-0", "b-2", "c-3", "a-1", "b-4", "a-5"]


async def test_positions_follow_the_service_order_as_jobs_move() -> None:
    queue: FairQueue[str] = FairQueue(max_per_user=10, max_total=100)
    assert queue.put(job(1, "a")) == 1
    assert queue.put(job(2, "a")) == 2
    assert queue.put(job(3, "b")) == 2  # b's first job comes before a's second
    assert queue.position(2) == 3
    await queue.get()
    assert queue.position(3) == 1 and queue.position(2) == 2


async def test_limits_per_user_and_overall_refuse_with_a_clear_message() -> None:
    queue: FairQueue[str] = FairQueue(max_per_user=2, max_total=3)
    queue.put(job(1, "a"))
    queue.put(job(2, "a"))
    with pytest.raises(QueueFull, match="already have 2"):
        queue.check_room("a")
    queue.check_room("b")
    with pytest.raises(QueueFull, match="already have 2"):
        queue.check_room("b", running_for_user=2)
    queue.put(job(3, "b"))
    with pytest.raises(QueueFull, match="busy"):
        queue.check_room("c")


async def test_a_removed_job_is_never_served() -> None:
    queue: FairQueue[str] = FairQueue(max_per_user=10, max_total=100)
    queue.put(job(1, "a"))
    queue.put(job(2, "b"))
    assert queue.remove(1) is not None and queue.remove(1) is None
    assert await drain(queue) == ["b-2"]
