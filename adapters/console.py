"""The terminal chat (``parley chat``): the seeds' REPL on top of the real pipeline.

Reads lines from stdin on a daemon thread (so typing ``/stop`` works while an answer
streams, and exiting never waits on a blocked read), prints the answer as it streams, then
the prompt and generation speed. Works with piped stdin: answers each line, exits 0 at EOF.
The commands are bot/commands' (the terminal's user is the operator: an admin), plus /quit.
Runs on the event loop, but for the reading thread.
"""

from __future__ import annotations

import asyncio
import getpass
import io
import signal
import sys
import threading
from collections import deque
from typing import TextIO

from bot.chat.access import Access, Asker
from bot.chat.service import ChatService
from bot.commands import CommandCall, Place, find_command, run_command, split_command
from bot.engines.client import ModelCard, Sampling
from bot.incoming import Incoming, Outcome

PLATFORM = "console"
CHAT_ID = "terminal"
QUIT = "/quit"
PLACE = Place(
    message_limit=2**31,  # a terminal shows any length
    how_to_talk=f"Type a message to talk; {QUIT} (or Ctrl-D) ends the chat.",
)
ALIASES = {"?": "help"}


class ConsoleReply:
    """Prints one answer as it streams; ``done`` is set once it has ended."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.done = asyncio.Event()

    async def notice(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
        self.done.set()

    async def accepted(self, position: int | None) -> None:
        if position is not None:
            await self.queued(position)

    async def queued(self, position: int) -> None:
        self.out.write(f"(queued #{position})\n")
        self.out.flush()

    async def started(self) -> None:
        pass  # the answer's first words say it

    def delta(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def reference(self) -> str | None:
        return None  # a terminal line cannot be found again after a restart

    async def restarted(self) -> None:
        self.out.write("\n↻ the engine restarted; writing the answer again\n")
        self.out.flush()

    async def finished(self, outcome: Outcome) -> None:
        lines = [""]
        if outcome.state == "stopped":
            lines.append("⏹ stopped")
        elif outcome.state == "error":
            lines.append(f"⚠ error: {outcome.error}")
        if outcome.dropped:
            lines.append(
                f"(the {outcome.dropped} oldest messages were left out to fit the context)"
            )
        if outcome.usage is not None:
            lines.extend(stats_lines(outcome))
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self.done.set()


def startup_lines(card: ModelCard, sampling: Sampling) -> list[str]:
    """The seed's lines before the first prompt: the model as loaded, the CPU features in use
    and the sampling settings (an engine that says less gets fewer details)."""
    d = card.details
    model = f"model: {card.name}"
    shape = [str(d[k]) for k in ("architecture", "quantization") if d.get(k)]
    if d.get("size_bytes"):
        shape.append(f"{int(d['size_bytes']) / 2**20:.1f} MiB")
    if d.get("tensor_count"):
        shape.append(f"{d['tensor_count']} tensors")
    if shape:
        model += f" ({', '.join(shape)})"
    if d.get("load_seconds") is not None:
        model += f", loaded in {float(d['load_seconds']):.2f} s"
    context = f"context: {card.n_ctx} tokens" if card.n_ctx else "context: unknown"
    if d.get("n_ctx_train"):
        context += f" (trained on {d['n_ctx_train']})"
    if d.get("template_source"):
        context += f"; chat template: {d['template_source']}"
    lines = [model, context]
    if d.get("cpu_features"):
        lines.append("CPU: " + " ".join(str(f) for f in d["cpu_features"]))
    seed = "random" if sampling.seed is None else str(sampling.seed)
    lines.append(
        f"sampling: temperature {sampling.temperature}, top_p {sampling.top_p}, top_k "
        f"{sampling.top_k}, min_p {sampling.min_p}, repeat_penalty {sampling.repeat_penalty} "
        f"(last {sampling.repeat_last_n}), up to {sampling.max_tokens} tokens, seed {seed}"
    )
    return lines


def stats_lines(outcome: Outcome) -> list[str]:
    """The seeds' two lines: prompt processing and generation speed."""
    usage = outcome.usage
    assert usage is not None
    evaluated = usage.prompt_tokens - usage.cached_tokens
    return [
        f"prompt: {usage.prompt_tokens} tokens ({usage.cached_tokens} cached), {evaluated} "
        f"processed in {usage.prompt_ms / 1000:.2f} s, {usage.prompt_per_second:.1f} tok/s",
        f"generated: {usage.completion_tokens} tokens in {usage.decode_ms / 1000:.2f} s, "
        f"{usage.decode_per_second:.1f} tok/s",
    ]


