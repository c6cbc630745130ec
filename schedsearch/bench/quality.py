"""Search quality as pure arithmetic on validation-loss curves: the tuned baseline, its target,
steps-to-target speedups and the summary of one set of replays.

A curve is a list of ``(step, val_loss)`` pairs taken every E steps; a run that diverged has a
shorter curve and no final loss. Non-finite losses count as infinitely bad, so a diverged run
never reaches a target and never wins a grid.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

Curve = Sequence[tuple[int, float]]


def finite_or_inf(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.inf


def first_step_at_or_below(curve: Curve, target: float) -> int | None:
    """The first evaluation step whose loss is <= ``target``; None: not reached."""
    for step, loss in curve:
        if finite_or_inf(loss) <= target:
            return step
    return None


def speedup(total_steps: int, step: int | None) -> float | None:
    """S / steps-to-target; None when the target was not reached."""
    return None if step is None or step <= 0 else total_steps / step


def mean_curve(curves: Sequence[Curve], steps: Sequence[int]) -> list[tuple[int, float]]:
    """The seeds' mean loss at each of ``steps``; a seed without a finite value there (it
    diverged earlier) makes the mean infinite."""
    by_seed = [dict(curve) for curve in curves]
    return [
        (step, statistics.fmean(finite_or_inf(seed.get(step)) for seed in by_seed))
        for step in steps
    ]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN: undefined for one value); the mean is infinite
    if any value is (a diverged seed)."""
    finite = [finite_or_inf(v) for v in values]
    if not finite or any(math.isinf(v) for v in finite):
        return math.inf, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else math.nan


def eval_steps(total_steps: int, eval_every: int) -> list[int]:
    return list(range(eval_every, total_steps + 1, eval_every))


@dataclass(frozen=True)
class RunCurve:
    """One training run: its seed, evaluation curve and final validation loss (None: diverged)."""

    seed: int
    curve: list[tuple[int, float]]
    final: float | None


@dataclass(frozen=True)
class GridCell:
    """One (family, peak LR) of the baseline grid, over the evaluation seeds."""

    family: str
    peak_factor: float
    peak_lr: float
    runs: tuple[RunCurve, ...]

    @property
    def final_mean(self) -> float:
        return mean_std([finite_or_inf(r.final) for r in self.runs])[0]


def select_baseline(cells: Sequence[GridCell]) -> GridCell:
    """The tuned baseline: the cell with the lowest mean final validation loss (ties: the first
    in grid order, so the choice is reproducible)."""
    if not cells:
        raise ValueError("grid: no cells to choose a baseline from")
    return min(cells, key=lambda cell: cell.final_mean)


def oracle_run(cells: Sequence[GridCell]) -> tuple[GridCell, RunCurve]:
    """The single best grid run (one seed): the "oracle among families"."""
    pairs = [(cell, run) for cell in cells for run in cell.runs]
    if not pairs:
        raise ValueError("grid: no runs")
    return min(pairs, key=lambda pair: finite_or_inf(pair[1].final))


def at_grid_edge(cell: GridCell, peak_factors: Sequence[float]) -> bool:
    """True when the winning peak is the smallest or largest tried: the grid may be too narrow."""
    return cell.peak_factor in (min(peak_factors), max(peak_factors))


def summarize_runs(
    runs: Sequence[RunCurve], *, total_steps: int, eval_every: int, target: float
) -> dict[str, Any]:
    """Final loss mean/std and steps-to-target of a set of seeds replaying one schedule.

    The headline step is where the *seed-mean* curve first reaches the target (the target is a
    seed mean too); each seed's own first step is listed alongside.
    """
    steps = eval_steps(total_steps, eval_every)
    mean = mean_curve([r.curve for r in runs], steps)
    reached = first_step_at_or_below(mean, target)
    per_seed = {r.seed: first_step_at_or_below(r.curve, target) for r in runs}
    final_mean, final_std = mean_std([finite_or_inf(r.final) for r in runs])
    return {
        "finalMean": final_mean,
        "finalStd": final_std,
        "finals": {str(r.seed): r.final for r in runs},
        "diverged": sum(1 for r in runs if r.final is None or not math.isfinite(r.final)),
        "seeds": [r.seed for r in runs],
        "stepsToTarget": reached,
        "speedup": speedup(total_steps, reached),
        "perSeedStepsToTarget": {str(seed): step for seed, step in per_seed.items()},
        "perSeedSpeedup": {str(s): speedup(total_steps, step) for s, step in per_seed.items()},
        "meanCurve": mean,
    }


# A paired difference is called better or worse only when a two-sided paired t-test at this level
# rejects "no difference" (with 2-6 seeds, a plain 2-standard-error rule would call noise real).
NOISE_CONFIDENCE = 0.95


def paired_difference(
    finals: Mapping[str, float | None], reference: Mapping[str, float | None]
) -> dict[str, Any]:
    """``finals - reference`` seed by seed (seeds both have): mean, sample std, count, each
    seed's difference, and a verdict: "better"/"worse" when a paired t-test at
    ``NOISE_CONFIDENCE`` says the mean differs from 0, else "within noise" ("diverged" when a
    seed of either has no finite final loss; "one seed" when there is no noise estimate)."""
    seeds = [seed for seed in finals if seed in reference]
    per_seed = {
        seed: finite_or_inf(finals[seed]) - finite_or_inf(reference[seed]) for seed in seeds
    }
    row: dict[str, Any] = {"n": len(seeds), "perSeed": per_seed, "mean": None, "std": None}
    if not seeds:
        return {**row, "verdict": "no common seeds"}
    if not all(math.isfinite(d) for d in per_seed.values()):
        return {**row, "verdict": "diverged"}
    mean, std = mean_std(list(per_seed.values()))
    row.update(mean=mean, std=std if math.isfinite(std) else None)
    if len(seeds) < 2:
        return {**row, "verdict": "one seed"}
    critical = float(stats.t.ppf((1 + NOISE_CONFIDENCE) / 2, len(seeds) - 1))
    beyond = abs(mean) > critical * std / math.sqrt(len(seeds))
    verdict = ("better" if mean < 0 else "worse") if beyond else "within noise"
    return {**row, "verdict": verdict}


def search_cost(member_steps: int, total_steps: int) -> float:
    """The search's member-steps in units of the budget S."""
    return member_steps / total_steps


def cells_from_runs(
    grid: Mapping[tuple[str, float], tuple[float, Sequence[RunCurve]]],
) -> list[GridCell]:
    """Grid cells from ``{(family, factor): (peak_lr, runs)}`` in the mapping's order."""
    return [
        GridCell(family, factor, peak_lr, tuple(runs))
        for (family, factor), (peak_lr, runs) in grid.items()
    ]
