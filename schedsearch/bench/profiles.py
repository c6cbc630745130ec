"""What a benchmark profile runs: workloads with their budgets, the baseline grid, the strategies'
defaults scaled to each budget, and the overhead measurements.

Scaling rules (stated in every report, see ``scaling_notes``):

* AutoLRS: the reference schedule grows tau = 1000, 2000, 4000, 8000 steps (tau' = tau/10, k = 10)
  before tau' reaches tau_max/10; those four stages (15000 steps) are mapped onto the budget S, so
  tau = S/15, tau' = tau/10, tau_max = 8*tau, k unchanged.
* PBT: the spec's example pairs perturbationInterval 250 with a 4000-step budget, i.e. 16 rounds;
  we keep 16 rounds (interval = S/16) and Ray's other defaults.
* HDET: T = S/20 syncs (the paper's T = 1000 belongs to far longer runs), other paper defaults,
  started from the workload's default LR in a OneCycle base, the schedule HDET is a drop-in for.
"""

from __future__ import annotations

from dataclasses import dataclass

from schedsearch.trainers.config import BaseScheduleConfig
from schedsearch.trainers.strategies.autolrs.search import MIN_PROBE_STEPS
from schedsearch.trainers.strategies.config import AutoLRSConfig, HDETConfig, PBTConfig
from schedsearch.trainers.workloads import get_workload

STRATEGIES: tuple[str, ...] = ("autolrs", "pbt", "hdet")
GRID_FAMILIES: tuple[str, ...] = ("cosine", "linear", "wsd", "onecycle", "rex")
# The reference AutoLRS stages before tau stops doubling: 1000 + 2000 + 4000 + 8000.
AUTOLRS_REFERENCE_STEPS = 15000
PBT_ROUNDS = 16
HDET_SYNCS = 20
# Every search may pick LRs in [default_lr * low, default_lr * high]: wider than the grid's peaks.
LR_BOUNDS_FACTORS = (0.01, 10.0)


@dataclass(frozen=True)
class WorkloadPlan:
    """One workload of a profile: the budget S and the evaluation interval E (E divides S)."""

    workload: str
    steps: int
    eval_every: int

    def __post_init__(self) -> None:
        if self.steps < 1 or self.eval_every < 1 or self.steps % self.eval_every:
            raise ValueError(
                f"{self.workload}: steps ({self.steps}) must be a positive multiple of "
                f"evalEvery ({self.eval_every})"
            )


@dataclass(frozen=True)
class Profile:
    """Everything a benchmark run does; the names below appear verbatim in the report."""

    name: str
    description: str
    workloads: tuple[WorkloadPlan, ...]
    peak_factors: tuple[float, ...]
    eval_seeds: tuple[int, ...]
    pbt_population: int
    hdet_replicas: int
    warmup_fraction: float = 0.05
    families: tuple[str, ...] = GRID_FAMILIES
    strategies: tuple[str, ...] = STRATEGIES
    search_seed: int = 0
    loop_workloads: tuple[str, ...] = ("regression",)
    loop_steps: int = 1000
    loop_rounds: int = 3
    loop_every: int = 250
    hdet_timing_workload: str = "regression"
    hdet_timing_steps: int = 2000
    hdet_timing_interval: int = 1000


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        description="smoke test in minutes: regression only, 4 peaks, 1 seed, small populations",
        workloads=(WorkloadPlan("regression", 1000, 50),),
        peak_factors=(0.5, 1.0, 2.0, 4.0),
        eval_seeds=(1000,),
        pbt_population=4,
        hdet_replicas=2,
    ),
    "full": Profile(
        name="full",
        description="image, language model and regression; 6 peaks x 3 seeds; default populations",
        workloads=(
            WorkloadPlan("regression", 3000, 75),
            WorkloadPlan("digits-cnn", 2000, 50),
            WorkloadPlan("charlm", 1500, 50),
        ),
        peak_factors=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
        eval_seeds=(1000, 1001, 1002),
        pbt_population=8,
        hdet_replicas=4,
        loop_workloads=("regression", "digits-cnn", "charlm"),
        loop_steps=1000,
        loop_rounds=5,
        hdet_timing_workload="digits-cnn",
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"profile: {name!r} is not one of {', '.join(PROFILES)}")
    return PROFILES[name]


def lr_bounds(workload: str) -> tuple[float, float]:
    lr = get_workload(workload).default_lr
    return lr * LR_BOUNDS_FACTORS[0], lr * LR_BOUNDS_FACTORS[1]


def grid_config(profile: Profile, family: str, peak_lr: float, steps: int) -> BaseScheduleConfig:
    """A baseline cell: OneCycle keeps its own 30% rise, the others a linear warm-up."""
    warmup = 0 if family == "onecycle" else max(1, round(profile.warmup_fraction * steps))
    return BaseScheduleConfig(family=family, peak_lr=peak_lr, warmup_steps=warmup)  # type: ignore[arg-type]


def autolrs_config(steps: int) -> AutoLRSConfig:
    tau = max(MIN_PROBE_STEPS + 1, round(1000 * steps / AUTOLRS_REFERENCE_STEPS))
    tau_prime = min(tau - 1, max(MIN_PROBE_STEPS, round(tau / 10)))
    return AutoLRSConfig(tau=tau, tau_prime=tau_prime, tau_max=8 * tau)


def pbt_config(profile: Profile, steps: int) -> PBTConfig:
    return PBTConfig(
        population=profile.pbt_population,
        perturbation_interval=max(1, steps // PBT_ROUNDS),
        seed=profile.search_seed,
    )


def hdet_config(profile: Profile, steps: int) -> HDETConfig:
    return HDETConfig(replicas=profile.hdet_replicas, sync_interval=max(1, steps // HDET_SYNCS))


def hdet_base(workload: str) -> BaseScheduleConfig:
    return BaseScheduleConfig(family="onecycle", peak_lr=get_workload(workload).default_lr)


def scaling_notes(profile: Profile) -> list[str]:
    """The rules above in words, with this profile's numbers, for the report."""
    low, high = LR_BOUNDS_FACTORS
    return [
        f"Baseline grid: families {', '.join(profile.families)} x peak LR = default_lr x "
        f"{list(profile.peak_factors)} x seeds {list(profile.eval_seeds)}; linear warm-up over "
        f"{profile.warmup_fraction:.0%} of S for every family except onecycle, which keeps its own "
        "rise from peak/25 over 30% of S; min LR 0; WSD decays linearly over the last 20% of the "
        "post-warm-up steps.",
        f"Every search picks LRs in [default_lr x {low:g}, default_lr x {high:g}] and trains with "
        f"seed {profile.search_seed} (PBT members seed+i); replays and the grid use the "
        f"evaluation seeds {list(profile.eval_seeds)}, which no search used.",
        "AutoLRS: the reference's growing stages (tau 1000/2000/4000/8000, 15000 steps) mapped "
        "onto S: tau = S/15, tau' = tau/10, tauMax = 8 tau, k = 10, kappa 1000, validation "
        "forecasts from stage 1, every tau'/16 steps.",
        f"PBT: population {profile.pbt_population}, perturbationInterval = S/{PBT_ROUNDS} "
        "(the spec example's 250 steps of 4000), quantile 0.25, resample 0.25, factors 1.2/0.8.",
        f"HDET: {profile.hdet_replicas} replicas, syncInterval T = S/{HDET_SYNCS}, alpha 1/9, "
        "beta 0.9, lambda 0.5, sigma 0.1, floor 1% of the start; base schedule onecycle at the "
        "workload's default LR (HDET is presented as a drop-in for OneCycleLR).",
    ]
