"""The report: ``report.json`` (all the data) and ``report.md`` (the same, for people), rendered
from one report dictionary so the two never disagree. Rendering is pure (see ``render``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from schedsearch.bench.cache import clean_floats
from schedsearch.trainers.schedules import Schedule

PAPER_LOW, PAPER_HIGH = 1.22, 1.5


def fmt_loss(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "diverged"
    return f"{value:.4g}"


def fmt_mean_std(mean: float | None, std: float | None) -> str:
    if mean is None or not math.isfinite(mean):
        return "diverged"
    return f"{mean:.4g} ± {std:.2g}" if std is not None and math.isfinite(std) else f"{mean:.4g}"


def fmt_speedup(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f}x"


def fmt_step(value: int | None) -> str:
    return "not reached" if value is None else str(value)


def standing(speedup: float | None) -> str:
    """Where one speedup stands against the paper's 1.22x-1.5x."""
    if speedup is None:
        return "target not reached: below the paper's range"
    if speedup < PAPER_LOW:
        return "below the paper's range"
    if speedup <= PAPER_HIGH:
        return "within the paper's range"
    return "above the paper's range"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# --- sections ------------------------------------------------------------------------------------


def _header(report: dict[str, Any]) -> list[str]:
    machine = report.get("machine", {})
    return [
        f"# schedsearch benchmark: profile `{report['profile']}`",
        "",
        f"{report.get('description', '')}. Generated {report.get('createdAt', '?')} "
        f"from commit `{report.get('commit') or 'unknown'}`{_run_commits(report)}.",
        "",
        f"Command: `{report.get('command', '')}`",
        "",
        f"Machine: {machine.get('cpus', '?')} CPU(s), {machine.get('jobs', '?')} parallel "
        f"job(s) x {machine.get('threadsPerJob', '?')} torch thread(s), torch "
        f"{machine.get('torch', '?')}, device {machine.get('device', '?')}; load average "
        f"{machine.get('loadStart', '?')} at the start, {machine.get('loadEnd', '?')} at the end.",
        "",
        "## How to read this",
        "",
        "- **Seeds**: *selection* seeds choose (the grid's tuned cell, the Schedule-Free peak, "
        "Optuna's trials); held-out *evaluation* seeds measure every row of the quality tables "
        "(the target, every replay, every baseline); searches train with their own seeds. No "
        "figure is measured on the seeds it was chosen on.",
        "- **Target**: the tuned baseline's final validation loss: the (family, peak LR) cell of "
        "the grid with the lowest mean over the selection seeds, trained again with the "
        "evaluation seeds; the target is the mean over those. The grid table shows "
        "selection-seed means.",
        "- **vs target, paired**: each evaluation seed's final loss minus the tuned baseline's "
        "with the same seed (same initialisation, same batches), mean ± std over the seeds; "
        "negative is better. Called *better*/*worse* only when a two-sided paired t-test at "
        f"{report.get('noiseConfidence', 0.95):.0%} says the mean differs from 0, else *within "
        "noise*. The comparisons table pairs the rows the same way.",
        "- **Steps to target**: the first evaluation step (every E steps) at which the seed-mean "
        "validation loss of the replayed schedule is <= the target; per-seed steps are listed too. "
        "**Speedup** = S / steps to target. *not reached* is a result: the schedule never got "
        "there within S steps.",
        "- **Search cost**: member-steps the search trained (AutoLRS: its commits plus every "
        "candidate probe; PBT: all members; HDET: all replicas), in units of S. The grid itself "
        "costs cells x selection seeds x S.",
        "- Found schedules are **replayed from scratch** on a plain Trainer with the evaluation "
        "seeds, which no search used.",
        "- **optuna @ X cost**: what an Optuna user gets for the member-steps X's search spent: "
        "TPE over family and peak LR, S-step trials with median pruning, until no whole trial "
        "fits in that budget; its cost column counts every trial's steps, pruned ones included. "
        "Its best trial is replayed like a found schedule.",
        "- **schedule-free**: no schedule at all: the workload's optimizer in its Schedule-Free "
        "form at constant LR, the peak chosen on the selection seeds among the grid's peaks "
        "(at the package's documented LR scale, see Settings); its cost is that choice (peaks x "
        "selection seeds x S).",
        "",
        "## Settings",
        "",
        *[f"- {note}" for note in report.get("settings", [])],
        "",
    ]


