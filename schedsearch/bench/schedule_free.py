"""Schedule-Free training (Defazio et al. 2024, the ``schedulefree`` package): no schedule at all,
the alternative a user might pick instead of any schedule search.

The workload's own optimizer is swapped for its schedule-free form with the same hyperparameters
(SGD with momentum -> ``SGDScheduleFree``, Adam/AdamW -> ``AdamWScheduleFree``), the LR held
constant after the optimizer's built-in warm-up. Its LRs are the grid's peaks times the package's
documented starting point for that optimizer (``LR_SCALE``): Schedule-Free SGD steps its ``z``
sequence without momentum's 1/(1 - beta) amplification, so the same nominal LR moves it about ten
times less.

Schedule-Free keeps two weight sequences: steps are taken at one (``optimizer.train()``) while the
weights worth evaluating are the average that ``optimizer.eval()`` puts in place, so every
evaluation switches to eval mode and back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import schedulefree
import torch
from torch import nn
from torch.nn import Parameter

from schedsearch.bench import curves
from schedsearch.trainers import harness
from schedsearch.trainers.workloads import Workload, get_workload
from schedsearch.trainers.workloads.base import BatchStream

# The package's guidance for a first LR, against the LR that works with a schedule: SGD "10x to 50x
# larger", AdamW "1x to 10x larger". The low end of each, so the grid's peaks span the range.
LR_SCALE = {"sgd": 10.0, "adamw": 1.0}


def optimizer_kind(reference: torch.optim.Optimizer) -> str:
    """Which schedule-free optimizer ``reference`` maps to ("sgd" or "adamw")."""
    if isinstance(reference, torch.optim.SGD):
        return "sgd"
    if isinstance(reference, torch.optim.Adam):  # AdamW is an Adam subclass
        return "adamw"
    raise ValueError(f"no schedule-free form of {type(reference).__name__}")


def lr_scale(workload: Workload) -> float:
    """``LR_SCALE`` of the workload's optimizer (built on a throwaway parameter to see its type)."""
    probe = workload.make_optimizer([Parameter(torch.zeros(1))], workload.default_lr)
    return LR_SCALE[optimizer_kind(probe)]


def schedule_free_optimizer(reference: torch.optim.Optimizer, warmup_steps: int) -> Any:
    """The schedule-free form of ``reference`` (same parameter groups, LRs and hyperparameters),
    left in train mode. Raises ``ValueError`` for an optimizer it has no form of."""
    groups = [{"params": g["params"], "lr": g["lr"]} for g in reference.param_groups]
    settings = reference.defaults
    optimizer: Any
    kind = optimizer_kind(reference)
    if kind == "sgd":
        momentum = float(settings.get("momentum", 0.0))
        if not 0 < momentum < 1:  # Schedule-Free SGD's averaging is defined through momentum
            raise ValueError(f"schedule-free SGD needs momentum in (0, 1), got {momentum}")
        optimizer = schedulefree.SGDScheduleFree(
            groups,
            lr=settings["lr"],
            momentum=momentum,
            weight_decay=settings.get("weight_decay", 0.0),
            warmup_steps=warmup_steps,
        )
    else:
        decoupled = isinstance(reference, torch.optim.AdamW)
        if not decoupled and settings.get("weight_decay", 0.0):
            raise ValueError("Adam with L2 weight decay has no schedule-free form (AdamW has)")
        optimizer = schedulefree.AdamWScheduleFree(
            groups,
            lr=settings["lr"],
            betas=settings["betas"],
            eps=settings["eps"],
            weight_decay=settings.get("weight_decay", 0.0),
            warmup_steps=warmup_steps,
        )
    optimizer.train()  # steps raise unless the optimizer is in train mode
    return optimizer


class ScheduleFreeWorkload:
    """``workload`` with its optimizer replaced by the schedule-free form; all else its own."""

    def __init__(self, workload: Workload, warmup_steps: int) -> None:
        self.base, self.warmup_steps = workload, warmup_steps
        self.name, self.default_lr = workload.name, workload.default_lr
        self.default_steps, self.batch_size = workload.default_steps, workload.batch_size

    def build_model(self, seed: int) -> nn.Module:
        return self.base.build_model(seed)

    def make_optimizer(self, params: Iterable[Parameter], lr: float) -> torch.optim.Optimizer:
        reference = self.base.make_optimizer(params, lr)
        return schedule_free_optimizer(reference, self.warmup_steps)  # type: ignore[no-any-return]

    def train_batches(self, seed: int) -> BatchStream:
        return self.base.train_batches(seed)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.base.loss(model, batch)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return self.base.evaluate(model)


def evaluate_averaged(trainer: harness.Trainer) -> dict[str, float]:
    """The trainer's metrics at the averaged weights: eval mode for the measurement, then back."""
    optimizer: Any = trainer.optimizer
    optimizer.eval()
    try:
        return trainer.evaluate()
    finally:
        optimizer.train()


def train_schedule_free(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec['steps']`` steps at constant ``spec['peakLR']`` after ``spec['warmupSteps']`` of
    the optimizer's own warm-up, validation loss (averaged weights) every ``spec['evalEvery']``."""
    work = ScheduleFreeWorkload(get_workload(spec["workload"]), spec["warmupSteps"])
    trainer = harness.Trainer(work, seed=spec["seed"])
    peak, steps = float(spec["peakLR"]), int(spec["steps"])
    curve = curves.train_and_evaluate(
        trainer,
        lambda _: peak,
        steps,
        spec["evalEvery"],
        evaluate=lambda: evaluate_averaged(trainer),
    )
    return curves.curve_result(trainer, curve, steps)
