"""The plan of a profile: every run it needs, which are already cached, and how long the rest take.

The time estimate comes from a short measurement of each workload on this machine (steps and
evaluations, wall-clock and CPU time). Wall-clock reflects the machine as it is now, load included;
CPU time is what the same runs cost on an idle machine. Parallel runs are assumed to share
``jobs`` workers perfectly; timing runs go alone, after the rest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedsearch.bench import runs, tasks
from schedsearch.bench.cache import RunCache
from schedsearch.bench.overhead import Stopwatch
from schedsearch.bench.profiles import Profile, WorkloadPlan
from schedsearch.trainers import harness
from schedsearch.trainers.schedules import Schedule
from schedsearch.trainers.workloads import get_workload

PROBE_STEPS, PROBE_EVALS = 30, 3


@dataclass(frozen=True)
class Speed:
    """Seconds per training step and per evaluation of one workload, wall-clock and CPU."""

    step_wall: float
    step_cpu: float
    eval_wall: float
    eval_cpu: float

    def seconds(self, task: tasks.Task, *, cpu: bool = False) -> float:
        step, evaluation = (
            (self.step_cpu, self.eval_cpu) if cpu else (self.step_wall, self.eval_wall)
        )
        return task.steps * step + task.evals * evaluation


def measure_speed(workload: str, threads: int) -> Speed:
    """A few steps and evaluations of ``workload`` with the threads each benchmark job uses."""
    work = get_workload(workload)
    trainer = harness.Trainer(work, seed=0, num_threads=threads)
    trainer.train(5, lambda _: work.default_lr)
    with Stopwatch() as steps:
        trainer.train(PROBE_STEPS, lambda _: work.default_lr)
    with Stopwatch() as evals:
        for _ in range(PROBE_EVALS):
            trainer.evaluate()
    return Speed(
        steps.wall / PROBE_STEPS,
        steps.cpu / PROBE_STEPS,
        evals.wall / PROBE_EVALS,
        evals.cpu / PROBE_EVALS,
    )


# --- the runs of a profile -----------------------------------------------------------------------


@dataclass
class BenchPlan:
    """The parallel runs known from the start (grid selection runs, searches, Schedule-Free
    selection runs), the runs that follow from results (target, replays, Optuna and its replays,
    Schedule-Free evaluation: stand-ins where the results are not in yet), and the timing runs;
    ``cached`` holds the keys already done."""

    profile: Profile
    parallel: list[tasks.Task]
    dependent: list[tasks.Task]
    exclusive: list[tasks.Task]
    cached: set[str] = field(default_factory=set)

    @property
    def all_tasks(self) -> list[tasks.Task]:
        return [*self.parallel, *self.dependent, *self.exclusive]


def build_plan(profile: Profile, cache: RunCache) -> BenchPlan:
    """Every run of ``profile``. A run that depends on a result not in the cache yet is planned
    as a stand-in of the same cost (a constant schedule, the first grid cell, the search's
    estimated member-steps)."""
    parallel: list[tasks.Task] = []
    dependent: list[tasks.Task] = []
    for plan in profile.workloads:
        grid = runs.grid_tasks(profile, plan)
        free = runs.schedule_free_selection(profile, plan)
        searches = runs.search_tasks(profile, plan)
        parallel += [t for cell in grid.values() for t in cell]
        parallel += searches.values()
        parallel += [t for peak in free.values() for t in peak]
        dependent += _target_runs(profile, plan, cache, grid)
        dependent += _schedule_free_runs(profile, plan, cache, free)
        for strategy, search in searches.items():
            dependent += _search_followups(profile, plan, cache, strategy, search)
    bench = BenchPlan(profile, parallel, dependent, runs.overhead_tasks(profile))
    bench.cached = {t.key for t in bench.all_tasks if cache.get(t.key) is not None}
    return bench


def _cached(cache: RunCache, group: list[tasks.Task]) -> dict[str, Any] | None:
    """The group's results when every one of them is in the cache (None otherwise)."""
    results = {t.key: cache.get(t.key) for t in group}
    return None if any(r is None for r in results.values()) else results


