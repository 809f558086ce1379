"""The packages' import rules (shared/DESIGN.md): ``bot`` knows the engine only by its HTTP
contract and no platform at all; the engine knows nothing of the bot; only ``parley`` (the
composition root) and the tests put them together. And one message's route through the
files goes one way (bench/trace_route.py)."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

from bench.trace_route import one_way_order, route_of_one_message

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "bot": {"adapters", "engine", "parley"},
    "engine": {"bot", "adapters", "parley"},
    "adapters": {"engine", "parley"},
    "common": {"bot", "engine", "adapters", "parley"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports, anywhere in it (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_what_the_design_allows(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {module: names for module, names in wrong.items() if names} == {}


def test_the_rule_sees_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from adapters.telegram import TelegramAdapter\n")
    assert imported_packages(module) == {"adapters"}


def test_bot_has_role_packages_and_only_a_handful_of_top_level_modules() -> None:
    modules = [p.name for p in (ROOT / "bot").glob("*.py") if p.name != "__init__.py"]
    roles = {p.name for p in (ROOT / "bot").iterdir() if (p / "__init__.py").exists()}
    assert {"store", "engines", "chat", "replies", "models", "admin"} <= roles
    assert len(modules) <= 6, modules


def test_one_telegram_message_goes_one_way_through_the_files() -> None:
    """Issue 28's route: from update to final edit, no file calls back into one that called
    it, directly or around a cycle (callbacks included), so the files line up in one order."""
    route, calls = route_of_one_message()
    order, cycle = one_way_order(route, calls)
    assert cycle == []
    assert {"adapters/telegram.py", "bot/chat/service.py", "bot/chat/workers.py",
            "bot/store/job_writes.py", "bot/engines/client.py"} <= set(order)  # fmt: skip


def test_the_route_check_sees_a_callback() -> None:
    route = ["a.py", "b.py", "a.py", "c.py"]
    calls = collections.Counter({("a.py", "b.py"): 1, ("b.py", "a.py"): 1, ("a.py", "c.py"): 1})
    assert one_way_order(route, calls)[1] == ["a.py", "b.py"]
    del calls["b.py", "a.py"]
    assert one_way_order(route, calls) == (["a.py", "b.py", "c.py"], [])
