"""Message splitting (properties) and the streamed-reply controller, on fake time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.replies.split import BLANK, CURSOR, MIN_LIMIT, Chunk, split_chunks, split_message
from bot.replies.streamed_edits import FinishState, RateLimited, StreamedReply, final_text

# --- an independent reading of the fence rules, to check chunks against ---------------------


def open_fence(text: str) -> tuple[str, str] | None:
    """The (marker, info) of the code fence open at the end of ``text``, if any."""
    fence: tuple[str, str] | None = None
    for line in text.split("\n"):
        match = re.fullmatch(r" {0,3}(`{3,})(.*)", line)
        if match is None:
            continue
        run, info = match.groups()
        if fence is None:
            if "`" not in info:
                fence = (run, info.strip())
        elif len(run) >= len(fence[0]) and not info.strip():
            fence = None
    return fence


def check_chunks(text: str, limit: int, chunks: Sequence[Chunk]) -> None:
    assert "".join(c.body for c in chunks) == text
    assert split_message(text, limit) == [c.text for c in chunks]
    for index, chunk in enumerate(chunks):
        assert chunk.text == chunk.head + chunk.body + chunk.tail
        assert chunk.body, "empty chunk"
        assert len(chunk.text) <= limit
        assert open_fence(chunk.text) is None, f"unbalanced fence in {chunk.text!r}"
        left_open = open_fence(chunk.head + chunk.body)
        if left_open is None:
            assert chunk.tail == ""
        else:
            assert chunk.tail in (left_open[0], "\n" + left_open[0])
        following = chunks[index + 1] if index + 1 < len(chunks) else None
        if following is not None:
            if left_open is None:
                assert following.head == ""
            else:  # reopened with the same language (a silly-long fence line is shortened)
                assert following.head in (f"{left_open[0]}{left_open[1]}\n", "```\n")


TOKENS = [
    "word", "a", "Ünïcode", "😀", " ", "  ", ". ", "! ", "? ", "\n", "\n\n", "\r\n", "\t",
    "`", "``", "```", "```python\n", "```\n", "````\n", "   ```js\n", "x" * 70, "y" * 150,
]  # fmt: skip
markdown = st.lists(st.sampled_from(TOKENS), max_size=80).map("".join)
limits = st.integers(min_value=MIN_LIMIT, max_value=300)


@settings(max_examples=300, deadline=None)
@given(text=markdown, limit=limits)
def test_split_properties_on_markdown(text: str, limit: int) -> None:
    check_chunks(text, limit, split_chunks(text, limit))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=1500), limit=limits)
def test_split_properties_on_any_text(text: str, limit: int) -> None:
    check_chunks(text, limit, split_chunks(text, limit))


def test_split_rejects_tiny_limits_and_keeps_short_text() -> None:
    with pytest.raises(ValueError):
        split_message("hello", MIN_LIMIT - 1)
    assert split_message("", 100) == []
    assert split_message("short", 100) == ["short"]


def test_split_prefers_paragraph_then_line_then_sentence_then_word() -> None:
    a, b = "A" * 40, "B" * 40
    assert split_message(f"{a}\n\n{b}", 64) == [f"{a}\n\n", b]
    assert split_message(f"{a[:30]}\n\n{a}\n{b}", 80) == [f"{a[:30]}\n\n{a}\n", b]
    assert split_message(f"{a}. {a[:10]} {b}", 64) == [f"{a}. ", f"{a[:10]} {b}"]
    assert split_message(f"{a} {b}", 64) == [f"{a} ", b]
    assert split_message("x" * 150, 64) == ["x" * 64, "x" * 64, "x" * 22]


def test_split_does_not_make_tiny_chunks_for_an_early_boundary() -> None:
    chunks = split_message("Hi.\n\n" + "word " * 30, 64)
    assert len(chunks[0]) > 32


def test_split_repairs_code_fences() -> None:
    code = "".join(f"x = {i}\n" for i in range(20))
    text = f"Here:\n\n```python\n{code}```\nDone."
    chunks = split_message(text, 64)
    assert len(chunks) == 3
    assert chunks[0].endswith("x = 6\n```")
    assert chunks[1].startswith("```python\nx = 7\n") and chunks[1].endswith("\n```")
    assert chunks[2].startswith("```python\n") and chunks[2].endswith("```\nDone.")


def test_split_never_leaves_an_empty_code_block() -> None:
    text = "p" * 40 + "\n```python\n" + "q" * 40 + "\n```\n" + "r" * 10
    for chunk in split_message(text, 64):
        assert "```python\n```" not in chunk


def test_split_is_fast_on_long_text() -> None:
    text = ("Some sentence here. " * 30 + "\n\n```python\n" + "print(1)\n" * 40 + "```\n") * 40
    chunks = split_chunks(text, 2000)
    check_chunks(text, 2000, chunks)


# --- fakes for the controller --------------------------------------------------------------


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


class FakeTime:
    """A clock that only moves when the test says so; ``sleep`` waits for it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._count += 1
        heapq.heappush(self._sleepers, (self.now + seconds, self._count, future))
        await future

    async def advance(self, seconds: float) -> None:
        target = self.now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, due)
            if not future.done():
                future.set_result(None)
            await settle()
        self.now = target
        await settle()


