"""AutoLRS as the rest of the system sees it: one trainer that searches stage by stage."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from schedsearch.trainers.config import Loc
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.autolrs.config import AutoLRSConfig
from schedsearch.trainers.strategies.strategy import Rule, RunContext, SpecView, Strategy, loc

if TYPE_CHECKING:
    from schedsearch.trainers.evaluation import EvaluationConfig

# The budget the paper's tau = 1000 belongs to (its stages before tau stops doubling: 1000 + 2000
# + 4000 + 8000); shorter budgets get proportionally shorter stages.
REFERENCE_STEPS: Final = 15000
# Rough validation passes of a search, for time estimates only: the stages that forecast
# validation loss, each candidate measured this many times.
VALIDATED_STAGES: Final = 3
EVALS_PER_PROBE: Final = 16


class AutoLRS(Strategy[AutoLRSConfig]):
    name = "autolrs"
    config_type = AutoLRSConfig
    shape = "trainer"
    summary = "Bayesian search of each stage's LR, candidates judged by forecast loss (Jin 2021)."
    rules: ClassVar = (
        Rule(
            "self.strategy.autolrs.tau <= self.budget.steps",
            "strategy.autolrs.tau must not exceed budget.steps",
            ".strategy.autolrs.tau",
        ),
        Rule(
            "self.strategy.autolrs.tauPrime < self.strategy.autolrs.tau",
            "strategy.autolrs.tauPrime must be smaller than tau",
            ".strategy.autolrs.tauPrime",
        ),
        Rule(
            "self.strategy.autolrs.tauMax >= self.strategy.autolrs.tau",
            "strategy.autolrs.tauMax must be at least tau",
            ".strategy.autolrs.tauMax",
        ),
    )

    def interval(self, config: AutoLRSConfig) -> int:
        return config.tau_prime

    def problems(self, config: AutoLRSConfig, spec: SpecView) -> list[tuple[Loc, str]]:
        if config.tau > spec.steps:
            return [
                (
                    loc(self.name, "tau"),
                    f"must not exceed budget.steps ({config.tau} > {spec.steps}): the first "
                    "stage would not fit",
                )
            ]
        return []

    def run(self, config: AutoLRSConfig, ctx: RunContext) -> base.SearchResult:
        from schedsearch.trainers.strategies.autolrs.runner import run_autolrs

        return run_autolrs(config, ctx.workload, device=ctx.device, **ctx.runner_keywords())

    def config_for_budget(self, total_steps: int, *, members: int, seed: int) -> AutoLRSConfig:
        from schedsearch.trainers.strategies.autolrs.search import MIN_PROBE_STEPS

        tau = max(MIN_PROBE_STEPS + 1, round(1000 * total_steps / REFERENCE_STEPS))
        tau_prime = min(tau - 1, max(MIN_PROBE_STEPS, round(tau / 10)))
        return AutoLRSConfig(tau=tau, tau_prime=tau_prime, tau_max=8 * tau)

    def planned_cost(
        self, config: AutoLRSConfig, total_steps: int, evaluation: EvaluationConfig
    ) -> tuple[float, int]:
        # Stages up to the cooldown, each probe followed by its annealed branch; the cooldown.
        probes = config.candidates * config.tau_prime / config.tau
        searched = 1.0 - evaluation.cooldown.fraction
        trained = total_steps * (1 + searched * probes * (1 + evaluation.anneal.fraction))
        return trained, VALIDATED_STAGES * config.candidates * EVALS_PER_PROBE
