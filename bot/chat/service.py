"""The chat service: from an adapter's ``Incoming`` to a stored, streamed answer.

``handle`` checks access and limits, commits the user's message and its job in one
transaction, and queues the job; a dispatcher hands each queued job, in fair order, to an
engine with a free slot (bot/engines/pool.py), and the job's task fits the history into that
engine's context, streams the answer into the reply sink, and stores the reply with its
final status. Showing the final text is the reply's own task: the slot is free for the next
job as soon as the answer is stored, so a chat's pacing or a platform's 429 never holds an
engine slot idle. Queue positions are shown every ``POSITION_EVERY`` seconds, when they
changed. Event-loop-only.
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
from bot.chat.context_fit import fit_conversation
from bot.chat.deliveries import Deliveries, show_positions
from bot.chat.limits import UserLimits
from bot.chat.prompt_sizes import PromptSizes
from bot.chat.queue import FairQueue, QueuedJob
from bot.chat.service_calls import SYSTEM_PROMPT_KEY, ServiceCalls
from bot.chat.streaming import stream_answer
from bot.chat.work import JOB_STATUS, WorkItem, describe, measure, reply_of
from bot.engines.client import Sampling
from bot.engines.pool import Engine, EnginePool
from bot.errors import EngineUnavailable, ParleyError, QueueFull
from bot.incoming import Incoming, Outcome, text_problem
from bot.metrics import METRICS, TokenRate
from bot.store.database import Store
from bot.store.faults import StorageHealth
from bot.store.jobs import (
    accept_message,
    begin_job,
    finish_job,
    mark_shown,
    requeue_job,
    set_reply_ref,
)
from common.log_context import request_id_bound

log = logging.getLogger(__name__)

POSITION_EVERY = 2.0  # seconds between updates of the "queued (#n)" statuses
POSITIONS_SHOWN = 20  # only the first places get updates: a 1,000-deep queue would otherwise
# cost hundreds of edits a second (Telegram allows a bot about 30 messages a second)
# Seconds a job that starts at once holds back its placeholder until the engine has taken its
# request (answered its headers; Parley's engine does so before evaluating the prompt, some
# servers only with the first token). Posted first, the placeholder's work in this process and
# the platform's delayed the engine request's first steps: the users' first messages reached
# the engine 0.5 ms later (mean, 48 messages, two A/B pairs of bench/bot.py's overhead load).
ASKING_WAIT = 0.25
# Loop turns the final edit gets before the answer is stored: its task's first step, aiohttp's
# body write (a task of its own on Python 3.11), one spare. Final text shown 0.3 ms sooner
# (p50, two A/B pairs of bench/bot.py's overhead phase) than with the write on the thread.
FINISH_AFTER_TURNS = 3
DELIVERY_GRACE = 10.0  # seconds stop() waits for final texts still being shown
ENGINE_ATTEMPTS = 2  # an answer cut off by a dying engine is written once more
PAUSED = "Parley is restarting; this answer will be written here when it is back"
ENGINE_LOST = "the engine stopped while writing this answer; please send your message again"
STOPPED = Outcome("stopped", "")
STORE_DOWN = "I can't store messages right now; please try again shortly."


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
        positions_shown: int = POSITIONS_SHOWN,
        engine_wait: float = 600.0,
        on_model_switch: Callable[[str], None] | None = None,
        limits: UserLimits | None = None,
    ) -> None:
        """``engines`` is started; an answer cut off by a lost engine waits up to
        ``engine_wait`` s for one to have room again; ``on_model_switch`` hears each model
        switched to (so a restarted local engine loads it)."""
        self.store = store
        self.engines = engines
        self.engine_wait = engine_wait
        self.on_model_switch = on_model_switch
        self.limits = limits or UserLimits(per_minute=0, daily_tokens=0)
        self.position_every = position_every
        self.positions_shown = positions_shown
        self.sampling = sampling
        self.system_prompt = system_prompt
        self._admin_token = admin_token
        self.models_dir = models_dir
        self._switching = asyncio.Lock()
        self.queue: FairQueue[WorkItem] = FairQueue(max_pending_per_user, max_pending_total)
        self._running: dict[int, QueuedJob[WorkItem]] = {}
        self._beginning = 0  # messages being accepted and begun in one transaction
        self._dispatcher: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()
        self._deliveries = Deliveries()
        self.delivery_grace = DELIVERY_GRACE  # stop() waits this long for final texts
        self._positions: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._written = TokenRate()
        self._prompt_sizes = PromptSizes()
        self.allowed_at_runtime: set[tuple[str, str]] = set()  # `parley admin users allow`
        # a full disk or a read-only file: messages refused, readiness 503, probed until over
        self.storage = StorageHealth(lambda: store.set_setting("store_probe", str(time.time())))
        self.started_at = time.time()

    # ---- lifecycle --------------------------------------------------------------------

    @property
    def model(self) -> str:
        return self.engines.primary.model

    @property
    def n_ctx(self) -> int:
        return self.engines.primary.n_ctx

    def start(self, workers: int | None = None) -> None:
        """Start answering; ``workers`` caps the answers written at once (default: as many
        as the engines have slots)."""
        self.engines.limit = workers
        self._dispatcher = asyncio.create_task(self._dispatch(), name="parley-dispatcher")
        self._positions = asyncio.create_task(
            show_positions(self.queue, self.position_every, lambda: self.positions_shown),
            name="parley-positions",
        )

    async def stop(self, grace: float = 0.0, resumable: bool = False) -> None:
        """Stop the workers: no new answer starts; running ones get ``grace`` s to finish.
        The rest end as "stopped", or (``resumable``, a restart) go back to the queue with a
        note, to be written again in the same message by the next start (bot/chat/resume.py)."""
        if (dispatcher := self._dispatcher) is not None:
            self._dispatcher = None  # from here on _start_ready starts nothing
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
        deadline = time.monotonic() + grace
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for job in list(self._running.values()):
            job.payload.paused = resumable
            job.cancelled.set()
        while self._running:
            await asyncio.sleep(0.01)
        if self._positions is not None:
            self._positions.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._positions
            self._positions = None
        await self.storage.close()
        await self._deliveries.drain(self.delivery_grace)

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
            self.queue.check_room(key, self._running_for(key))
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
        self._start_ready()
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

    async def _pause(self, item: WorkItem) -> None:
        """Interrupted by a restart: back in the queue (in the database), the reply says so."""
        await requeue_job(self.store, item.job)
        await item.incoming.reply.restarted()
        self._deliveries.start(item, Outcome("stopped", "", error=PAUSED))

    async def give_up(self, item: WorkItem, reason: str) -> None:
        """End a stored job that will not be answered, telling the user why."""
        await self._finish(item, Outcome("error", "", error=reason))

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
                await self._finish(job.payload, STOPPED)
        for job in list(self._running.values()):
            if only is not None and job.payload.job.id != only:
                continue
            if job.user == key and job.payload.incoming.chat_id == chat_id:
                job.cancelled.set()
                count += 1
        return count

    # ---- operator calls (parley admin) ----------------------------------------------------

    async def cancel_job(self, job_id: int) -> bool:
        for job in [*self.queue.jobs_in_order(), *self._running.values()]:
            if job.payload.job.id == job_id:
                inc = job.payload.incoming
                return await self.cancel(inc.platform, inc.chat_id, inc.user_id, only=job_id) > 0
        return False

    async def cancel_person(self, platform: str, user_id: str) -> int:
        jobs = [*self.queue.jobs_in_order(), *self._running.values()]
        chats = {j.payload.incoming.chat_id for j in jobs if j.user == user_key(platform, user_id)}
        return sum([await self.cancel(platform, chat, user_id) for chat in chats])

    # ---- answering --------------------------------------------------------------------

    def _running_for(self, key: str) -> int:
        return sum(1 for job in self._running.values() if job.user == key)

    async def _dispatch(self) -> None:
        """Hand queued jobs, in fair order, to engines as slots free up."""
        while True:
            await self.engines.wait_for_room()
            await self.queue.wait()
            self._start_ready()

    def _start_ready(self) -> None:
        """Start, in fair order, every queued job an engine has room for right now (also
        from ``_accept``: a message that can start does so there, no dispatcher turn)."""
        while self._dispatcher is not None and (head := self.queue.peek()) is not None:
            engine = self.engines.lease(head.payload.cache_key)
            if engine is None:
                return
            self._start(self.queue.take(), engine)

    def _start(self, job: QueuedJob[WorkItem], engine: Engine) -> None:
        self._running[job.id] = job
        job.payload.started = time.monotonic()
        task = asyncio.create_task(self._run(job, engine), name=f"parley-job-{job.id}")
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _run(self, job: QueuedJob[WorkItem], engine: Engine) -> None:
        held: list[Engine] = [engine]  # the slot this answer holds, released once
        try:
            with request_id_bound(job.payload.incoming.request_id):
                await job.payload.incoming.reply.started()
                await self._answer(job, held)
        except Exception as exc:
            if self.storage.check(exc):  # the message is stored: a restart answers it
                error = STORE_DOWN
            else:
                log.exception("answering job %d failed", job.payload.job.id)
                error = "internal error; please try again"
            with contextlib.suppress(Exception):
                await self._finish(job.payload, Outcome("error", "", error=error))
        finally:
            job.payload.asking.set()
            for slot in held:
                self.engines.release(slot)
            self._running.pop(job.id, None)

    async def _answer(self, job: QueuedJob[WorkItem], held: list[Engine]) -> None:
        """Write the answer on ``held[0]``; if that engine is lost, once more on whichever
        engine has room (``held`` always names the slot to release)."""
        item = job.payload
        begun = item.begun or await begin_job(self.store, item.job, SYSTEM_PROMPT_KEY)
        system = self.system_prompt if begun.system_prompt is None else begun.system_prompt
        turns, ids, sizes = begun.history, begun.message_ids, self._prompt_sizes
        for attempt in range(1, ENGINE_ATTEMPTS + 1):
            last = attempt == ENGINE_ATTEMPTS
            try:
                if not held:  # the first engine was lost: any other with room
                    again = await self.engines.acquire(
                        item.cache_key, self.engine_wait, job.cancelled
                    )
                    if again is None:  # stopped while it waited
                        await (self._pause(item) if item.paused else self._finish(item, STOPPED))
                        return
                    held.append(again)
                engine = held[0]
                fitted = await fit_conversation(
                    system, turns, n_ctx=engine.n_ctx, max_tokens=self.sampling.max_tokens,
                    count_tokens=engine.client.count_tokens,
                    bound=await self.engines.scaffold_bound(engine),
                    known=sizes.known(item.conversation.id, engine.model, system, ids),
                )  # fmt: skip
            except EngineUnavailable as exc:
                if held:  # out of rotation, its slot given back
                    self.engines.lost(held.pop(), str(exc))
                if last:
                    await self._finish(item, Outcome("error", "", error=ENGINE_LOST))
                    return
                continue
            except ParleyError as exc:
                await self._finish(item, Outcome("error", "", error=str(exc)))
                return
            state, end, failure = await stream_answer(
                engine.client, self.sampling, job, fitted.messages
            )
            if end is not None:  # the next turn's fit starts from it (and where it started)
                kept = ids[fitted.dropped :]
                sizes.remember(
                    item.conversation.id, engine.model, system, kept, end.usage.prompt_tokens
                )
            if state == "stopped" and item.paused:
                await self._pause(item)
                return
            lost = isinstance(failure, EngineUnavailable) and not job.cancelled.is_set()
            if lost:
                self.engines.lost(held.pop(), str(failure))
            if lost and not last:
                log.warning("job %d lost engine %s; writing it again", item.job.id, engine.url)
                item.reply_text.clear()
                item.first_token = None
                await item.incoming.reply.restarted()
                continue
            error = ENGINE_LOST if lost else describe(failure)
            text = "".join(item.reply_text)
            usage, model = (end.usage, end.model) if end else (None, "")
            await self._finish(item, Outcome(state, text, error, usage, model, fitted.dropped))
            return

    async def _finish(self, item: WorkItem, outcome: Outcome) -> None:
        """Show the final text, then store the reply (partial text kept, marked) and close the
        job, on the loop's thread, while the final edit is on its way (not on aiosqlite's,
        where it fought the edit for the GIL). It is stored before a message sent after seeing
        the edit can arrive; a bot that dies in between leaves the job open, answered again at
        its next start. The job counts as shown once both the store and the platform have
        confirmed (``_shown``); a bot that dies or stops before that shows the stored text
        again at its next start (bot/chat/resume.py)."""
        item.asking.set()
        stored: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._deliveries.start(item, outcome, lambda: self._shown(item, stored))
        reply = reply_of(item, outcome)
        for _ in range(FINISH_AFTER_TURNS):  # the edit's request is written meanwhile
            await asyncio.sleep(0)
        try:
            await finish_job(self.store, item.job, JOB_STATUS[outcome.state], reply, outcome.error)
        except Exception as exc:  # shown already; a second, error, reply would contradict it
            stored.set_result(False)
            if not self.storage.check(exc):
                log.exception("job %d could not be closed in the store", item.job.id)
        else:
            stored.set_result(True)
        measure(item, outcome, self._written)

    async def _shown(self, item: WorkItem, stored: asyncio.Future[bool]) -> None:
        """The platform confirmed the final text: once the job is closed, it is done for good
        (not closed: it stays open, and the next start answers it again)."""
        if await stored:
            await mark_shown(self.store, item.job)

    def show_again(self, item: WorkItem, outcome: Outcome) -> None:
        """Show a closed job's stored final text (an earlier run stopped before the platform
        confirmed it), and mark it shown once it is, or once the platform refused it: a
        second refusal (the chat gone, the bot blocked) would come at every start."""
        mark = lambda: mark_shown(self.store, item.job)  # noqa: E731
        self._deliveries.start(item, outcome, mark, last_try=True)
