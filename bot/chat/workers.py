"""The workers: queued jobs, in fair order, to engines with a free slot, and their answers.

A dispatcher starts each queued job as soon as an engine has room (bot/engines/pool.py); the
job's task fits the history into that engine's context, streams the answer into the reply
sink, and stores the reply with its final status. Showing the final text is a delivery of its
own (bot/chat/deliveries.py): the slot is free for the next job as soon as the answer is
stored, so a chat's pacing or a platform's 429 never holds an engine slot idle. Queue
positions are shown every ``POSITION_EVERY`` seconds, when they changed. The service
(bot/chat/service.py) accepts and queues; everything after the queue is here.
Event-loop-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time

from bot.chat.context_fit import fit_conversation
from bot.chat.deliveries import Deliveries
from bot.chat.prompt_sizes import PromptSizes
from bot.chat.queue import FairQueue, QueuedJob
from bot.chat.streaming import stream_answer
from bot.chat.work import JOB_STATUS, WorkItem, describe, measure, reply_of
from bot.engines.client import Sampling
from bot.engines.pool import Engine, EnginePool
from bot.errors import EngineUnavailable, ParleyError
from bot.incoming import Outcome
from bot.metrics import TokenRate
from bot.store.database import Store
from bot.store.faults import StorageHealth
from bot.store.jobs import begin_job, finish_job, requeue_job
from bot.store.rows import SYSTEM_PROMPT_KEY
from common.log_context import request_id_bound

log = logging.getLogger(__name__)

POSITION_EVERY = 2.0  # seconds between updates of the "queued (#n)" statuses
POSITIONS_SHOWN = 20  # only the first places get updates: a 1,000-deep queue would otherwise
# cost hundreds of edits a second (Telegram allows a bot about 30 messages a second)
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


class Workers:
    def __init__(
        self, store: Store, engines: EnginePool, queue: FairQueue[WorkItem],
        storage: StorageHealth, *, sampling: Sampling, system_prompt: str, engine_wait: float,
        position_every: float = POSITION_EVERY,
    ) -> None:  # fmt: skip
        """An answer cut off by a lost engine waits up to ``engine_wait`` s for one to have
        room again; ``system_prompt`` is the default of people who set none."""
        self.store = store
        self.engines = engines
        self.queue = queue
        self.storage = storage
        self.sampling = sampling
        self.system_prompt = system_prompt
        self.engine_wait = engine_wait
        self.position_every = position_every
        self.positions_shown = POSITIONS_SHOWN
        self.delivery_grace = DELIVERY_GRACE  # stop() waits this long for final texts
        self.running: dict[int, QueuedJob[WorkItem]] = {}
        self.written = TokenRate()
        self._deliveries = Deliveries(store)
        self._prompt_sizes = PromptSizes()
        self._dispatcher: asyncio.Task[None] | None = None
        self._positions: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name="parley-dispatcher")
        self._positions = asyncio.create_task(self._show_positions(), name="parley-positions")

    async def stop(self, grace: float, resumable: bool) -> None:
        """No new answer starts; running ones get ``grace`` s to finish. The rest end as
        "stopped", or (``resumable``) go back to the queue with a note."""
        if (dispatcher := self._dispatcher) is not None:
            self._dispatcher = None  # from here on start_ready starts nothing
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for job in list(self.running.values()):
            job.payload.paused = resumable
            job.cancelled.set()
        while self.running:
            await asyncio.sleep(0.01)
        if self._positions is not None:
            self._positions.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._positions
            self._positions = None
        await self._deliveries.drain(self.delivery_grace)

    def running_for(self, key: str) -> int:
        return sum(1 for job in self.running.values() if job.user == key)

    # ---- starting ---------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Hand queued jobs, in fair order, to engines as slots free up."""
        while True:
            await self.engines.wait_for_room()
            await self.queue.wait()
            self.start_ready()

    def start_ready(self) -> None:
        """Start, in fair order, every queued job an engine has room for right now (also
        from the service's accept: a message that can start does so there, no dispatcher
        turn)."""
        while self._dispatcher is not None and (head := self.queue.peek()) is not None:
            engine = self.engines.lease(head.payload.cache_key)
            if engine is None:
                return
            self._start(self.queue.take(), engine)

    def _start(self, job: QueuedJob[WorkItem], engine: Engine) -> None:
        self.running[job.id] = job
        job.payload.started = time.monotonic()
        task = asyncio.create_task(self._run(job, engine), name=f"parley-job-{job.id}")
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _show_positions(self) -> None:
        """Every ``position_every`` s, tell each queued message in the first
        ``positions_shown`` places whose place changed (the rest keep the place they were
        first shown until they get there)."""
        while True:
            await asyncio.sleep(self.position_every)
            jobs = itertools.islice(self.queue.jobs_in_order(), self.positions_shown)
            for position, job in enumerate(jobs, 1):
                item = job.payload
                if item.shown_position is not None and item.shown_position != position:
                    item.shown_position = position
                    try:
                        await item.incoming.reply.queued(position)
                    except Exception as exc:  # a stale position is cosmetic
                        log.debug("queue position update failed: %s", exc)

    # ---- answering --------------------------------------------------------------------

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
                await self.finish(job.payload, Outcome("error", "", error=error))
        finally:
            job.payload.asking.set()
            for slot in held:
                self.engines.release(slot)
            self.running.pop(job.id, None)

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
                        await (self._pause(item) if item.paused else self.finish(item, STOPPED))
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
                    await self.finish(item, Outcome("error", "", error=ENGINE_LOST))
                    return
                continue
            except ParleyError as exc:
                await self.finish(item, Outcome("error", "", error=str(exc)))
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
            await self.finish(item, Outcome(state, text, error, usage, model, fitted.dropped))
            return

    async def _pause(self, item: WorkItem) -> None:
        """Interrupted by a restart: back in the queue (in the database), the reply says so."""
        await requeue_job(self.store, item.job)
        await item.incoming.reply.restarted()
        self._deliveries.note(item, Outcome("stopped", "", error=PAUSED))

    # ---- ending -----------------------------------------------------------------------

    async def finish(self, item: WorkItem, outcome: Outcome) -> None:
        """Show the final text, then store the reply (partial text kept, marked) and close the
        job, on the loop's thread, while the final edit is on its way (not on aiosqlite's,
        where it fought the edit for the GIL). It is stored before a message sent after seeing
        the edit can arrive; a bot that dies in between leaves the job open, answered again at
        its next start. The job counts as shown once both the store and the platform have
        confirmed; a bot that dies or stops before that shows the stored text again at its
        next start (bot/chat/resume.py)."""
        item.asking.set()
        closed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._deliveries.final(item, outcome, closed)
        reply = reply_of(item, outcome)
        for _ in range(FINISH_AFTER_TURNS):  # the edit's request is written meanwhile
            await asyncio.sleep(0)
        try:
            await finish_job(self.store, item.job, JOB_STATUS[outcome.state], reply, outcome.error)
        except Exception as exc:  # shown already; a second, error, reply would contradict it
            closed.set_result(False)
            if not self.storage.check(exc):
                log.exception("job %d could not be closed in the store", item.job.id)
        else:
            closed.set_result(True)
        measure(item, outcome, self.written)

    def show_again(self, item: WorkItem, outcome: Outcome) -> None:
        """Show a closed job's stored final text (an earlier run stopped before the platform
        confirmed it); marked shown once the platform confirmed or refused it."""
        self._deliveries.again(item, outcome)