@dataclass
class Call:
    index: int
    kind: str  # "send" or "edit"
    message_id: str
    text: str
    at: float
    answer: str  # the reply's text when the call was made
    landed: bool = False


Failure = Callable[[Call], BaseException | None]


@dataclass
class FakeSurface:
    """Records every send and edit; ``fail`` picks calls that raise instead of landing."""

    time: FakeTime
    limit: int = 2000
    min_edit_interval: float = 1.0
    fail: Failure = lambda call: None
    calls: list[Call] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=lambda: {"m0": "(placeholder)"})
    reply: StreamedReply | None = None

    async def send(self, text: str) -> str:
        message_id = f"m{len(self.messages)}"
        await self._call("send", message_id, text)
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        assert message_id in self.messages
        await self._call("edit", message_id, text)

    async def _call(self, kind: str, message_id: str, text: str) -> None:
        answer = self.reply.text if self.reply is not None else ""
        call = Call(len(self.calls), kind, message_id, text, self.time.now, answer)
        self.calls.append(call)
        await asyncio.sleep(0)  # a network round trip: other tasks run meanwhile
        error = self.fail(call)
        if error is not None:
            raise error
        call.landed = True
        self.messages[message_id] = text

    def landed(self, message_id: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.landed and message_id in (None, c.message_id)]


def fail_calls(plan: dict[int, BaseException]) -> Failure:
    return lambda call: plan.get(call.index)


def make_reply(**surface_args: object) -> tuple[FakeTime, FakeSurface, StreamedReply]:
    time = FakeTime()
    surface = FakeSurface(time, **surface_args)  # type: ignore[arg-type]
    reply = StreamedReply(surface, "m0", clock=time.clock, sleep=time.sleep)
    surface.reply = reply
    return time, surface, reply


async def stream(time: FakeTime, reply: StreamedReply, deltas: Sequence[str], gap: float) -> None:
    for delta in deltas:
        reply.append(delta)
        await time.advance(gap)


async def finish(
    time: FakeTime, reply: StreamedReply, state: FinishState = "done", note: str | None = None
) -> str:
    task = asyncio.create_task(reply.finish(state, note))
    for _ in range(5000):
        await time.advance(0.1)
        if task.done():
            return task.result()
    raise AssertionError("finish() never returned")


