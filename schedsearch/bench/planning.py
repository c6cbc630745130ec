"""The plan of a profile: every run it needs, which are already cached, and how long the rest take.

The time estimate comes from a short measurement of each workload on this machine (steps and
evaluations, wall-clock and CPU time). Wall-clock reflects the machine as it is now, load included;
CPU time is what the same runs cost on an idle machine. Parallel runs are assumed to share
``jobs`` workers perfectly; timing runs go alone, after the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from schedsearch.bench import tasks
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


def grid_tasks(profile: Profile, plan: WorkloadPlan) -> dict[tuple[str, float], list[tasks.Task]]:
    """``{(family, peak factor): one curve task per evaluation seed}`` in grid order."""
    grid: dict[tuple[str, float], list[tasks.Task]] = {}
    for family in profile.families:
        for factor in profile.peak_factors:
            schedule = tasks.grid_schedule(profile, plan, family, factor)
            grid[(family, factor)] = [
                tasks.curve_task(plan, schedule, seed, f"grid {family} x{factor:g} seed {seed}")
                for seed in profile.eval_seeds
            ]
    return grid


def search_tasks(profile: Profile, plan: WorkloadPlan) -> dict[str, tasks.Task]:
    return {s: tasks.search_task(profile, plan, s) for s in profile.strategies}


def replay_tasks(
    profile: Profile, plan: WorkloadPlan, strategy: str, schedule: Schedule
) -> list[tasks.Task]:
    """The found schedule trained from scratch on each evaluation seed."""
    return [
        tasks.curve_task(plan, schedule, seed, f"replay {strategy} seed {seed}")
        for seed in profile.eval_seeds
    ]


def overhead_tasks(profile: Profile) -> list[tasks.Task]:
    return [
        *(tasks.loop_task(profile, w) for w in profile.loop_workloads),
        tasks.hdet_timing_task(profile),
    ]


def found_schedule(result: dict[str, object]) -> Schedule | None:
    """The best schedule of a cached search result (None when the search failed)."""
    data = result.get("bestSchedule")
    return Schedule.from_dict(data) if isinstance(data, dict) else None


@dataclass
class BenchPlan:
    """The parallel runs (grid and searches), the replays the searches will call for, and the
    timing runs; ``cached`` holds the keys already done."""

    profile: Profile
    parallel: list[tasks.Task]
    replays: list[tasks.Task]
    exclusive: list[tasks.Task]
    cached: set[str] = field(default_factory=set)

    @property
    def all_tasks(self) -> list[tasks.Task]:
        return [*self.parallel, *self.replays, *self.exclusive]


def build_plan(profile: Profile, cache: RunCache) -> BenchPlan:
    """Every run of ``profile``. A replay of a search not yet run is planned with a stand-in
    schedule (same length, so the same cost)."""
    parallel: list[tasks.Task] = []
    replays: list[tasks.Task] = []
    for plan in profile.workloads:
        searches = search_tasks(profile, plan)
        parallel += searches.values()
        parallel += [t for cell in grid_tasks(profile, plan).values() for t in cell]
        for strategy, search in searches.items():
            done = cache.get(search.key)
            schedule = found_schedule(done) if done else None
            stand_in = schedule or Schedule.constant(1.0, plan.steps)
            replays += replay_tasks(profile, plan, strategy, stand_in)
    bench = BenchPlan(profile, parallel, replays, overhead_tasks(profile))
    bench.cached = {t.key for t in bench.all_tasks if cache.get(t.key) is not None}
    return bench


# --- estimates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Seconds still to run (wall-clock at today's speed, and CPU time), and what is done."""

    wall_seconds: float
    cpu_seconds: float
    runs_total: int
    runs_cached: int
    by_workload: dict[str, dict[str, float]]


def task_seconds(task: tasks.Task, speeds: dict[str, Speed], jobs: int, *, cpu: bool) -> float:
    """The share of the whole run one task takes: parallel tasks split across ``jobs``."""
    seconds = speeds[task.workload].seconds(task, cpu=cpu)
    return seconds if task.exclusive else seconds / jobs


def estimate(bench: BenchPlan, speeds: dict[str, Speed], jobs: int) -> Estimate:
    todo = [t for t in bench.all_tasks if t.key not in bench.cached]
    by_workload: dict[str, dict[str, float]] = {}
    for task in todo:
        row = by_workload.setdefault(
            task.workload, {"runs": 0, "steps": 0, "wall": 0.0, "cpu": 0.0}
        )
        row["runs"] += 1
        row["steps"] += task.steps
        row["wall"] += task_seconds(task, speeds, jobs, cpu=False)
        row["cpu"] += task_seconds(task, speeds, jobs, cpu=True)
    return Estimate(
        wall_seconds=sum(r["wall"] for r in by_workload.values()),
        cpu_seconds=sum(r["cpu"] for r in by_workload.values()),
        runs_total=len(bench.all_tasks),
        runs_cached=len(bench.all_tasks) - len(todo),
        by_workload=by_workload,
    )


def workloads_of(bench: BenchPlan) -> Sequence[str]:
    return sorted({t.workload for t in bench.all_tasks})


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def describe(bench: BenchPlan, est: Estimate, speeds: dict[str, Speed], jobs: int) -> str:
    """The plan in a few lines, for stderr before anything trains."""
    lines = [
        f"plan: profile {bench.profile.name} ({bench.profile.description})",
        f"  {est.runs_total} runs, {est.runs_cached} cached; {jobs} parallel job(s)",
    ]
    for workload in workloads_of(bench):
        speed = speeds[workload]
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
    return "\n".join(lines)
