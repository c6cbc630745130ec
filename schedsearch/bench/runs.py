"""The runs of a profile as task lists, and the choices by which earlier results decide later runs:
the tuned grid cell (chosen on selection seeds; its evaluation-seed runs give the target), each
search's found schedule (its replays) and cost (the Optuna budget), Optuna's best trial (its
replays), the Schedule-Free peak (chosen on selection seeds, then run with the evaluation seeds).

Pure given results (task key -> result). The plan, the follow-ups while running and the summary
all call these, so they agree on which run is which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from schedsearch.bench import quality, tasks
from schedsearch.bench.profiles import Profile, WorkloadPlan
from schedsearch.bench.quality import GridCell, RunCurve
from schedsearch.trainers.schedules import Schedule
from schedsearch.trainers.workloads import get_workload

Results = Mapping[str, Mapping[str, Any]]
SCHEDULE_FREE = "schedule-free"

# --- task lists ----------------------------------------------------------------------------------


def grid_tasks(profile: Profile, plan: WorkloadPlan) -> dict[tuple[str, float], list[tasks.Task]]:
    """``{(family, peak factor): one curve task per selection seed}`` in grid order."""
    grid: dict[tuple[str, float], list[tasks.Task]] = {}
    for family in profile.families:
        for factor in profile.peak_factors:
            schedule = tasks.grid_schedule(profile, plan, family, factor)
            grid[(family, factor)] = [
                tasks.curve_task(
                    plan, schedule, seed, f"grid {family} x{factor:g} seed {seed}", "grid"
                )
                for seed in profile.selection_seeds
            ]
    return grid


def target_tasks(
    profile: Profile, plan: WorkloadPlan, family: str, factor: float
) -> list[tasks.Task]:
    """The tuned cell trained with each evaluation seed: their mean is the target."""
    schedule = tasks.grid_schedule(profile, plan, family, factor)
    label = f"target {family} x{factor:g} seed"
    return [
        tasks.curve_task(plan, schedule, seed, f"{label} {seed}", "target")
        for seed in profile.eval_seeds
    ]


def search_tasks(profile: Profile, plan: WorkloadPlan) -> dict[str, tasks.Task]:
    return {s: tasks.search_task(profile, plan, s) for s in profile.strategies}


def replay_tasks(
    profile: Profile, plan: WorkloadPlan, name: str, schedule: Schedule
) -> list[tasks.Task]:
    """A found schedule trained from scratch with each evaluation seed."""
    return [
        tasks.curve_task(plan, schedule, seed, f"replay {name} seed {seed}", "replay")
        for seed in profile.eval_seeds
    ]


def optuna_name(strategy: str) -> str:
    """The report's name of the Optuna row at ``strategy``'s cost."""
    return f"optuna @ {strategy} cost"


def optuna_run_name(task: tasks.Task) -> str:
    """An Optuna run by its budget (two strategies with the same cost share one run)."""
    return f"optuna {task.spec['budget']} steps"


def optuna_task(
    profile: Profile, plan: WorkloadPlan, strategy: str, search: Mapping[str, Any] | None
) -> tasks.Task | None:
    """Optuna for the member-steps ``strategy``'s finished search spent (None: no search)."""
    if search is None or "memberSteps" not in search:
        return None
    return tasks.optuna_task(profile, plan, strategy, int(search["memberSteps"]))


def schedule_free_selection(profile: Profile, plan: WorkloadPlan) -> dict[float, list[tasks.Task]]:
    """``{peak factor: one Schedule-Free task per selection seed}``."""
    return {
        factor: [
            tasks.schedule_free_task(profile, plan, factor, seed, "schedule-free selection")
            for seed in profile.selection_seeds
        ]
        for factor in profile.peak_factors
    }


def schedule_free_eval(profile: Profile, plan: WorkloadPlan, factor: float) -> list[tasks.Task]:
    return [
        tasks.schedule_free_task(profile, plan, factor, seed, SCHEDULE_FREE)
        for seed in profile.eval_seeds
    ]


def overhead_tasks(profile: Profile) -> list[tasks.Task]:
    return [
        *(tasks.loop_task(profile, w) for w in profile.loop_workloads),
        tasks.hdet_timing_task(profile),
    ]


# --- results -------------------------------------------------------------------------------------


def found_schedule(result: Mapping[str, Any] | None) -> Schedule | None:
    """The best schedule of a finished search or Optuna run (None: failed, or nothing found)."""
    data = (result or {}).get("bestSchedule")
    return Schedule.from_dict(data) if isinstance(data, dict) else None


def run_curve(result: Mapping[str, Any] | None, seed: int) -> RunCurve | None:
    """A finished curve run as a ``RunCurve`` (None when it is missing or failed)."""
    if result is None or "curve" not in result:
        return None
    curve = [
        (int(step), float(loss) if loss is not None else math.inf) for step, loss in result["curve"]
    ]
    final = result.get("final")
    return RunCurve(seed, curve, None if final is None else float(final))


def runs_of(results: Results, task_list: list[tasks.Task]) -> list[RunCurve]:
    runs = [run_curve(results.get(t.key), t.spec["seed"]) for t in task_list]
    return [r for r in runs if r is not None]


def grid_cells(profile: Profile, plan: WorkloadPlan, results: Results) -> list[GridCell]:
    """The grid's cells over the selection seeds (cells with no finished run left out)."""
    default_lr = get_workload(plan.workload).default_lr
    cells = []
    for (family, factor), task_list in grid_tasks(profile, plan).items():
        runs = runs_of(results, task_list)
        if runs:
            cells.append(GridCell(family, factor, default_lr * factor, tuple(runs)))
    return cells


def tuned_cell(profile: Profile, plan: WorkloadPlan, results: Results) -> GridCell | None:
    """The cell with the lowest selection-seed mean (None: no grid run finished)."""
    cells = grid_cells(profile, plan, results)
    return quality.select_baseline(cells) if cells else None


def schedule_free_cells(profile: Profile, plan: WorkloadPlan, results: Results) -> list[GridCell]:
    """Schedule-Free at each peak over the selection seeds, as grid cells of one family."""
    cells = []
    for factor, task_list in schedule_free_selection(profile, plan).items():
        runs = runs_of(results, task_list)
        if runs:
            peak_lr = task_list[0].spec["peakLR"]
            cells.append(GridCell(SCHEDULE_FREE, factor, peak_lr, tuple(runs)))
    return cells


def schedule_free_peak(profile: Profile, plan: WorkloadPlan, results: Results) -> GridCell | None:
    """The Schedule-Free peak with the lowest selection-seed mean (None: nothing finished)."""
    cells = schedule_free_cells(profile, plan, results)
    return quality.select_baseline(cells) if cells else None
