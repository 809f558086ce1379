"""Wiring: the local engine is started with the bot's settings and stopped with it;
ENGINE_URLS uses a running engine instead."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import aiohttp
import pytest

from bot.settings import load_settings
from parley.app import Parley
from tests.engine_process import EngineProcess

pytestmark = pytest.mark.model


async def test_the_local_engine_gets_the_admin_token_and_stops_with_the_bot(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        model="demo", database_path=tmp_path / "bot.db", engine_n_ctx=512, engine_parallel=1,
        admin_token="s3cret",
    )  # fmt: skip
    app = Parley(settings)
    async with app as service, aiohttp.ClientSession() as http:
        assert app.engine is not None and service.n_ctx == 512
        url = app.engine.url + "/admin/model"
        async with http.post(url, json={"model": "demo"}) as response:
            assert response.status == 401  # a token is configured, and this is not it
        headers = {"Authorization": "Bearer s3cret"}
        async with http.post(url, json={"model": "demo"}, headers=headers) as response:
            assert response.status == 200
        pid = app.engine.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert (tmp_path / "engine.log").read_text().count("loaded demo") == 2


async def test_engine_urls_use_a_running_engine(engine: EngineProcess, tmp_path: Path) -> None:
    settings = load_settings(database_path=tmp_path / "bot.db", engine_urls=engine.url)
    app = Parley(settings)
    async with app as service:
        assert app.engine is None
        assert service.n_ctx == engine.get("/v1/models")["data"][0]["n_ctx"]
        assert app.model_name == "demo"


async def test_a_model_switch_is_used_at_once_and_after_a_restart(tmp_path: Path) -> None:
    from bot.errors import EngineRequestError
    from engine.demo_model import demo_model_path

    other = tmp_path / "other.gguf"
    try:
        os.link(demo_model_path(), other)
    except OSError:  # another filesystem
        shutil.copyfile(demo_model_path(), other)
    settings = load_settings(
        model="demo", database_path=tmp_path / "bot.db", engine_n_ctx=512, engine_parallel=1
    )
    app = Parley(settings)
    async with app as service:
        assert service.model == "demo"
        assert await service.switch_model(str(other)) == "other.gguf"
        with pytest.raises(EngineRequestError, match="not found"):
            await service.switch_model(str(tmp_path / "missing.gguf"))
        assert service.model == "other.gguf"
    again = Parley(settings)
    async with again as service:
        assert again.model_name == "other.gguf" == service.model
