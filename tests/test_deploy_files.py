"""The deployment files agree with the code they run: Dockerfile, Dockerfile.cuda,
docker-compose.yml, contrib/parley.service and .dockerignore.

Docker and systemd are not needed (neither runs here): each check reads the files and
returns its problems. Every check runs on the real files (no problems) and on a copy broken
in the one way it guards against (``BREAKAGES``: at least one problem), so none can pass
vacuously.
"""

from __future__ import annotations

import ast
import json
import platform
import re
import shlex
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from bot.errors import EX_CONFIG
from bot.metrics import create_metrics_app
from bot.settings import Settings
from common.model_files import CACHE_VARIABLE
from parley.cli import HOLD_VARIABLE

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
DATA_SETTINGS = ("DATABASE_PATH", "MODELS_DIR", "HF_HOME")  # what must persist
# Variables the files may set that are not Parley settings: the interpreter's, the
# Hugging Face hub's (HF_HOME: where downloaded models are cached), and the home directory
# (the Gemma model is assembled into ~/.cache).
THIRD_PARTY_ENV = frozenset({"PATH", "HOME", "PYTHONUNBUFFERED", "HF_HOME", "HF_TOKEN"})
# Read by parley/cli.py itself, before (and without) the settings.
PROCESS_ENV = frozenset({HOLD_VARIABLE, CACHE_VARIABLE})
# The Python each CUDA base image's Ubuntu ships (Dockerfile.cuda installs python3 from it).
UBUNTU_PYTHON = {"22.04": "3.10", "24.04": "3.12"}

Problems = list[str]


# ---- what the code says ---------------------------------------------------------------


def setting_names() -> frozenset[str]:
    prefix = Settings.model_config.get("env_prefix") or ""
    return frozenset((prefix + name).upper() for name in Settings.model_fields)


def console_script() -> tuple[str, str]:
    """(name, target) of the console script that runs ``parley.cli:main``."""
    scripts: dict[str, str] = PYPROJECT["project"]["scripts"]
    return next((name, target) for name, target in scripts.items() if target == "parley.cli:main")


def served_paths() -> frozenset[str]:
    app = create_metrics_app(lambda: {}, lambda: (True, []))
    return frozenset(resource.canonical for resource in app.router.resources())


def _module_constant(path: str, name: str) -> float:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return float(ast.literal_eval(node.value))
    raise AssertionError(f"{name} not found in {path}")


def stop_budget() -> float:
    """Seconds a SIGTERM'd ``parley run`` may take to exit 0: running answers get
    SHUTDOWN_GRACE, final texts still being shown DELIVERY_GRACE, then the local engine its
    own grace before SIGKILL."""
    engine_source = (ROOT / "bot/engines/local.py").read_text(encoding="utf-8")
    engine = re.search(r"async def stop\(self\).*?_kill\(grace=([\d.]+)\)", engine_source, re.S)
    assert engine is not None, "LocalEngine.stop's grace not found in bot/engines/local.py"
    return (
        _module_constant("parley/app.py", "SHUTDOWN_GRACE")
        + _module_constant("bot/chat/workers.py", "DELIVERY_GRACE")
        + float(engine.group(1))
    )


def stop_deadline() -> float:
    """Seconds after which a stop still under way ends the process, saying where it was
    stuck (parley/stop_watchdog.py): a service manager's SIGKILL must come after it."""
    return _module_constant("parley/app.py", "STOP_DEADLINE")


def seconds(value: object) -> float:
    """A Compose (``1m30s``) or systemd (``90``, ``1min 30s``) duration in seconds."""
    units = {"": 1, "us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    text = str(value).strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([a-z]*)|\s", "", text):
        raise ValueError(f"not a duration: {value!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


# ---- the files, parsed ------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined and comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(text: str) -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """The ARG defaults before the first FROM, and each stage's instructions (FROM first)."""
    global_args: dict[str, str] = {}
    found: list[list[tuple[str, str]]] = []
    for word, rest in dockerfile_instructions(text):
        if word == "FROM":
            found.append([])
        if found:
            found[-1].append((word, rest))
        elif word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            global_args[name] = value.strip('"')
    return global_args, found


def base_image(stage: list[tuple[str, str]], args: dict[str, str]) -> str:
    image = stage[0][1].split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)


