"""Shared fixtures: the real demo-model engine, started once per module that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.store.database import Store
from tests.engine_process import EngineProcess, start_engine

ADMIN_TOKEN = "test-admin-token"


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
