"""The runs a benchmark is made of, as data, and the code that carries each one out.

A :class:`Task` is plain data (it crosses into worker processes): ``spec`` defines the run and is
what its cache key digests; ``steps``/``evals`` only feed time estimates. Kinds:

* ``curve``: train one schedule from scratch for S steps with one seed, evaluating every E
  steps (grid cells, the target and replays alike, so a replay of a grid schedule with the same
  seed is the same run);
* ``search``: one strategy's search with the profile's scaled defaults;
* ``optuna``: the equal-compute baseline, Optuna trials for a given budget of member-steps;
* ``schedule-free``: one Schedule-Free run at a constant peak LR, with one seed;
* ``loop`` and ``hdet-timing``: overhead measurements, run alone after everything else.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from schedsearch.bench import curves, optuna_baseline, overhead, profiles, schedule_free
from schedsearch.bench.profiles import Profile, WorkloadPlan
from schedsearch.trainers import families
from schedsearch.trainers.config import BaseScheduleConfig
from schedsearch.trainers.evaluation import EvaluationConfig
from schedsearch.trainers.schedules import Schedule
from schedsearch.trainers.strategies import registry
from schedsearch.trainers.strategies.strategy import RunContext
from schedsearch.trainers.workloads import get_workload

TaskKind = Literal["curve", "search", "optuna", "schedule-free", "loop", "hdet-timing"]
# Bump when a run's meaning changes without its spec changing: old cached results are ignored.
CACHE_VERSION = 1


@dataclass(frozen=True)
class Task:
    """One run: ``spec`` defines it; ``label`` is for people; ``steps``/``evals`` for estimates;
    ``role`` says what the report uses it for (it groups the time estimate), defaulting to
    ``kind``."""

    kind: TaskKind
    workload: str
    label: str
    spec: dict[str, Any]
    steps: int
    evals: int
    role: str = ""

    @property
    def group(self) -> str:
        return self.role or self.kind

    @property
    def key(self) -> str:
        text = json.dumps(
            {"v": CACHE_VERSION, "kind": self.kind, "spec": self.spec}, sort_keys=True
        )
        return f"{self.kind}-{self.workload}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    @property
    def exclusive(self) -> bool:
        """Timing measurements run alone, so no other run skews them."""
        return self.kind in ("loop", "hdet-timing")


# --- building tasks ------------------------------------------------------------------------------


def curve_task(
    plan: WorkloadPlan, schedule: Schedule, seed: int, label: str, role: str = ""
) -> Task:
    spec = {
        "workload": plan.workload,
        "seed": seed,
        "evalEvery": plan.eval_every,
        "schedule": {k: v for k, v in schedule.to_dict().items() if k != "provenance"},
    }
    evals = plan.steps // plan.eval_every
    return Task("curve", plan.workload, label, spec, plan.steps, evals, role)


def optuna_task(profile: Profile, plan: WorkloadPlan, strategy: str, budget: int) -> Task:
    """Optuna for ``budget`` member-steps (what ``strategy``'s search spent)."""
    spec = {
        "workload": plan.workload,
        "steps": plan.steps,
        "evalEvery": plan.eval_every,
        "budget": budget,
        "seed": profile.selection_seeds[0],
        "samplerSeed": profile.search_seed,
        "tpeStartup": profile.optuna_tpe_startup,
        "pruneStartup": profile.optuna_prune_startup,
        "families": list(profile.optuna_families),
        "lrBounds": list(profiles.lr_bounds(plan.workload)),
        "warmupFraction": profile.warmup_fraction,
    }
    label = f"optuna @ {strategy} cost ({budget} steps)"
    return Task("optuna", plan.workload, label, spec, budget, budget // plan.eval_every)


def schedule_free_task(
    profile: Profile, plan: WorkloadPlan, factor: float, seed: int, role: str
) -> Task:
    """Schedule-Free at LR ``default_lr x factor x`` its optimizer's ``LR_SCALE``, ``seed``."""
    workload = get_workload(plan.workload)
    spec = {
        "workload": plan.workload,
        "steps": plan.steps,
        "evalEvery": plan.eval_every,
        "seed": seed,
        "peakLR": workload.default_lr * factor * schedule_free.lr_scale(workload),
        "warmupSteps": profiles.warmup_steps(profile.warmup_fraction, plan.steps),
    }
    label = f"schedule-free x{factor:g} seed {seed}"
    evals = plan.steps // plan.eval_every
    return Task("schedule-free", plan.workload, label, spec, plan.steps, evals, role)


def grid_schedule(profile: Profile, plan: WorkloadPlan, family: str, factor: float) -> Schedule:
    peak = get_workload(plan.workload).default_lr * factor
    return families.build_schedule(
        profiles.grid_config(profile, family, peak, plan.steps), plan.steps
    )


# What every search is run with: the spec's defaults (annealed evaluation, a 20% cooldown).
EVALUATION = EvaluationConfig()


def search_task(profile: Profile, plan: WorkloadPlan, strategy: str) -> Task:
    """One strategy's search: its defaults scaled to the budget, from the same base as every
    other strategy (the grid's warm-up to the workload's default LR: the strategies that take a
    warm-up take this one, HDET scales this base to the peak its probes choose, law its candidate
    peaks from this one)."""
    steps = plan.steps
    chosen = registry.get(strategy)
    config = profiles.search_config(profile, strategy, steps)
    spec: dict[str, Any] = {
        "strategy": strategy,
        "workload": plan.workload,
        "steps": steps,
        "seed": profile.search_seed,
        "lrBounds": list(profiles.lr_bounds(plan.workload)),
        # Annealed evaluation and the final cooldown, at the spec's defaults.
        "evaluation": EVALUATION.model_dump(by_alias=True, mode="json"),
        "config": config.model_dump(by_alias=True, mode="json"),
        "base": profiles.grid_config(
            profile, "constant", get_workload(plan.workload).default_lr, steps
        ).model_dump(by_alias=True),
    }
    trained, evals = chosen.planned_cost(config, steps, EVALUATION)
    return Task("search", plan.workload, f"search {strategy}", spec, round(trained), evals)


def loop_task(profile: Profile, workload: str) -> Task:
    spec = {
        "workload": workload,
        "steps": profile.loop_steps,
        "rounds": profile.loop_rounds,
        "every": profile.loop_every,
    }
    total = 2 * profile.loop_rounds * profile.loop_steps
    evals = total // profile.loop_every
    return Task("loop", workload, "Trainer vs plain loop", spec, total, evals)


def hdet_timing_task(profile: Profile) -> Task:
    spec = {
        "workload": profile.hdet_timing_workload,
        "steps": profile.hdet_timing_steps,
        "interval": profile.hdet_timing_interval,
        "replicas": profile.members_of("hdet"),
    }
    steps = profile.members_of("hdet") * profile.hdet_timing_steps
    label = f"HDET converge at T={profile.hdet_timing_interval}"
    return Task("hdet-timing", profile.hdet_timing_workload, label, spec, steps, 2)


# --- running tasks -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def code_version() -> str | None:
    """``git describe`` of the checkout this package runs from ("+dirty": local changes), so a
    report can say which code produced each cached run."""
    repo = Path(__file__).resolve().parents[2]
    try:
        found = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty=+dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None


def run_task(task: Task, workdir: Path) -> dict[str, Any]:
    """Carry out ``task``; scratch files go under ``workdir/<key>`` and are removed on success."""
    scratch = workdir / task.key
    started = time.perf_counter()
    if task.kind == "curve":
        result = curves.train_curve(task.spec)
    elif task.kind == "schedule-free":
        result = schedule_free.train_schedule_free(task.spec)
    elif task.kind == "optuna":
        result = optuna_baseline.run_optuna(task.spec)
    elif task.kind == "search":
        result = run_search(task.spec, scratch)
    elif task.kind == "loop":
        result = overhead.compare_loops(
            task.spec["workload"],
            steps=task.spec["steps"],
            rounds=task.spec["rounds"],
            every=task.spec["every"],
        )
    else:
        result = overhead.hdet_converge_cost(
            task.spec["workload"],
            steps=task.spec["steps"],
            interval=task.spec["interval"],
            replicas=task.spec["replicas"],
            out_dir=scratch,
        )
    shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    return {"label": task.label, "seconds": seconds, "commit": code_version(), **result}


def run_search(spec: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """One strategy's search; AutoLRS also reports its time outside training per stage."""
    chosen = registry.get(spec["strategy"])
    config = chosen.config_type.model_validate(spec["config"])
    base_schedule = BaseScheduleConfig.model_validate(spec["base"]) if "base" in spec else None
    evaluation = EvaluationConfig.model_validate(spec.get("evaluation") or {})
    low, high = spec["lrBounds"]
    context = RunContext(
        workload=spec["workload"],
        total_steps=spec["steps"],
        lr_bounds=(low, high),
        seed=spec["seed"],
        out_dir=scratch,
        phases=chosen.phases(
            config, spec["steps"], evaluation=evaluation, base_schedule=base_schedule
        ),
        base=base_schedule,
    )
    # Only an AutoLRS search builds the timed search object; the others leave the list empty.
    with overhead.timed_autolrs() as built:
        result = chosen.run(config, context)
    timings = built[0].stage_timings if built else None
    return {**result.to_dict(), "autolrsStageTimings": timings}
