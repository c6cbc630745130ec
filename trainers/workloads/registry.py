"""Finding a workload by reference: a built-in name, or a user entrypoint ``module:function``.

An entrypoint names a module (dotted import path, or a ``.py`` file path) and an attribute in it:
a function or class called with no arguments, or a ready workload object.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schedsearch.trainers.catalog import BUILTIN_WORKLOAD_NAMES
from schedsearch.trainers.workloads.base import Workload
from schedsearch.trainers.workloads.charlm import CharLM
from schedsearch.trainers.workloads.digits import DigitsCNN, DigitsMLP
from schedsearch.trainers.workloads.regression import Regression

_BUILTINS: dict[str, Callable[[], Workload]] = {
    "digits-cnn": DigitsCNN,
    "digits-mlp": DigitsMLP,
    "charlm": CharLM,
    "regression": Regression,
}
BUILTIN_WORKLOADS: list[str] = list(_BUILTINS)
if tuple(BUILTIN_WORKLOADS) != BUILTIN_WORKLOAD_NAMES:  # one list of names, two import costs
    raise ImportError(f"catalog names {BUILTIN_WORKLOAD_NAMES} differ from {BUILTIN_WORKLOADS}")
_MEMBERS = ("build_model", "make_optimizer", "train_batches", "loss", "evaluate")


class WorkloadError(ValueError):
    """A workload reference that cannot be turned into a workload."""


class UnknownWorkloadError(WorkloadError):
    """Not a built-in name (and not an entrypoint)."""


class WorkloadLoadError(WorkloadError):
    """An entrypoint that does not import, or does not give a valid workload."""


def is_entrypoint(ref: str) -> bool:
    return ":" in ref


def get_workload(ref: str) -> Workload:
    """The workload ``ref`` names: a built-in (see ``BUILTIN_WORKLOADS``) or ``module:function``."""
    if not isinstance(ref, str) or not ref.strip():
        raise UnknownWorkloadError(f"workload: expected a name, got {ref!r}; {_choices()}")
    if is_entrypoint(ref):
        return check_workload(_call(_resolve_entrypoint(ref), ref), ref)
    factory = _BUILTINS.get(ref)
    if factory is None:
        raise UnknownWorkloadError(f"workload: unknown built-in {ref!r}; {_choices()}")
    return factory()


def _choices() -> str:
    return f"built-ins: {', '.join(BUILTIN_WORKLOADS)}; or an entrypoint 'package.module:function'"


def _resolve_entrypoint(ref: str) -> Any:
    module_ref, _, attribute = ref.rpartition(":")
    if not module_ref or not attribute:
        raise WorkloadLoadError(f"workload: entrypoint {ref!r} must look like 'module:function'")
    try:
        module = _import(module_ref)
    except Exception as error:  # any import-time failure is the user's module failing to load
        raise WorkloadLoadError(f"workload: cannot import {module_ref!r}: {error}") from error
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise WorkloadLoadError(f"workload: {module_ref!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def _import(module_ref: str) -> Any:
    if not module_ref.endswith(".py"):
        return importlib.import_module(module_ref)
    path = Path(module_ref).resolve()
    name = f"schedsearch_user_workload_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(f"no Python file at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


def _call(target: Any, ref: str) -> Any:
    if not callable(target):
        return target
    try:
        return target()
    except Exception as error:
        raise WorkloadLoadError(f"workload: calling {ref!r} failed: {error}") from error


def check_workload(candidate: Any, ref: str) -> Workload:
    """``candidate`` if it has every member of ``Workload`` with sane values, else a
    ``WorkloadLoadError`` naming what is wrong."""
    missing = [
        m
        for m in ("name", "default_lr", "default_steps", "batch_size", *_MEMBERS)
        if not hasattr(candidate, m)
    ]
    if missing:
        raise WorkloadLoadError(
            f"workload: {ref!r} gave a {type(candidate).__name__} without {', '.join(missing)}"
        )
    problems = []
    if not isinstance(candidate.name, str) or not candidate.name:
        problems.append(f"name must be a non-empty string, got {candidate.name!r}")
    lr = candidate.default_lr
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        problems.append(f"default_lr must be a finite number > 0, got {lr!r}")
    for field in ("default_steps", "batch_size"):
        value = getattr(candidate, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{field} must be an integer >= 1, got {value!r}")
    problems += [f"{m} must be callable" for m in _MEMBERS if not callable(getattr(candidate, m))]
    if problems:
        raise WorkloadLoadError(f"workload: {ref!r}: " + "; ".join(problems))
    return candidate  # type: ignore[no-any-return]
