"""Benchmark arithmetic and bookkeeping: steps to target, baseline choice, scaling of the
strategies' defaults, the run cache, progress, and the report rendered from fake data."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from schedsearch.bench import executor, planning, profiles, quality, report, tasks
from schedsearch.bench.cache import RunCache, clean_floats
from schedsearch.bench.quality import GridCell, RunCurve
from schedsearch.trainers.schedules import Schedule

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
    config = profiles.autolrs_config(15000)
    assert (config.tau, config.tau_prime, config.tau_max, config.candidates) == (
        1000,
        100,
        8000,
        10,
    )
    small = profiles.autolrs_config(1000)
    assert (small.tau, small.tau_prime, small.tau_max) == (67, 7, 536)


def test_pbt_and_hdet_scaling() -> None:
    profile = profiles.get_profile("full")
    assert profiles.pbt_config(profile, 2000).perturbation_interval == 125
    assert profiles.pbt_config(profile, 2000).population == 8
    assert profiles.hdet_config(profile, 2000).sync_interval == 100


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


def test_plan_counts_replays_of_unrun_searches(tmp_path: Path) -> None:
    profile = profiles.get_profile("quick")
    bench = planning.build_plan(profile, RunCache(tmp_path))
    grid = len(profile.families) * len(profile.peak_factors) * len(profile.eval_seeds)
    assert len(bench.parallel) == grid + len(profile.strategies)
    assert len(bench.replays) == len(profile.strategies) * len(profile.eval_seeds)
    assert bench.cached == set()


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
        followups=lambda task, result: [replay] if task.kind == "search" else [],
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
    good = tasks.train_curve(tasks.curve_task(plan, Schedule.constant(0.02, 20), 3, "ok").spec)
    assert [step for step, _ in good["curve"]] == [10, 20]
    assert good["final"] == good["curve"][-1][1] and not good["diverged"]
    bad = tasks.train_curve(tasks.curve_task(plan, Schedule.constant(1e9, 20), 3, "no").spec)
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
        "baseline": {
            "family": "cosine",
            "peakFactor": 1.0,
            "peakLR": 0.02,
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
                "stepsToTarget": None,
                "speedup": None,
                "perSeedStepsToTarget": {"1": None},
                "meanCurve": curve,
                "schedule": schedule,
            },
            "pbt": {
                "memberSteps": 80,
                "costInS": 4.0,
                "searchWallSeconds": 5.0,
                "finalMean": 0.2,
                "finalStd": 0.01,
                "stepsToTarget": 10,
                "speedup": 2.0,
                "perSeedStepsToTarget": {"1": 10},
                "meanCurve": curve,
                "schedule": schedule,
            },
            "hdet": {"error": "RuntimeError: HDET failed"},
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
    assert "Target (tuned baseline's final validation loss): **0.3**" in text
    assert "edge of the grid" in text
    assert "| autolrs | 0.35 ± 0.02 | not reached | not reached | seed 1: not reached |" in text
    assert "| pbt | 0.2 ± 0.01 | 10 | 2.00x |" in text
    assert "| hdet | failed: RuntimeError: HDET failed |" in text
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
