"""One answer streamed from the engine into its reply sink, until done, failed or cancelled.

Cancelling (the job's ``cancelled`` event: /stop, or a restart) closes the HTTP request,
which is how the engine learns to stop and free the sequence.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bot.chat.queue import QueuedJob
from bot.chat.work import WorkItem
from bot.engines.client import EngineClient, Sampling, StreamEnd
from bot.errors import ParleyError
from bot.incoming import State

log = logging.getLogger(__name__)


async def stream_answer(
    engine: EngineClient, sampling: Sampling, job: QueuedJob[WorkItem],
    messages: list[dict[str, str]],
) -> tuple[State, StreamEnd | None, BaseException | None]:  # fmt: skip
    """How it ended, the engine's last event (usage) if any, and the error if it failed.

    The stream is read in the calling task, not a task of its own: each hop through the
    event loop's queue is a wait behind every other chat's work, once before the request
    goes out and twice after the last event. Cancelling the job cancels this task (as
    ``asyncio.timeout`` does), which closes the request; the cancellation is taken back here.
    """
    item = job.payload
    ended: list[StreamEnd] = []
    if job.cancelled.is_set():
        return "stopped", None, None
    task = asyncio.current_task()
    assert task is not None
    stop = _Stopper(task)
    watcher = asyncio.ensure_future(job.cancelled.wait())
    watcher.add_done_callback(stop)
    try:
        stream = engine.stream_chat(
            messages,
            sampling,
            cache_key=item.cache_key,
            started=item.asking,
        )
        async for piece in stream:
            if isinstance(piece, StreamEnd):
                ended.append(piece)
            else:
                if item.first_token is None:
                    item.first_token = time.monotonic()
                item.reply_text.append(piece)
                item.incoming.reply.delta(piece)
    except asyncio.CancelledError:
        if not stop.taken_back():
            raise  # cancelled from elsewhere (shutdown): not ours to swallow
        return "stopped", ended[0] if ended else None, None
    except Exception as exc:
        if not isinstance(exc, ParleyError):
            log.error("stream failed", exc_info=exc)
        return "error", None, exc
    finally:
        stop.disarm()
        watcher.cancel()
    end = ended[0] if ended else None
    if end is not None and end.finish_reason == "cancelled":
        return "stopped", end, None
    return "done", end, None


class _Stopper:
    """Cancels the streaming task when the job is cancelled, until disarmed; says whether a
    CancelledError was its doing (and takes that cancellation back)."""

    def __init__(self, task: asyncio.Task[object]) -> None:
        self._task = task
        self._armed = True
        self._fired = False

    def __call__(self, _: object) -> None:
        if self._armed:
            self._fired = True
            self._task.cancel()

    def disarm(self) -> None:
        self._armed = False

    def taken_back(self) -> bool:
        """True if the cancellation was this stopper's alone (now undone)."""
        self._armed = False
        return self._fired and self._task.uncancel() == 0
