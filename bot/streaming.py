"""One answer streamed from the engine into its reply sink, until done, failed or cancelled.

Cancelling (the job's ``cancelled`` event: /stop, or a restart) closes the HTTP request,
which is how the engine learns to stop and free the sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bot.engine_client import EngineClient, Sampling, StreamEnd
from bot.errors import ParleyError
from bot.incoming import State
from bot.queue import QueuedJob
from bot.work import WorkItem

log = logging.getLogger(__name__)


async def stream_answer(
    engine: EngineClient, sampling: Sampling, job: QueuedJob[WorkItem],
    messages: list[dict[str, str]],
) -> tuple[State, StreamEnd | None, BaseException | None]:  # fmt: skip
    """How it ended, the engine's last event (usage) if any, and the error if it failed."""
    item = job.payload
    ended: list[StreamEnd] = []

    async def consume() -> None:
        item.asking.set()  # runs once this task waits: after the request is written
        stream = engine.stream_chat(
            messages, sampling, cache_key=f"conversation-{item.conversation.id}"
        )
        async for piece in stream:
            if isinstance(piece, StreamEnd):
                ended.append(piece)
            else:
                if item.first_token is None:
                    item.first_token = time.monotonic()
                item.reply_text.append(piece)
                item.incoming.reply.delta(piece)

    streaming = asyncio.create_task(consume())
    stopping = asyncio.create_task(job.cancelled.wait())
    await asyncio.wait({streaming, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not streaming.done():
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
        return "stopped", ended[0] if ended else None, None
    if (exc := streaming.exception()) is not None:
        if not isinstance(exc, ParleyError):
            log.error("stream failed", exc_info=exc)
        return "error", None, exc
    end = ended[0] if ended else None
    if end is not None and end.finish_reason == "cancelled":
        return "stopped", end, None
    return "done", end, None