def _run_commits(report: dict[str, Any]) -> str:
    counts = report.get("runCommits") or {}
    if not counts:
        return ""
    listed = ", ".join(f"`{commit}` ({n} runs)" for commit, n in counts.items())
    legend = " (+dirty: with uncommitted changes)" if any("+dirty" in c for c in counts) else ""
    return f"; the runs came from {listed}{legend}"


QUALITY_HEADER = [
    "schedule",
    "final val loss (mean ± std)",
    "vs target, paired (mean ± std)",
    "steps to target",
    "speedup",
    "per seed: steps to target",
    "search cost",
    "search wall",
]


def _strategy_rows(section: dict[str, Any]) -> list[list[str]]:
    """The tuned baseline, each strategy, Optuna at each strategy's cost, Schedule-Free."""
    base = section["baseline"]
    cells = len(section["grid"])
    seeds = len(section.get("selectionSeeds") or [1])
    rows = [
        _quality_row(
            f"tuned baseline ({base['family']} x{base['peakFactor']:g}, peak {base['peakLR']:.3g})",
            base,
            f"grid: {cells} cells x {seeds} seeds = {cells * seeds:.2f} S",
            "",
            paired="reference",
        )
    ]
    for name, row in section.get("strategies", {}).items():
        rows.append(_quality_row(name, row, _cost_cell(row), _wall(row)))
    for name, row in section.get("equalCompute", {}).items():
        rows.append(_quality_row(f"optuna @ {name} cost", row, _optuna_cost(row), _wall(row)))
    free = section.get("scheduleFree")
    if free:
        label = (
            f"schedule-free (x{free['peakFactor']:g}, LR {free['peakLR']:.3g})"
            if "peakFactor" in free
            else "schedule-free"
        )
        rows.append(_quality_row(label, free, _cost_cell(free), ""))
    return rows


def _quality_row(
    label: str, row: dict[str, Any], cost: str, wall: str, paired: str | None = None
) -> list[str]:
    if "error" in row or "missing" in row:
        problem = row.get("error") or row.get("missing")
        return [label, f"failed: {problem}", "", "", "", "", cost, wall]
    return [
        label,
        fmt_mean_std(row.get("finalMean"), row.get("finalStd")),
        paired or fmt_paired(row.get("pairedVsTarget")),
        fmt_step(row.get("stepsToTarget")),
        fmt_speedup(row.get("speedup")),
        _per_seed(row),
        cost,
        wall,
    ]


def _cost_cell(row: dict[str, Any]) -> str:
    if "costInS" not in row:
        return ""
    anneal = row.get("annealSteps")
    branches = f", {anneal} in annealed evaluation" if anneal else ""
    return f"{row['costInS']:.2f} S ({row['memberSteps']} steps{branches})"


def _optuna_cost(row: dict[str, Any]) -> str:
    if "budgetSteps" not in row:
        return ""
    return (
        f"{_cost_cell(row)} of {row['budgetSteps']}; {row['trials']} trials, {row['pruned']} pruned"
    )


def _wall(row: dict[str, Any]) -> str:
    return f"{row.get('searchWallSeconds') or 0:.0f}s" if "costInS" in row else ""


def fmt_paired(paired: dict[str, Any] | None) -> str:
    """A paired difference as "+0.0012 ± 0.0004 (worse)"."""
    if not paired:
        return ""
    if paired.get("mean") is None:
        return str(paired.get("verdict", ""))
    std = paired.get("std")
    spread = f" ± {std:.2g}" if std is not None and math.isfinite(std) else ""
    return f"{paired['mean']:+.3g}{spread} ({paired['verdict']})"


def _per_seed(row: dict[str, Any]) -> str:
    steps = row.get("perSeedStepsToTarget") or {}
    return ", ".join(f"seed {seed}: {fmt_step(step)}" for seed, step in steps.items())


def _grid_table(section: dict[str, Any]) -> list[str]:
    factors = sorted({cell["peakFactor"] for cell in section["grid"]})
    families = list(dict.fromkeys(cell["family"] for cell in section["grid"]))
    cells = {(c["family"], c["peakFactor"]): c for c in section["grid"]}
    rows = [
        [family]
        + [
            fmt_mean_std(cells[(family, f)]["finalMean"], cells[(family, f)]["finalStd"])
            if (family, f) in cells
            else "-"
            for f in factors
        ]
        for family in families
    ]
    return _table(["family \\ peak = default x", *[f"{f:g}" for f in factors]], rows)