def env_assignments(rest: str) -> dict[str, str]:
    """``ENV A=1 B=2`` (or the old ``ENV A 1``)."""
    words = shlex.split(rest)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def stage_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            env.update(env_assignments(rest))
    return env


def unit_entries(text: str) -> dict[str, list[tuple[str, str]]]:
    """Section -> (key, value) in order; keys repeat (Environment=) so no configparser."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
        else:
            key, _, value = line.partition("=")
            sections.setdefault(current, []).append((key.strip(), value.strip()))
    return sections


def _url_path_problems(where: str, command: str) -> Problems:
    problems = []
    if re.search(r"\b(curl|wget)\b", command):
        problems.append(f"{where}: uses curl/wget, which the slim runtime image does not have")
    if "urllib" not in command or "METRICS_PORT" not in command:
        problems.append(f"{where}: expected python's urllib on 127.0.0.1:$METRICS_PORT")
    paths = re.findall(r"""['"](/[\w./-]*)['"]""", command)
    served = served_paths()
    if not paths or any(path not in served for path in paths):
        problems.append(f"{where}: asks {paths}, bot/metrics.py serves {sorted(served)}")
    return problems


# ---- checks ------------------------------------------------------------------------------


def dockerfile_problems(text: str, python_of: Callable[[str], str | None]) -> Problems:
    problems: Problems = []
    global_args, found = stages(text)
    if len(found) < 2:
        return ["expected a builder stage and a runtime stage"]
    builder, runtime = found[0], found[-1]
    builder_text = " ".join(rest for _, rest in builder)
    runtime_text = " ".join(rest for word, rest in runtime if word == "RUN")
    if not re.search(r"\bcmake\b", builder_text) or not re.search(
        r"\b(build-essential|g\+\+|gcc)\b", builder_text
    ):
        problems.append("the builder does not install cmake and a C/C++ compiler")
    if "pip wheel" not in builder_text:
        problems.append("the builder does not build wheels (pip wheel)")
    if not re.search(r'flags="\$\(sh contrib/llama-cflags\.sh\)"', builder_text) or not all(
        re.search(rf'\b{name}="\$\{{flags\}}"', builder_text) for name in ("CFLAGS", "CXXFLAGS")
    ):
        problems.append("the builder does not compile with contrib/llama-cflags.sh's flags")
    if re.search(r"\b(build-essential|cmake|gcc|g\+\+)\b", runtime_text):
        problems.append("the runtime stage installs build tools")
    if "--no-index" not in runtime_text or "/wheels" not in runtime_text:
        problems.append("the runtime stage does not install the builder's wheels only")

    images = [base_image(stage, global_args) for stage in (builder, runtime)]
    pythons = [python_of(image) for image in images]
    if pythons[0] is None or pythons[0] != pythons[1]:
        problems.append(f"builder and runtime Pythons differ or are unknown: {images}")
    elif pythons[0] not in SpecifierSet(PYPROJECT["project"]["requires-python"]):
        problems.append(f"Python {pythons[0]} does not satisfy requires-python")

    words = [word for word, _ in runtime]
    last = {word: rest for word, rest in runtime}
    for stage in found:
        problems += env_name_problems(f"ENV in {base_image(stage, global_args)}", stage_env(stage))
    env = stage_env(runtime)
    try:
        cmd = json.loads(last.get("CMD", "null"))
    except json.JSONDecodeError:
        cmd = last["CMD"]  # shell form: no signals reach Parley through sh
    if cmd != [console_script()[0], "run"]:
        problems.append(f"CMD is {cmd!r}, expected the console script with run, exec form")
    user = last.get("USER", "root").split(":")[0]
    if user in ("root", "0"):
        problems.append("the runtime runs as root")
    volumes = json.loads(last["VOLUME"]) if last.get("VOLUME", "").startswith("[") else []
    if "/data" not in volumes:
        problems.append("no /data volume")
    problems += data_path_problems("runtime ENV", env, volumes)
    if env.get("METRICS_HOST") != "0.0.0.0":
        problems.append("METRICS_HOST is not 0.0.0.0: the published port would not answer")
    if env.get(HOLD_VARIABLE) != "wait":
        problems.append(f"a configuration error (exit {EX_CONFIG}) is restarted for ever")
    if env.get("METRICS_PORT") is None or env["METRICS_PORT"] not in last.get("EXPOSE", ""):
        problems.append("METRICS_PORT is not set or not EXPOSEd")
    if "HEALTHCHECK" not in words:
        problems.append("no HEALTHCHECK")
    else:
        problems += _url_path_problems("HEALTHCHECK", last["HEALTHCHECK"])
    if last.get("STOPSIGNAL", "SIGTERM") != "SIGTERM":
        problems.append("STOPSIGNAL is not SIGTERM")
    return problems


