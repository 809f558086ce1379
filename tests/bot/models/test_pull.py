"""Listing and pulling GGUFs from a Hub repo, against the loopback Hub stand-in.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, so every
Hub call runs in a fresh ``python -c`` with its own environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.models.pull import FileChoiceError, RepoFile, choose_file
from tests.bot.models.test_gguf_info import write_gguf
from tests.emulators.hf_hub import HubStandIn
from tests.emulators.threaded import ThreadedServer
from tests.split_gguf import tiny_split

ROOT = Path(__file__).resolve().parents[3]
REPO = "acme/tiny-GGUF"
Q4 = "tiny-Q4_K_M.gguf"
UNREACHABLE = "http://127.0.0.1:9"
BIG_REPO, BIG = "acme/big-GGUF", "big-F16.gguf"

# Variables of the caller's shell that would change what huggingface_hub does.
_HF_ENV = (
    "HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
    "HF_TOKEN", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_POSITION", "HF_HUB_ENABLE_HF_TRANSFER",
)  # fmt: skip


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter at the repo root with only the given HF_* settings."""
    clean = {k: v for k, v in os.environ.items() if k not in _HF_ENV}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def pull_script(repo: str, filename: str, progress: bool = True) -> str:
    """Prints the pulled path, or ``ERROR <type>: <message>`` for a ParleyError."""
    return f"""
        from bot.errors import ParleyError
        from bot.models.pull import pull
        try:
            print(pull({repo!r}, {filename!r}, progress={progress!r}))
        except ParleyError as exc:
            print(f"ERROR {{type(exc).__name__}}: {{exc}}")
        """


def result_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubStandIn, str, Path]]:
    """acme/tiny-GGUF: three quantizations (3 MB each) and a README; acme/big-GGUF: one 12 MB."""
    files = tmp_path_factory.mktemp("hub-files")
    stand_in = HubStandIn()
    for name, file_type in ((Q4, 15), ("tiny-IQ4_K_M.gguf", 15), ("tiny-Q8_0.gguf", 7)):
        path = write_gguf(files / name, arch="llama", file_type=file_type, pad_to=3_000_000)
        stand_in.add(REPO, name, path)
    readme = files / "README.md"
    readme.write_text("# tiny\n")
    stand_in.add(REPO, "README.md", readme)
    stand_in.add(BIG_REPO, BIG, write_gguf(files / BIG, file_type=1, pad_to=12_000_000))
    with ThreadedServer(stand_in.app()) as server:
        yield stand_in, server.url, files


