"""The chat service: from an adapter's ``Incoming`` to a queued job, and the calls beside it.

``handle`` checks access and limits, commits the user's message and its job in one
transaction, queues the job and posts its reply (placeholder or queue place); the workers
(bot/chat/workers.py) take it from the queue to a stored, streamed answer. ``cancel`` is
/stop; the settings and operator calls are mixed in from bot/chat/service_calls.py.
Event-loop-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from bot.chat.access import user_key
from bot.chat.limits import UserLimits
from bot.chat.queue import FairQueue, QueuedJob
from bot.chat.service_calls import ServiceCalls
from bot.chat.work import WorkItem
from bot.chat.workers import POSITION_EVERY, STOPPED, STORE_DOWN, Workers
from bot.engines.client import Sampling
from bot.engines.pool import EnginePool
from bot.errors import QueueFull
from bot.incoming import Incoming, Outcome, text_problem
from bot.metrics import METRICS
from bot.store.database import Store
from bot.store.faults import StorageHealth
from bot.store.jobs import accept_message, requeue_job, set_reply_ref
from bot.store.rows import SYSTEM_PROMPT_KEY
from common.log_context import request_id_bound

log = logging.getLogger(__name__)

# Seconds a job that starts at once holds back its placeholder until the engine has taken its
# request (answered its headers; Parley's engine does so before evaluating the prompt, some
# servers only with the first token). Posted first, the placeholder's work in this process and
# the platform's delayed the engine request's first steps: the users' first messages reached
# the engine 0.5 ms later (mean, 48 messages, two A/B pairs of bench/bot.py's overhead load).
ASKING_WAIT = 0.25


class ChatService(ServiceCalls):
    def __init__(
        self,
        store: Store,
        engines: EnginePool,
        *,
        sampling: Sampling,
        system_prompt: str,
        max_pending_per_user: int,
        max_pending_total: int,
        admin_token: str | None = None,
        models_dir: Path | None = None,
        position_every: float = POSITION_EVERY,
        engine_wait: float = 600.0,
        on_model_switch: Callable[[str], None] | None = None,
        limits: UserLimits | None = None,
    ) -> None:
        """``engines`` is started; an answer cut off by a lost engine waits up to
        ``engine_wait`` s for one to have room again; ``on_model_switch`` hears each model
        switched to (so a restarted local engine loads it)."""
        self.store = store
        self.engines = engines
        self.on_model_switch = on_model_switch
        self.limits = limits or UserLimits(per_minute=0, daily_tokens=0)
        self._admin_token = admin_token
        self.models_dir = models_dir
        self._switching = asyncio.Lock()
        self.queue: FairQueue[WorkItem] = FairQueue(max_pending_per_user, max_pending_total)
        self._beginning = 0  # messages being accepted and begun in one transaction
        self._ids = itertools.count(1)
        self.allowed_at_runtime: set[tuple[str, str]] = set()  # `parley admin users allow`
        # a full disk or a read-only file: messages refused, readiness 503, probed until over
        self.storage = StorageHealth(lambda: store.set_setting("store_probe", str(time.time())))
        self.workers = Workers(
            store, engines, self.queue, self.storage, sampling=sampling,
            system_prompt=system_prompt, engine_wait=engine_wait, position_every=position_every,
        )  # fmt: skip
        self.started_at = time.time()

    # ---- lifecycle --------------------------------------------------------------------

    @property
    def model(self) -> str:
        return self.engines.primary.model

    @property
    def n_ctx(self) -> int:
        return self.engines.primary.n_ctx

    @property
    def sampling(self) -> Sampling:
        """How answers are sampled (the workers' setting, read when each answer starts)."""
        return self.workers.sampling

    @sampling.setter
    def sampling(self, sampling: Sampling) -> None:
        self.workers.sampling = sampling

    @property
    def system_prompt(self) -> str:
        """The system prompt of people who set none of their own."""
        return self.workers.system_prompt

    def start(self, workers: int | None = None) -> None:
        """Start answering; ``workers`` caps the answers written at once (default: as many
        as the engines have slots)."""
        self.engines.limit = workers
        self.workers.start()

    async def stop(self, grace: float = 0.0, resumable: bool = False) -> None:
        """Stop the workers: no new answer starts; running ones get ``grace`` s to finish.
        The rest end as "stopped", or (``resumable``, a restart) go back to the queue with a
        note, to be written again in the same message by the next start (bot/chat/resume.py)."""
        await self.workers.stop(grace, resumable)
        await self.storage.close()

    # ---- adapter calls ----------------------------------------------------------------

    async def handle(self, incoming: Incoming) -> None:
        """Accept one user message: refuse it clearly, or store it and queue its answer."""
        with request_id_bound(incoming.request_id):  # in every log line, and to the engine
            await self._accept(incoming)

    async def _accept(self, incoming: Incoming) -> None:
        if (problem := text_problem(incoming.text)) is not None:
            await incoming.reply.notice(problem)
            return
        key = user_key(incoming.platform, incoming.user_id)
        try:
            self.queue.check_room(key, self.workers.running_for(key))
            refusal = await self.limits.refusal(self.store, incoming.platform, incoming.user_id)
        except QueueFull as exc:
            refusal = str(exc)
        if refusal is not None:
            METRICS.count("parley_messages_refused_total", platform=incoming.platform)
            if not await self.is_banned(incoming.platform, incoming.user_id):
                await incoming.reply.notice(refusal)
            return
        starts_now = not self.queue and self._beginning < self.engines.room()
        self._beginning += starts_now  # the room it counts on, until it is queued
        try:
            accepted = await accept_message(
                self.store, incoming.platform, incoming.user_id, incoming.user_name,
                incoming.chat_id, incoming.text, incoming.source_ref,
                begin=SYSTEM_PROMPT_KEY if starts_now else None,
            )  # fmt: skip
        except sqlite3.DatabaseError as exc:
            if not self.storage.check(exc):
                raise
            await incoming.reply.notice(STORE_DOWN)  # nothing stored: the user sends it again
            return
        finally:
            self._beginning -= starts_now
        self.storage.recovered()
        if accepted is None:
            return  # banned: no answer at all
        METRICS.count("parley_messages_received_total", platform=incoming.platform)
        item = WorkItem(
            incoming, accepted.user, accepted.conversation, accepted.message, accepted.job,
            begun=accepted.begun,
        )  # fmt: skip
        self.enqueue(item)
        self.workers.start_ready()
        if item.begun is not None and item.shown_position is not None:  # the room went
            await requeue_job(self.store, item.job)  # not running after all: begun when it is
            item.begun = None
        if item.shown_position is None:  # it starts now: the engine takes its request first
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ASKING_WAIT):
                    await item.asking.wait()
        await self.post_reply(item)

    async def post_reply(self, item: WorkItem) -> None:
        """Post ``item``'s reply (its placeholder or queue place) and record where it is
        before anything else can happen, so a bot killed next writes into it, not a new one."""
        await item.incoming.reply.accepted(item.shown_position)
        if (ref := item.incoming.reply.reference()) is not None:
            await set_reply_ref(self.store, item.job.id, ref)

    def enqueue(self, item: WorkItem) -> None:
        """Queue a stored job; ``item.shown_position`` is its place if it has to wait."""
        position = self.queue.put(QueuedJob(next(self._ids), item.key, item))
        waits = position > 1 or not self.engines.has_room()
        item.shown_position = position if waits else None

    async def give_up(self, item: WorkItem, reason: str) -> None:
        """End a stored job that will not be answered, telling the user why."""
        await self.workers.finish(item, Outcome("error", "", error=reason))

    async def cancel(
        self, platform: str, chat_id: str, user_id: str, only: int | None = None
    ) -> int:
        """/stop: cancel the user's running and queued answers (or job ``only``); how many."""
        key = user_key(platform, user_id)
        count = 0
        for job in self.queue.jobs_of(key):
            if only is not None and job.payload.job.id != only:
                continue
            if job.payload.incoming.chat_id == chat_id and self.queue.remove(job.id) is not None:
                count += 1
                await self.workers.finish(job.payload, STOPPED)
        for job in list(self.workers.running.values()):
            if only is not None and job.payload.job.id != only:
                continue
            if job.user == key and job.payload.incoming.chat_id == chat_id:
                job.cancelled.set()
                count += 1
        return count

    # ---- operator calls (parley admin) ----------------------------------------------------

    async def cancel_job(self, job_id: int) -> bool:
        for job in [*self.queue.jobs_in_order(), *self.workers.running.values()]:
            if job.payload.job.id == job_id:
                inc = job.payload.incoming
                return await self.cancel(inc.platform, inc.chat_id, inc.user_id, only=job_id) > 0
        return False

    async def cancel_person(self, platform: str, user_id: str) -> int:
        jobs = [*self.queue.jobs_in_order(), *self.workers.running.values()]
        chats = {j.payload.incoming.chat_id for j in jobs if j.user == user_key(platform, user_id)}
        return sum([await self.cancel(platform, chat, user_id) for chat in chats])

    def show_again(self, item: WorkItem, outcome: Outcome) -> None:
        """Show a closed job's stored final text again (bot/chat/resume.py)."""
        self.workers.show_again(item, outcome)
