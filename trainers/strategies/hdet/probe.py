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

from collections.abc import Sequence
from dataclasses import dataclass

from schedsearch.trainers.strategies.peaks import candidates


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
