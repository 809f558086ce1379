"""Settings in ``.env`` that other code reads from the process environment, put there.

pydantic-settings reads ``.env`` for the bot's own settings without exporting it, but
huggingface_hub reads ``HF_TOKEN``, ``HF_HOME``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` from
``os.environ`` when it is imported, and every HTTP client reads the proxy variables from there:
set in ``.env`` they did nothing. ``parley`` and ``parley engine`` call ``export_dotenv`` first
thing, so ``.env`` works for them as for every other setting, and the local engine (a child of
the bot) inherits them. A variable already in the environment wins over ``.env``, as for the
bot's settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dotenv import dotenv_values

# What the libraries under Parley read from the environment.
THIRD_PARTY = (
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT",
    "HF_HUB_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
)  # fmt: skip
# The engine's options, for ``parley engine`` run on its own (the bot passes them as flags).
ENGINE = (
    "MODEL", "ENGINE_N_CTX", "ENGINE_PARALLEL", "ENGINE_THREADS", "ENGINE_N_GPU_LAYERS",
    "ENGINE_API_KEY", "KV_CACHE_RAM_MB", "ADMIN_TOKEN", "LOG_LEVEL", "LOG_FORMAT",
)  # fmt: skip


def export_dotenv(names: Iterable[str] = THIRD_PARTY, path: Path = Path(".env")) -> list[str]:
    """Copy ``names`` found in ``path`` into ``os.environ`` unless already set there; the
    names copied. No file, or an unreadable one, copies nothing (the settings say why)."""
    try:
        values = dotenv_values(path) if path.is_file() else {}
    except (OSError, UnicodeDecodeError):
        return []
    copied = []
    for name in names:
        value = values.get(name)
        if value is not None and name not in os.environ:
            os.environ[name] = value
            copied.append(name)
    return copied
