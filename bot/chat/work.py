"""What the chat service keeps for each job while it is queued or running, and how its end
is stored: the record a worker, the queue and the reply tasks share."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bot.chat.access import user_key
from bot.chat.queue import QueuedJob
from bot.errors import ParleyError
from bot.incoming import Incoming, Outcome, State
from bot.metrics import METRICS, TokenRate
from bot.store.database import Conversation, Job, JobStatus, Message, MessageStatus, User
from bot.store.job_writes import Begun, Reply

JOB_STATUS: dict[State, JobStatus] = {"done": "done", "stopped": "cancelled", "error": "failed"}
STATE_OF: dict[JobStatus, State] = {status: state for state, status in JOB_STATUS.items()}
MESSAGE_STATUS: dict[State, MessageStatus] = {
    "done": "complete",
    "stopped": "cancelled",
    "error": "failed",
}


@dataclass
class WorkItem:
    incoming: Incoming
    user: User
    conversation: Conversation
    message: Message
    job: Job
    reply_text: list[str] = field(default_factory=list)
    enqueued: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    started: float | None = None  # when a worker took it
    shown_position: int | None = None
    paused: bool = False  # cancelled by a restart, not by the user: to be written again
    begun: Begun | None = None  # begun when accepted: its history, read in that transaction
    asking: asyncio.Event = field(default_factory=asyncio.Event)  # the engine has taken the
    # request, or the job ended without one: its placeholder can be posted (bot/chat/service.py)

    @property
    def key(self) -> str:
        """Whose job it is: fairness and limits are per person, across all their chats."""
        return user_key(self.incoming.platform, self.incoming.user_id)

    @property
    def cache_key(self) -> str:
        """The engine's name for the conversation's KV cache (``prompt_cache_key``), and the
        engine pool's for the engine that holds it: one conversation, one name."""
        return f"conversation-{self.conversation.id}"


def describe(failure: BaseException | None) -> str | None:
    """What the user is told about a failed answer."""
    if failure is None:
        return None
    return str(failure) if isinstance(failure, ParleyError) else "the engine failed"


def reply_of(item: WorkItem, outcome: Outcome) -> Reply | None:
    """The answer to store: its text (partial text kept, marked) and, when done, its usage;
    None for an answer that never began."""
    if not outcome.text and outcome.state != "done":
        return None
    usage = outcome.usage if outcome.state == "done" else None
    ttft = (item.first_token - item.enqueued) * 1000 if item.first_token else None
    return Reply(
        outcome.text, MESSAGE_STATUS[outcome.state], outcome.model or None,
        usage.prompt_tokens if usage else None,
        (outcome.usage.completion_tokens or None) if outcome.usage else None,
        ttft if usage else None,
    )  # fmt: skip


def job_rows(
    running: list[QueuedJob[WorkItem]], queued: list[QueuedJob[WorkItem]]
) -> list[dict[str, object]]:
    """Running then queued jobs, for `parley admin queue`."""
    now = time.monotonic()
    rows: list[dict[str, object]] = []
    for state, jobs in (("running", running), ("queued", queued)):
        for position, job in enumerate(jobs, 1):
            item = job.payload
            rows.append({
                "job": item.job.id, "state": state, "user": job.user,
                "chat": item.incoming.chat_id, "position": position if state == "queued" else 0,
                "waiting_s": round(now - item.enqueued, 1),
            })  # fmt: skip
    return rows


def measure(item: WorkItem, outcome: Outcome, written: TokenRate) -> None:
    """The finished job, for /metrics and ``written``."""
    if outcome.state == "done" and outcome.usage is not None:
        written.add(outcome.usage.completion_tokens)
    platform = item.incoming.platform
    METRICS.count("parley_replies_total", platform=platform, state=outcome.state)
    if item.started is not None:
        METRICS.observe("parley_queue_wait_seconds", item.started - item.enqueued)
    if item.first_token is not None:
        METRICS.observe("parley_ttft_seconds", item.first_token - item.enqueued)
    if outcome.usage is not None:
        METRICS.count("parley_tokens_generated_total", outcome.usage.completion_tokens)