class Console:
    def __init__(
        self, service: ChatService, model: str, inp: TextIO = sys.stdin, out: TextIO = sys.stdout
    ) -> None:
        self.service = service
        self.model = model
        self.inp = inp
        self.out = out
        self.interactive = inp.isatty() and out.isatty()
        if isinstance(inp, io.TextIOWrapper):
            # Bytes that are not valid in the terminal's encoding must reach the bot (which
            # refuses them clearly), not kill the reading thread and leave the chat hanging.
            inp.reconfigure(errors="surrogateescape")
        self.user_id = _user_name()
        self.asker = Asker(PLATFORM, self.user_id, CHAT_ID)
        self.access = Access({}, service)  # no lists: the terminal's one user is the operator
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.backlog: deque[str | None] = deque()  # read while an answer streamed, in order
        self.current: ConsoleReply | None = None
        self._stopping: asyncio.Future[int] | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read_lines, args=(loop,), daemon=True).start()
        loop.add_signal_handler(signal.SIGINT, self._on_interrupt)
        try:
            if self.interactive:
                self.out.write(
                    f"Parley — {self.model}. {PLACE.how_to_talk} /help lists the rest.\n"
                )
            while True:
                if self.interactive:
                    self.out.write("> ")
                    self.out.flush()
                line = self.backlog.popleft() if self.backlog else await self.lines.get()
                if line is None or line.strip() == QUIT:
                    return 0
                await self._turn(line.rstrip("\n"))
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    async def _turn(self, line: str) -> None:
        if await self._command(line):
            return
        reply = ConsoleReply(self.out)
        self.current = reply
        incoming = Incoming(PLATFORM, CHAT_ID, self.user_id, self.user_id, line, reply)
        await self.service.handle(incoming)
        await self._wait_for_answer(reply)
        self.current = None

    async def _wait_for_answer(self, reply: ConsoleReply) -> None:
        """Lines typed while an answer streams: /stop stops it, others wait their turn."""
        while not reply.done.is_set():
            next_line = asyncio.create_task(self.lines.get())
            finished = asyncio.create_task(reply.done.wait())
            await asyncio.wait({next_line, finished}, return_when=asyncio.FIRST_COMPLETED)
            finished.cancel()
            if not next_line.done():
                next_line.cancel()
                break
            line = next_line.result()
            if line is None or not await self._command(line, only="stop"):
                self.backlog.append(line)
        await reply.done.wait()

    async def _command(self, line: str, only: str | None = None) -> bool:
        """Run ``line`` if it is one of bot/commands' commands (``only``: that one) and print
        its answer; False for any other line (an unknown "/word" is a message too)."""
        name, argument = split_command(line) or ("", "")
        command = find_command(ALIASES.get(name, name))
        if command is None or only not in (None, command.name):
            return False

        async def progress(text: str) -> None:
            self.out.write(text + "\n")

        call = CommandCall(self.service, self.asker, self.user_id, argument, PLACE, progress)
        reply = await run_command(command, call, self.access)
        if not reply.quiet:
            self.out.write(reply.text + "\n")
        self.out.flush()
        return True

    def _on_interrupt(self) -> None:
        """Ctrl-C stops the answer being written; at the prompt it quits."""
        if self.current is not None and not self.current.done.is_set():
            self._stopping = asyncio.ensure_future(
                self.service.cancel(PLATFORM, CHAT_ID, self.user_id)
            )
        else:
            self.out.write("\n")
            self.lines.put_nowait(None)

    def _read_lines(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            for line in self.inp:
                loop.call_soon_threadsafe(self.lines.put_nowait, line)
        finally:  # the end of input, or a read that failed: the chat ends instead of hanging
            loop.call_soon_threadsafe(self.lines.put_nowait, None)


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"
