"""Benchmark arithmetic and bookkeeping: steps to target, baseline choice, scaling of the
strategies' defaults, the run cache, progress, and the report rendered from fake data."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from schedsearch.bench import (
    curves,
    executor,
    optuna_baseline,
    planning,
    profiles,
    quality,
    report,
    runs,
    schedule_free,
    summary,
    tasks,
)
from schedsearch.bench.cache import RunCache, clean_floats
from schedsearch.bench.followups import FollowUps
from schedsearch.bench.quality import GridCell, RunCurve
from schedsearch.trainers.schedules import Schedule
from schedsearch.trainers.strategies.autolrs.strategy import AutoLRS
from schedsearch.trainers.strategies.hdet.config import HDETConfig
from schedsearch.trainers.strategies.pbt.config import PBTConfig

# --- steps to target -----------------------------------------------------------------------------


def test_first_step_at_or_below_takes_the_first_crossing_and_counts_equality() -> None:
    curve = [(10, 0.9), (20, 0.5), (30, 0.4), (40, 0.5)]
    assert quality.first_step_at_or_below(curve, 0.5) == 20
    assert quality.first_step_at_or_below(curve, 0.45) == 30


def test_not_reached_is_none_and_has_no_speedup() -> None:
    curve = [(10, 0.9), (20, math.nan), (30, 0.6)]
    assert quality.first_step_at_or_below(curve, 0.5) is None
    assert quality.speedup(30, None) is None
    assert quality.speedup(1000, 800) == pytest.approx(1.25)


def test_mean_curve_is_infinite_after_a_seed_diverged() -> None:
    healthy = [(10, 0.6), (20, 0.4), (30, 0.2)]
    diverged = [(10, 0.4)]  # stopped after its first evaluation
    mean = quality.mean_curve([healthy, diverged], [10, 20, 30])
    assert mean[0] == (10, pytest.approx(0.5))
    assert math.isinf(mean[1][1]) and math.isinf(mean[2][1])


def test_summary_uses_the_seed_mean_curve_and_lists_each_seed() -> None:
    fast = RunCurve(1, [(10, 0.30), (20, 0.10), (30, 0.10)], 0.10)
    slow = RunCurve(2, [(10, 0.50), (20, 0.40), (30, 0.20)], 0.20)
    row = quality.summarize_runs([fast, slow], total_steps=30, eval_every=10, target=0.25)
    # mean curve: 0.40, 0.25, 0.15 -> reaches 0.25 at step 20
    assert row["stepsToTarget"] == 20
    assert row["speedup"] == pytest.approx(1.5)
    assert row["perSeedStepsToTarget"] == {"1": 20, "2": 30}
    assert row["finalMean"] == pytest.approx(0.15)
    assert row["finalStd"] == pytest.approx(math.sqrt(0.005))
    assert row["diverged"] == 0


def test_summary_of_a_diverged_seed_is_not_reached() -> None:
    ok = RunCurve(1, [(10, 0.1), (20, 0.05)], 0.05)
    blown = RunCurve(2, [(10, 0.2)], None)
    row = quality.summarize_runs([ok, blown], total_steps=20, eval_every=10, target=0.12)
    # mean curve: 0.15 at step 10, then infinite (seed 2 has no loss at step 20)
    assert row["stepsToTarget"] is None and row["speedup"] is None
    assert math.isinf(row["finalMean"])
    assert row["diverged"] == 1
    assert row["perSeedStepsToTarget"] == {"1": 10, "2": None}


# --- baseline selection --------------------------------------------------------------------------


def cell(family: str, factor: float, *finals: float | None) -> GridCell:
    runs = tuple(
        RunCurve(seed, [(10, f if f is not None else math.inf)], f) for seed, f in enumerate(finals)
    )
    return GridCell(family, factor, 0.1 * factor, runs)


def test_baseline_is_the_best_mean_not_the_luckiest_run() -> None:
    steady = cell("cosine", 1.0, 0.20, 0.21, 0.22)
    lucky = cell("wsd", 2.0, 0.10, 0.40, 0.40)
    assert quality.select_baseline([lucky, steady]) is steady
    best_cell, best_run = quality.oracle_run([lucky, steady])
    assert best_cell is lucky and best_run.final == pytest.approx(0.10)


def test_a_cell_with_a_diverged_seed_never_wins_and_ties_keep_grid_order() -> None:
    diverged = cell("linear", 4.0, 0.01, None)
    first, second = cell("cosine", 1.0, 0.3), cell("rex", 1.0, 0.3)
    assert quality.select_baseline([diverged, first, second]) is first
    with pytest.raises(ValueError, match="grid"):
        quality.select_baseline([])


def test_grid_edge_is_flagged() -> None:
    factors = (0.5, 1.0, 2.0)
    assert quality.at_grid_edge(cell("wsd", 2.0, 0.1), factors)
    assert not quality.at_grid_edge(cell("wsd", 1.0, 0.1), factors)


# --- scaling of the defaults ---------------------------------------------------------------------


def test_autolrs_scaling_gives_the_reference_defaults_at_15000_steps() -> None:
    config = AutoLRS().config_for_budget(15000, members=1, seed=0)
    assert (config.tau, config.tau_prime, config.tau_max, config.candidates) == (
        1000,
        100,
        8000,
        10,
    )
    small = AutoLRS().config_for_budget(1000, members=1, seed=0)
    assert (small.tau, small.tau_prime, small.tau_max) == (67, 7, 536)


def test_pbt_and_hdet_scaling() -> None:
    profile = profiles.get_profile("full")
    pbt = profiles.search_config(profile, "pbt", 2000)
    assert isinstance(pbt, PBTConfig)
    assert (pbt.perturbation_interval, pbt.population, pbt.seed) == (125, 8, profile.search_seed)
    hdet = profiles.search_config(profile, "hdet", 2000)
    assert isinstance(hdet, HDETConfig)
    assert (hdet.sync_interval, hdet.replicas) == (100, 4)


def test_bad_profile_and_budget_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="profile: 'huge' is not one of"):
        profiles.get_profile("huge")
    with pytest.raises(ValueError, match="evalEvery"):
        profiles.WorkloadPlan("regression", 1000, 300)


def test_grid_warmup_follows_each_family() -> None:
    profile = profiles.get_profile("quick")
    assert profiles.grid_config(profile, "cosine", 0.1, 1000).warmup_steps == 50
    assert profiles.grid_config(profile, "onecycle", 0.1, 1000).warmup_steps == 0


# --- tasks and cache -----------------------------------------------------------------------------


def test_task_key_follows_the_spec_only() -> None:
    plan = profiles.WorkloadPlan("regression", 100, 10)
    schedule = Schedule.constant(0.1, 100)
    a = tasks.curve_task(plan, schedule, 1, "one label")
    b = tasks.curve_task(plan, schedule.with_provenance(note="x"), 1, "another label")
    c = tasks.curve_task(plan, schedule, 2, "one label")
    assert a.key == b.key != c.key
    assert a.key.startswith("curve-regression-")


def test_cache_round_trip_writes_json_without_nan(tmp_path: Path) -> None:
    cache = RunCache(tmp_path / "runs")
    assert cache.get("k") is None
    cache.put("k", {"final": math.nan, "curve": [[1, math.inf], [2, 0.5]]})
    assert cache.get("k") == {"final": None, "curve": [[1, None], [2, 0.5]]}
    cache.path("broken").write_text("{not json")
    assert cache.get("broken") is None
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")] == []


def test_plan_counts_the_runs_that_follow_from_unrun_ones(tmp_path: Path) -> None:
    profile = profiles.get_profile("quick")
    bench = planning.build_plan(profile, RunCache(tmp_path))
    peaks, chosen = len(profile.peak_factors), len(profile.selection_seeds)
    grid = len(profile.families) * peaks * chosen
    assert len(bench.parallel) == grid + len(profile.strategies) + peaks * chosen
    measured = len(profile.eval_seeds)
    # target + Schedule-Free at its peak + per strategy: replays, Optuna, Optuna's replays
    per_strategy = measured + 1 + measured
    assert len(bench.dependent) == 2 * measured + len(profile.strategies) * per_strategy
    assert bench.cached == set()
    seeds = {t.spec["seed"] for t in bench.dependent if t.kind != "optuna"}
    assert seeds == set(profile.eval_seeds)


def test_executor_takes_cached_runs_and_queues_their_followups(tmp_path: Path) -> None:
    cache = RunCache(tmp_path)
    plan = profiles.WorkloadPlan("regression", 100, 10)
    search = tasks.Task("search", "regression", "search x", {"strategy": "x"}, 100, 1)
    replay = tasks.curve_task(plan, Schedule.constant(0.1, 100), 7, "replay x")
    cache.put(search.key, {"bestSchedule": Schedule.constant(0.1, 100).to_dict()})
    stream = io.StringIO()
    progress = executor.Progress(2, lambda task: 1.0, 1, stream)
    runner = executor.Executor(
        cache,
        tmp_path / "work",
        progress,
        jobs=1,
        threads=1,
        followups=lambda task, result: [replay] if task.kind == "search" and result else [],
        planned_followups=lambda task: [],
    )
    runner.add(search)
    assert search.key in runner.results
    assert list(runner._queue) == [replay]
    assert "[bench 1/2] cached regression search x" in stream.getvalue()


def test_progress_eta_scales_what_is_left_by_the_pace_so_far() -> None:
    progress = executor.Progress(4, lambda task: 10.0, 2, io.StringIO())
    task = tasks.Task("curve", "regression", "t", {}, 1, 1)
    timing = tasks.Task("loop", "regression", "t", {}, 1, 1)
    for planned in (task, task, task, timing):
        progress.expect(planned)
    assert progress.eta() == pytest.approx(3 * 10 / 2 + 10)  # 2 jobs share; timing runs alone
    progress.finish(task, "cached")  # no duration: the pace is unchanged
    assert progress.eta() == pytest.approx(2 * 5 + 10)
    progress.finish(task, "done", 40.0)  # estimated 10 s, took 40 s: 4x slower
    assert progress.eta() == pytest.approx(4 * (5 + 10))
    progress.forget([task])
    assert progress.total == 3 and progress.eta() == pytest.approx(4 * 10)


@pytest.mark.slow  # trains only 21 steps, but building the first Trainer imports torch._dynamo
def test_train_curve_evaluates_every_e_steps_and_marks_divergence() -> None:
    plan = profiles.WorkloadPlan("regression", 20, 10)
    good = curves.train_curve(tasks.curve_task(plan, Schedule.constant(0.02, 20), 3, "ok").spec)
    assert [step for step, _ in good["curve"]] == [10, 20]
    assert good["final"] == good["curve"][-1][1] and not good["diverged"]
    bad = curves.train_curve(tasks.curve_task(plan, Schedule.constant(1e9, 20), 3, "no").spec)
    assert bad["diverged"] and bad["final"] is None


# --- the report ----------------------------------------------------------------------------------


def fake_report() -> dict[str, Any]:
    curve = [[10, 0.5], [20, 0.3]]
    schedule = Schedule.constant(0.1, 20).to_dict()
    section = {
        "workload": "regression",
        "steps": 20,
        "evalEvery": 10,
        "defaultLR": 0.02,
        "lrBounds": [0.0002, 0.2],
        "grid": [
            {
                "family": "cosine",
                "peakFactor": 1.0,
                "peakLR": 0.02,
                "finalMean": 0.3,
                "finalStd": 0.01,
                "finals": {"1": 0.3},
            },
            {
                "family": "wsd",
                "peakFactor": 2.0,
                "peakLR": 0.04,
                "finalMean": math.inf,
                "finalStd": math.nan,
                "finals": {"1": None},
            },
        ],
        "target": 0.3,
        "selectionSeeds": [1000],
        "evalSeeds": [1, 2],
        "baseline": {
            "family": "cosine",
            "peakFactor": 1.0,
            "peakLR": 0.02,
            "selectionMean": 0.28,
            "selectionStd": math.nan,
            "finalMean": 0.3,
            "finalStd": 0.01,
            "atGridEdge": True,
            "schedule": schedule,
            "stepsToTarget": 20,
            "speedup": 1.0,
            "perSeedStepsToTarget": {"1": 20},
            "meanCurve": curve,
        },
        "oracle": {"family": "cosine", "peakFactor": 1.0, "peakLR": 0.02, "seed": 1, "final": 0.29},
        "strategies": {
            "autolrs": {
                "memberSteps": 41,
                "costInS": 2.05,
                "searchWallSeconds": 3.0,
                "finalMean": 0.35,
                "finalStd": 0.02,
                "pairedVsTarget": {"mean": 0.05, "std": 0.01, "n": 2, "verdict": "worse"},
                "meanLR": 0.1,
                "stepsToTarget": None,
                "speedup": None,
                "perSeedStepsToTarget": {"1": None},
                "meanCurve": curve,
                "schedule": schedule,
            },
            "pbt": {
                "memberSteps": 80,
                "annealSteps": 12,
                "costInS": 4.0,
                "searchWallSeconds": 5.0,
                "finalMean": 0.2,
                "finalStd": 0.01,
                "pairedVsTarget": {"mean": -0.1, "std": 0.2, "n": 2, "verdict": "within noise"},
                "stepsToTarget": 10,
                "speedup": 2.0,
                "perSeedStepsToTarget": {"1": 10},
                "meanCurve": curve,
                "schedule": schedule,
            },
            "hdet": {"error": "RuntimeError: HDET failed"},
        },
        "equalCompute": {
            "autolrs": {
                "budgetSteps": 41,
                "memberSteps": 40,
                "costInS": 2.0,
                "searchWallSeconds": 1.0,
                "trials": 3,
                "pruned": 1,
                "finalMean": 0.31,
                "finalStd": 0.01,
                "pairedVsTarget": {"mean": 0.01, "std": 0.01, "n": 2, "verdict": "within noise"},
                "stepsToTarget": None,
                "speedup": None,
                "perSeedStepsToTarget": {"1": None},
                "meanCurve": curve,
                "schedule": schedule,
            },
            "hdet": {"missing": "hdet search not run"},
        },
        "scheduleFree": {
            "peakFactor": 2.0,
            "peakLR": 0.04,
            "atGridEdge": True,
            "selection": [
                {"peakFactor": 2.0, "finalMean": 0.4, "finalStd": math.nan},
            ],
            "memberSteps": 20,
            "costInS": 1.0,
            "finalMean": 0.42,
            "finalStd": 0.03,
            "pairedVsTarget": {"mean": None, "std": None, "n": 2, "verdict": "diverged"},
            "stepsToTarget": None,
            "speedup": None,
            "perSeedStepsToTarget": {"1": None},
            "meanCurve": curve,
        },
        "comparisons": {
            "autolrs": {
                "vsOptuna": {"mean": 0.04, "std": 0.001, "n": 2, "verdict": "worse"},
                "vsScheduleFree": None,
            }
        },
        "plots": ["regression-val-loss.png"],
    }
    return {
        "profile": "quick",
        "description": "fake",
        "commit": "abc1234",
        "runCommits": {"abc1234": 3, "0ld0ld0+dirty": 2},
        "settings": ["a setting"],
        "quality": [section],
        "targets": [
            {"target": "reach it", "met": False, "detail": "regression: not reached"},
            {"target": "be cheap", "met": True, "detail": "regression: 2.05 S"},
        ],
        "autolrsVersusPaper": {
            "paper": {"range": [1.22, 1.5], "averageVsTuned": 1.31, "note": "the paper"},
            "ours": {
                "regression": {"speedup": None, "finalMean": 0.35, "target": 0.3, "costInS": 2.05}
            },
        },
        "autolrsReasons": ["a reason"],
        "overhead": {
            "trainerVsPlainLoop": [
                {
                    "workload": "regression",
                    "evalAndCheckpointEvery": 250,
                    "plain": {"wallStepsPerSecond": 100.0, "cpuStepsPerSecond": 200.0},
                    "trainer": {"wallStepsPerSecond": 90.0, "cpuStepsPerSecond": 190.0},
                    "wallOverheadPercent": 11.1,
                    "cpuOverheadPercent": 5.3,
                },
            ],
            "autolrsOutsideTraining": {"regression": None},
            "hdetConverge": None,
            "hdetPaperFraction": 0.001,
        },
        "operator": "operator: not measured in this report.",
    }


def test_report_renders_every_outcome() -> None:
    text = report.render(fake_report())
    assert "the runs came from `abc1234` (3 runs), `0ld0ld0+dirty` (2 runs) (+dirty:" in text
    clean = report.render({**fake_report(), "runCommits": {"abc1234": 5}})
    assert "`abc1234` (5 runs)." in clean and "+dirty" not in clean
    assert "final validation loss on the evaluation seeds): **0.3**" in text
    assert "was chosen at 0.28 on the selection seeds" in text
    assert "edge of the grid" in text
    assert (
        "| autolrs | 0.35 ± 0.02 | +0.05 ± 0.01 (worse) | not reached | not reached | "
        "seed 1: not reached |" in text
    )
    assert "| pbt | 0.2 ± 0.01 | -0.1 ± 0.2 (within noise) | 10 | 2.00x |" in text
    assert "| 4.00 S (80 steps, 12 in annealed evaluation) | 5s |" in text
    assert "| 2.05 S (41 steps) | 3s |" in text
    assert "| hdet | failed: RuntimeError: HDET failed |" in text
    assert "| tuned baseline (cosine x1, peak 0.02) | 0.3 ± 0.01 | reference |" in text
    assert "grid: 2 cells x 1 seeds = 2.00 S" in text
    assert "| optuna @ autolrs cost | 0.31 ± 0.01 | +0.01 ± 0.01 (within noise) |" in text
    assert "2.00 S (40 steps) of 41; 3 trials, 1 pruned | 1s |" in text
    assert "| optuna @ hdet cost | failed: hdet search not run |" in text
    assert "| schedule-free (x2, LR 0.04) | 0.42 ± 0.03 | diverged |" in text
    assert "chosen x2 (at the edge of the peaks tried)" in text
    assert "| autolrs | +0.04 ± 0.001 (worse) | - | 0.1 |" in text
    assert "| reach it | **no** | regression: not reached |" in text
    assert "| be cheap | yes |" in text
    assert "selection seeds" in text and "evaluation seeds" in text
    assert "| wsd | - | diverged |" in text
    assert "regression: not reached (final 0.35 vs target 0.3" in text
    assert "below the paper's range" in text
    assert "+11.1%" in text and "AutoLRS time outside training" in text
    assert "HDET converge cost: not measured." in text
    assert "operator: not measured in this report" in text


def test_standing_against_the_paper() -> None:
    assert report.standing(1.1) == "below the paper's range"
    assert report.standing(1.3) == "within the paper's range"
    assert report.standing(1.6) == "above the paper's range"


def test_report_files_are_strict_json_and_the_same_markdown(tmp_path: Path) -> None:
    data = fake_report()
    json_path, md_path = report.write(data, tmp_path)
    loaded = json.loads(json_path.read_text())
    assert loaded["quality"][0]["grid"][1]["finalMean"] is None
    assert md_path.read_text() == report.render(data)
    # The saved JSON renders too (NaN/inf became null).
    assert "diverged" in report.render(loaded)
    assert clean_floats({"a": [math.nan]}) == {"a": [None]}


# --- seeds: chosen on some, measured on others --------------------------------------------------


def tiny_profile(**changes: Any) -> profiles.Profile:
    settings: dict[str, Any] = {
        "name": "tiny",
        "description": "test",
        "workloads": (profiles.WorkloadPlan("regression", 20, 10),),
        "families": ("cosine", "wsd"),
        "peak_factors": (1.0, 2.0),
        "selection_seeds": (1000,),
        "eval_seeds": (2000, 2001),
        "strategies": (),
        "members": {"pbt": 2, "hdet": 2},
    }
    return profiles.Profile(**{**settings, **changes})


def curve_result(final: float | None) -> dict[str, Any]:
    return {"curve": [[10, 1.0], [20, final]], "final": final}


def test_every_profile_keeps_selection_evaluation_and_search_seeds_apart() -> None:
    for profile in profiles.PROFILES.values():
        chosen, measured = set(profile.selection_seeds), set(profile.eval_seeds)
        searched = set(profiles.search_seeds(profile))
        assert chosen and measured and not chosen & measured
        assert not searched & (chosen | measured)
    assert len(profiles.get_profile("full").eval_seeds) >= 6
    with pytest.raises(ValueError, match="selection and evaluation seeds overlap: \\[2000\\]"):
        tiny_profile(selection_seeds=(1000, 2000))
    with pytest.raises(ValueError, match="search and evaluation seeds overlap: \\[1\\]"):
        tiny_profile(eval_seeds=(1, 2000))


def grid_results(profile: profiles.Profile, finals: dict[tuple[str, float], float]) -> dict:
    plan = profile.workloads[0]
    return {
        task.key: curve_result(finals[cell])
        for cell, cell_tasks in runs.grid_tasks(profile, plan).items()
        for task in cell_tasks
    }


def test_target_is_the_selected_cell_measured_on_the_evaluation_seeds() -> None:
    profile = tiny_profile()
    plan = profile.workloads[0]
    results = grid_results(
        profile,
        {("cosine", 1.0): 0.5, ("cosine", 2.0): 0.4, ("wsd", 1.0): 0.3, ("wsd", 2.0): 0.35},
    )
    # The chosen cell does worse on held-out seeds than on the seed it was chosen on.
    for task, final in zip(runs.target_tasks(profile, plan, "wsd", 1.0), (0.32, 0.36), strict=True):
        assert task.spec["seed"] in profile.eval_seeds
        results[task.key] = curve_result(final)
    # Evaluation-seed runs of another cell must not change the choice.
    for task in runs.target_tasks(profile, plan, "cosine", 2.0):
        results[task.key] = curve_result(0.01)
    section = summary.workload_quality(profile, plan, results)
    base = section["baseline"]
    assert (base["family"], base["peakFactor"]) == ("wsd", 1.0)
    assert base["selectionMean"] == pytest.approx(0.3)
    assert section["target"] == pytest.approx(0.34)
    assert base["finals"] == {"2000": 0.32, "2001": 0.36}
    assert base["pairedVsTarget"]["mean"] == 0 and base["pairedVsTarget"]["n"] == 2
    assert section["oracle"]["seed"] == 1000  # the oracle is a selection-seed run


def test_target_runs_follow_once_the_whole_grid_is_done_even_with_a_failure() -> None:
    profile = tiny_profile()
    plan = profile.workloads[0]
    follow = FollowUps(profile)
    grid = runs.grid_tasks(profile, plan)
    finals = {("cosine", 1.0): 0.5, ("cosine", 2.0): 0.2, ("wsd", 1.0): 0.3, ("wsd", 2.0): None}
    called = []
    for (family, factor), (task,) in grid.items():
        result = (
            None if finals[(family, factor)] is None else curve_result(finals[(family, factor)])
        )
        called.append(follow.after(task, result))
    assert called[:-1] == [[], [], []]
    assert called[-1] == runs.target_tasks(profile, plan, "cosine", 2.0)
    assert {t.spec["seed"] for t in called[-1]} == set(profile.eval_seeds)
    assert follow.after(grid[("cosine", 1.0)][0], curve_result(0.5)) == []  # fires only once


def test_a_search_calls_for_replays_on_evaluation_seeds_and_optuna_at_its_cost() -> None:
    profile = tiny_profile(strategies=("pbt",))
    plan = profile.workloads[0]
    search = runs.search_tasks(profile, plan)["pbt"]
    found = {"memberSteps": 87, "bestSchedule": Schedule.constant(0.1, 20).to_dict()}
    follow = FollowUps(profile).after(search, found)
    replays = [t for t in follow if t.kind == "curve"]
    (optuna,) = [t for t in follow if t.kind == "optuna"]
    assert sorted(t.spec["seed"] for t in replays) == list(profile.eval_seeds)
    assert optuna.spec["budget"] == 87 and optuna.spec["seed"] in profile.selection_seeds
    assert FollowUps(profile).after(search, None) == []


# --- paired differences -------------------------------------------------------------------------


def test_paired_difference_is_taken_seed_by_seed() -> None:
    reference = {"1": 1.0, "2": 2.0, "3": 3.0}
    better = quality.paired_difference({"1": 0.9, "2": 1.89, "3": 2.88, "9": 0.0}, reference)
    assert better["n"] == 3  # seed 9 has no partner
    assert better["perSeed"] == pytest.approx({"1": -0.1, "2": -0.11, "3": -0.12})
    assert better["mean"] == pytest.approx(-0.11)
    assert better["std"] == pytest.approx(0.01)
    assert better["verdict"] == "better"  # t = 19 > 4.30 (2 degrees of freedom)
    worse = quality.paired_difference({"1": 1.5, "2": 2.4, "3": 3.6}, reference)
    assert worse["verdict"] == "worse"  # t = 8.7
    # A mean 3.5 standard errors from 0 is still noise with three seeds (the t-test needs 4.30;
    # a plain 2-standard-error rule would call it better).
    noisy = quality.paired_difference({"1": 0.8, "2": 1.7, "3": 2.9}, reference)
    assert noisy["mean"] == pytest.approx(-0.2)
    assert noisy["mean"] / (noisy["std"] / math.sqrt(3)) == pytest.approx(-3.46, abs=0.01)
    assert noisy["verdict"] == "within noise"
    assert quality.paired_difference({"1": None, "2": 2.0}, reference)["verdict"] == "diverged"
    assert quality.paired_difference({"1": 0.5}, reference)["verdict"] == "one seed"
    assert quality.paired_difference({"7": 0.5}, reference)["verdict"] == "no common seeds"


def test_rows_are_paired_with_each_other_on_the_evaluation_seeds() -> None:
    section = {
        "strategies": {"pbt": {"finals": {"1": 0.5, "2": 0.6}}, "hdet": {"error": "x"}},
        "equalCompute": {"pbt": {"finals": {"1": 0.4, "2": 0.45}}},
        "scheduleFree": {"finals": {"1": 0.7, "2": 0.9}},
    }
    rows = summary.comparisons(section)
    assert rows["pbt"]["vsOptuna"]["mean"] == pytest.approx(0.125)
    assert rows["pbt"]["vsScheduleFree"]["mean"] == pytest.approx(-0.25)
    assert rows["hdet"] == {"vsOptuna": None, "vsScheduleFree": None}


# --- the equal-compute Optuna baseline ----------------------------------------------------------


def fake_trials(trial_steps: int, every: int) -> tuple[optuna_baseline.TrainTrial, list[int]]:
    """Trials whose loss depends on the peak's distance from 0.01 (so the pruner has work)."""
    trained: list[int] = []

    def train(family: str, peak: float, on_eval: Any) -> optuna_baseline.TrialOutcome:
        loss, step = math.inf, 0
        while step < trial_steps:
            step += every
            loss = 1.0 / step + abs(math.log10(peak / 0.01)) + (family == "wsd") * 0.1
            if on_eval(step, loss) and step < trial_steps:
                trained.append(step)
                return optuna_baseline.TrialOutcome(step, None, pruned=True)
        trained.append(step)
        return optuna_baseline.TrialOutcome(step, loss, pruned=False)

    return train, trained


