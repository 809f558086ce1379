"""``parley engine`` on its own reads .env with the bot's defaults (common/environment.py,
common/defaults.py), and falls back to the demo model when the default cannot be had."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common.defaults import DEFAULT_MODEL
from tests.engine_process import ROOT

ENGINE_VARIABLES = ("MODEL", "ENGINE_N_CTX", "ENGINE_PARALLEL", "HF_ENDPOINT", "HF_HOME")


def engine(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ENGINE_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "parley", "engine", "--port", "0"], cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_the_engine_takes_its_model_and_sizes_from_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MODEL=/nowhere/from-dot-env.gguf\nENGINE_N_CTX=0\n")
    refused = engine(tmp_path)
    assert refused.returncode == 2
    assert "--n-ctx: must be a positive integer, got 0" in refused.stderr
    (tmp_path / ".env").write_text("MODEL=/nowhere/from-dot-env.gguf\nENGINE_N_CTX=512\n")
    missing = engine(tmp_path)
    assert missing.returncode == 1
    assert "model file not found: /nowhere/from-dot-env.gguf" in missing.stderr


def test_the_default_model_falls_back_to_demo_when_it_cannot_be_had(tmp_path: Path) -> None:
    code = (
        "from engine.cli import _model_or_demo\n"
        "print(_model_or_demo(None)); print(_model_or_demo('/given.gguf'))\n"
    )
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    clean = {k: v for k, v in os.environ.items() if k not in ENGINE_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**clean, "PYTHONPATH": str(ROOT), **offline},
    )  # fmt: skip
    assert result.stdout.splitlines() == ["demo", "/given.gguf"], result.stderr
    assert DEFAULT_MODEL.split(":")[1] in result.stderr and "using the demo model" in result.stderr
