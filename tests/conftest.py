"""Shared fixtures: the real demo-model engine, started once per module that asks for it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bot.store.database import Store
from tests.engine_process import EngineProcess, start_engine

ADMIN_TOKEN = "test-admin-token"

# Every engine a test starts (this fixture's, `parley run`'s local one) decodes on one thread
# unless a test says otherwise. On this 2-core machine with one core busy elsewhere, the demo
# model decoded 54 tok/s on one thread against 30 on two (idle: 60 against 85): llama.cpp's
# threads wait for each other at every step, and a busy neighbour (a second engine, a build,
# `make bench`) stalls them all. A fresh-clone `make test` beside `make bench` timed out four
# engine tests on two threads. The product's default (all cores) is the performance issue's.
os.environ.setdefault("ENGINE_THREADS", "1")


async def store_settled(store: Store) -> None:
    """Returns once every write asked of ``store`` so far is committed: a reply's final state
    is shown while it is stored, so a test reading the file after seeing it waits for this."""
    await store.atomic(lambda db: None)


@pytest.fixture(scope="module")
def engine() -> Iterator[EngineProcess]:
    process = start_engine(
        "--model", "demo", "--n-ctx", "512", "--parallel", "4", env={"ADMIN_TOKEN": ADMIN_TOKEN}
    )
    yield process
    assert process.stop() == 0