def debian_python(image: str) -> str | None:
    match = re.fullmatch(r"python:(\d+\.\d+)[\w.-]*", image)
    return match.group(1) if match else None


def ubuntu_python(image: str) -> str | None:
    match = re.fullmatch(r"nvidia/cuda:[\d.]+-(?:devel|runtime)-ubuntu([\d.]+)", image)
    return UBUNTU_PYTHON.get(match.group(1)) if match else None


def test_every_build_of_llama_cpp_uses_the_one_flags_script() -> None:
    """contrib/llama-cflags.sh leaves out the AMX kernels on x86-64 (they crash on AMX CPUs),
    and the Makefile, the systemd install (README and the unit's comment) and the Dockerfiles
    (checked above) take their flags from it."""
    flags = subprocess.run(
        ["sh", str(ROOT / "contrib/llama-cflags.sh")], capture_output=True, text=True, check=True
    ).stdout.split()
    if platform.machine() in ("x86_64", "AMD64"):
        assert flags == ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    rule = r"^LLAMA_CFLAGS\s*\?=\s*\$\(shell sh contrib/llama-cflags\.sh\)"
    assert re.search(rule, makefile, re.M)
    install = 'flags=$(sh contrib/llama-cflags.sh)'
    for name in ("README.md", "contrib/parley.service"):
        text = (ROOT / name).read_text(encoding="utf-8")
        assert install in text and 'CFLAGS="$flags" CXXFLAGS="$flags"' in text, name
    assert "!contrib/llama-cflags.sh" in (ROOT / ".dockerignore").read_text(encoding="utf-8")


def cuda_dockerfile_problems(text: str) -> Problems:
    problems = dockerfile_problems(text, ubuntu_python)
    global_args, found = stages(text)
    builder = " ".join(rest for _, rest in found[0]) if found else ""
    if "-DGGML_CUDA=on" not in builder:
        problems.append("the builder does not compile llama.cpp with -DGGML_CUDA=on")
    images = [base_image(stage, global_args) for stage in found]
    if not images or "-devel-" not in images[0] or "-runtime-" not in images[-1]:
        problems.append(f"expected a CUDA devel builder and a runtime image: {images}")
    elif images[0].replace("-devel-", "-runtime-") != images[-1]:
        problems.append(f"builder and runtime CUDA images differ: {images}")
    return problems


def env_name_problems(where: str, env: dict[str, Any]) -> Problems:
    known = setting_names() | THIRD_PARTY_ENV | PROCESS_ENV
    return [f"{where}: {name} is no Parley setting" for name in sorted(set(env) - known)]