def _quality_section(section: dict[str, Any]) -> list[str]:
    lines = [
        f"### {section['workload']} (S = {section['steps']} steps, E = {section['evalEvery']}, "
        f"default LR {section['defaultLR']:g}, search LR bounds "
        f"[{section['lrBounds'][0]:.3g}, {section['lrBounds'][1]:.3g}])",
        "",
    ]
    if "baseline" not in section:
        return [*lines, f"No result: {section.get('missing', 'missing')}.", ""]
    base, oracle = section["baseline"], section["oracle"]
    chosen = (
        f"The tuned cell ({base['family']} x{base['peakFactor']:g}) was chosen at "
        f"{fmt_mean_std(base['selectionMean'], base.get('selectionStd'))} on the selection seeds."
    )
    if "target" in section:
        lines.append(
            f"Target (tuned baseline's final validation loss on the evaluation seeds): "
            f"**{fmt_loss(section['target'])}**. {chosen}"
        )
    else:
        lines.append(f"No target: {section.get('missing', 'missing')}. {chosen}")
    if base.get("atGridEdge"):
        lines.append(
            "The tuned peak LR is at the edge of the grid: a wider grid might tune the baseline "
            "further (the target would only get harder)."
        )
    lines += [
        "",
        f"Oracle among families (best single grid run, selection seeds): {oracle['family']} "
        f"x{oracle['peakFactor']:g} (peak {oracle['peakLR']:.3g}), seed {oracle['seed']}: "
        f"{fmt_loss(oracle['final'])}.",
        "",
    ]
    if "target" in section:
        lines += [*_table(QUALITY_HEADER, _strategy_rows(section)), ""]
        lines += _comparison_table(section)
        lines += _schedule_free_selection(section.get("scheduleFree") or {})
    lines += [
        "Grid (final validation loss, mean ± std over the selection seeds):",
        "",
        *_grid_table(section),
        "",
    ]
    for name in section.get("plots", []):
        lines.append(f"![{name}]({name})")
    return [*lines, ""]


def _comparison_table(section: dict[str, Any]) -> list[str]:
    """Each strategy against Optuna at its own cost and against Schedule-Free, paired."""
    rows = [
        [
            name,
            fmt_paired(pair.get("vsOptuna")) or "-",
            fmt_paired(pair.get("vsScheduleFree")) or "-",
            _mean_lr(section["strategies"].get(name, {})),
        ]
        for name, pair in section.get("comparisons", {}).items()
    ]
    if not rows:
        return []
    header = [
        "strategy",
        "minus optuna @ its cost (paired)",
        "minus schedule-free (paired)",
        "time-average LR of the found schedule",
    ]
    base_lr = _schedule_mean_lr(section["baseline"].get("schedule"))
    return [
        "Paired on the evaluation seeds (final loss of the strategy's replay minus the other's; "
        f"negative: the strategy is better). Tuned baseline's time-average LR: {base_lr}.",
        "",
        *_table(header, rows),
        "",
    ]


def _mean_lr(row: dict[str, Any]) -> str:
    return f"{row['meanLR']:.3g}" if "meanLR" in row else "-"


def _schedule_mean_lr(data: dict[str, Any] | None) -> str:
    if not data:
        return "?"
    lrs = Schedule.from_dict(data).lrs()
    return f"{sum(lrs) / len(lrs):.3g}"


def _schedule_free_selection(free: dict[str, Any]) -> list[str]:
    selection = free.get("selection")
    if not selection:
        return []
    cells = ", ".join(
        f"x{c['peakFactor']:g}: {fmt_mean_std(c['finalMean'], c['finalStd'])}" for c in selection
    )
    edge = " (at the edge of the peaks tried)" if free.get("atGridEdge") else ""
    return [
        f"Schedule-Free on the selection seeds, by peak = default x: {cells}; chosen "
        f"x{free['peakFactor']:g}{edge}.",
        "",
    ]


def _targets_section(report: dict[str, Any]) -> list[str]:
    rows = report.get("targets") or []
    if not rows:
        return []
    lines = ["## Targets", "", "Generated from this run's numbers.", ""]
    lines += _table(
        ["target", "met", "numbers"],
        ([r["target"], "yes" if r["met"] else "**no**", r["detail"]] for r in rows),
    )
    return [*lines, ""]


