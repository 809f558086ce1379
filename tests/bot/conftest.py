"""Fixtures shared by the bot's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store.database import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store on disk, ``parley.db`` in the test's folder."""
    opened = await Store.open(tmp_path / "parley.db")
    yield opened
    await opened.close()
