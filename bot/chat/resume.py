"""Finishing, after a restart, the answers a stopped (or killed) bot left queued or running.

Each platform's unfinished jobs are queued again in their old order, their answers written
into the placeholder the earlier run posted (or a new reply if it never got posted; that one is
recorded at once, so a bot killed again finds it). A job older than ``RESUME_MAX_AGE`` seconds,
or one already started twice (it may be what killed the bot), is not run again: it ends as
failed and the user is told so on the same message. A job the earlier run closed but whose
final text the platform never confirmed (a 429's wait, a stop or a kill in between) is not
answered again: its stored final text is shown in its message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.chat.service import ChatService
from bot.chat.work import STATE_OF, WorkItem
from bot.chat.workers import ENGINE_ATTEMPTS
from bot.incoming import Incoming, Outcome, ReplySink
from bot.store.jobs import Unfinished, mark_shown, unfinished_jobs

log = logging.getLogger(__name__)

TOO_OLD = "the bot was offline too long to answer this; please send your message again"
GAVE_UP = "the bot stopped twice while answering this; please send your message again"

UNSHOWABLE = "the bot restarted and this platform's reply could not be found again"

# (chat_id, platform user id, source_ref, reply_ref) -> where to show the answer, or None when
# the platform cannot show it any more
OpenReply = Callable[[str, str, str | None, str | None], ReplySink | None]


@dataclass(frozen=True)
class Resumed:
    queued: int  # queued again, to be answered now
    failed: int  # too old, or started too often: the user was told
    dropped: int  # the platform can no longer show them (no message to answer in)
    shown: int = 0  # answered before, their final text being shown now


async def resume_jobs(
    service: ChatService, platform: str, open_reply: OpenReply, max_age: float
) -> Resumed:
    """Queue ``platform``'s unfinished jobs again, oldest first; see the module docstring."""
    queued = failed = dropped = shown = 0
    now = datetime.now(UTC)
    for left in await unfinished_jobs(service.store, platform):
        accepted = left.accepted
        chat_id, user_id = accepted.conversation.chat_id, accepted.user.platform_user_id
        sink = open_reply(chat_id, user_id, left.source_ref, left.reply_ref)
        if left.closed:
            shown += await _show_again(service, platform, left, sink)
            continue
        reason = None
        if sink is None:
            reason = UNSHOWABLE
        elif left.attempts >= ENGINE_ATTEMPTS:
            reason = GAVE_UP
        elif (now - accepted.job.created_at).total_seconds() > max_age:
            reason = TOO_OLD
        incoming = Incoming(
            platform, chat_id, user_id, accepted.user.name, accepted.message.content,
            sink or _Unshown(), left.source_ref,
        )  # fmt: skip
        item = WorkItem(
            incoming, accepted.user, accepted.conversation, accepted.message, accepted.job
        )
        if reason is None:
            service.enqueue(item)
        if incoming.reply.reference() is None:  # not bound to the earlier run's message:
            await service.post_reply(item)  # a new one, to answer or tell
        elif item.shown_position is not None:
            await incoming.reply.queued(item.shown_position)
        if reason is None:
            queued += 1
            continue
        dropped += sink is None
        failed += sink is not None
        await service.give_up(item, reason)
    if queued or failed or dropped or shown:
        log.warning(
            "resumed %s: %d answers queued again, %d ended (too old or started twice), "
            "%d could not be shown any more, %d answered before shown now",
            platform, queued, failed, dropped, shown,
        )  # fmt: skip
    return Resumed(queued, failed, dropped, shown)


async def _show_again(
    service: ChatService, platform: str, left: Unfinished, sink: ReplySink | None
) -> int:
    """Show a closed job's stored final text in its message (1), or give it up (0) when the
    platform cannot show it any more."""
    accepted = left.accepted
    if sink is None:
        await mark_shown(service.store, accepted.job)
        return 0
    incoming = Incoming(
        platform, accepted.conversation.chat_id, accepted.user.platform_user_id,
        accepted.user.name, accepted.message.content, sink, left.source_ref,
    )  # fmt: skip
    item = WorkItem(incoming, accepted.user, accepted.conversation, accepted.message, accepted.job)
    if sink.reference() is None:
        await service.post_reply(item)
    job = accepted.job
    service.show_again(item, Outcome(STATE_OF[job.status], left.answer, job.error))
    return 1


class _Unshown:
    """A sink for a job whose reply the platform cannot show any more: it is only closed."""

    async def notice(self, text: str) -> None:
        pass

    async def accepted(self, position: int | None) -> None:
        pass

    async def queued(self, position: int) -> None:
        pass

    async def started(self) -> None:
        pass

    def delta(self, text: str) -> None:
        pass

    async def restarted(self) -> None:
        pass

    async def finished(self, outcome: Outcome) -> None:
        pass

    def reference(self) -> str | None:
        return None
