"""Parley's version, as installed (pyproject.toml's), for ``parley --version`` and
``parley engine --version``."""

from __future__ import annotations

import importlib.metadata


def parley_version() -> str:
    try:
        return importlib.metadata.version("parley")
    except importlib.metadata.PackageNotFoundError:  # a checkout run without pip install
        return "unknown (not installed: pip install -e .)"
