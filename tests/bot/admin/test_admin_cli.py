"""`parley admin` against a running bot (in this process: real service, SQLite file and a local
engine on the demo model), each command run as the real CLI in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.chat.service import ChatService
from bot.settings import load_settings
from engine.demo_model import demo_model_path
from parley.app import Parley
from tests.bot.chat.test_service import Recorder, say
from tests.bot.models.test_gguf_info import write_gguf
from tests.conftest import store_settled
from tests.emulators.hf_hub import HubStandIn
from tests.emulators.threaded import ThreadedServer
from tests.engine_process import ROOT

pytestmark = pytest.mark.model


async def admin(tmp_path: Path, *args: str, stdin: str = "", **env: str) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if k != "ADMIN_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parley", "admin", *args, cwd=tmp_path,
        env={**base, "PYTHONPATH": str(ROOT), "DATABASE_PATH": str(tmp_path / "bot.db"),
             "MODELS_DIR": str(tmp_path / "models"), **env},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    return proc.returncode or 0, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def parley_on(model: str, tmp_path: Path) -> AsyncIterator[tuple[Parley, ChatService]]:
    """The bot with its local engine on ``model``; MODELS_DIR holds the demo as other.gguf."""
    models = tmp_path / "models"
    models.mkdir()
    try:
        os.link(demo_model_path(), models / "other.gguf")
    except OSError:
        shutil.copyfile(demo_model_path(), models / "other.gguf")
    settings = load_settings(
        model=model, database_path=tmp_path / "bot.db", models_dir=models,
        engine_n_ctx=512, engine_parallel=2, max_tokens=8, temperature=0,
    )  # fmt: skip
    app = Parley(settings)
    async with app as service:
        yield app, service


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Parley, ChatService]]:
    async with parley_on("demo", tmp_path) as running:
        yield running


@pytest.fixture
async def streaming(tmp_path: Path) -> AsyncIterator[tuple[Parley, ChatService]]:
    """On Gemma 3 270M, a base model: its answers run to max_tokens, so one is still being
    written when a `parley admin` process (seconds to start on a busy machine) asks. The demo
    model ends its answers by itself, sometimes before."""
    async with parley_on("gemma3-270m", tmp_path) as running:
        yield running


async def test_without_a_running_bot_it_says_so(tmp_path: Path) -> None:
    code, _, err = await admin(tmp_path, "status")
    assert code == 1 and err.startswith("parley admin: the bot is not running")


async def test_status_models_users_history_and_stats(
    running: tuple[Parley, ChatService], tmp_path: Path
) -> None:
    app, service = running
    assert oct(app.admin_socket.stat().st_mode & 0o777) == "0o600"
    log: list[str] = []
    incoming, sink = say("alice", "Hello there", log)
    await service.handle(incoming)
    await asyncio.wait_for(sink.done.wait(), 60)

    code, out, _ = await admin(tmp_path, "status", "--json")
    status = json.loads(out)
    (engine,) = status["engines"]
    assert code == 0 and engine["model"] == "demo" == status["model"] and engine["up"]
    assert engine["slots_total"] == 2 and status["tokens_per_second_1m"] > 0
    assert engine["kind"] == "parley" and engine["tokens"].startswith("exact")
    code, out, _ = await admin(tmp_path, "status")
    assert code == 0 and f"engine       {engine['url']} (parley, ok)" in out
    assert "  tokens     exact (/tokenize with the chat template)" in out
    code, out, _ = await admin(tmp_path, "model", "list", "--json")
    listed = {row["spec"]: row for row in json.loads(out)}
    assert listed["demo"]["active"] and listed["demo"]["quantization"] == "Q4_1"
    assert any(spec.endswith("other.gguf") for spec in listed)

    assert (await admin(tmp_path, "users", "ban", "test:mallory", "--reason", "spam"))[0] == 0
    assert (await admin(tmp_path, "users", "allow", "test:bob"))[0] == 0
    code, out, _ = await admin(tmp_path, "users", "list", "--json")
    people = {p["platform_user_id"]: p for p in json.loads(out)}
    assert people["mallory"]["banned"] and people["bob"]["allowed"]
    assert people["alice"]["messages"] == 1
    assert await service.is_banned("test", "mallory")
    assert ("test", "bob") in service.allowed_at_runtime
    assert (await admin(tmp_path, "users", "unban", "test:mallory"))[0] == 0
    assert not await service.is_banned("test", "mallory")

    code, out, _ = await admin(tmp_path, "stats", "--json")
    stats = json.loads(out)
    assert stats["users"][0]["key"] == "test:alice" and stats["users"][0]["messages"] == 1
    assert stats["models"][0]["key"] == "demo" and stats["models"][0]["mean_ttft_ms"] > 0

    export = tmp_path / "alice.jsonl"
    assert (await admin(tmp_path, "history", "export", "test:alice", "-o", str(export)))[0] == 0
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert [r["role"] for r in rows] == ["user", "assistant"] and rows[0][
        "content"
    ] == "Hello there"
    code, out, _ = await admin(tmp_path, "history", "wipe", "test:alice", stdin="no\n")
    assert code == 1 and "nothing deleted" in out
    code, out, _ = await admin(tmp_path, "history", "wipe", "test:alice", "--yes")
    assert code == 0 and "deleted 2" in out
    code, out, _ = await admin(tmp_path, "history", "show", "test:alice", "--json")
    assert json.loads(out) == []

    code, _, err = await admin(tmp_path, "status", ADMIN_TOKEN="wrong")
    assert code == 1 and "wrong admin token" in err


async def test_queue_and_a_model_switch_while_an_answer_streams(
    streaming: tuple[Parley, ChatService], tmp_path: Path
) -> None:
    _, service = streaming
    from bot.engines.client import Sampling

    service.sampling = Sampling(max_tokens=120, temperature=0.7)
    log: list[str] = []
    first, first_sink = say("alice", "Tell a long story", log)
    await service.handle(first)
    await asyncio.wait_for(first_sink.first_delta.wait(), 60)
    code, out, _ = await admin(tmp_path, "queue", "--json")
    assert [row["state"] for row in json.loads(out)] == ["running"]
    switching = asyncio.create_task(admin(tmp_path, "model", "use", "other.gguf"))
    # 7 s on an idle machine; over 60 s once with a benchmark's engine beside the suite's
    await asyncio.wait_for(first_sink.done.wait(), 240)
    code, out, err = await switching
    assert code == 0, err
    assert "now answering with other.gguf" in out
    assert first_sink.outcome is not None and first_sink.outcome.state == "done"
    assert first_sink.outcome.model == "gemma3-270m"
    service.sampling = Sampling(max_tokens=4, temperature=0)
    second, second_sink = say("bob", "Hi", log)
    await service.handle(second)
    await asyncio.wait_for(second_sink.done.wait(), 120)
    assert second_sink.outcome is not None and second_sink.outcome.model == "other.gguf"
    assert await service.store.get_setting("model") == str(tmp_path / "models" / "other.gguf")
    code, _, err = await admin(tmp_path, "model", "use", "missing.gguf")
    assert code == 1 and "not found" in err
    assert service.model == "other.gguf"


async def test_queue_cancel_stops_a_persons_answers(
    streaming: tuple[Parley, ChatService], tmp_path: Path
) -> None:
    _, service = streaming
    from bot.engines.client import Sampling

    service.sampling = Sampling(max_tokens=300, temperature=0.8)
    log: list[str] = []
    incoming, sink = say("alice", "Go on and on", log)
    await service.handle(incoming)
    await asyncio.wait_for(sink.first_delta.wait(), 60)
    code, out, _ = await admin(tmp_path, "queue", "cancel", "--user", "test:alice")
    assert code == 0 and "cancelled 1" in out
    await asyncio.wait_for(sink.done.wait(), 10)
    assert isinstance(sink, Recorder) and sink.outcome and sink.outcome.state == "stopped"


async def test_model_pull_lists_picks_and_downloads_with_progress(tmp_path: Path) -> None:
    stand_in = HubStandIn()
    for name, file_type in (("tiny-Q4_K_M.gguf", 15), ("tiny-Q8_0.gguf", 7)):
        path = write_gguf(tmp_path / name, arch="llama", file_type=file_type, pad_to=2_000_000)
        stand_in.add("acme/tiny-GGUF", name, path)
    with ThreadedServer(stand_in.app()) as server:
        env = {"HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf")}
        code, out, err = await admin(tmp_path, "model", "pull", "acme/tiny-GGUF", **env)
        assert code == 1 and "tiny-Q4_K_M.gguf" in out and "tiny-Q8_0.gguf" in out
        code, out, err = await admin(
            tmp_path, "model", "pull", "acme/tiny-GGUF", "--quant", "q4_k_m", **env
        )
        assert code == 0, err
        assert "%|" in err  # the progress bar
        assert "acme/tiny-GGUF:tiny-Q4_K_M.gguf" in out
        code, _, err = await admin(tmp_path, "model", "pull", "acme/tiny-GGUF", "nope.gguf", **env)
        assert code == 1 and err.count("\n") == 1 and "nope.gguf" in err


async def test_backup_copies_the_live_database(
    running: tuple[Parley, ChatService], tmp_path: Path
) -> None:
    _, service = running
    incoming, sink = say("alice", "Remember this", [])
    await service.handle(incoming)
    await asyncio.wait_for(sink.done.wait(), 60)
    await store_settled(service.store)
    code, out, err = await admin(tmp_path, "backup", "copy.db")  # relative to the CLI's folder
    assert code == 0, err
    assert "backed up" in out and str(tmp_path / "copy.db") in out
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        rows = copy.execute("SELECT content FROM messages WHERE role = 'user'").fetchall()
    assert rows == [("Remember this",)]
    code, _, err = await admin(tmp_path, "backup", "no/such/folder/copy.db")
    assert code == 1 and "not a folder" in err
