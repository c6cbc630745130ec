"""The layering contracts of pyproject's ``[tool.importlinter]``, checked by import-linter.

The trainers run inside pods and inside the local engine, so they must not pull in the
controller, the Kubernetes client or the user-facing layers; the spec must not depend on engines
or the operator; no strategy's folder imports another's (they meet in ``registry``). The check
runs on the package as Python imports it (``shipping.stage_project`` puts the mapped
``trainers/`` and ``controller/`` folders in place), since import-linter walks one folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from schedsearch.engine.shipping import stage_project

ROOT = Path(__file__).resolve().parents[2]
LINT = (
    "import sys; from importlinter.cli import lint_imports_command; "
    "sys.exit(lint_imports_command())"
)


def lint_imports(stage: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(stage)}
    return subprocess.run(
        [sys.executable, "-c", LINT, str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=stage,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_contract_is_kept(tmp_path: Path) -> None:
    stage_project(tmp_path)
    checked = lint_imports(tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 broken" in checked.stdout


def test_a_strategy_importing_another_breaks_the_contracts(tmp_path: Path) -> None:
    package = stage_project(tmp_path)
    (package / "trainers" / "strategies" / "law" / "borrowed.py").write_text(
        "from schedsearch.trainers.strategies.pbt import population\n"
        "from schedsearch.controller import plan\n"
    )
    checked = lint_imports(tmp_path)
    assert checked.returncode != 0
    assert "schedsearch.trainers.strategies.law.borrowed -> " in checked.stdout
    assert "each strategy is its own folder BROKEN" in checked.stdout
    assert "layers: user-facing, then engines, store, spec, trainers BROKEN" in checked.stdout
