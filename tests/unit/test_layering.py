"""The layering contracts: what each layer may import, checked on the source files themselves.

The trainers run inside pods and inside the local engine, so they must not pull in the
controller, the Kubernetes client or the user-facing layers; the spec must not depend on
engines or the operator.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CONTRACTS = {
    "trainers": (
        "schedsearch.controller",
        "schedsearch.cli",
        "schedsearch.engine",
        "schedsearch.store",
        "schedsearch.api",
        "kubernetes",
        "kopf",
        "ray",
    ),
    "schedsearch/api": (
        "schedsearch.controller",
        "schedsearch.cli",
        "schedsearch.engine",
        "schedsearch.store",
        "kubernetes",
        "kopf",
        "ray",
    ),
    "schedsearch/store": ("schedsearch.controller", "schedsearch.engine", "kopf", "ray"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Absolute module names imported by a file, with their line numbers."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("folder", sorted(CONTRACTS))
def test_layer_imports_only_what_it_may(folder: str) -> None:
    assert violations(folder, CONTRACTS[folder]) == []


def test_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("import os\nfrom kubernetes import client\n")
    assert imported_modules(tmp_path / "pkg" / "mod.py") == [(1, "os"), (2, "kubernetes")]