@pytest.mark.parametrize("budget", [99, 100, 1050, 2999])
def test_optuna_spends_no_more_than_its_budget_counting_pruned_steps(budget: int) -> None:
    train, trained = fake_trials(trial_steps=100, every=10)
    study = optuna_baseline.make_study(0, tpe_startup=3, prune_startup=2)
    space = optuna_baseline.SearchSpace(("cosine", "linear", "wsd"), (1e-4, 1.0))
    result = optuna_baseline.search(study, space, budget=budget, trial_steps=100, train_trial=train)
    assert result["spentSteps"] == sum(trained) == sum(t["steps"] for t in result["trials"])
    assert result["spentSteps"] <= budget
    assert budget - result["spentSteps"] < 100  # it stops only when no whole trial fits
    assert len(result["trials"]) == len(trained)
    if budget >= 1000:  # enough trials for the pruner to stop some, and their steps count
        assert any(t["pruned"] and t["steps"] < 100 for t in result["trials"])
        finished = [t for t in result["trials"] if not t["pruned"]]
        assert result["best"] == min(finished, key=lambda t: t["final"])
    if budget < 100:
        assert result["trials"] == [] and result["best"] is None


@pytest.mark.slow  # a few dozen real training steps
def test_optuna_run_trains_real_trials_and_names_its_best_schedule() -> None:
    profile = tiny_profile()
    task = tasks.optuna_task(profile, profile.workloads[0], "pbt", 45)
    result = optuna_baseline.run_optuna(task.spec)
    assert result["spentSteps"] == 40 and len(result["trials"]) == 2
    best = result["best"]
    schedule = Schedule.from_dict(result["bestSchedule"])
    assert schedule.total_steps == 20 and schedule.peak_lr == pytest.approx(best["peakLR"])
    assert schedule.provenance["family"] == best["family"] in profile.optuna_families