def _autolrs_section(report: dict[str, Any]) -> list[str]:
    data = report.get("autolrsVersusPaper")
    if not data:
        return []
    paper = data["paper"]
    lines = [
        "## AutoLRS against its paper",
        "",
        f"The AutoLRS paper reported {paper['range'][0]}x-{paper['range'][1]}x speedups "
        f"({paper['note']}). Here:",
        "",
    ]
    for workload, row in data["ours"].items():
        lines.append(
            f"- {workload}: {fmt_speedup(row['speedup'])} (final {fmt_loss(row['finalMean'])} vs "
            f"target {fmt_loss(row['target'])}; search cost "
            f"{_cost(row['costInS'])}): {standing(row['speedup'])}."
        )
    lines += ["", "Why the comparison looks like this:", ""]
    lines += [f"- {reason}" for reason in report.get("autolrsReasons", [])]
    return [*lines, ""]


def _prediction_section(report: dict[str, Any]) -> list[str]:
    """What a search that predicts its schedule's final loss said, against the replays."""
    rows = [
        (section["workload"], name, row)
        for section in report.get("quality", [])
        for name, row in section.get("strategies", {}).items()
        if "predictedFinal" in row
    ]
    if not rows:
        return []
    lines = [
        "## Predicted against measured",
        "",
        "The law strategy predicts the final validation loss of the schedule it found, from the "
        "law it fitted on its probes (search seed). Its own run of that schedule (the trunk "
        "continued, search seed) measures the law's error; the replays (evaluation seeds) add "
        "the spread between seeds (*seed spread*: the replays' standard deviation over their "
        "mean; a law fitted on one seed cannot predict the evaluation seeds' mean closer than "
        "about that). Fit error: on the probe points it was fitted to; held-out: on the trunk's "
        "tail left out of a second fit.",
        "",
    ]
    lines += _table(
        [
            "workload",
            "strategy",
            "law",
            "predicted",
            "search seed",
            "error",
            "replayed",
            "error",
            "seed spread",
            "fit",
            "held-out",
        ],
        (
            [
                workload,
                name,
                str(row.get("law") or "?"),
                fmt_loss(row.get("predictedFinal")),
                fmt_loss(row.get("searchObjective")),
                _percent(row.get("searchSeedError"), signed=True),
                fmt_mean_std(row.get("finalMean"), row.get("finalStd")),
                _percent(row.get("predictionError"), signed=True),
                _percent(_spread(row)),
                _percent(row.get("fitError")),
                _percent(row.get("heldOutError")),
            ]
            for workload, name, row in rows
        ),
    )
    return [*lines, ""]


def _spread(row: dict[str, Any]) -> float | None:
    """The replays' standard deviation over their mean (None without both)."""
    mean, std = row.get("finalMean"), row.get("finalStd")
    return std / mean if mean and std is not None else None


