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

Seeds are split: *selection* seeds choose (the grid's tuned cell, the Schedule-Free peak, the
Optuna trials), held-out *evaluation* seeds measure (the target, every replay and baseline), and
the searches use their own seeds. The three sets are disjoint, so no figure in the report is
measured on the seeds it was chosen on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from schedsearch.trainers.config import BaseScheduleConfig
from schedsearch.trainers.evaluation import EvaluationConfig
from schedsearch.trainers.strategies import registry
from schedsearch.trainers.strategies.config import StrategyModel
from schedsearch.trainers.strategies.hdet.strategy import SYNCS as HDET_SYNCS
from schedsearch.trainers.strategies.pbt.strategy import ROUNDS as PBT_ROUNDS
from schedsearch.trainers.workloads import get_workload

GRID_FAMILIES: tuple[str, ...] = ("cosine", "linear", "wsd", "onecycle", "rex")
# Every search may pick LRs in [default_lr * low, default_lr * high]: wider than the grid's peaks.
LR_BOUNDS_FACTORS = (0.01, 10.0)
# The families an Optuna user would search over (the ones with a linear warm-up in the grid).
OPTUNA_FAMILIES: tuple[str, ...] = ("cosine", "linear", "wsd")


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
    selection_seeds: tuple[int, ...]
    eval_seeds: tuple[int, ...]
    # Members of the strategies that have several (PBT's population, HDET's replicas); 1 else.
    members: Mapping[str, int]
    warmup_fraction: float = 0.05
    families: tuple[str, ...] = GRID_FAMILIES
    strategies: tuple[str, ...] = registry.NAMES
    search_seed: int = 0
    loop_workloads: tuple[str, ...] = ("regression",)
    loop_steps: int = 1000
    loop_rounds: int = 3
    loop_every: int = 250
    hdet_timing_workload: str = "regression"
    hdet_timing_steps: int = 2000
    hdet_timing_interval: int = 1000
    optuna_families: tuple[str, ...] = OPTUNA_FAMILIES
    # Optuna's own defaults (TPESampler: 10 random trials first; MedianPruner: 5 trials before it
    # prunes): what a user who does not tune the tuner gets.
    optuna_tpe_startup: int = 10
    optuna_prune_startup: int = 5

    def __post_init__(self) -> None:
        chosen, measured = set(self.selection_seeds), set(self.eval_seeds)
        searched = set(search_seeds(self))
        if not chosen or not measured:
            raise ValueError(f"{self.name}: selection and evaluation seeds must not be empty")
        for name, overlap in (
            ("selection and evaluation", chosen & measured),
            ("search and selection", searched & chosen),
            ("search and evaluation", searched & measured),
        ):
            if overlap:
                raise ValueError(f"{self.name}: {name} seeds overlap: {sorted(overlap)}")

    def members_of(self, strategy: str) -> int:
        return self.members.get(strategy, 1)


