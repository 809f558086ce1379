"""Local model listing: demo and Gemma, MODELS_DIR (recursive), and the Hugging Face cache."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.models.catalog import LocalModel, local_models, offered_models, resolve_model
from common import model_files
from engine.demo_model import demo_model_path, gemma_model_path
from tests.bot.models.test_gguf_info import write_gguf
from tests.bot.models.test_pull import result_line, run_python
from tests.emulators.hf_hub import HubStandIn
from tests.emulators.threaded import ThreadedServer

HUB_SPEC = "acme/tiny-GGUF:quant/tiny-Q8_0.gguf"


def link_or_copy(source: Path, target: Path) -> Path:
    """A hard link (instant) where the filesystem allows it, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME holding one GGUF (in a repo subfolder) and a README, pulled from the stand-in."""
    files = tmp_path_factory.mktemp("hub-files")
    home = tmp_path_factory.mktemp("hf-home")
    hub = HubStandIn()
    repo, filename = HUB_SPEC.split(":")
    hub.add(repo, filename, write_gguf(files / "tiny.gguf", arch="qwen2", file_type=7))
    hub.add(repo, "README.md", files / "tiny.gguf")
    code = f"""
        from bot.models.pull import pull
        pull({repo!r}, {filename!r}, progress=False)
        pull({repo!r}, "README.md", progress=False)
        """
    with ThreadedServer(hub.app()) as server:
        result_line(run_python(code, HF_ENDPOINT=server.url, HF_HOME=str(home)))
    return home


@pytest.fixture
def models_dir(tmp_path: Path) -> Iterator[Path]:
    """The Gemma GGUF two levels down, a junk .gguf, and a file that is not a .gguf."""
    root = tmp_path / "models"
    link_or_copy(gemma_model_path(), root / "gemma" / "v1" / "gemma-270m.gguf")
    (root / "junk.gguf").write_bytes(b"this is not a model")
    (root / "notes.txt").write_text("ignored")
    (root / "folder.gguf").mkdir()  # a directory with a .gguf name is not a model
    yield root


def by_spec(models: list[LocalModel]) -> dict[str, LocalModel]:
    return {m.spec: m for m in models}


def test_demo_models_dir_and_hub_cache_are_listed(models_dir: Path, hf_home: Path) -> None:
    models = local_models(models_dir, "demo", hub_cache=hf_home / "hub")
    gemma = str((models_dir / "gemma" / "v1" / "gemma-270m.gguf").resolve())
    junk = str((models_dir / "junk.gguf").resolve())
    assert [m.spec for m in models] == ["demo", "gemma3-270m", gemma, junk, HUB_SPEC]

    demo = models[0]
    assert demo.path == model_files.demo_model_file() == demo_model_path()
    assert (demo.architecture, demo.quantization, demo.active) == ("llama", "Q4_1", True)
    assert demo.size_bytes == demo_model_path().stat().st_size
    assert models[1].path == gemma_model_path() and models[1].active is False

    listed = by_spec(models)
    assert (listed[gemma].architecture, listed[gemma].quantization) == ("gemma3", "Q4_K_M")
    assert listed[gemma].active is False
    assert (listed[junk].architecture, listed[junk].quantization) == ("unreadable", "unreadable")
    assert listed[junk].size_bytes == len(b"this is not a model")
    hub = listed[HUB_SPEC]
    assert (hub.architecture, hub.quantization, hub.active) == ("qwen2", "Q8_0", False)
    assert hub.path is not None and hub.path.is_file()


def test_active_matches_a_spec_or_a_path(
    models_dir: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = hf_home / "hub"
    assert [m.spec for m in local_models(models_dir, HUB_SPEC, hub_cache=cache) if m.active] == [
        HUB_SPEC
    ]
    monkeypatch.chdir(models_dir)  # a relative MODEL path names the same file
    active = [
        m for m in local_models(models_dir, "gemma/v1/gemma-270m.gguf", hub_cache=cache) if m.active
    ]
    assert [m.path.name for m in active if m.path] == ["gemma-270m.gguf"]
    # The HF snapshot path (a symlink into blobs/) is the Hub entry too.
    hub_path = by_spec(local_models(None, HUB_SPEC, hub_cache=cache))[HUB_SPEC].path
    assert [m.spec for m in local_models(None, str(hub_path), hub_cache=cache) if m.active] == [
        HUB_SPEC
    ]


def test_missing_places_list_nothing_and_do_not_fail(tmp_path: Path) -> None:
    (tmp_path / "empty-cache").mkdir()
    for cache in (tmp_path / "no-cache", tmp_path / "empty-cache"):
        models = local_models(tmp_path / "no-models", "demo", hub_cache=cache)
        assert [m.spec for m in models] == ["demo", "gemma3-270m"]


def test_the_demo_is_listed_once_fetched_and_gemma_with_its_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PARLEY_CACHE_DIR", str(tmp_path / "cache"))  # not fetched here
    monkeypatch.setattr(model_files, "DEMO_PACKAGE", "no_such_demo_package")
    monkeypatch.setenv("HOME", str(tmp_path))  # Gemma not assembled yet: listed with no path
    assert local_models(None, "demo", hub_cache=tmp_path) == [
        LocalModel("gemma3-270m", None, None, None, None, active=False)
    ]
    monkeypatch.setattr(model_files, "GEMMA_PACKAGE", "no_such_gemma_package")
    assert local_models(None, "demo", hub_cache=tmp_path) == []


def test_the_default_hub_cache_follows_hf_home(hf_home: Path, tmp_path: Path) -> None:
    code = f"""
        import json
        from pathlib import Path
        from bot.models.catalog import local_models
        print(json.dumps([m.spec for m in local_models(Path({str(tmp_path)!r}), {HUB_SPEC!r})]))
        """
    specs = json.loads(result_line(run_python(code, HF_HOME=str(hf_home))))
    assert HUB_SPEC in specs


def test_model_offers_and_bare_names_come_from_the_models_folder(tmp_path: Path) -> None:
    (tmp_path / "qwen.gguf").write_bytes(b"GGUF")
    assert offered_models(tmp_path, "current.gguf") == sorted(
        ["current.gguf", "demo", str(tmp_path / "qwen.gguf")]
    )
    assert offered_models(None, "") == ["demo"]
    assert resolve_model(tmp_path, "qwen") == str(tmp_path / "qwen.gguf")
    assert resolve_model(tmp_path, "qwen.gguf") == str(tmp_path / "qwen.gguf")
    assert resolve_model(tmp_path, "repo/name:file.gguf") == "repo/name:file.gguf"
    assert resolve_model(tmp_path, "missing") == "missing"