# --- Schedule-Free ------------------------------------------------------------------------------


def test_schedule_free_form_matches_the_workload_optimizer() -> None:
    import schedulefree
    import torch

    weights = [torch.nn.Parameter(torch.zeros(3))]
    sgd = schedule_free.schedule_free_optimizer(torch.optim.SGD(weights, lr=0.1, momentum=0.8), 7)
    assert isinstance(sgd, schedulefree.SGDScheduleFree)
    group = sgd.param_groups[0]
    assert (group["momentum"], group["warmup_steps"], group["train_mode"]) == (0.8, 7, True)
    adam = schedule_free.schedule_free_optimizer(torch.optim.Adam(weights, betas=(0.8, 0.9)), 3)
    assert isinstance(adam, schedulefree.AdamWScheduleFree)
    assert adam.param_groups[0]["betas"] == (0.8, 0.9)
    with pytest.raises(ValueError, match="momentum in \\(0, 1\\)"):
        schedule_free.schedule_free_optimizer(torch.optim.SGD(weights, lr=0.1), 0)


def test_schedule_free_lrs_are_the_grid_peaks_at_the_documented_scale() -> None:
    from schedsearch.trainers.workloads import get_workload

    assert schedule_free.lr_scale(get_workload("regression")) == 10.0  # SGD with momentum
    assert schedule_free.lr_scale(get_workload("charlm")) == 1.0  # Adam
    profile = tiny_profile()
    plan = profile.workloads[0]
    selection = runs.schedule_free_selection(profile, plan)
    assert sorted(selection) == list(profile.peak_factors)
    (task,) = selection[2.0]
    assert task.spec["peakLR"] == pytest.approx(0.02 * 2.0 * 10.0)
    assert task.spec["seed"] in profile.selection_seeds and task.spec["warmupSteps"] == 1


