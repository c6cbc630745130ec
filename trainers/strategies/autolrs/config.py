"""Parameters of AutoLRS (Jin et al., ICLR 2021), validated before any training starts."""

from __future__ import annotations

from pydantic import Field, model_validator

from schedsearch.trainers.config import FieldProblems, Loc, Steps
from schedsearch.trainers.strategies.config import StrategyModel


class AutoLRSConfig(StrategyModel):
    """AutoLRS (Jin et al., ICLR 2021): per-stage Bayesian search over log-LR, loss forecasts."""

    tau: Steps = Field(1000, gt=0, description="Steps trained at the chosen LR in the first stage.")
    tau_prime: Steps = Field(
        100, gt=0, description="Steps each candidate LR is tried for in the first stage."
    )
    tau_max: Steps = Field(
        8000,
        gt=0,
        description="tau and tau' double after each stage while tau' < tauMax/10, then stay.",
    )
    candidates: int = Field(10, ge=2, le=1000, description="Candidate LRs tried per stage (k).")
    kappa: float = Field(
        1000.0, gt=0, description="Exploration weight of the lower-confidence-bound acquisition."
    )
    val_forecast_from_stage: int = Field(
        1,
        ge=0,
        description="First stage (0-based) whose forecasts use validation loss, not train loss.",
    )
    val_every_fraction: Steps = Field(
        16, ge=1, description="Validation loss is measured every tau'/valEveryFraction steps."
    )
    diverged_loss: float = Field(
        1e6, gt=0, description="Loss given to a candidate whose loss became NaN or infinite."
    )

    @model_validator(mode="after")
    def _check_lengths(self) -> AutoLRSConfig:
        problems: list[tuple[Loc, str]] = []
        if self.tau_prime >= self.tau:
            problems.append(
                (
                    ("tauPrime",),
                    f"must be smaller than tau ({self.tau_prime} >= {self.tau}): "
                    "each candidate is a short probe of the stage it chooses the LR for",
                )
            )
        if self.tau_max < self.tau:
            problems.append((("tauMax",), f"must be at least tau ({self.tau_max} < {self.tau})"))
        if problems:
            raise FieldProblems(problems)
        return self
