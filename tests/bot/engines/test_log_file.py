"""The local engine's log file rotates instead of growing without end."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from pathlib import Path

from bot.engines.log_file import RotatingLog, copy_stream


def test_past_its_size_the_log_moves_aside_and_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    path.write_text("from an earlier run\n")  # appended to, and counted
    with RotatingLog(path, max_bytes=100) as log:
        for n in range(8):
            log.write(f"line {n:02d} {'x' * 10}\n")  # 19 bytes each
    older, newer = (tmp_path / "engine.log.1").read_text(), path.read_text()
    assert older.startswith("from an earlier run\n")
    assert len(older.encode()) <= 100 + 19 and len(newer.encode()) <= 100 + 19
    lines = (older + newer).splitlines()
    assert lines[1:] == [f"line {n:02d} {'x' * 10}" for n in range(8)]  # nothing lost
    with RotatingLog(path, max_bytes=100) as log:  # rotating again replaces the older file
        for n in range(8, 16):
            log.write(f"line {n:02d} {'x' * 10}\n")
    assert "from an earlier run" not in (tmp_path / "engine.log.1").read_text()
    assert path.read_text().splitlines()[-1] == f"line 15 {'x' * 10}"


async def test_the_engine_output_copier_survives_a_line_past_the_pipe_limit(
    tmp_path: Path,
) -> None:
    """A 200 KiB line (a traceback with a huge repr, say) used to end the copy with a
    ValueError: the engine then froze on its next write to the full pipe, and the bot's stop
    raised it, leaving the store open and the process unable to exit."""
    script = (
        "import sys\n"
        "sys.stderr.write('start\\n' + 'x' * 200_000 + '\\n')\n"
        "sys.stderr.write('é' * 70_000 + '\\n')\n"  # two bytes each: split across reads
        "for n in range(2000): sys.stderr.write(f'line {n}\\n')\n"  # more than a pipe holds
        "sys.stderr.write('engine: error: the last words')\n"  # no newline at the end
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stderr=asyncio.subprocess.PIPE
    )
    assert child.stderr is not None
    tail: deque[str] = deque(maxlen=5)
    with RotatingLog(tmp_path / "engine.log") as sink:
        await asyncio.wait_for(copy_stream(child.stderr, sink, tail), 30)
    assert await child.wait() == 0
    lines = (tmp_path / "engine.log").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "start" and lines[1] == "x" * 200_000 and lines[2] == "é" * 70_000
    last_words = "engine: error: the last words"
    assert lines[3:] == [*(f"line {n}" for n in range(2000)), last_words]
    assert list(tail) == [*(f"line {n}" for n in range(1996, 2000)), last_words]