@pytest.mark.slow  # 20 real training steps
def test_schedule_free_task_trains_and_evaluates_in_eval_mode(monkeypatch: Any) -> None:
    from schedsearch.trainers import harness

    modes: list[bool] = []
    evaluate = harness.Trainer.evaluate

    def spy(self: harness.Trainer) -> dict[str, float]:
        modes.append(self.optimizer.param_groups[0]["train_mode"])
        return evaluate(self)

    steps: list[bool] = []
    step = harness.Trainer.step

    def spy_step(self: harness.Trainer, lr: float) -> Any:
        steps.append(self.optimizer.param_groups[0]["train_mode"])
        return step(self, lr)

    monkeypatch.setattr(harness.Trainer, "evaluate", spy)
    monkeypatch.setattr(harness.Trainer, "step", spy_step)
    profile = tiny_profile()
    task = tasks.schedule_free_task(profile, profile.workloads[0], 1.0, 1000, "x")
    result = tasks.run_task(task, Path("/nonexistent"))
    assert modes == [False, False]  # both evaluations at the averaged weights
    assert steps == [True] * 20  # every step in train mode
    assert [step for step, _ in result["curve"]] == [10, 20]
    assert result["stepsTrained"] == 20 and math.isfinite(result["final"])


def test_a_search_is_estimated_at_least_at_what_it_took_in_the_previous_report(
    tmp_path: Path,
) -> None:
    previous = {
        "quality": [
            {"workload": "regression", "strategies": {"pbt": {"searchWallSeconds": 300.0}}},
            {"workload": "charlm", "missing": "no finished grid runs"},
        ]
    }
    (tmp_path / "report.json").write_text(json.dumps(previous))
    found = planning.previous_searches(tmp_path / "report.json")
    assert found == {("regression", "pbt"): 300.0}
    assert planning.previous_searches(tmp_path / "absent.json") == {}
    speed = planning.Speed(step_wall=0.001, step_cpu=0.001, eval_wall=0.0, eval_cpu=0.0)
    rates = planning.Rates({"regression": speed}, found)
    plan = profiles.WorkloadPlan("regression", 1000, 50)
    profile = profiles.get_profile("quick")
    pbt, autolrs = (tasks.search_task(profile, plan, s) for s in ("pbt", "autolrs"))
    assert rates.seconds(pbt) == 300.0  # not the ~4 s its 4000 training steps take
    assert rates.seconds(autolrs) == pytest.approx(autolrs.steps * 0.001)  # nothing before
    curve = tasks.curve_task(plan, Schedule.constant(0.1, 1000), 1, "c")
    assert rates.seconds(curve, cpu=True) == pytest.approx(1.0)


