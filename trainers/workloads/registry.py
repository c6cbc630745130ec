"""Finding a workload by reference: a built-in name, or a user entrypoint ``module:function``.

An entrypoint names a module (dotted import path, or a ``.py`` file path) and an attribute in it:
a function or class called with no arguments, or a ready workload object. A user workload is
handed to the harness as an ``EntrypointWorkload``: optional attributes get their defaults, and
batches that are a plain iterable are made resumable (``base.ReplayBatchStream``).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import Parameter

from schedsearch.trainers.catalog import BUILTIN_WORKLOAD_NAMES
from schedsearch.trainers.workloads.base import (
    DEFAULT_LR,
    BatchStream,
    ReplayBatchStream,
    Workload,
    resumable,
)
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
# The metric every search optimises (the spec's objective.metric; the only one there is).
OBJECTIVE_METRIC = "val_loss"


class WorkloadError(ValueError):
    """A workload reference that cannot be turned into a workload."""


class UnknownWorkloadError(WorkloadError):
    """Not a built-in name (and not an entrypoint)."""


class WorkloadLoadError(WorkloadError):
    """An entrypoint that does not import, or does not give a valid workload."""


_IMPORT_PROBLEM = "cannot import "


def is_import_problem(message: str) -> bool:
    """Whether a problem of ``entrypoint_report`` is the module not importing at all."""
    return message.startswith(_IMPORT_PROBLEM)


def is_entrypoint(ref: str) -> bool:
    return ":" in ref


def get_workload(ref: str) -> Workload:
    """The workload ``ref`` names: a built-in (see ``BUILTIN_WORKLOADS``) or ``module:function``."""
    if not isinstance(ref, str) or not ref.strip():
        raise UnknownWorkloadError(f"workload: expected a name, got {ref!r}; {_choices()}")
    if is_entrypoint(ref):
        return EntrypointWorkload(check_workload(_call(_resolve_entrypoint(ref), ref), ref), ref)
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
        raise WorkloadLoadError(
            f"workload: {_IMPORT_PROBLEM}{module_ref!r}: {error}{_import_hint(module_ref, error)}"
        ) from error
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise WorkloadLoadError(f"workload: {module_ref!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def _import_hint(module_ref: str, error: Exception) -> str:
    """How to make a module that was not found importable (the usual cause: PYTHONPATH)."""
    if module_ref.endswith(".py"):
        return " (a .py path is read relative to the current directory)"
    if not isinstance(error, ModuleNotFoundError) or error.name is None:
        return ""
    if not module_ref.startswith(error.name):
        return ""  # the module was found; something it imports is missing
    top = module_ref.split(".")[0]
    return (
        f"; put the folder that holds {top!r} on PYTHONPATH "
        f"(PYTHONPATH=path/to/folder schedsearch ...), or name the file: path/to/{top}.py:function"
    )


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


def check_workload(candidate: Any, ref: str) -> Any:
    """``candidate`` if it has every member a workload needs with sane values, else a
    ``WorkloadLoadError`` naming every problem at once."""
    problems = [f"no {m}" for m in _MEMBERS if not hasattr(candidate, m)]
    problems += [
        f"{m} must be callable"
        for m in _MEMBERS
        if hasattr(candidate, m) and not callable(getattr(candidate, m))
    ]
    name = getattr(candidate, "name", ref)
    if not isinstance(name, str) or not name:
        problems.append(f"name must be a non-empty string, got {name!r}")
    lr = getattr(candidate, "default_lr", DEFAULT_LR)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        problems.append(f"default_lr must be a finite number > 0, got {lr!r}")
    if problems:
        raise WorkloadLoadError(
            f"workload: {ref!r} gave a {type(candidate).__name__} with problems: "
            + "; ".join(problems)
        )
    return candidate


class EntrypointWorkload:
    """A user's workload as the harness sees it: ``name`` defaults to the entrypoint,
    ``default_lr`` to ``DEFAULT_LR``, and ``train_batches`` always gives a resumable stream."""

    def __init__(self, inner: Any, ref: str) -> None:
        self.inner, self.ref = inner, ref
        self.name: str = getattr(inner, "name", ref)
        self.default_lr: float = float(getattr(inner, "default_lr", DEFAULT_LR))

    def build_model(self, seed: int) -> nn.Module:
        return self.inner.build_model(seed)  # type: ignore[no-any-return]

    def make_optimizer(self, params: Iterable[Parameter], lr: float) -> torch.optim.Optimizer:
        return self.inner.make_optimizer(params, lr)  # type: ignore[no-any-return]

    def train_batches(self, seed: int) -> BatchStream:
        return resumable(self.inner.train_batches, seed)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.inner.loss(model, batch)  # type: ignore[no-any-return]

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return self.inner.evaluate(model)  # type: ignore[no-any-return]


def entrypoint_report(ref: str) -> tuple[list[str], list[str]]:
    """(problems, notes) of a user entrypoint, for ``schedsearch validate``: it imports, gives a
    workload, and ``train_batches(0)`` yields a batch. Runs the user's code (and loads its data),
    which is what a search would do first."""
    try:
        workload = get_workload(ref)
    except WorkloadError as err:
        return [str(err).removeprefix("workload: ")], []
    assert isinstance(workload, EntrypointWorkload)
    notes = (
        [f"default_lr not set: the optimizer is built with {DEFAULT_LR:g}"]
        if not hasattr(workload.inner, "default_lr")
        else []
    )
    try:
        stream = workload.train_batches(0)
        batch = next(stream)
    except Exception as err:  # the user's data code, whatever it raises
        return [f"train_batches(0) failed: {type(err).__name__}: {err}"], notes
    problems = _one_step_problems(workload, batch)
    if isinstance(stream, ReplayBatchStream):
        notes.append(
            "train_batches returns a plain iterable, not a BatchStream (state_dict/"
            "load_state_dict): it is wrapped so a restored member replays the batches before "
            "its step (extra data loading on every resume)"
        )
    return problems, notes


def _one_step_problems(workload: EntrypointWorkload, batch: Any) -> list[str]:
    """What goes wrong on a first step: the model builds, the loss of a batch is a scalar
    tensor, and ``evaluate`` gives the objective (``val_loss``) as a finite number."""
    step = "build_model(0)"
    try:
        model = workload.build_model(0)
        step = "loss(model, batch)"
        loss = workload.loss(model, batch)
        step = "evaluate(model)"
        metrics = workload.evaluate(model)
    except Exception as err:  # the user's code, whatever it raises
        return [f"{step} failed: {type(err).__name__}: {err}"]
    problems = []
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        problems.append(f"loss must return a scalar tensor, got {type(loss).__name__}")
    value = metrics.get(OBJECTIVE_METRIC) if isinstance(metrics, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        problems.append(
            f"evaluate must return a dict with {OBJECTIVE_METRIC!r} as a finite number, "
            f"got {metrics!r}"
        )
    return problems
