"""``schedsearch plot``: the best schedule against the base schedule, and the members' losses.

Rendered with matplotlib's Agg backend (no display needed) into a PNG, SVG or PDF file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from schedsearch.store.base import HistoryPoint
from schedsearch.trainers.schedules import Schedule

SAMPLES = 800
IMAGE_FORMATS = ("png", "svg", "pdf")
# A loss series this short is drawn with markers: a cluster search keeps one point per member,
# and a one-point line draws nothing.
MARKERS_BELOW = 30


def plot_search(
    path: Path,
    *,
    title: str,
    best: Schedule,
    base: Schedule | None,
    history: Sequence[HistoryPoint],
    best_member: int | None,
    image_format: str = "png",
) -> None:
    """Write a two-panel figure: LR over steps (best vs base) and loss over steps."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    fig, (lr_ax, loss_ax) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    try:
        _lr_panel(lr_ax, best, base)
        _loss_panel(loss_ax, history, best_member)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=120, format=image_format)
    finally:
        plt.close(fig)


def _lr_panel(ax, best: Schedule, base: Schedule | None) -> None:  # type: ignore[no-untyped-def]
    steps, lrs = zip(*best.sample(SAMPLES), strict=True)
    ax.plot(steps, lrs, label="best schedule", color="tab:blue")
    if base is not None:
        base_steps, base_lrs = zip(*base.sample(SAMPLES), strict=True)
        ax.plot(base_steps, base_lrs, label="base schedule", color="tab:gray", linestyle="--")
    ax.set_ylabel("learning rate")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)


def _loss_panel(  # type: ignore[no-untyped-def]
    ax, history: Sequence[HistoryPoint], best_member: int | None
) -> None:
    members = sorted({p.member for p in history})
    for member in members:
        points = [p for p in history if p.member == member]
        is_best = member == best_member
        _series(ax, points, "loss", is_best, f"member {member} train loss")
        _series(ax, points, "val_loss", is_best, f"member {member} validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if best_member is not None and best_member in members:
        ax.legend(loc="best")
    ax.grid(alpha=0.3)


def _series(ax, points: Sequence[HistoryPoint], field: str, is_best: bool, label: str) -> None:  # type: ignore[no-untyped-def]
    pairs = [(p.step, getattr(p, field)) for p in points if getattr(p, field) is not None]
    if not pairs:
        return
    steps, values = zip(*pairs, strict=True)
    style = "-" if field == "val_loss" else ":"
    marker = "o" if len(pairs) < MARKERS_BELOW else None
    if is_best:
        ax.plot(steps, values, style, label=label, linewidth=1.8, marker=marker)
    else:
        # Other members give context without competing with the winner.
        ax.plot(steps, values, style, color="lightgray", linewidth=0.8, marker=marker)
