"""Training one run for the report's curves: S steps at a schedule's LRs, validation loss every E
steps. Grid cells, replays, Optuna trials and Schedule-Free runs all go through
``train_and_evaluate``, so their curves are measured the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schedsearch.trainers import harness
from schedsearch.trainers.schedules import Schedule
from schedsearch.trainers.workloads import get_workload

# Told each evaluation (step, val_loss); returns True to stop the run there (a pruned trial).
OnEval = Callable[[int, float], bool]


def train_and_evaluate(
    trainer: harness.Trainer,
    lr_fn: Callable[[int], float],
    steps: int,
    every: int,
    *,
    evaluate: Callable[[], dict[str, float]] | None = None,
    on_eval: OnEval | None = None,
) -> list[list[float]]:
    """Train up to ``steps`` steps, evaluating after every ``every`` (``evaluate`` defaults to the
    trainer's own); stops at a divergence or when ``on_eval`` says so. Returns ``[step, loss]``
    pairs."""
    measure = evaluate or trainer.evaluate
    curve: list[list[float]] = []
    while trainer.global_step < steps and not trainer.diverged:
        trainer.train(min(every, steps - trainer.global_step), lr_fn)
        if trainer.diverged:
            break
        loss = measure()["val_loss"]
        curve.append([trainer.global_step, loss])
        if on_eval is not None and on_eval(trainer.global_step, loss):
            break
    return curve


def curve_result(trainer: harness.Trainer, curve: list[list[float]], steps: int) -> dict[str, Any]:
    """A finished run as the cache stores it; ``final`` is None unless all ``steps`` trained."""
    complete = not trainer.diverged and trainer.global_step == steps
    return {
        "curve": curve,
        "final": curve[-1][1] if complete and curve else None,
        "diverged": trainer.diverged,
        "stepsTrained": trainer.global_step,
        "device": str(trainer.device),
    }


def train_curve(spec: dict[str, Any]) -> dict[str, Any]:
    """Train ``spec['schedule']`` from scratch with ``spec['seed']``, evaluating every E steps."""
    schedule = Schedule.from_dict(spec["schedule"])
    trainer = harness.Trainer(get_workload(spec["workload"]), seed=spec["seed"])
    curve = train_and_evaluate(trainer, schedule.lr_at, schedule.total_steps, spec["evalEvery"])
    return curve_result(trainer, curve, schedule.total_steps)
