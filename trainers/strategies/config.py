"""Parameters of the three search strategies, validated before any training starts.

These models are shared by the local engine, the trainer pods and the ScheduleSearch spec (which
embeds them), so field names are the camelCase ones a user writes in YAML; Python code uses the
snake_case attribute names. Defaults are the reference values of each method's paper or, for PBT,
Ray Tune's PopulationBasedTraining.
"""

from __future__ import annotations

import math
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from schedsearch.trainers.config import MAX_SEED, FieldProblems, Loc, Steps

# Members (PBT) and replicas (HDET) are pods, and the controller keeps one record per member in
# the search's state ConfigMap, which the API server caps at 1 MiB. 256 members fill about a
# quarter of it (tests/unit/test_admission_bounds.py measures it; 1024 would not fit), leaving
# room for the spec and the population's history.
MAX_MEMBERS: Final = 256
MAX_PERTURBATION_FACTOR: Final = 10.0
PerturbationFactor = Annotated[float, Field(gt=0, le=MAX_PERTURBATION_FACTOR)]


class StrategyModel(BaseModel):
    """Base for strategy parameters: camelCase in YAML/JSON, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
    )


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


DEFAULT_PROBE_FACTORS: Final = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class HDETProbeConfig(StrategyModel):
    """How HDET picks its starting peak before the replicas train together.

    Each candidate peak (the base schedule's peak times a factor, clipped to the LR bounds) is
    a short run from the shared initialisation: the base schedule's rise, the candidate held,
    then an annealed evaluation (``spec.evaluation.anneal``). The replicas share the candidates
    out; the lowest annealed validation loss is the peak the base schedule is scaled to.
    """

    factors: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: list(DEFAULT_PROBE_FACTORS),
        max_length=32,
        description=(
            "Candidate peaks as multiples of the base schedule's peak; an empty list starts "
            "from the base schedule's own peak (no probes)."
        ),
    )
    steps: Steps | None = Field(
        None,
        gt=0,
        description="Steps of a probe before its cooldown branch (default: 2 x syncInterval).",
    )


class HDETConfig(StrategyModel):
    """HDET (Cheng et al., 2026): replicas fan out over LRs, average weights, move the base LR."""

    replicas: int = Field(
        4, ge=2, le=MAX_MEMBERS, description=f"Data-parallel replicas (N), 2 to {MAX_MEMBERS}."
    )
    alpha: float = Field(
        1.0 / 9.0, gt=0.0, lt=1.0, description="Half-width of the LR spread [1-alpha, 1+alpha]."
    )
    sync_interval: Steps = Field(
        1000, gt=0, description="Parameters are averaged every this many steps (T)."
    )
    warmup_steps: Steps = Field(
        0, ge=0, description="Auto-LR stays off for this many steps (S_warm)."
    )
    auto_lr: bool = Field(True, description="Move the base LR from the replicas' losses.")
    beta: float = Field(0.9, ge=0.0, lt=1.0, description="Momentum of the auto-LR velocity.")
    lam: float = Field(0.5, gt=0.0, alias="lambda", description="Step size of the auto-LR update.")
    sigma: float = Field(0.1, gt=0.0, description="Temperature of the replica-loss softmax.")
    lr_floor_fraction: float = Field(
        0.01,
        gt=0.0,
        le=1.0,
        description="The base LR decays to this fraction of its start over the run (sets gamma).",
    )
    noise_scale: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Warm noisy init: std = noiseScale*||theta||/sqrt(d), at most 1.",
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend: auto picks NCCL on CUDA, else gloo."
    )
    probe: HDETProbeConfig = Field(
        default_factory=HDETProbeConfig,
        description="Short annealed probes that choose the starting peak.",
    )
    score: Literal["annealed", "interval"] = Field(
        "annealed",
        description=(
            "What the auto-LR weighs at a sync: annealed, each replica's validation loss after "
            "a cooldown branch (spec.evaluation.anneal; the interval loss favours the lower "
            "LRs); interval, the replicas' mean training loss over the interval (the paper's)."
        ),
    )

    def probe_steps(self) -> int:
        return self.probe.steps if self.probe.steps is not None else 2 * self.sync_interval

    def multipliers(self) -> list[float]:
        """The fan-out rho_r, evenly spaced in [1-alpha, 1+alpha] with mean 1."""
        half = max((self.replicas - 1) / 2.0, 0.5)
        return [
            1.0 + self.alpha * (r - (self.replicas - 1) / 2.0) / half for r in range(self.replicas)
        ]

    def gamma(self, syncs_after_warmup: int) -> float:
        """Per-sync decay so the base LR reaches the floor after K syncs: 1 - floor^(1/K)."""
        if syncs_after_warmup <= 0:
            return 0.0
        return 1.0 - self.lr_floor_fraction ** (1.0 / syncs_after_warmup)


class StrategyConfig(StrategyModel):
    """Exactly one of autolrs / pbt / hdet."""

    autolrs: AutoLRSConfig | None = None
    pbt: PBTConfig | None = None
    hdet: HDETConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StrategyConfig:
        chosen = [n for n in ("autolrs", "pbt", "hdet") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "strategy must set exactly one of autolrs, pbt, hdet"
                + (f" (got {', '.join(chosen)})" if chosen else " (got none)")
            )
        return self

    @property
    def name(self) -> Literal["autolrs", "pbt", "hdet"]:
        if self.autolrs is not None:
            return "autolrs"
        if self.pbt is not None:
            return "pbt"
        return "hdet"
