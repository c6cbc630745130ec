"""What runs inside each Tune trial: a PBT member, the AutoLRS trainer, or an HDET replica group.

Each trial function rebuilds the search from its config (the spec travels as plain data), runs
the strategy's runner from ``schedsearch.trainers`` in a thread while its own thread pumps the
runner's reports to the driver (:func:`messages.pump`), and resumes from the checkpoints in the
run directory when there are any. A single-trial strategy attaches its ``SearchResult`` to its
last result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schedsearch.api import spec as api
from schedsearch.engine import messages, tuning
from schedsearch.trainers import schedules
from schedsearch.trainers.strategies.base import SearchResult

RESULT_KEY = "searchResult"


def checkpoint_dir(run_dir: Path) -> Path:
    """Where a search's trials keep their checkpoints."""
    return run_dir / "checkpoints"


def result_from_dict(data: dict[str, Any]) -> SearchResult:
    """Inverse of ``SearchResult.to_dict``."""
    objective = data.get("bestObjective")
    return SearchResult(
        strategy=data["strategy"],
        workload=data["workload"],
        best_schedule=schedules.Schedule.from_dict(data["bestSchedule"]),
        best_objective=float("nan") if objective is None else float(objective),
        best_member=int(data["bestMember"]),
        member_steps=int(data["memberSteps"]),
        history=list(data.get("history", [])),
        wall_seconds=float(data.get("wallSeconds", 0.0)),
    )


def _search(job: dict[str, Any]) -> api.ScheduleSearch:
    return api.ScheduleSearch.model_validate(job["search"])


def _limit_threads() -> None:
    """Torch uses as many threads as Ray gave this trial CPUs (at least one)."""
    import os

    import torch

    threads = max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    torch.set_num_threads(threads)


# -- HDET ----------------------------------------------------------------------------------------


def hdet_trial(config: dict[str, Any]) -> None:
    """One HDET run: ``replicas`` worker processes started by ``run_hdet``; it resumes from its
    checkpoint when the run directory has one."""
    from schedsearch.trainers.strategies.hdet.runner import run_hdet

    job = tuning.trial_config(config)
    spec = _search(job).spec
    assert spec.strategy.hdet is not None
    reporter = messages.TrialReporter()
    result = messages.pump(
        lambda: run_hdet(
            spec.strategy.hdet,  # type: ignore[arg-type]
            spec.workload.ref,
            total_steps=spec.budget.steps,
            base=spec.base_schedule,
            lr_bounds=(spec.lr_bounds.min, spec.lr_bounds.max),
            seed=spec.seed,
            out_dir=checkpoint_dir(Path(job["runDir"])),
            reporter=reporter,
        ),
        reporter,
    )
    reporter.attach(RESULT_KEY, result.to_dict())
    reporter.flush()


# -- AutoLRS -------------------------------------------------------------------------------------


def autolrs_trial(config: dict[str, Any]) -> None:
    """The single AutoLRS trainer, resumed from its checkpoint directory when it has one."""
    raise NotImplementedError("AutoLRS trial: waiting for the AutoLRS runner")


# -- PBT -----------------------------------------------------------------------------------------


def pbt_member(config: dict[str, Any]) -> None:
    """One PBT member, reporting to the coordinator actor named in its config."""
    raise NotImplementedError("PBT member trial: waiting for the PBT member runner")