def test_list_choose_and_pull_with_a_progress_bar(
    hub: tuple[HubStandIn, str, Path], tmp_path: Path
) -> None:
    _, url, files = hub
    code = f"""
        import json
        from bot.models.pull import choose_file, list_repo_ggufs, pull
        files = list_repo_ggufs({REPO!r})
        name = choose_file(files, "q4_k_m")
        path = pull({REPO!r}, name, progress=True)
        print(json.dumps({{"files": [[f.name, f.size] for f in files], "name": name,
                          "path": str(path)}}))
        """
    result = run_python(code, HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf"))
    out: dict[str, Any] = json.loads(result_line(result))
    assert out["files"] == [
        ["tiny-IQ4_K_M.gguf", 3_000_000], [Q4, 3_000_000], ["tiny-Q8_0.gguf", 3_000_000],
    ]  # fmt: skip
    assert out["name"] == Q4  # not tiny-IQ4_K_M.gguf, which also contains "q4_k_m"
    path = Path(out["path"])
    assert path.is_relative_to(tmp_path / "hf" / "hub")
    assert path.read_bytes() == (files / Q4).read_bytes()
    assert "%|" in result.stderr and Q4 in result.stderr  # huggingface_hub's own tqdm bar
    # Cached now: a second pull needs neither the Hub nor the network.
    again = run_python(
        pull_script(REPO, Q4), HF_ENDPOINT=UNREACHABLE, HF_HOME=str(tmp_path / "hf"),
        HF_HUB_OFFLINE="1",
    )  # fmt: skip
    assert result_line(again) == str(path)
    assert "%|" not in again.stderr


def test_progress_false_draws_no_bar(hub: tuple[HubStandIn, str, Path], tmp_path: Path) -> None:
    _, url, files = hub
    result = run_python(
        pull_script(REPO, "tiny-Q8_0.gguf", progress=False), HF_ENDPOINT=url, HF_HOME=str(tmp_path)
    )
    path = Path(result_line(result))
    assert path.stat().st_size == (files / "tiny-Q8_0.gguf").stat().st_size
    assert "%|" not in result.stderr and "tiny-Q8_0" not in result.stderr


def test_a_dropped_connection_is_resumed_with_a_range_request(
    hub: tuple[HubStandIn, str, Path], tmp_path: Path
) -> None:
    # huggingface_hub counts what it has written in 10 MiB chunks: cut past the first one.
    stand_in, url, files = hub
    stand_in.cut_once[(BIG_REPO, BIG)] = 11_000_000
    ranges_before = len(stand_in.ranges)
    result = run_python(
        pull_script(BIG_REPO, BIG, progress=False), HF_ENDPOINT=url, HF_HOME=str(tmp_path)
    )
    assert Path(result_line(result)).read_bytes() == (files / BIG).read_bytes()
    assert stand_in.ranges[ranges_before:] == [f"bytes={10 * 2**20}-"]


def test_an_unreachable_hub_fails_fast_naming_repo_and_file(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_python(pull_script(REPO, Q4), HF_ENDPOINT=UNREACHABLE, HF_HOME=str(tmp_path))
    assert time.monotonic() - started < 5
    line = result_line(result)
    assert line.startswith("ERROR ModelUnavailable: ") and "\n" not in line
    assert REPO in line and Q4 in line and "unreachable" in line


def test_listing_an_unreachable_hub_fails_fast(tmp_path: Path) -> None:
    code = f"""
        from bot.errors import ModelUnavailable
        from bot.models.pull import list_repo_ggufs
        try:
            list_repo_ggufs({REPO!r})
        except ModelUnavailable as exc:
            print(exc)
        """
    started = time.monotonic()
    line = result_line(run_python(code, HF_ENDPOINT=UNREACHABLE, HF_HOME=str(tmp_path)))
    assert time.monotonic() - started < 5
    assert REPO in line and "unreachable" in line
    offline = run_python(code, HF_ENDPOINT=UNREACHABLE, HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    assert "HF_HUB_OFFLINE" in result_line(offline)


def test_offline_and_not_cached_says_hf_hub_offline(tmp_path: Path) -> None:
    result = run_python(
        pull_script(REPO, Q4), HF_ENDPOINT=UNREACHABLE, HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1"
    )
    line = result_line(result)
    assert line.startswith("ERROR ModelUnavailable: ")
    assert "HF_HUB_OFFLINE" in line and REPO in line and Q4 in line


def test_a_missing_repo_or_file_is_named(hub: tuple[HubStandIn, str, Path], tmp_path: Path) -> None:
    _, url, _ = hub
    env = {"HF_ENDPOINT": url, "HF_HOME": str(tmp_path)}
    no_file = result_line(run_python(pull_script(REPO, "tiny-Q2_K.gguf"), **env))
    assert no_file.startswith("ERROR ModelUnavailable: ") and "no such file" in no_file
    assert "tiny-Q2_K.gguf" in no_file
    no_repo = result_line(run_python(pull_script("acme/nothing", "x.gguf"), **env))
    assert "no such repo" in no_repo and "acme/nothing" in no_repo


FILES = [RepoFile("m-IQ4_XS.gguf", 1), RepoFile("m-Q4_K_M.gguf", 2), RepoFile("m-Q4_K_S.gguf", 3)]


def test_choose_file_matches_case_insensitively_and_prefers_whole_tokens() -> None:
    assert choose_file(FILES, "q4_k_m") == "m-Q4_K_M.gguf"
    assert choose_file(FILES, " Q4_K_S ") == "m-Q4_K_S.gguf"
    assert choose_file(FILES, "q4_xs") == "m-IQ4_XS.gguf"  # no whole-token match: substring
    assert choose_file([RepoFile("only.gguf", 1)], None) == "only.gguf"


def test_choose_file_lists_the_candidates_when_it_cannot_choose() -> None:
    with pytest.raises(FileChoiceError, match="2 GGUF files match 'Q4_K'") as several:
        choose_file(FILES, "Q4_K")
    assert several.value.candidates == ["m-Q4_K_M.gguf", "m-Q4_K_S.gguf"]
    with pytest.raises(FileChoiceError, match="no GGUF file matches 'Q8_0'") as none:
        choose_file(FILES, "Q8_0")
    assert none.value.candidates == [f.name for f in FILES] and "m-IQ4_XS.gguf" in str(none.value)
    with pytest.raises(FileChoiceError, match="3 GGUF files"):
        choose_file(FILES, None)
    with pytest.raises(FileChoiceError, match=r"no \.gguf files"):
        choose_file([], "Q4_K_M")


def test_the_stand_in_lists_files_like_the_hub(
    hub: tuple[HubStandIn, str, Path], tmp_path: Path
) -> None:
    """list_repo_files / list_repo_tree work too, for callers other than list_repo_ggufs."""
    _, url, _ = hub
    code = f"""
        import json
        from huggingface_hub import HfApi
        api = HfApi()
        tree = [(e.path, getattr(e, "size", None)) for e in api.list_repo_tree({REPO!r})]
        print(json.dumps([api.list_repo_files({REPO!r}), tree]))
        """
    names, tree = json.loads(result_line(run_python(code, HF_ENDPOINT=url, HF_HOME=str(tmp_path))))
    assert names == ["README.md", "tiny-IQ4_K_M.gguf", Q4, "tiny-Q8_0.gguf"]
    assert ["README.md", 7] in tree and [Q4, 3_000_000] in tree


def test_a_malformed_repo_id_is_a_model_unavailable_line(tmp_path: Path) -> None:
    line = result_line(run_python(pull_script("not a repo", "x.gguf"), HF_HOME=str(tmp_path)))
    assert line.startswith("ERROR ModelUnavailable: cannot download x.gguf from not a repo: ")


def test_hub_settings_in_dot_env_reach_huggingface_hub(
    hub: tuple[HubStandIn, str, Path], tmp_path: Path
) -> None:
    """HF_ENDPOINT and HF_HOME written in .env (not the environment) steer
    ``parley admin model pull`` as they would from the shell (common/environment.py)."""
    _, url, _ = hub
    (tmp_path / ".env").write_text(f"HF_ENDPOINT={url}\nHF_HOME={tmp_path / 'hf'}\n")
    clean = {k: v for k, v in os.environ.items() if k not in _HF_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "parley", "admin", "model", "pull", REPO, "--quant", "Q8_0"],
        cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert str(tmp_path / "hf") in result.stdout and "tiny-Q8_0.gguf" in result.stdout


def test_the_shell_wins_over_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HF_ENDPOINT=http://from-dot-env\nHF_HOME=/from/dot/env\n")
    code = (
        "from common.environment import export_dotenv\n"
        "print(sorted(export_dotenv()))\n"
        "import huggingface_hub.constants as c; print(c.ENDPOINT, c.HF_HOME)\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in _HF_ENV}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**clean, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": "http://from-the-shell"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["['HF_HOME']", "http://from-the-shell /from/dot/env"]


def test_a_split_gguf_is_one_choice_and_pulls_every_part(tmp_path: Path) -> None:
    """A repo with a Q8_0 file and a Q4_K_M split in three: --quant q4_k_m picks the set by its
    first part, the pull brings all three beside each other, and the listing shows it once."""
    files = tmp_path / "files"
    files.mkdir()
    parts = tiny_split(files / "tiny-Q4_K_M.gguf", 3)
    single = write_gguf(files / "tiny-Q8_0.gguf", arch="llama", file_type=7)
    hub = HubStandIn()
    for path in (*parts, single):
        hub.add(REPO, path.name, path)
    code = f"""
        import json
        from pathlib import Path
        from bot.models.catalog import local_models
        from bot.models.pull import choose_file, list_repo_ggufs, pull
        name = choose_file(list_repo_ggufs({REPO!r}), "q4_k_m")
        path = pull({REPO!r}, name, progress=False)
        listed = [[m.spec, m.size_bytes] for m in local_models(None, "")]
        print(json.dumps({{"name": name, "path": str(path), "listed": listed,
                          "beside": sorted(p.name for p in path.parent.iterdir())}}))
        """
    with ThreadedServer(hub.app()) as server:
        result = run_python(code, HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"))
    out: dict[str, Any] = json.loads(result_line(result))
    assert out["name"] == parts[0].name == "tiny-Q4_K_M-00001-of-00003.gguf"
    assert out["beside"] == [p.name for p in parts]
    assert Path(out["path"]).read_bytes() == parts[0].read_bytes()
    size = sum(p.stat().st_size for p in parts)
    hub_listed = [entry for entry in out["listed"] if entry[0].startswith(REPO)]
    assert hub_listed == [[f"{REPO}:{parts[0].name}", size]]