def data_path_problems(where: str, env: dict[str, Any], writable: list[str]) -> Problems:
    """DATABASE_PATH's directory, MODELS_DIR and HF_HOME lie in a writable, kept place."""
    problems = []
    for name in DATA_SETTINGS:
        if name not in env:
            problems.append(f"{where}: {name} is not set")
            continue
        path = PurePosixPath(str(env[name]))
        place = path.parent if name == "DATABASE_PATH" else path
        inside = [PurePosixPath(w) for w in writable]
        if not any(place == w or w in place.parents for w in inside):
            problems.append(f"{where}: {name}={path} is outside {writable}")
    return problems


def compose_problems(text: str) -> Problems:
    problems: Problems = []
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"not YAML: {exc}"]
    service = data.get("services", {}).get("parley")
    if service is None:
        return ["no service named parley (the README runs `docker compose exec parley ...`)"]
    build = service.get("build", {})
    dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else None
    if dockerfile is None or not (ROOT / dockerfile).is_file():
        problems.append(f"build: {build!r} names no Dockerfile in the repository")
    env_file = service.get("env_file")
    if ".env" not in ([env_file] if isinstance(env_file, str) else env_file or []):
        problems.append("env_file is not .env")
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    problems += env_name_problems("environment", env)

    named = set(data.get("volumes") or {})
    mounts = [m.split(":") for m in service.get("volumes", []) if isinstance(m, str)]
    targets = [target for source, target, *_ in mounts if source in named]
    if "/data" not in targets:
        problems.append("no named volume (declared under volumes:) mounted at /data")
    problems += data_path_problems("environment", env, targets)
    if env.get("METRICS_HOST") != "0.0.0.0":
        problems.append("METRICS_HOST is not 0.0.0.0 (the published port would not answer)")

    ports = [str(p) for p in service.get("ports", [])]
    if not ports or any(not p.startswith("127.0.0.1:") for p in ports):
        problems.append(f"ports {ports} are not all published on 127.0.0.1")
    if not any(p.endswith(f":{env.get('METRICS_PORT')}") for p in ports):
        problems.append("the metrics port is not published")
    if service.get("restart") != "unless-stopped":
        problems.append("restart is not unless-stopped")
    if seconds(service.get("stop_grace_period", "10s")) <= stop_deadline():
        problems.append(f"stop_grace_period is not above the bot's {stop_deadline():g} s stop")
    if service.get("stop_signal", "SIGTERM") != "SIGTERM":
        problems.append("stop_signal is not SIGTERM")
    test = (service.get("healthcheck") or {}).get("test")
    if not test:
        problems.append("no healthcheck")
    else:
        command = " ".join(test) if isinstance(test, list) else str(test)
        problems += _url_path_problems("healthcheck", command)
    return problems


def unit_problems(text: str) -> Problems:
    problems: Problems = []
    entries = unit_entries(text).get("Service", [])
    last = dict(entries)
    exec_start = shlex.split(last.get("ExecStart", ""))
    script = console_script()[0]
    if (
        len(exec_start) != 2
        or not exec_start[0].startswith("/")
        or PurePosixPath(exec_start[0]).name != script
        or exec_start[1] != "run"
    ):
        problems.append(f"ExecStart is {exec_start}, expected /.../{script} run")
    if last.get("User", "root") in ("root", "0"):
        problems.append("no dedicated User=")
    if not last.get("WorkingDirectory", "").startswith("/"):
        problems.append("no WorkingDirectory= (where .env is read)")
    if not last.get("EnvironmentFile", "").startswith("-"):
        problems.append("EnvironmentFile= is missing or not optional (-)")
    env: dict[str, str] = {}
    for key, value in entries:
        if key == "Environment":
            env.update(word.split("=", 1) for word in shlex.split(value))
    problems += env_name_problems("Environment=", env)

    writable = [w.lstrip("-") for k, v in entries if k == "ReadWritePaths" for w in v.split()]
    writable += [f"/var/lib/{d}" for k, v in entries if k == "StateDirectory" for d in v.split()]
    if last.get("ProtectSystem") != "strict":
        problems.append("ProtectSystem is not strict")
    problems += data_path_problems("Environment=", env, writable)
    if last.get("ProtectHome") in ("yes", "true", "read-only", "tmpfs"):
        hidden = ("/home", "/root", "/run/user")
        for name, value in env.items():
            if value.startswith(hidden):
                problems.append(f"{name}={value} is hidden by ProtectHome")
    for key, wanted in (
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        # SIGTERM to the bot only: the engine must serve while answers finish
        ("KillMode", "mixed"),
    ):
        if last.get(key) != wanted:
            problems.append(f"{key} is {last.get(key)!r}, expected {wanted}")
    if str(EX_CONFIG) not in last.get("RestartPreventExitStatus", "").split():
        problems.append(f"a configuration error (exit {EX_CONFIG}) is restarted forever")
    if seconds(last.get("TimeoutStopSec", "90")) <= stop_deadline():
        problems.append(f"TimeoutStopSec is not above the bot's {stop_deadline():g} s stop")
    return problems


