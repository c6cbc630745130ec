"""Parameters of the ``law`` strategy, validated before any training starts.

Same conventions as ``strategies.config``: camelCase on the wire, unknown fields refused, every
number bounded. The cost of a search is ``probeCost`` budgets of probes (the trunk included)
plus, when ``verify`` is on, the budget's steps after the trunk (the trunk continued into the
found schedule), so less than 2.5 budgets with the defaults; a trunk abandoned because it became
unstable adds what it trained.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from schedsearch.trainers.strategies.config import StrategyModel

DEFAULT_PEAK_FACTORS: Final = (0.5, 1.0, 2.0, 4.0, 8.0)
MAX_PEAK_FACTOR: Final = 100.0
LawKind = Literal["auto", "multiPower", "tissue"]
Parameterisation = Literal["monotone", "free"]


class LawConfig(StrategyModel):
    """Fit a loss-vs-schedule law on probe runs, then minimise its predicted final loss.

    The probes: one short run per candidate peak (the base schedule's peak times each of
    ``peakFactors``), each judged by its loss after a cooldown branch; the best continues as a
    constant-LR trunk with cooldown branches of several lengths. The law is fitted on all their
    validation curves; the optimised schedule holds the trunk's LR (the highest the law was
    fitted on) at least to the trunk's end, then decays to the floor, and the search continues
    the trunk into it.
    """

    probe_cost: float = Field(
        1.5,
        ge=0.5,
        le=3.0,
        description="Steps of all probe runs together, as a multiple of the budget S (0.5 to 3).",
    )
    peak_factors: tuple[Annotated[float, Field(gt=0, le=MAX_PEAK_FACTOR)], ...] = Field(
        DEFAULT_PEAK_FACTORS,
        max_length=8,
        strict=False,  # a list in YAML; each factor stays a strict number
        description="Candidate trunk LRs as multiples of the base schedule's peak (clipped to "
        "lrBounds), 0 to 8 factors; empty: the base schedule's peak, no peak probes.",
    )
    change_points: int = Field(
        6,
        ge=2,
        le=32,
        description="Change points of the optimised schedule's decay, after the trunk LR is held "
        "(the LR moves linearly between them, then to the floor at the end of the budget).",
    )
    parameterisation: Parameterisation = Field(
        "monotone",
        description="monotone: the LR never rises in the decay (the schedules the laws were "
        "validated on); free: each change point anywhere between lrBounds.min and the trunk LR.",
    )
    law: LawKind = Field(
        "auto",
        description="multiPower (Luo et al. 2025), tissue (Tissue et al. 2024), or auto: both "
        "are fitted and the one with the lower held-out error is used.",
    )
    huber_scale: float = Field(
        0.01,
        gt=0.0,
        le=1.0,
        description="Relative error beyond which a point's residual counts linearly, not "
        "squared, in the fit (Huber loss), in (0, 1].",
    )
    fit_restarts: int = Field(
        8, ge=1, le=64, description="Random starting points of the law's fit, 1 to 64."
    )
    optimise_restarts: int = Field(
        8, ge=1, le=64, description="Starting points of the schedule optimisation, 1 to 64."
    )
    verify: bool = Field(
        True,
        description="Continue the trunk into the optimised schedule to the end of the budget "
        "(its first steps are the trunk's: the schedule is trained once, from scratch) and "
        "report its measured final loss beside the predicted one; off: the objective is the "
        "prediction.",
    )
