"""Choosing a peak LR from short probes, shared by the strategies that start that way (HDET's
starting peak, the law strategy's trunk): the candidate peaks around a base peak, one probe's
outcome, and the rule that picks among them. How a probe trains is each strategy's own."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def candidates(
    base_peak: float, factors: Sequence[float], bounds: tuple[float, float]
) -> list[float]:
    """The base peak times each factor, clipped to ``bounds``, without duplicates, ascending."""
    low, high = bounds
    return sorted({min(max(base_peak * f, low), high) for f in factors})


@dataclass(frozen=True)
class ProbeOutcome:
    """One probe: its candidate peak, its loss after the branch (NaN: diverged), its steps."""

    peak: float
    loss: float
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "loss": self.loss if math.isfinite(self.loss) else None,
            "steps": self.steps,
        }


def choose(outcomes: Sequence[ProbeOutcome]) -> ProbeOutcome:
    """The probe with the lowest finite loss; when every probe diverged, the lowest peak."""
    if not outcomes:
        raise ValueError("choose: no probes")
    finite = [o for o in outcomes if math.isfinite(o.loss)]
    if not finite:
        return min(outcomes, key=lambda o: o.peak)
    return min(finite, key=lambda o: (o.loss, o.peak))
