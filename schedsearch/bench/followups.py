"""Which runs a finished run calls for, while the benchmark runs.

A search calls for its found schedule's replays and for Optuna at its cost; an Optuna run for
its best trial's replays. Some runs follow from a whole group instead: the target's runs need the
tuned cell, so they wait for every grid run of the workload (a ``Barrier``); the Schedule-Free
evaluation runs wait for every Schedule-Free selection run. The choices themselves are ``runs``'.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from schedsearch.bench import runs, tasks
from schedsearch.bench.profiles import Profile, WorkloadPlan
from schedsearch.trainers.schedules import Schedule


class Barrier:
    """Runs that follow from a group: ``then`` is called once, with the members' results (a failed
    member absent), when the last member has finished or failed."""

    def __init__(
        self, members: list[tasks.Task], then: Callable[[runs.Results], list[tasks.Task]]
    ) -> None:
        self.waiting = {t.key for t in members}
        self.results: dict[str, Mapping[str, Any]] = {}
        self.then = then

    def finish(self, key: str, result: Mapping[str, Any] | None) -> list[tasks.Task]:
        if key not in self.waiting:
            return []  # not a member, or already counted (a duplicate run)
        self.waiting.discard(key)
        if result is not None:
            self.results[key] = result
        return [] if self.waiting else self.then(self.results)


class FollowUps:
    """The follow-ups of every run of ``profile`` (see the module docstring)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.plans = {p.workload: p for p in profile.workloads}
        self.barriers: dict[str, Barrier] = {}
        for plan in profile.workloads:
            grid = [t for cell in runs.grid_tasks(profile, plan).values() for t in cell]
            self._watch(Barrier(grid, functools.partial(self._target, plan)))
            free = [
                t for peak in runs.schedule_free_selection(profile, plan).values() for t in peak
            ]
            self._watch(Barrier(free, functools.partial(self._free, plan)))

    def _watch(self, barrier: Barrier) -> None:
        for key in barrier.waiting:
            self.barriers[key] = barrier

    def after(self, task: tasks.Task, result: Mapping[str, Any] | None) -> list[tasks.Task]:
        """What ``task`` calls for now that it finished (``result``) or failed (None)."""
        follow: list[tasks.Task] = []
        barrier = self.barriers.get(task.key)
        if barrier is not None:
            follow += barrier.finish(task.key, result)
        if result is None:
            return follow
        plan = self.plans.get(task.workload)
        if plan is not None and task.kind == "search":
            strategy = task.spec["strategy"]
            follow += self._replays(plan, strategy, runs.found_schedule(result))
            optuna = runs.optuna_task(self.profile, plan, strategy, result)
            follow += [optuna] if optuna is not None else []
        elif plan is not None and task.kind == "optuna":
            name = runs.optuna_run_name(task)
            follow += self._replays(plan, name, runs.found_schedule(result))
        return follow

    def planned_after(self, task: tasks.Task) -> list[tasks.Task]:
        """Runs the plan counted after ``task`` (stand-ins); they will not happen if it fails."""
        plan = self.plans.get(task.workload)
        if plan is None or task.kind not in ("search", "optuna"):
            return []
        stand_in = Schedule.constant(1.0, plan.steps)
        if task.kind == "optuna":
            return runs.replay_tasks(self.profile, plan, runs.optuna_run_name(task), stand_in)
        strategy = task.spec["strategy"]
        optuna = tasks.optuna_task(self.profile, plan, strategy, task.steps)
        return [
            *runs.replay_tasks(self.profile, plan, strategy, stand_in),
            optuna,
            *self.planned_after(optuna),
        ]

    def _replays(
        self, plan: WorkloadPlan, name: str, schedule: Schedule | None
    ) -> list[tasks.Task]:
        return [] if schedule is None else runs.replay_tasks(self.profile, plan, name, schedule)

    def _target(self, plan: WorkloadPlan, results: runs.Results) -> list[tasks.Task]:
        cell = runs.tuned_cell(self.profile, plan, results)
        if cell is None:
            return []
        return runs.target_tasks(self.profile, plan, cell.family, cell.peak_factor)

    def _free(self, plan: WorkloadPlan, results: runs.Results) -> list[tasks.Task]:
        cell = runs.schedule_free_peak(self.profile, plan, results)
        return [] if cell is None else runs.schedule_free_eval(self.profile, plan, cell.peak_factor)