def _target_runs(
    profile: Profile,
    plan: WorkloadPlan,
    cache: RunCache,
    grid: dict[tuple[str, float], list[tasks.Task]],
) -> list[tasks.Task]:
    done = _cached(cache, [t for cell in grid.values() for t in cell])
    chosen = runs.tuned_cell(profile, plan, done) if done else None
    family, factor = (chosen.family, chosen.peak_factor) if chosen else next(iter(grid))
    return runs.target_tasks(profile, plan, family, factor)


def _schedule_free_runs(
    profile: Profile, plan: WorkloadPlan, cache: RunCache, free: dict[float, list[tasks.Task]]
) -> list[tasks.Task]:
    done = _cached(cache, [t for peak in free.values() for t in peak])
    chosen = runs.schedule_free_peak(profile, plan, done) if done else None
    return runs.schedule_free_eval(
        profile, plan, chosen.peak_factor if chosen else next(iter(free))
    )


def _search_followups(
    profile: Profile, plan: WorkloadPlan, cache: RunCache, strategy: str, search: tasks.Task
) -> list[tasks.Task]:
    """Replays of the found schedule, Optuna at the search's cost, and Optuna's replays."""
    stand_in = Schedule.constant(1.0, plan.steps)
    found = cache.get(search.key)
    schedule = runs.found_schedule(found) or stand_in
    optuna = runs.optuna_task(profile, plan, strategy, found) or tasks.optuna_task(
        profile, plan, strategy, search.steps
    )
    optuna_schedule = runs.found_schedule(cache.get(optuna.key)) or stand_in
    return [
        *runs.replay_tasks(profile, plan, strategy, schedule),
        optuna,
        *runs.replay_tasks(profile, plan, runs.optuna_run_name(optuna), optuna_schedule),
    ]


# --- estimates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Seconds still to run (wall-clock at today's speed, and CPU time), and what is done."""

    wall_seconds: float
    cpu_seconds: float
    runs_total: int
    runs_cached: int
    by_workload: dict[str, dict[str, float]]
    # The whole profile (cached runs included) by what the report uses each run for: runs, steps
    # and CPU seconds of each run on its own (before parallel jobs share the machine).
    by_group: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def profile_cpu_seconds(self) -> float:
        return sum(row["cpu"] for row in self.by_group.values())


@dataclass(frozen=True)
class Rates:
    """What a run costs: each workload's measured speed, and what each search took in the report
    already in the output folder (``previous_searches``). A search's processes, checkpoints and
    bookkeeping cost far more than its training steps, so a search counts the longer of the two."""

    speeds: dict[str, Speed]
    searches: dict[tuple[str, str], float] = field(default_factory=dict)

    def seconds(self, task: tasks.Task, *, cpu: bool = False) -> float:
        trained = self.speeds[task.workload].seconds(task, cpu=cpu)
        if task.kind != "search":
            return trained
        return max(trained, self.searches.get((task.workload, task.spec["strategy"]), 0.0))


def previous_searches(report_json: Path) -> dict[tuple[str, str], float]:
    """``{(workload, strategy): search wall seconds}`` from an earlier report (empty if none)."""
    try:
        data = json.loads(report_json.read_text())
    except (OSError, ValueError):
        return {}
    found = {}
    for section in data.get("quality") or []:
        for strategy, row in (section.get("strategies") or {}).items():
            if isinstance(row.get("searchWallSeconds"), (int, float)):
                found[(section["workload"], strategy)] = float(row["searchWallSeconds"])
    return found


def task_seconds(task: tasks.Task, rates: Rates, jobs: int, *, cpu: bool) -> float:
    """The share of the whole run one task takes: parallel tasks split across ``jobs``."""
    seconds = rates.seconds(task, cpu=cpu)
    return seconds if task.exclusive else seconds / jobs