def dockerignore_problems(text: str) -> Problems:
    patterns = {line.strip() for line in text.splitlines() if not line.startswith("#")}
    return [f".dockerignore does not exclude {p}" for p in (".venv", ".git", ".env", "*.db")
            if p not in patterns]  # fmt: skip


CHECKS: dict[str, Callable[[str], Problems]] = {
    "Dockerfile": lambda text: dockerfile_problems(text, debian_python),
    "Dockerfile.cuda": cuda_dockerfile_problems,
    "docker-compose.yml": compose_problems,
    "contrib/parley.service": unit_problems,
    ".dockerignore": dockerignore_problems,
}

# (file, text in it, replacement): each breaks one check above.
BREAKAGES = [
    ("Dockerfile", 'CMD ["parley", "run"]', 'CMD ["parley", "chat"]'),
    ("Dockerfile", 'CMD ["parley", "run"]', "CMD parley run"),
    ("Dockerfile", "ARG PYTHON_VERSION=3.11", "ARG PYTHON_VERSION=3.10"),
    ("Dockerfile", "FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime",
     "FROM python:3.12-slim AS runtime"),
    ("Dockerfile", "HF_HOME=/data/hf", "HUGGINGFACE_HOME=/data/hf"),
    ("Dockerfile", "ARG CMAKE_ARGS=", "ENV DATABASE_URL=sqlite:///data\nARG CMAKE_ARGS="),
    ("Dockerfile", "MODELS_DIR=/data/models", "MODELS_DIR=/opt/models"),
    ("Dockerfile", "METRICS_PORT=9464", "METRIC_PORT=9464"),
    ("Dockerfile", "'/healthz'", "'/health'"),
    ("Dockerfile", "urllib.request.urlopen(", "curl("),
    ("Dockerfile", "USER 10001:10001", "USER root"),
    ("Dockerfile", 'VOLUME ["/data"]', 'VOLUME ["/srv"]'),
    ("Dockerfile", "METRICS_HOST=0.0.0.0", "METRICS_HOST=127.0.0.1"),
    ("Dockerfile", "EXPOSE 9464", "EXPOSE 8080"),
    ("Dockerfile", "PARLEY_ON_CONFIG_ERROR=wait", "PARLEY_ON_CONFIG_ERROR=exit"),
    ("Dockerfile.cuda", " \\\n    PARLEY_ON_CONFIG_ERROR=wait", ""),
    ("Dockerfile", "STOPSIGNAL SIGTERM", "STOPSIGNAL SIGKILL"),
    ("Dockerfile", "build-essential cmake", "build-essential"),
    ("Dockerfile", 'flags="$(sh contrib/llama-cflags.sh)"', 'flags=""'),
    ("Dockerfile", 'CXXFLAGS="${flags}" ', ""),
    ("Dockerfile.cuda", 'CFLAGS="${flags}" CXXFLAGS="${flags}" ', ""),
    ("Dockerfile", "libgomp1 tini", "libgomp1 tini cmake"),
    ("Dockerfile", "--no-index --find-links=/wheels", "--find-links=/wheels"),
    ("Dockerfile.cuda", "-DGGML_CUDA=on -DGGML_NATIVE", "-DGGML_NATIVE"),
    ("Dockerfile.cuda", "ARG UBUNTU_VERSION=24.04", "ARG UBUNTU_VERSION=22.04"),
    ("Dockerfile.cuda", "-runtime-ubuntu${UBUNTU_VERSION}", "-runtime-ubuntu22.04"),
    ("Dockerfile.cuda", 'CMD ["parley", "run"]', 'CMD ["python", "-m", "bot"]'),
    ("docker-compose.yml", "services:\n", "services: [\n"),
    ("docker-compose.yml", "  parley:\n", "  bot:\n"),
    ("docker-compose.yml", "env_file: .env", "env_file: settings.env"),
    ("docker-compose.yml", "dockerfile: Dockerfile\n", "dockerfile: Dockerfile.gpu\n"),
    ("docker-compose.yml", "MODELS_DIR: /data/models", "MODEL_DIR: /data/models"),
    ("docker-compose.yml", "HF_HOME: /data/hf", "HF_HOME: /root/.cache/hf"),
    ("docker-compose.yml", "- parley-data:/data", "- ./data:/data"),
    ("docker-compose.yml", '"127.0.0.1:9464:9464"', '"9464:9464"'),
    ("docker-compose.yml", "restart: unless-stopped", "restart: always"),
    ("docker-compose.yml", "stop_grace_period: 60s", "stop_grace_period: 10s"),
    ("docker-compose.yml", "/healthz'", "/ready'"),
    ("docker-compose.yml", "METRICS_HOST: 0.0.0.0", "METRICS_HOST: 127.0.0.1"),
    ("contrib/parley.service", "/.venv/bin/parley run", "/.venv/bin/python -m bot run"),
    ("contrib/parley.service", "/.venv/bin/parley run", "/.venv/bin/parley chat"),
    ("contrib/parley.service", "User=parley", "User=root"),
    ("contrib/parley.service", "Environment=HF_HOME=", "Environment=HF_HUB_HOME="),
    ("contrib/parley.service", "HF_HOME=/var/lib/parley/hf", "HF_HOME=/home/parley/hf"),
    ("contrib/parley.service", "DATABASE_PATH=/var/lib/parley/", "DATABASE_PATH=/srv/parley/"),
    ("contrib/parley.service", "\nKillMode=mixed", "\nKillMode=control-group"),
    ("contrib/parley.service", "TimeoutStopSec=60", "TimeoutStopSec=20s"),
    ("contrib/parley.service", "Restart=on-failure", "Restart=no"),
    ("contrib/parley.service", "RestartPreventExitStatus=78", "RestartPreventExitStatus=1"),
    ("contrib/parley.service", "ProtectSystem=strict", "ProtectSystem=full"),
    ("contrib/parley.service", "NoNewPrivileges=yes", "NoNewPrivileges=no"),
    ("contrib/parley.service", "EnvironmentFile=-", "EnvironmentFile="),
    (".dockerignore", "\n.env\n", "\n"),
]  # fmt: skip


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_deploy_file_agrees_with_the_code(name: str) -> None:
    assert CHECKS[name]((ROOT / name).read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(("name", "old", "new"), BREAKAGES)
def test_each_check_can_fail(name: str, old: str, new: str) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    assert old in text, f"{name} no longer contains {old!r}: update BREAKAGES"
    assert CHECKS[name](text.replace(old, new, 1)) != []


def test_the_stop_budget_is_read_from_the_code() -> None:
    # 5 s for running answers + 10 s for final edits + 10 s for the engine, as of writing
    assert 0 < stop_budget() < stop_deadline() < 60


@pytest.mark.parametrize("value", ["60s", "1m", "60", "1min", "0.5m30s"])
def test_seconds(value: str) -> None:
    assert seconds(value) == 60


def test_readme_commands_name_the_compose_service() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    used = set(re.findall(r"docker compose (?:exec|logs -f|cp) (\w+)", readme))
    assert used, "the README shows no docker compose command"
    assert used <= set(services["services"])
