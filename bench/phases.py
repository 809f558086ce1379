"""What ``make bench`` is doing right now, on stderr: each phase as it starts and how long it
took, so a run of many minutes is never silent (the table itself is printed at the end)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    started = time.perf_counter()
    print(f"bench: {name} …", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        took = time.perf_counter() - started
        print(f"bench: {name}: {took:.0f} s", file=sys.stderr, flush=True)
