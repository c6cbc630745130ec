"""Parameters of population-based training, with Ray Tune's names and defaults."""

from __future__ import annotations

import math
from typing import Annotated, Final

from pydantic import Field

from schedsearch.trainers.config import MAX_SEED, Steps
from schedsearch.trainers.strategies.config import MAX_MEMBERS, StrategyModel

MAX_PERTURBATION_FACTOR: Final = 10.0
PerturbationFactor = Annotated[float, Field(gt=0, le=MAX_PERTURBATION_FACTOR)]


class PBTConfig(StrategyModel):
    """Population-based training with Ray Tune's semantics and names."""

    population: int = Field(
        8,
        ge=2,
        le=MAX_MEMBERS,
        description=f"Number of members trained in parallel, 2 to {MAX_MEMBERS} (each member is a "
        "pod and a record in the search's state ConfigMap, which must stay under 1 MiB).",
    )
    perturbation_interval: Steps = Field(
        250, gt=0, description="A member is ready to exploit/explore every this many steps."
    )
    burn_in_period: Steps = Field(0, ge=0, description="No perturbation before this step.")
    quantile_fraction: float = Field(
        0.25,
        ge=0.0,
        le=0.5,
        description="Fraction of the population in the top and bottom quantiles, in [0, 0.5].",
    )
    resample_probability: float = Field(
        0.25, ge=0.0, le=1.0, description="Probability of resampling the LR from its prior."
    )
    perturbation_factors: tuple[PerturbationFactor, ...] = Field(
        (1.2, 0.8),
        min_length=1,
        max_length=16,
        strict=False,  # a list in YAML; each factor stays a strict number
        description="Factors the LR is multiplied by when not resampled: 1 to 16 numbers in "
        f"(0, {MAX_PERTURBATION_FACTOR:g}].",
    )
    synch: bool = Field(False, description="Wait for the whole population at each interval.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the exploit/explore draws.")

    def quantile_size(self) -> int:
        """Members in each of the top and bottom quantiles: ceil(N*q) capped at floor(N/2)."""
        return min(math.ceil(self.population * self.quantile_fraction), self.population // 2)
