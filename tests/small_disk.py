"""Storage that refuses writes, for tests: a small tmpfs mounted for the test (to fill up),
and immutable files (``chattr +i``: even root's writes fail).

Storage faults are only honest against a real filesystem that refuses the write, so the test
mounts one (root may; elsewhere the test is skipped with the reason) and unmounts it however
the test ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class SmallDisk:
    """A mounted tmpfs of a few MiB at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler"

    def fill(self) -> None:
        """Take every free byte (a file written until the disk says it is full)."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            chunk = b"\0" * 65536
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    if len(chunk) == 1:
                        return
                    chunk = chunk[: len(chunk) // 2]
        finally:
            os.close(fd)

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)


def immutable(path: Path, on: bool = True) -> None:
    """Make ``path`` immutable (``chattr +i``: not even root may write it), or writable again."""
    subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True, capture_output=True)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@contextlib.contextmanager
def small_disk(path: Path, size_mib: int = 4) -> Iterator[SmallDisk]:
    """A tmpfs of ``size_mib`` at ``path`` (created), unmounted on exit; skips the test where
    this process may not mount."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    try:
        _mount("-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(path))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