def estimate(bench: BenchPlan, rates: Rates, jobs: int) -> Estimate:
    todo = [t for t in bench.all_tasks if t.key not in bench.cached]
    by_workload: dict[str, dict[str, float]] = {}
    for task in todo:
        row = by_workload.setdefault(
            task.workload, {"runs": 0, "steps": 0, "wall": 0.0, "cpu": 0.0}
        )
        row["runs"] += 1
        row["steps"] += task.steps
        row["wall"] += task_seconds(task, rates, jobs, cpu=False)
        row["cpu"] += task_seconds(task, rates, jobs, cpu=True)
    return Estimate(
        wall_seconds=sum(r["wall"] for r in by_workload.values()),
        cpu_seconds=sum(r["cpu"] for r in by_workload.values()),
        runs_total=len(bench.all_tasks),
        runs_cached=len(bench.all_tasks) - len(todo),
        by_workload=by_workload,
        by_group=by_group(bench.all_tasks, rates),
    )


def by_group(task_list: list[tasks.Task], rates: Rates) -> dict[str, dict[str, float]]:
    """Runs, steps and own seconds per ``Task.group`` (grid, target, search, replay, ...)."""
    groups: dict[str, dict[str, float]] = {}
    for task in task_list:
        row = groups.setdefault(task.group, {"runs": 0, "steps": 0, "cpu": 0.0})
        row["runs"] += 1
        row["steps"] += task.steps
        row["cpu"] += rates.seconds(task, cpu=True)
    return groups


def describe_groups(est: Estimate, rates: Rates, jobs: int) -> list[str]:
    """The whole profile's cost by row kind, and in all, as run time and shared by ``jobs``."""
    total = est.profile_cpu_seconds
    lines = [
        f"  whole profile (cached runs included): ~{format_duration(total)} of run time, "
        f"~{format_duration(total / jobs)} with {jobs} job(s) on an idle machine; by kind:"
    ]
    for group, row in est.by_group.items():
        lines.append(
            f"    {group}: {int(row['runs'])} runs, {int(row['steps'])} steps, "
            f"~{format_duration(row['cpu'])}"
        )
    lines.append(f"  ({searches_note(rates)})")
    return lines


def searches_note(rates: Rates) -> str:
    if rates.searches:
        return (
            "searches: the longer of their training steps and what the same search took in the "
            f"previous report ({len(rates.searches)} found); their cost changes with the code"
        )
    return (
        "searches are counted by their training steps only: their processes, checkpoints and "
        "bookkeeping come on top, several times that in earlier full runs"
    )


def workloads_of(bench: BenchPlan) -> Sequence[str]:
    return sorted({t.workload for t in bench.all_tasks})


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def describe(bench: BenchPlan, est: Estimate, rates: Rates, jobs: int) -> str:
    """The plan in a few lines, for stderr before anything trains."""
    lines = [
        f"plan: profile {bench.profile.name} ({bench.profile.description})",
        f"  {est.runs_total} runs, {est.runs_cached} cached; {jobs} parallel job(s)",
    ]
    for workload in workloads_of(bench):
        speed = rates.speeds[workload]
        row = est.by_workload.get(workload, {"runs": 0, "steps": 0, "wall": 0.0, "cpu": 0.0})
        lines.append(
            f"  {workload}: {1 / speed.step_wall:.0f} steps/s now "
            f"({1 / speed.step_cpu:.0f} per CPU-second), eval {speed.eval_wall * 1000:.0f} ms; "
            f"{int(row['runs'])} runs to do, {int(row['steps'])} steps, "
            f"~{format_duration(row['wall'])} now / ~{format_duration(row['cpu'])} idle"
        )
    lines.append(
        f"  estimated time: ~{format_duration(est.wall_seconds)} at the current speed, "
        f"~{format_duration(est.cpu_seconds)} on an idle machine"
    )
    lines += describe_groups(est, rates, jobs)
    return "\n".join(lines)
