"""HDET's starting peak: an annealed comparison of a few short probes, free of torch.distributed.

The paper starts HDET from the user's base schedule and lets the auto-LR move it; the auto-LR
moves the base by a few percent per sync, so a base a factor of four too low stays too low
(measured on the regression workload: the found schedule averaged 0.0056 against the tuned
0.070). So before the replicas train together, each candidate peak (the base schedule's peak
times ``probe.factors``) is tried in a short run from the shared initialisation: a linear rise,
the candidate held, then a cooldown branch to the floor, and the validation loss after it. The
cooldown is what makes short probes comparable with the whole run: raw losses after a short
horizon rank the low LRs first (see ``evaluation.py``). The replicas share the candidates out,
so the probes cost ``len(factors) * (steps + branch)`` member-steps but only
``ceil(len(factors) / replicas)`` probe lengths of wall-clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProbePlan:
    """The candidate peaks and how each probe trains: ``warmup`` steps of linear rise from 0,
    the candidate held to ``steps``, then a ``branch_steps`` cooldown to ``floor``."""

    candidates: tuple[float, ...]
    steps: int
    warmup: int
    branch_steps: int
    floor: float
    shape: str

    def lr(self, peak: float, step: int) -> float:
        """The LR of probe step ``step`` (before the branch) for candidate ``peak``."""
        if step < self.warmup:
            return peak * step / self.warmup
        return peak

    def assigned(self, rank: int, world_size: int) -> list[int]:
        """The candidate indices replica ``rank`` trains (round robin)."""
        return list(range(rank, len(self.candidates), world_size))


def candidates(
    base_peak: float, factors: Sequence[float], bounds: tuple[float, float]
) -> list[float]:
    """The base peak times each factor, clipped to ``bounds``, without duplicates, ascending."""
    low, high = bounds
    return sorted({min(max(base_peak * f, low), high) for f in factors})


def plan(
    *,
    base_peak: float,
    factors: Sequence[float],
    bounds: tuple[float, float],
    steps: int,
    rise: int,
    branch_steps: int,
    floor: float,
    shape: str,
) -> ProbePlan:
    """The probes for a base schedule peaking at ``base_peak`` after ``rise`` steps; a probe's
    rise is the base's, at most a quarter of the probe."""
    return ProbePlan(
        candidates=tuple(candidates(base_peak, factors, bounds)),
        steps=steps,
        warmup=min(rise, steps // 4),
        branch_steps=branch_steps,
        floor=floor,
        shape=shape,
    )


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
