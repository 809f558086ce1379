"""``parley run`` as a real subprocess, for tests that kill it, stop it and start it again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

Process = asyncio.subprocess.Process


async def start_bot(
    env: dict[str, str], cwd: Path, platform: str, *, own_group: bool = False,
    log: Path | None = None,
) -> Process:  # fmt: skip
    """Start ``parley run`` and return once it says it is answering on ``platform``;
    ``own_group``: in a process group of its own, as a terminal would start it (for killpg);
    ``log``: where its stderr goes (else nowhere)."""
    with log.open("ab") if log else open(os.devnull, "wb") as stderr:
        bot = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "parley", "run", cwd=cwd, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=stderr, start_new_session=own_group,
        )  # fmt: skip
    assert bot.stdout is not None
    banner = await asyncio.wait_for(bot.stdout.readline(), 120)
    assert f"answering on {platform}".encode() in banner, banner
    return bot


async def stop_bot(bot: Process) -> int:
    """SIGTERM (a graceful stop); its exit code."""
    if bot.returncode is None:
        bot.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(bot.wait(), 60)


async def kill_bot(bot: Process) -> None:
    bot.send_signal(signal.SIGKILL)
    await bot.wait()


def folded(text: str) -> str:
    """Text with whitespace runs folded, as the platforms show it."""
    return " ".join(text.split())
