"""Turn a model spec (a path, ``REPO_ID:FILENAME``, ``demo`` or ``gemma3-270m``) into a local
GGUF file."""

from __future__ import annotations

import logging
from pathlib import Path

from common.gguf_split import split_parts
from engine.demo_model import DEMO, GEMMA, demo_model_path, gemma_model_path
from engine.errors import ModelLoadError, ModelUnavailableError
from engine.progress_lines import download_bar

log = logging.getLogger(__name__)


def resolve_model_path(spec: str) -> Path:
    """Return a local path for ``spec``, downloading from the Hub when needed.

    Raises ModelLoadError with one actionable line: a missing file, a repo or an index that
    cannot be reached, or a missing package.
    """
    spec = spec.strip()
    if spec == DEMO:
        return demo_model_path()
    if spec == GEMMA:
        return gemma_model_path()
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


def hub_download(repo_id: str, filename: str) -> str:
    """``filename`` from ``repo_id`` in the standard HF cache; for a split GGUF every part of
    its set (llama.cpp loads them from the first, which is returned).

    A cached file is used without touching the network. Otherwise one quick metadata request
    decides: unreachable, missing or gated gives a ModelLoadError naming the repo and the file
    at once (huggingface_hub alone would retry for ~25 s, logging each attempt).
    """
    paths = [_hub_file(repo_id, part) for part in split_parts(filename)]
    return paths[0]


def _hub_file(repo_id: str, filename: str) -> str:
    """One file, with a progress bar on a terminal (or progress lines for the bot)."""
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
        bar = download_bar(filename)  # progress lines for the bot that started this engine
        return hf_hub_download(repo_id=repo_id, filename=filename, tqdm_class=bar)
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