def _percent(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "?"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def _cost(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} S"


def _overhead_section(report: dict[str, Any]) -> list[str]:
    data = report.get("overhead", {})
    lines = ["## System overhead (trainer side)", ""]
    loops = data.get("trainerVsPlainLoop", [])
    if loops:
        lines += [
            "Our `Trainer` against a plain PyTorch loop on the same model, optimizer and batches, "
            "both evaluating and checkpointing every "
            f"{loops[0]['evalAndCheckpointEvery']} steps (PBT's default interval); median of "
            "alternating rounds. CPU-time rates are the robust figure on a shared machine.",
            "",
            *_table(
                [
                    "workload",
                    "plain steps/s (wall)",
                    "Trainer steps/s (wall)",
                    "overhead (wall)",
                    "plain steps/CPU-s",
                    "Trainer steps/CPU-s",
                    "overhead (CPU)",
                ],
                (
                    [
                        r["workload"],
                        f"{r['plain']['wallStepsPerSecond']:.1f}",
                        f"{r['trainer']['wallStepsPerSecond']:.1f}",
                        f"{r['wallOverheadPercent']:+.1f}%",
                        f"{r['plain']['cpuStepsPerSecond']:.1f}",
                        f"{r['trainer']['cpuStepsPerSecond']:.1f}",
                        f"{r['cpuOverheadPercent']:+.1f}%",
                    ]
                    for r in loops
                ),
            ),
            "",
        ]
    lines += _autolrs_overhead(data.get("autolrsOutsideTraining", {}))
    lines += _hdet_overhead(data.get("hdetConverge"), data.get("hdetPaperFraction"))
    lines += ["## Operator", "", report.get("operator", ""), ""]
    return lines


def _autolrs_overhead(per_workload: dict[str, Any]) -> list[str]:
    rows = [
        [
            workload,
            str(t["stages"]),
            f"{t['meanSearchSecondsPerStage'] * 1000:.0f} ms",
            f"{t['meanAskSecondsPerStage'] * 1000:.0f} ms",
            f"{t['meanTellSecondsPerStage'] * 1000:.0f} ms",
            f"{t['maxSearchSecondsPerStage'] * 1000:.0f} ms",
            "?" if t["searchFractionOfWall"] is None else f"{t['searchFractionOfWall']:.2%}",
        ]
        for workload, t in per_workload.items()
        if t
    ]
    if not rows:
        return ["AutoLRS time outside training: not measured (no AutoLRS search finished).", ""]
    header = [
        "workload",
        "stages",
        "mean per stage",
        "of which ask (GP fit + acquisition)",
        "of which tell (forecast fit + GP tell)",
        "max per stage",
        "share of search wall",
    ]
    return [
        "AutoLRS time outside training per stage (the search's own decisions: Bayesian optimiser "
        "ask/tell and the loss-forecast fits), measured inside the quality searches:",
        "",
        *_table(header, rows),
        "",
    ]


def _hdet_overhead(data: dict[str, Any] | None, paper: float | None) -> list[str]:
    if not data or not data.get("timing"):
        return ["HDET converge cost: not measured.", ""]
    timing = data["timing"]
    return [
        f"HDET converge cost at T = {data['syncInterval']} ({data['workload']}, "
        f"{data['replicas']} replicas, {data['steps']} steps): the parameter all-reduce took "
        f"{timing['convergeSeconds'] * 1000:.1f} ms in all, "
        f"{timing['convergeFraction']:.3%} of training time and "
        f"{data['convergeFractionOfWall']:.3%} of wall-clock "
        f"(the paper reports about {paper:.1%}); waiting for the slowest replica at syncs: "
        f"{timing['syncWaitSeconds']:.2f}s.",
        "",
    ]


def _plan_section(report: dict[str, Any]) -> list[str]:
    plan = report.get("plan", {})
    if not plan:
        return []
    return [
        "## Time",
        "",
        f"Estimated before starting: {plan.get('estimate', '?')}. Elapsed in this invocation: "
        f"{plan.get('elapsed', '?')}. Runs: {plan.get('runs', '?')} "
        f"({plan.get('cachedAtStart', 0)} cached at the start, {plan.get('failed', 0)} failed); "
        f"their own durations add up to {plan.get('runSeconds', '?')} (cached runs included, "
        "before sharing the parallel jobs).",
        "",
        *_profile_cost(plan),
    ]


def _profile_cost(plan: dict[str, Any]) -> list[str]:
    """The estimate of the whole profile's run time by kind of run, made before it started."""
    kinds = plan.get("profileByKind") or {}
    if not kinds:
        return []
    rows = [
        [kind, str(int(row["runs"])), str(int(row["steps"])), row["time"]]
        for kind, row in kinds.items()
    ]
    return [
        f"Estimated run time of the whole profile (cached runs included, each run on its own, "
        f"from the speed measured at the start): {plan.get('profileRunTime', '?')}; "
        f"{plan.get('searchesEstimate', 'searches counted by their training steps only')}.",
        "",
        *_table(["runs", "count", "steps", "estimated run time"], rows),
        "",
    ]


def render(report: dict[str, Any]) -> str:
    """``report.md`` from the report dictionary."""
    lines = _header(report)
    lines += ["## Search quality", ""]
    for section in report.get("quality", []):
        lines += _quality_section(section)
    lines += _targets_section(report)
    lines += _autolrs_section(report)
    lines += _prediction_section(report)
    lines += _overhead_section(report)
    lines += _plan_section(report)
    return "\n".join(lines).rstrip() + "\n"


def write(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(clean_floats(report), indent=2, allow_nan=False) + "\n")
    md_path.write_text(render(report))
    return json_path, md_path
