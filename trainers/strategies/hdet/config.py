"""Parameters of HDET and of the probes that choose its starting peak."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from schedsearch.trainers.config import Steps
from schedsearch.trainers.strategies.config import MAX_MEMBERS, StrategyModel

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