def search_seeds(profile: Profile) -> range:
    """Every seed a search trains with: a population's members use seed + i, the others (and a
    replica set) one."""
    return range(profile.search_seed, profile.search_seed + max(1, *profile.members.values()))


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        description="smoke test in minutes: regression only, 4 peaks, 1 selection seed and 2 "
        "evaluation seeds, small populations",
        workloads=(WorkloadPlan("regression", 1000, 50),),
        peak_factors=(0.5, 1.0, 2.0, 4.0),
        selection_seeds=(1000,),
        eval_seeds=(2000, 2001),
        members={"pbt": 4, "hdet": 2},
    ),
    "full": Profile(
        name="full",
        description="image, language model and regression; 6 peaks x 3 selection seeds, "
        "6 evaluation seeds; default populations",
        workloads=(
            WorkloadPlan("regression", 3000, 75),
            WorkloadPlan("digits-cnn", 2000, 50),
            WorkloadPlan("charlm", 1500, 50),
        ),
        peak_factors=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
        selection_seeds=(1000, 1001, 1002),
        eval_seeds=(2000, 2001, 2002, 2003, 2004, 2005),
        members={"pbt": 8, "hdet": 4},
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
    return grid_config_for(profile.warmup_fraction, family, peak_lr, steps)


def grid_config_for(
    warmup_fraction: float, family: str, peak_lr: float, steps: int
) -> BaseScheduleConfig:
    """``grid_config`` from the warm-up fraction alone (what an Optuna trial's spec carries)."""
    warmup = 0 if family == "onecycle" else warmup_steps(warmup_fraction, steps)
    return BaseScheduleConfig(family=family, peak_lr=peak_lr, warmup_steps=warmup)  # type: ignore[arg-type]


def warmup_steps(warmup_fraction: float, steps: int) -> int:
    return max(1, round(warmup_fraction * steps))


def search_config(profile: Profile, strategy: str, steps: int) -> StrategyModel:
    """A strategy's defaults scaled to the budget (``Strategy.config_for_budget``), with this
    profile's members and search seed."""
    return registry.get(strategy).config_for_budget(
        steps, members=profile.members_of(strategy), seed=profile.search_seed
    )


def hdet_base(workload: str) -> BaseScheduleConfig:
    return BaseScheduleConfig(family="onecycle", peak_lr=get_workload(workload).default_lr)


def scaling_notes(profile: Profile) -> list[str]:
    """The rules above in words, with this profile's numbers, for the report."""
    low, high = LR_BOUNDS_FACTORS
    few = (
        " (fewer than the full profile's: differences here are mostly noise)"
        if len(profile.eval_seeds) < len(PROFILES["full"].eval_seeds)
        else ""
    )
    evaluation = EvaluationConfig()
    return [
        f"Seeds: selection seeds {list(profile.selection_seeds)} choose (the grid's tuned cell, "
        "the Schedule-Free peak, the Optuna trials); held-out evaluation seeds "
        f"{list(profile.eval_seeds)}{few} measure the target, every replay and every "
        f"baseline; searches train with seed {profile.search_seed} (PBT members seed+i). The "
        "three sets are disjoint.",
        f"Baseline grid: families {', '.join(profile.families)} x peak LR = default_lr x "
        f"{list(profile.peak_factors)} x the selection seeds; linear warm-up over "
        f"{profile.warmup_fraction:.0%} of S for every family except onecycle, which keeps its own "
        "rise from peak/25 over 30% of S; min LR 0; WSD decays linearly over the last 20% of the "
        "post-warm-up steps. The cell with the lowest selection-seed mean is then trained with "
        "the evaluation seeds: their mean is the target.",
        f"Every search picks LRs in [default_lr x {low:g}, default_lr x {high:g}] with the "
        f"spec's evaluation defaults (annealed evaluation: a {evaluation.anneal.shape} cooldown "
        f"branch of {evaluation.anneal.fraction:g} x the decision interval; a trained "
        f"{evaluation.cooldown.shape} cooldown over the last {evaluation.cooldown.fraction:.0%} of "
        "S); PBT members warm up like the grid. Found schedules are replayed from scratch with "
        "the evaluation seeds.",
        "AutoLRS: the reference's growing stages (tau 1000/2000/4000/8000, 15000 steps) mapped "
        "onto S: tau = S/15, tau' = tau/10, tauMax = 8 tau, k = 10, kappa 1000, validation "
        "forecasts from stage 1, every tau'/16 steps.",
        f"PBT: population {profile.members_of('pbt')}, perturbationInterval = S/{PBT_ROUNDS} "
        "(the spec example's 250 steps of 4000), quantile 0.25, resample 0.25, factors 1.2/0.8.",
        f"HDET: {profile.members_of('hdet')} replicas, syncInterval T = S/{HDET_SYNCS}, alpha 1/9, "
        "beta 0.9, lambda 0.5, sigma 0.1; the same base as PBT and AutoLRS (the grid's warm-up "
        "to the workload's default LR), scaled to the peak its probes choose (default x "
        "0.25/0.5/1/2/4/8, each probe 2T steps plus an annealed branch); replicas scored by "
        "annealed evaluation at each sync of the searched part; no decay in the searched part "
        "(gamma 0: the trained cooldown anneals).",
        f"Optuna at each strategy's cost: TPESampler(seed={profile.search_seed}, "
        f"{profile.optuna_tpe_startup} random start-up trials) over family in "
        f"{'/'.join(profile.optuna_families)} (the grid's warm-up and decay rules) and log peak "
        f"LR in the search bounds; S-step trials with the first selection seed "
        f"({profile.selection_seeds[0]}), reporting validation loss every E steps to a "
        f"MedianPruner({profile.optuna_prune_startup} start-up trials); a trial starts only if "
        "a whole one fits in what is left of the strategy's member-steps (pruned trials count "
        "the steps they trained). Its best finished trial (final validation loss) is replayed "
        "with the evaluation seeds. These are Optuna's defaults.",
        "Schedule-Free: the workload's optimizer in its schedule-free form (SGD with momentum -> "
        "SGDScheduleFree with the same momentum and weight decay; Adam/AdamW -> AdamWScheduleFree "
        "with the same betas, eps and weight decay), built-in linear warm-up over "
        f"{profile.warmup_fraction:.0%} of S, "
        f"constant LR at each grid peak (default_lr x {list(profile.peak_factors)}) times the "
        "package's documented starting point for the optimizer (SGD: 10x the scheduled LR, "
        "AdamW: 1x; Schedule-Free SGD's steps lack momentum's 10x amplification); evaluated "
        "with the optimizer in eval mode (the averaged weights). The peak with the lowest "
        "selection-seed mean is trained with the evaluation seeds.",
    ]
