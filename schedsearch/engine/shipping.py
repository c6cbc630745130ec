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
other dependency). The third-party dependencies (torch, pydantic, ...) are the cluster's.
"""

from __future__ import annotations

import importlib.util
import shutil
import sysconfig
from pathlib import Path
from typing import Any

from schedsearch.api import spec as api

PROJECT = "schedsearch"
# Subpackages installed from folders outside ``schedsearch/`` (pyproject's package-dir).
MAPPED_SUBPACKAGES = ("trainers", "controller")
EXCLUDES = ["__pycache__", "*.pyc", "*.pyo"]


def runtime_env(search: api.ScheduleSearch, stage: Path) -> dict[str, Any]:
    """The runtime environment for ``search``'s trials; packages are assembled under ``stage``
    (a fresh directory the caller removes once Ray has uploaded them, i.e. after ``ray.init``)."""
    modules = [str(stage_project(stage))]
    entry = entrypoint_source(search.spec.workload.entrypoint)
    if entry is not None:
        modules.append(str(entry))
    return {"py_modules": modules, "excludes": list(EXCLUDES)}


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
    top = entrypoint.split(":", 1)[0].split(".", 1)[0]
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
