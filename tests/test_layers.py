"""The layering DESIGN.md states holds in the code: every import points down, never up.

Inside ``collector`` the layers are, lowest first: liveresponse, transfer, acquisition,
packaging, delivery, fleet, cli. ``evidence`` and ``profiles`` use neither ``collector`` nor each other's
callers, and ``emulator`` uses none of the project's other packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("liveresponse", "transfer", "acquisition", "packaging", "delivery", "fleet", "cli")
FORBIDDEN = {
    "evidence": {"collector", "emulator", "profiles"},
    "profiles": {"collector", "emulator", "evidence"},
    "emulator": {"collector", "evidence", "profiles"},
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute module name ``path`` imports, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "collector" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def upward_imports(package_root: Path) -> list[str]:
    problems = []
    for path in sorted(package_root.rglob("*.py")):
        relative = path.relative_to(ROOT)
        own = layer_of(".".join(relative.with_suffix("").parts))
        if own is None:
            continue
        for line, module in imported_modules(path):
            target = layer_of(module)
            if target is not None and target > own:
                problems.append(f"{relative}:{line}: {LAYERS[own]} imports {module}")
    return problems


def test_every_collector_module_is_in_a_layer() -> None:
    loose = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "collector").glob("*.py")
        if path.name != "__init__.py"
    ]
    assert loose == []


def test_no_collector_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports(ROOT / "collector") == []


def test_the_walk_finds_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself can fail: a transfer module importing the cli is reported."""
    fake_root = tmp_path
    module = fake_root / "collector" / "transfer" / "bad.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from collector.cli.exitcodes import EXIT_OK\nimport collector.liveresponse\n"
    )
    monkeypatch.setattr(__import__(__name__), "ROOT", fake_root)
    assert upward_imports(fake_root / "collector") == [
        "collector/transfer/bad.py:1: transfer imports collector.cli.exitcodes",
        "collector/transfer/bad.py:1: transfer imports collector.cli.exitcodes.EXIT_OK",
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_top_level_packages_keep_to_themselves(package: str) -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN[package]
    ]
    assert problems == []
