"""The local engine's log file rotates instead of growing without end."""

from __future__ import annotations

from pathlib import Path

from bot.log_file import RotatingLog


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
