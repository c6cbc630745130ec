"""Every third-party module the code imports comes from a distribution pyproject.toml declares.

A package that only arrives as someone else's dependency works until that dependency changes;
the installed wheel then fails at import time. The shipped packages (schedsearch, controller,
trainers) may import only ``[project] dependencies``; the tests may also use the ``dev`` extra.
Imports inside functions count too: they run, just later.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SHIPPED = ("schedsearch", "controller", "trainers")
FIRST_PARTY = {"schedsearch", "tests"}
# Imported directly but not declared yet (the shared environment is rebuilt when dependencies
# change, so they are added together): module -> where it must be declared. Each entry must still
# be undeclared; once declared, the entry goes (the test below says so).
# A distribution that is another's own core, pinned exactly by it and documented as its API
# (pydantic's docs import PydanticCustomError and ErrorDetails from pydantic_core): declaring the
# outer one declares it.
PART_OF = {"pydantic-core": "pydantic"}
NOT_YET_DECLARED: dict[str, str] = {}


def normalised(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(*extras: str) -> set[str]:
    """The distribution names of the project's dependencies (and of ``extras``)."""
    project = PYPROJECT["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {normalised(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def imported_top_levels(paths: Iterable[Path]) -> dict[str, str]:
    """Top-level module name -> the first ``file:line`` importing it (absolute imports)."""
    found: dict[str, str] = {}
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                found.setdefault(top, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def undeclared(folders: Iterable[str], allowed: set[str]) -> list[str]:
    """``file:line imports X (distribution Y)`` for each third-party import not in ``allowed``."""
    distributions = importlib.metadata.packages_distributions()
    files = [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]
    problems = []
    for module, where in sorted(imported_top_levels(files).items()):
        if module in FIRST_PARTY or module in sys.stdlib_module_names or module == "__future__":
            continue
        owners = {normalised(d) for d in distributions.get(module, [])}
        if not {PART_OF.get(o, o) for o in owners} & allowed:
            owner = ", ".join(sorted(owners)) or "no installed distribution"
            problems.append(f"{where} imports {module} ({owner})")
    return problems


def known_gap(problem: str) -> bool:
    return problem.split(" imports ")[1].split(" ")[0] in NOT_YET_DECLARED


def test_shipped_code_imports_only_declared_dependencies() -> None:
    assert [p for p in undeclared(SHIPPED, declared()) if not known_gap(p)] == []


def test_tests_import_only_declared_and_dev_dependencies() -> None:
    assert [p for p in undeclared(["tests"], declared("dev")) if not known_gap(p)] == []


def test_the_known_gaps_are_still_gaps() -> None:
    problems = undeclared([*SHIPPED, "tests"], declared("dev"))
    still = {p.split(" imports ")[1].split(" ")[0] for p in problems}
    assert set(NOT_YET_DECLARED) <= still, (
        f"{set(NOT_YET_DECLARED) - still} declared now: remove from NOT_YET_DECLARED"
    )


def test_the_check_sees_an_undeclared_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(
        "import os\nimport yaml\n\ndef later():\n    import click\n"
    )
    assert undeclared(["pkg"], {"pyyaml"}) == ["pkg/mod.py:5 imports click (click)"]
    assert declared() >= {"aiohttp", "prometheus-client", "ray", "pyyaml"}
