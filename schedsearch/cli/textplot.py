"""A small terminal line plot: one value per column, drawn with plain characters.

Used by ``schedsearch best`` to show the shape of a schedule next to its change points, in any
terminal and in logs (no colours, no Unicode needed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

MARK = "*"
RISER = "|"


def plot_function(
    f: Callable[[int], float],
    start: int,
    stop: int,
    *,
    width: int = 60,
    height: int = 12,
    x_label: str = "step",
) -> str:
    """Plot ``f`` over the integers ``[start, stop]``, one sample per column."""
    if stop < start:
        raise ValueError(f"stop ({stop}) must not be before start ({start})")
    columns = max(2, min(width, stop - start + 1))
    xs = [start + round(i * (stop - start) / (columns - 1)) for i in range(columns)]
    return plot_values([f(x) for x in xs], x_range=(start, stop), height=height, x_label=x_label)


def plot_values(
    values: Sequence[float],
    *,
    x_range: tuple[float, float],
    height: int = 12,
    x_label: str = "",
) -> str:
    """Rows of text: a y axis with the min and max values, one column per value, and an x axis
    labelled with ``x_range``. Non-finite values leave their column empty."""
    if height < 2:
        raise ValueError(f"height must be >= 2, got {height}")
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "(nothing to plot: no finite values)"
    low, high = min(finite), max(finite)
    rows = [[" "] * len(values) for _ in range(height)]
    previous: int | None = None
    for column, value in enumerate(values):
        if not math.isfinite(value):
            previous = None
            continue
        row = _row_of(value, low, high, height)
        if previous is not None and abs(row - previous) > 1:
            # Connect a jump so a restart or a step change reads as one line.
            for between in range(min(row, previous) + 1, max(row, previous)):
                rows[between][column] = RISER
        rows[row][column] = MARK
        previous = row
    return "\n".join(_frame(rows, low, high, x_range, x_label))


def _row_of(value: float, low: float, high: float, height: int) -> int:
    """Row index counted from the bottom (0) to the top (height - 1)."""
    if high == low:
        return height // 2
    return round((value - low) / (high - low) * (height - 1))


def _frame(
    rows: list[list[str]], low: float, high: float, x_range: tuple[float, float], x_label: str
) -> list[str]:
    top, bottom = f"{high:.3g}", f"{low:.3g}"
    margin = max(len(top), len(bottom))
    lines = []
    for index in range(len(rows) - 1, -1, -1):
        label = top if index == len(rows) - 1 else bottom if index == 0 else ""
        lines.append(f"{label:>{margin}} |{''.join(rows[index])}")
    width = len(rows[0])
    lines.append(" " * margin + " +" + "-" * width)
    left, right = f"{x_range[0]:g}", f"{x_range[1]:g}"
    gap = max(1, width - len(left) - len(right))
    lines.append(" " * (margin + 2) + left + " " * gap + right)
    if x_label:
        lines.append(" " * (margin + 2) + x_label.center(width).rstrip())
    return lines
