"""The equal-compute baseline: what an Optuna user gets for the member-steps a strategy's search
spent. TPE over (family, log peak LR), S-step trials reporting validation loss every E steps to a
median pruner, until the budget is spent; the best finished trial is the schedule it found.

The budget is never exceeded: a trial starts only when a whole one (S steps) still fits, and a
pruned trial counts the steps it trained before it was stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from schedsearch.bench import curves, profiles
from schedsearch.trainers import families, harness
from schedsearch.trainers.schedules import Schedule
from schedsearch.trainers.workloads import get_workload


@dataclass(frozen=True)
class TrialOutcome:
    """One trial's training: steps trained (fewer than S when pruned or diverged), the final
    validation loss (None unless it trained all S steps), and whether the pruner stopped it."""

    steps: int
    final: float | None
    pruned: bool


# (family, peak LR, told each evaluation and returning True to stop) -> what the trial did
TrainTrial = Callable[[str, float, curves.OnEval], TrialOutcome]


@dataclass(frozen=True)
class SearchSpace:
    families: Sequence[str]
    lr_bounds: tuple[float, float]


def make_study(sampler_seed: int, tpe_startup: int, prune_startup: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial otherwise
    return optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=tpe_startup),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=prune_startup),
    )


def search(
    study: optuna.Study,
    space: SearchSpace,
    *,
    budget: int,
    trial_steps: int,
    train_trial: TrainTrial,
) -> dict[str, Any]:
    """Ask/tell trials until no whole trial fits in ``budget`` steps; returns every trial, the
    steps spent and the best finished trial (None if no trial finished with a finite loss)."""
    spent, trials = 0, list[dict[str, Any]]()
    while budget - spent >= trial_steps:
        trial = study.ask()
        family = trial.suggest_categorical("family", list(space.families))
        peak = trial.suggest_float("peakLR", *space.lr_bounds, log=True)
        outcome = train_trial(str(family), peak, _reporter(trial))
        spent += outcome.steps
        if outcome.pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:  # a diverged trial finished with an infinitely bad loss: TPE learns from it
            study.tell(trial, math.inf if outcome.final is None else outcome.final)
        trials.append(
            {
                "number": trial.number,
                "family": family,
                "peakLR": peak,
                "steps": outcome.steps,
                "pruned": outcome.pruned,
                "final": outcome.final,
            }
        )
    finished = [t for t in trials if t["final"] is not None and math.isfinite(t["final"])]
    best = min(finished, key=lambda t: t["final"]) if finished else None
    return {"budgetSteps": budget, "spentSteps": spent, "trials": trials, "best": best}


def _reporter(trial: optuna.Trial) -> curves.OnEval:
    def report(step: int, loss: float) -> bool:
        trial.report(loss if math.isfinite(loss) else math.inf, step)
        return bool(trial.should_prune())  # numpy bool from some pruners

    return report


def trial_schedule(spec: dict[str, Any], family: str, peak_lr: float) -> Schedule:
    """A trial's schedule: the grid's rules (warm-up, decay) for ``family`` at ``peak_lr``."""
    schedule = families.build_schedule(
        profiles.grid_config_for(spec["warmupFraction"], family, peak_lr, spec["steps"]),
        spec["steps"],
    )
    return schedule.with_provenance(source="optuna", family=family, peakLR=peak_lr)


def trainer_trials(spec: dict[str, Any]) -> TrainTrial:
    """Trials that train the workload for real, each from scratch with ``spec['seed']``."""
    workload = get_workload(spec["workload"])

    def train(family: str, peak_lr: float, on_eval: curves.OnEval) -> TrialOutcome:
        schedule = trial_schedule(spec, family, peak_lr)
        trainer = harness.Trainer(workload, seed=spec["seed"])
        stopped = False

        def told(step: int, loss: float) -> bool:
            nonlocal stopped
            stopped = on_eval(step, loss)
            return stopped

        curve = curves.train_and_evaluate(
            trainer, schedule.lr_at, spec["steps"], spec["evalEvery"], on_eval=told
        )
        final = curves.curve_result(trainer, curve, spec["steps"])["final"]
        pruned = stopped and final is None
        return TrialOutcome(trainer.global_step, None if pruned else final, pruned)

    return train


def run_optuna(spec: dict[str, Any]) -> dict[str, Any]:
    """The whole baseline for one budget (a task's spec); the best trial's schedule is
    ``bestSchedule``, to be replayed like a strategy's."""
    study = make_study(spec["samplerSeed"], spec["tpeStartup"], spec["pruneStartup"])
    space = SearchSpace(spec["families"], (spec["lrBounds"][0], spec["lrBounds"][1]))
    result = search(
        study,
        space,
        budget=spec["budget"],
        trial_steps=spec["steps"],
        train_trial=trainer_trials(spec),
    )
    best = result["best"]
    if best is not None:
        schedule = trial_schedule(spec, best["family"], best["peakLR"])
        result["bestSchedule"] = schedule.with_provenance(trial=best["number"]).to_dict()
    return result
