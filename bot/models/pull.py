"""Find and download a GGUF from a Hugging Face repo, for ``parley admin model pull``.

Downloads go into the standard Hugging Face cache, exactly where ``MODEL=REPO_ID:FILENAME``
looks, so a pulled model is then usable offline. Every Hub call is made once with a short
timeout: huggingface_hub alone retries an unreachable Hub for ~25 s, logging each attempt, where
an operator wants one line at once. (The engine does the same in engine/download.py; the bot
keeps its own copy because bot/ only talks to the engine over HTTP.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import ModelUnavailable, ParleyError
from common.gguf_split import one_per_model, split_parts

if TYPE_CHECKING:
    from huggingface_hub.utils.tqdm import tqdm as HfTqdm

PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RepoFile:
    """A GGUF in a Hub repo; ``size`` in bytes, None when the Hub did not say."""

    name: str
    size: int | None


class FileChoiceError(ParleyError):
    """``--quant`` matched no GGUF, or several; ``candidates`` is what the operator can pick."""

    def __init__(self, message: str, candidates: Sequence[str]) -> None:
        super().__init__(message)
        self.candidates = list(candidates)


def list_repo_ggufs(repo_id: str) -> list[RepoFile]:
    """The repo's ``*.gguf`` files (sorted by name) with sizes; ModelUnavailable if unreachable."""
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        raise ModelUnavailable(f"cannot list the files of {repo_id}: HF_HUB_OFFLINE is set")
    try:
        info = HfApi().model_info(repo_id, files_metadata=True, timeout=PROBE_TIMEOUT_S)
    except Exception as exc:
        raise ModelUnavailable(f"cannot list the files of {repo_id}: {_reason(exc)}") from exc
    files = [
        RepoFile(s.rfilename, s.size)
        for s in info.siblings or []
        if s.rfilename.lower().endswith(".gguf")
    ]
    return sorted(files, key=lambda f: f.name)


def choose_file(files: Sequence[RepoFile], quant: str | None) -> str:
    """The one model whose file name carries ``quant`` (case-insensitive), else
    FileChoiceError. A split GGUF counts as one model, named by its first file.

    A match delimited by non-alphanumerics wins over a bare substring, so ``Q4_K_S`` does not
    also pick ``IQ4_K_S`` and ``Q8_0`` does not pick ``Q8_0_L``. With no ``quant`` the repo must
    hold exactly one model.
    """
    names = one_per_model(f.name for f in files)
    if not names:
        raise FileChoiceError("the repo has no .gguf files", [])
    if quant is None or not quant.strip():
        if len(names) == 1:
            return names[0]
        raise FileChoiceError(
            f"the repo has {len(names)} GGUF files; pick one with a quantization: "
            + ", ".join(names),
            names,
        )
    wanted = quant.strip().lower()
    delimited = re.compile(rf"(?<![a-z0-9_]){re.escape(wanted)}(?![a-z0-9_])")
    matches = [n for n in names if delimited.search(n.lower())]
    matches = matches or [n for n in names if wanted in n.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise FileChoiceError(
            f"no GGUF file matches {quant!r}; the repo has: {', '.join(names)}", names
        )
    raise FileChoiceError(
        f"{len(matches)} GGUF files match {quant!r}: {', '.join(matches)}", matches
    )


def pull(repo_id: str, filename: str, progress: bool = True) -> Path:
    """Download ``filename`` into the HF cache and return its path (the cached snapshot link);
    for a split GGUF, every part of its set, and the first part's path.

    A cached file is returned without touching the network. Otherwise one quick metadata
    request decides whether the Hub has it; then huggingface_hub downloads it, drawing its own
    progress bar on stderr when ``progress`` (even when stderr is not a terminal, unless
    HF_HUB_DISABLE_PROGRESS_BARS is set). A dropped connection is resumed with a Range request;
    huggingface_hub 2.x discards a partial file when the process itself dies, so an interrupted
    pull restarts from zero. Failures are ModelUnavailable naming repo and file.
    """
    paths = [_pull_one(repo_id, part, progress) for part in split_parts(filename)]
    return paths[0]


def _pull_one(repo_id: str, filename: str, progress: bool) -> Path:
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import LocalEntryNotFoundError

    where = f"{filename} from {repo_id}"
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    except Exception as exc:  # a malformed repo id or filename
        raise ModelUnavailable(f"cannot download {where}: {_reason(exc)}") from exc
    if constants.is_offline_mode():
        raise ModelUnavailable(
            f"cannot download {where}: HF_HUB_OFFLINE is set and it is not cached"
        )
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=PROBE_TIMEOUT_S)
        path = hf_hub_download(
            repo_id=repo_id, filename=filename, tqdm_class=_progress_class(progress)
        )
    except Exception as exc:
        raise ModelUnavailable(f"cannot download {where}: {_reason(exc)}") from exc
    return Path(path)


def _progress_class(progress: bool) -> type[HfTqdm]:
    """huggingface_hub's own bar, forced on or off instead of guessing from isatty()."""
    from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

    class Bar(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = not progress
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    return Bar


def _reason(exc: BaseException) -> str:
    """The actionable part of a huggingface_hub / httpx failure, on one line."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    if isinstance(exc, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set"
    if isinstance(exc, GatedRepoError):
        return "the repo is gated; accept its terms on huggingface.co and set HF_TOKEN"
    if isinstance(exc, RepositoryNotFoundError):
        return "no such repo (or it is private; set HF_TOKEN)"
    if isinstance(exc, LocalEntryNotFoundError):  # the Hub went away between probe and download
        return f"the Hugging Face Hub is unreachable ({_first_line(exc)})"
    if isinstance(exc, EntryNotFoundError):
        return "the repo has no such file"
    if isinstance(exc, HfHubHTTPError | HFValidationError | OSError):
        return _first_line(exc)  # an HTTP error, a malformed repo id, a full disk
    # Connection refused, DNS, timeouts, TLS: httpx's own exception types.
    return f"the Hugging Face Hub is unreachable ({_first_line(exc)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