def check_invariants(surface: FakeSurface) -> None:
    """What must hold for every reply: paced, within the limit, no repeats, frozen stays so."""
    order = list(surface.messages)
    for position, message_id in enumerate(order):
        calls = [c for c in surface.calls if c.message_id == message_id]
        for before, after in itertools.pairwise(calls):
            assert after.at - before.at >= surface.min_edit_interval - 1e-9, "edits too close"
        landed = [c.text for c in calls if c.landed]
        for before_text, after_text in itertools.pairwise(landed):
            assert before_text != after_text, "unchanged text re-sent"
        if position + 1 < len(order):
            successor = next(c for c in surface.calls if c.message_id == order[position + 1])
            assert all(c.index < successor.index for c in calls), "finalized message edited"
            assert CURSOR not in surface.messages[message_id]
    for call in surface.calls:
        assert 0 < len(call.text) <= surface.limit
        assert call.text.strip()
        assert open_fence(call.text) is None


WORDS = [f"word{i} " for i in range(100)]


# --- the controller ------------------------------------------------------------------------


async def test_edits_are_paced_merge_deltas_and_show_the_newest_text() -> None:
    time, surface, reply = make_reply()
    await stream(time, reply, WORDS, gap=0.05)  # 5 s of generation, 20 deltas a second
    result = await finish(time, reply)
    answer = "".join(WORDS)
    assert result == answer == reply.text
    edits = surface.landed("m0")
    assert 5 <= len(edits) <= 7, [e.at for e in edits]
    for edit in edits[:-1]:
        assert edit.text == edit.answer + CURSOR  # the newest text, merged
    assert edits[-1].text == answer and CURSOR not in edits[-1].text
    assert surface.messages == {"m0": answer}
    check_invariants(surface)


async def test_unchanged_text_is_not_sent_again() -> None:
    time, surface, reply = make_reply()
    reply.append("```")  # a fence line in progress shows without the cursor...
    await time.advance(5)
    assert [c.text for c in surface.calls] == ["```\n```"]
    assert await finish(time, reply) == "```"
    assert len(surface.calls) == 1  # ...so the final text equals what is shown: no edit
    check_invariants(surface)


async def test_quiet_periods_send_nothing() -> None:
    time, surface, reply = make_reply()
    await stream(time, reply, ["Hello", ""], gap=3)
    await time.advance(10)
    assert [c.text for c in surface.calls] == ["Hello" + CURSOR]
    await finish(time, reply)
    assert [c.text for c in surface.calls] == ["Hello" + CURSOR, "Hello"]


async def test_cursor_is_left_out_rather_than_overflowing_the_limit() -> None:
    time, surface, reply = make_reply(limit=64)
    reply.append("x" * 60)
    await time.advance(1)
    reply.append("yyy")
    await time.advance(1)
    assert await finish(time, reply) == "x" * 60 + "yyy"
    assert [c.text for c in surface.calls] == ["x" * 60 + CURSOR, "x" * 60 + "yyy"]
    assert list(surface.messages) == ["m0"]  # no early split just to make room for the cursor


async def test_rate_limit_waits_then_sends_the_newest_text() -> None:
    time, surface, reply = make_reply(fail=fail_calls({2: RateLimited(3.0)}))
    await stream(time, reply, WORDS[:80], gap=0.1)
    assert await finish(time, reply) == "".join(WORDS[:80])
    refused = surface.calls[2]
    retried = surface.calls[3]
    assert not refused.landed and retried.landed
    assert retried.at >= refused.at + 3.0
    assert retried.text == retried.answer + CURSOR  # not the stale text that was refused
    assert len(retried.text) > len(refused.text)
    assert surface.messages["m0"] == "".join(WORDS[:80])
    check_invariants(surface)


async def test_final_edit_retries_until_it_lands() -> None:
    plan: dict[int, BaseException] = {1: RateLimited(2.0), 2: RateLimited(5.0)}
    time, surface, reply = make_reply(fail=fail_calls(plan))
    reply.append("hello")
    await time.advance(0.1)
    assert await finish(time, reply, "stopped") == "hello\n\n⏹ stopped"
    first, refused1, refused2, final = surface.calls
    assert first.text == "hello" + CURSOR and first.landed
    assert refused2.at >= refused1.at + 2.0 and final.at >= refused2.at + 5.0
    assert final.landed and final.text == "hello\n\n⏹ stopped"


