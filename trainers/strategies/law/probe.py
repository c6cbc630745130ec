"""Which probe runs identify the law, laid out for a budget of S steps (pure, no torch).

One trunk, shared: the base schedule's warm-up, then a constant LR. Cooldown branches leave it
at several points and with several lengths; a branch is trained from a copy of the trunk and
thrown away, so only its own steps cost. For a trunk of T steps:

* peak candidates: each candidate LR trains the trunk's first T/4 steps and a cooldown branch of
  half that (the project's annealed evaluation); the lowest loss after its branch is the trunk
  LR, and that run continues as the trunk (the others stop);
* at T/2 a short branch (20% of T/2, the cooldown share that matches cosine in Hägele et al. 2024)
  and a long one to T (a decay over half the run: the "decaying run" of the law's papers, on the
  trunk's steps);
* at T a short branch (20% of T).

The curves differ in how long the LR stayed high and how long and from where it decayed, which
is what separates the law's area term from its annealing term. T is the largest trunk whose
probes fit in ``probeCost * S`` steps, and no longer than the latest step the found schedule's
decay may start at: the search continues the trunk into the found schedule (see ``optimise``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# The shares above, as fractions of the trunk.
CANDIDATE_SHARE = 0.25
CANDIDATE_BRANCH_SHARE = 0.5  # of the candidate's run
SHORT_BRANCH_SHARE = 0.2  # of the branch point
# Validation points: every S/TRUNK_POINTS steps on the trunk, BRANCH_POINTS on each branch.
TRUNK_POINTS = 100
BRANCH_POINTS = 8
# Steps a candidate trains after the warm-up, at least.
MIN_CANDIDATE_STEPS = 8


@dataclass(frozen=True)
class Branch:
    """A cooldown from the trunk's LR at step ``start`` to the floor over ``steps`` steps."""

    start: int
    steps: int

    @property
    def name(self) -> str:
        return f"branch-{self.start}+{self.steps}"

    @property
    def eval_every(self) -> int:
        return max(1, self.steps // BRANCH_POINTS)


@dataclass(frozen=True)
class ProbePlan:
    """The probes of one search (see the module's docstring)."""

    total_steps: int
    warmup: int
    candidates: int
    candidate_steps: int
    candidate_branch: int
    trunk_steps: int
    branches: tuple[Branch, ...]
    eval_every: int

    @property
    def cost(self) -> int:
        """Steps of all probes together."""
        each = self.candidate_steps + self.candidate_branch
        rest = self.trunk_steps - self.candidate_steps
        return self.candidates * each + rest + sum(b.steps for b in self.branches)

    @property
    def stops(self) -> list[int]:
        """The trunk steps where branches leave, in order."""
        return sorted({b.start for b in self.branches})

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON data, camelCase like every saved state."""
        data = {_camel(key): value for key, value in asdict(self).items()}
        data["branches"] = [asdict(b) for b in self.branches]
        return data


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def cost_per_trunk_step(candidates: int) -> float:
    """Probe steps per trunk step (the plan's cost divided by T, before rounding)."""
    candidate = CANDIDATE_SHARE * (1.0 + CANDIDATE_BRANCH_SHARE)
    branches = SHORT_BRANCH_SHARE * 0.5 + 0.5 + SHORT_BRANCH_SHARE
    return candidates * candidate + (1.0 - CANDIDATE_SHARE) + branches


def make_plan(
    *,
    total_steps: int,
    warmup: int,
    candidates: int,
    probe_cost: float,
    max_trunk: int | None = None,
) -> ProbePlan:
    """The probes for a budget of ``total_steps`` with ``candidates`` trunk LRs to choose from,
    within ``probe_cost * total_steps`` steps, the trunk at most ``max_trunk`` steps (default:
    the budget)."""
    if candidates < 1:
        raise ValueError(f"candidates: need at least 1 trunk LR, got {candidates}")
    longest = total_steps if max_trunk is None else min(max_trunk, total_steps)
    trunk = min(longest, math.floor(probe_cost * total_steps / cost_per_trunk_step(candidates)))
    candidate_steps = round(CANDIDATE_SHARE * trunk)
    if candidate_steps < warmup + MIN_CANDIDATE_STEPS:
        raise ValueError(
            f"probeCost: {probe_cost:g} x {total_steps} steps gives a trunk of {trunk} steps, too "
            f"short for {candidates} candidate(s) after a warm-up of {warmup} steps; raise "
            "probeCost, list fewer peakFactors, or shorten the warm-up"
        )
    middle = trunk // 2
    branches = (
        Branch(middle, max(1, round(SHORT_BRANCH_SHARE * middle))),
        Branch(middle, trunk - middle),
        Branch(trunk, max(1, round(SHORT_BRANCH_SHARE * trunk))),
    )
    plan = ProbePlan(
        total_steps=total_steps,
        warmup=warmup,
        candidates=candidates,
        candidate_steps=candidate_steps,
        candidate_branch=max(1, round(CANDIDATE_BRANCH_SHARE * candidate_steps)),
        trunk_steps=trunk,
        branches=branches,
        eval_every=max(1, total_steps // TRUNK_POINTS),
    )
    # Rounding can add a step or two; shorten the long branch to stay within the budget.
    excess = plan.cost - math.floor(probe_cost * total_steps)
    if excess > 0:
        long = Branch(middle, trunk - middle - excess)
        plan = ProbePlan(**{**plan.__dict__, "branches": (branches[0], long, branches[2])})
    return plan