def test_targets_say_by_how_much_a_missed_one_is_missed() -> None:
    profile = tiny_profile(strategies=("pbt", "autolrs"))
    finals = {"1": 0.5, "2": 0.7}

    def section(workload: str, pbt: float | None, autolrs_cost: float) -> dict[str, Any]:
        paired = {"mean": -0.01, "std": 0.001, "n": 2, "verdict": "better"}
        return {
            "workload": workload,
            "target": 0.5,
            "strategies": {
                "pbt": {"speedup": pbt, "finalMean": 0.45 if pbt else 0.55, "finals": finals},
                "autolrs": {"speedup": None, "finalMean": 0.6, "costInS": autolrs_cost},
            },
            "comparisons": {
                "pbt": {"vsOptuna": paired, "vsScheduleFree": {**paired, "mean": 0.02}},
                "autolrs": {"vsOptuna": None, "vsScheduleFree": None},
            },
        }

    rows = summary.targets(profile, [section("a", 1.5, 2.0), section("b", None, 3.0)])
    by_name = {row["target"].split(" (")[0]: row for row in rows}
    reach = rows[0]
    assert not reach["met"]
    assert "b: not reached (lowest final: pbt 0.55 vs target 0.5, +10.0%)" in reach["detail"]
    assert rows[1]["detail"] == "median 0.75x (not reached counts as 0)" and not rows[1]["met"]
    optuna = next(r for r in rows if r["target"].startswith("pbt beats Optuna"))
    assert optuna["met"] and optuna["detail"].startswith("2 of 2")
    free = next(r for r in rows if r["target"].startswith("pbt beats Schedule-Free"))
    assert not free["met"] and free["detail"].startswith("0 of 2")
    cost = by_name["AutoLRS search cost <= 2.5 S"]
    assert not cost["met"] and cost["detail"] == "a: 2.00 S, b: 3.00 S"


# --- the law's prediction ------------------------------------------------------------------------


def _law_row(predicted: float, own: float, mean: float, std: float) -> dict[str, Any]:
    return {
        "predictedFinal": predicted,
        "searchObjective": own,
        "searchSeedError": (predicted - own) / own,
        "finalMean": mean,
        "finalStd": std,
        "predictionError": (predicted - mean) / mean,
        "speedup": 1.0,
        "costInS": 2.1,
    }


def test_law_targets_name_both_errors_and_the_report_shows_the_seed_spread() -> None:
    sections = [
        {"workload": "a", "strategies": {"law": _law_row(0.99, 1.0, 1.0, 0.01)}},
        {"workload": "b", "strategies": {"law": _law_row(0.5, 0.5, 0.6, 0.15)}},
    ]
    error, reach = summary._law_targets(sections)
    assert not error["met"]  # b's prediction is 17% below its replays' mean
    assert error["detail"] == "a: -1.0% (own run -1.0%), b: -16.7% (own run +0.0%)"
    assert reach["met"]
    text = "\n".join(report._prediction_section({"quality": sections}))
    assert "seed spread" in text
    assert "| 25.0% |" in text  # b's replays: 0.15 / 0.6
