"""What the workers of an existing Ray cluster need to import, shipped in a runtime environment.

A cluster started with ``ray start`` runs its workers in the nodes' own Python environments:
they may have Ray and torch but not this project, and never the user's entrypoint module
(importable on this machine through ``PYTHONPATH`` or the current directory). Ray's
``runtime_env`` ``py_modules`` uploads local packages to the cluster once per content and puts
them first on every worker's ``sys.path``, so the workers run exactly the code this command runs.

Shipped: the ``schedsearch`` package (assembled as it is imported: setuptools maps
``schedsearch.trainers``/``schedsearch.controller`` from folders of their own, see
pyproject's ``package-dir``), and the top-level package or module of ``workload.entrypoint``
unless it is installed (in site-packages: the cluster must have it installed too, like any
other dependency). An entrypoint named by a relative file path (``models/net.py:make``) is
shipped as the workers' working directory, holding that file at that path, so the path means
the same on every node; an absolute path must be on a filesystem the nodes share. The
third-party dependencies (torch, pydantic, ...) are the cluster's.
"""

from __future__ import annotations

import importlib.util
import shutil
import sysconfig
from pathlib import Path
from typing import Any

from schedsearch.api import spec as api
from schedsearch.engine.session import CHDIR_ENV

PROJECT = "schedsearch"
# Subpackages installed from folders outside ``schedsearch/`` (pyproject's package-dir).
MAPPED_SUBPACKAGES = ("trainers", "controller")
EXCLUDES = ["__pycache__", "*.pyc", "*.pyo"]


def runtime_env(search: api.ScheduleSearch, stage: Path) -> dict[str, Any]:
    """The runtime environment for ``search``'s trials; packages are assembled under ``stage``
    (a fresh directory the caller removes once Ray has uploaded them, i.e. after ``ray.init``)."""
    modules = [str(stage_project(stage))]
    entrypoint = search.spec.workload.entrypoint
    # The workers' environment is the cluster's, not this process's: say it to them too.
    env: dict[str, Any] = {"excludes": list(EXCLUDES), "env_vars": {CHDIR_ENV: "0"}}
    workdir = stage_entrypoint_file(entrypoint, stage / "workdir")
    if workdir is not None:
        env["working_dir"] = str(workdir)
    else:
        entry = entrypoint_source(entrypoint)
        if entry is not None:
            modules.append(str(entry))
    return {"py_modules": modules, **env}


def stage_entrypoint_file(
    entrypoint: str | None, workdir: Path, cwd: Path | None = None
) -> Path | None:
    """For ``path/to/file.py:attr`` relative to ``cwd`` (default: the current directory), a
    working directory holding the file at that relative path; None for other entrypoints."""
    if not entrypoint or ":" not in entrypoint:
        return None
    module_ref = entrypoint.rpartition(":")[0]
    if not module_ref.endswith(".py") or Path(module_ref).is_absolute():
        return None
    base = (cwd or Path.cwd()).resolve()
    source = (base / module_ref).resolve()
    if not source.is_file() or not source.is_relative_to(base):
        return None  # not there (the workers will say so), or outside the folder run from
    target = workdir / source.relative_to(base)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return workdir


def stage_project(stage: Path) -> Path:
    """A copy of the ``schedsearch`` package as Python imports it here, one folder."""
    root = _package_dir(PROJECT)
    target = stage / PROJECT
    shutil.copytree(root, target, ignore=shutil.ignore_patterns(*EXCLUDES))
    for name in MAPPED_SUBPACKAGES:
        if (target / name).is_dir():
            continue  # an installed wheel has it in place
        shutil.copytree(
            _package_dir(f"{PROJECT}.{name}"),
            target / name,
            ignore=shutil.ignore_patterns(*EXCLUDES),
        )
    return target


def entrypoint_source(entrypoint: str | None) -> Path | None:
    """The local folder (package) or file (module) holding ``module.path:attr``'s top-level
    module, or None when there is nothing to ship (no entrypoint, or an installed one).

    The entrypoint must be importable here (``schedsearch validate`` checks it); one that is
    not is left for the workers to report.
    """
    if not entrypoint:
        return None
    module_ref = entrypoint.rpartition(":")[0] if ":" in entrypoint else entrypoint
    if module_ref.endswith(".py"):
        return None  # a file path: see stage_entrypoint_file
    top = module_ref.split(".", 1)[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    if found.submodule_search_locations:
        locations = list(found.submodule_search_locations)
        source = Path(locations[0]) if len(locations) == 1 else None
    else:
        source = Path(found.origin) if found.origin and found.origin.endswith(".py") else None
    if source is None or _installed(source):
        return None
    return source


def _package_dir(name: str) -> Path:
    found = importlib.util.find_spec(name)
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(f"cannot locate the package {name!r} to ship it", name=name)
    return Path(next(iter(found.submodule_search_locations)))


def _installed(path: Path) -> bool:
    """Whether ``path`` is in an installed location (any site-packages, including those a
    ``.pth`` file adds, or the standard library), not a source folder."""
    if {"site-packages", "dist-packages"} & set(path.resolve().parts):
        return True
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    return path.resolve().is_relative_to(stdlib)