async def test_errors_while_streaming_are_logged_and_the_reply_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time, surface, reply = make_reply(fail=fail_calls({1: ConnectionError("network down")}))
    await stream(time, reply, WORDS[:40], gap=0.1)  # append() must not raise
    assert await finish(time, reply) == "".join(WORDS[:40])
    assert "network down" in caplog.text
    assert surface.messages["m0"] == "".join(WORDS[:40])
    check_invariants(surface)


async def test_error_in_final_edit_propagates_and_leaves_no_task() -> None:
    time, _, reply = make_reply(fail=lambda call: None if CURSOR in call.text else OSError())
    await stream(time, reply, WORDS[:5], gap=0.1)
    with pytest.raises(OSError):
        await finish(time, reply)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_cancelling_finish_stops_the_task() -> None:
    time, surface, reply = make_reply(fail=lambda call: RateLimited(10.0))
    reply.append("never lands")
    finishing = asyncio.create_task(reply.finish("done"))
    await time.advance(25)
    assert len(surface.calls) == 3 and not finishing.done()  # still retrying the 429s
    finishing.cancel()
    await settle()
    assert finishing.cancelled()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_nothing_arrives_after_the_final_edit() -> None:
    time, surface, reply = make_reply()
    await stream(time, reply, WORDS[:30], gap=0.1)
    await finish(time, reply)
    count = len(surface.calls)
    reply.append("late")
    await reply.set_status("queued (#1)")
    await time.advance(10)
    assert len(surface.calls) == count
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(RuntimeError):
        await reply.finish("done")


async def test_long_reply_continues_in_new_messages() -> None:
    time, surface, reply = make_reply(limit=100)
    deltas = [f"Paragraph {i} has a few words in it. " if i % 3 else "\n\n" for i in range(40)]
    await stream(time, reply, deltas, gap=0.3)
    answer = "".join(deltas)
    assert await finish(time, reply) == answer
    assert len(surface.messages) >= 6
    for message_id in list(surface.messages)[1:]:  # continuations are new messages
        assert next(c for c in surface.calls if c.message_id == message_id).kind == "send"
    assert "".join(surface.messages.values()) == answer  # no fences here: chunks join exactly
    check_invariants(surface)


async def test_split_waits_for_the_finalizing_edit_despite_a_rate_limit() -> None:
    refusals = iter([RateLimited(4.0)])

    def fail(call: Call) -> BaseException | None:
        final_chunk = call.message_id == "m0" and CURSOR not in call.text
        return next(refusals, None) if final_chunk else None

    time, surface, reply = make_reply(limit=64, fail=fail)
    await stream(time, reply, WORDS[:20], gap=0.2)
    answer = "".join(WORDS[:20])
    assert await finish(time, reply) == answer
    m0 = [c for c in surface.calls if c.message_id == "m0"]
    assert not m0[-2].landed and m0[-1].landed and m0[-1].at >= m0[-2].at + 4.0
    assert "".join(surface.messages.values()) == answer
    check_invariants(surface)


async def test_code_fences_are_repaired_across_messages() -> None:
    time, surface, reply = make_reply(limit=80)
    code = "".join(f"value_{i} = compute({i})\n" for i in range(12))
    answer = f"Here you go:\n\n```python\n{code}```\nThat is all."
    await stream(time, reply, [answer[i : i + 3] for i in range(0, len(answer), 3)], gap=0.1)
    assert await finish(time, reply) == answer
    texts = list(surface.messages.values())
    assert len(texts) >= 4
    for before, after in itertools.pairwise(texts):
        if open_fence(before.rsplit("\n", 1)[0]) is not None:  # it ends inside the block
            assert before.endswith("\n```") and after.startswith("```python\n")

    def no_fence_lines(text: str) -> str:
        return re.sub(r"^```(python)?(\n|$)", "", text, flags=re.MULTILINE)

    assert "".join(map(no_fence_lines, texts)) == no_fence_lines(answer)
    check_invariants(surface)


