"""The report's figures, from its data only: per workload, validation loss against step of the
replayed schedules next to the tuned baseline (with the target), and the found schedules next to
the baseline's schedule. matplotlib with the Agg backend (no display)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from schedsearch.trainers.schedules import Schedule
from schedsearch.trainers.strategies import registry

SAMPLES = 400
# One colour per strategy, in the registry's order; black and purple are the baselines'.
_STRATEGY_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:brown", "tab:olive")
COLORS = {
    "baseline": "black",
    "schedule-free": "tab:purple",
    **dict(zip(registry.NAMES, _STRATEGY_COLORS, strict=False)),
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: no display needed
    import matplotlib.pyplot as plt

    return plt


def _finite(points: list[Any]) -> tuple[list[int], list[float]]:
    pairs = [(s, v) for s, v in points if v is not None and math.isfinite(v)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def plot_val_loss(section: dict[str, Any], path: Path) -> Path | None:
    """Seed-mean validation loss of the baseline and each strategy's replay; the target."""
    if "baseline" not in section:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    try:
        base = section["baseline"]
        label = f"tuned baseline ({base['family']} x{base['peakFactor']:g})"
        ax.plot(*_finite(base["meanCurve"]), color=COLORS["baseline"], label=label, linewidth=2)
        for name, row in section.get("strategies", {}).items():
            if "meanCurve" in row:
                ax.plot(*_finite(row["meanCurve"]), color=COLORS.get(name), label=f"{name} replay")
        # Optuna at a strategy's cost: the strategy's colour, dashed.
        for name, row in section.get("equalCompute", {}).items():
            if "meanCurve" in row:
                curve = _finite(row["meanCurve"])
                ax.plot(*curve, color=COLORS.get(name), linestyle="--", label=f"optuna @ {name}")
        free = section.get("scheduleFree", {})
        if "meanCurve" in free:
            ax.plot(
                *_finite(free["meanCurve"]), color=COLORS["schedule-free"], label="schedule-free"
            )
        ax.axhline(section["target"], color="gray", linestyle="--", label="target")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss (mean over seeds)")
        ax.set_title(
            f"{section['workload']}: replayed schedules vs tuned baseline (S={section['steps']})"
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def plot_schedules(section: dict[str, Any], path: Path) -> Path | None:
    """The LR of every found schedule over the budget, with the baseline's."""
    if "baseline" not in section:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    try:
        curves = [("baseline", "baseline", "-", section["baseline"]["schedule"])]
        for group, style in (("strategies", "-"), ("equalCompute", "--")):
            curves += [
                (n, n if style == "-" else f"optuna @ {n}", style, r["schedule"])
                for n, r in section.get(group, {}).items()
                if "schedule" in r
            ]
        # A log axis cannot show LR 0 (warm-up start, end of decay): clip to a floor.
        floor = section["lrBounds"][0] / 10
        for name, label, style, data in curves:
            steps, lrs = zip(*Schedule.from_dict(data).sample(SAMPLES), strict=True)
            floored = [max(lr, floor) for lr in lrs]
            ax.plot(steps, floored, color=COLORS.get(name), linestyle=style, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.set_title(f"{section['workload']}: found schedules vs the tuned baseline's")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def plot_workload(section: dict[str, Any], out: Path) -> list[str]:
    """Both figures of one workload; returns the file names written (relative to ``out``)."""
    written = [
        plot_val_loss(section, out / f"{section['workload']}-val-loss.png"),
        plot_schedules(section, out / f"{section['workload']}-schedules.png"),
    ]
    return [p.name for p in written if p is not None]