@pytest.mark.parametrize(
    ("state", "note", "shown"),
    [
        ("stopped", None, "It was\n\n⏹ stopped"),
        ("error", "engine crashed", "It was\n\n⚠ error: engine crashed"),
        ("error", None, "It was\n\n⚠ error"),
        ("done", None, "It was"),
    ],
)
async def test_finish_states(state: FinishState, note: str | None, shown: str) -> None:
    time, surface, reply = make_reply()
    await stream(time, reply, ["It ", "was"], gap=0.1)
    assert await finish(time, reply, state, note) == shown
    assert surface.messages["m0"] == shown
    assert reply.text == "It was"


@pytest.mark.parametrize(
    ("state", "shown"),
    [("done", "(no answer)"), ("stopped", "⏹ boom"), ("error", "⚠ error: boom")],
)
async def test_empty_answer_shows_a_placeholder(state: FinishState, shown: str) -> None:
    time, surface, reply = make_reply()
    assert await finish(time, reply, state, "boom") == shown
    assert [(c.kind, c.message_id, c.text) for c in surface.calls] == [("edit", "m0", shown)]


async def test_blank_chunks_are_never_sent() -> None:
    time, surface, reply = make_reply(limit=64)
    await stream(time, reply, ["Start.", "\n" * 150, "End."], gap=1.5)
    await finish(time, reply)
    assert BLANK in surface.messages.values()
    check_invariants(surface)


async def test_status_shows_queue_position_until_the_first_delta() -> None:
    time, surface, reply = make_reply()
    await reply.set_status("queued (#3)")
    await time.advance(0.1)
    await reply.set_status("queued (#3)")
    await time.advance(2)
    assert [c.text for c in surface.calls] == ["queued (#3)"]  # unchanged: not re-sent
    await reply.set_status("queued (#2)")
    await time.advance(0.1)
    reply.append("Hi")
    await time.advance(2)
    await reply.set_status("queued (#1)")  # too late: the answer is showing
    await time.advance(2)
    assert [c.text for c in surface.calls] == ["queued (#3)", "queued (#2)", "Hi" + CURSOR]
    await finish(time, reply)
    assert surface.messages == {"m0": "Hi"}
    check_invariants(surface)


async def test_status_equal_to_the_placeholder_is_not_sent() -> None:
    time = FakeTime()
    surface = FakeSurface(time)
    reply = StreamedReply(surface, "m0", clock=time.clock, sleep=time.sleep, first_text="…")
    await reply.set_status("…")
    await time.advance(2)
    assert surface.calls == []
    await finish(time, reply)


def test_final_text_and_limit_validation() -> None:
    assert final_text("", "done") == "(no answer)"
    assert final_text("a", "error", "x") == "a\n\n⚠ error: x"
    with pytest.raises(ValueError):
        StreamedReply(FakeSurface(FakeTime(), limit=10), "m0")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    deltas=st.lists(st.sampled_from(TOKENS[:16]), min_size=1, max_size=40),
    limit=st.integers(min_value=MIN_LIMIT, max_value=120),
    refused=st.sets(st.integers(min_value=0, max_value=30), max_size=6),
    gap=st.sampled_from([0.05, 0.3, 1.2]),
    state=st.sampled_from(["done", "stopped", "error"]),
)
def test_controller_properties(
    deltas: list[str], limit: int, refused: set[int], gap: float, state: FinishState
) -> None:
    async def scenario() -> None:
        plan: dict[int, BaseException] = {i: RateLimited(1.5) for i in refused}
        time, surface, reply = make_reply(limit=limit, fail=fail_calls(plan))
        await stream(time, reply, deltas, gap)
        result = await finish(time, reply, state, "oops")
        assert result == final_text("".join(deltas), state, "oops")
        check_invariants(surface)
        texts = list(surface.messages.values())
        assert all(CURSOR not in text for text in texts)
        if "`" not in result and BLANK not in texts:
            assert "".join(texts) == result
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())
