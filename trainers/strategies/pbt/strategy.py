"""PBT as the rest of the system sees it: a population whose members report to a coordinator."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from schedsearch.trainers.config import Loc
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.strategy import Rule, RunContext, SpecView, Strategy, loc

if TYPE_CHECKING:
    from schedsearch.trainers.evaluation import EvaluationConfig

# Perturbation rounds in a budget: the spec example's 250-step interval in 4000 steps.
ROUNDS: Final = 16


class PBT(Strategy[PBTConfig]):
    name = "pbt"
    config_type = PBTConfig
    shape = "population"
    members_field = "population"
    summary = "A population that copies its best members and perturbs their LR (Jaderberg 2017)."
    rules: ClassVar = (
        Rule(
            "self.strategy.pbt.perturbationInterval < self.budget.steps",
            "strategy.pbt.perturbationInterval must be smaller than budget.steps",
            ".strategy.pbt.perturbationInterval",
        ),
        Rule(
            "self.strategy.pbt.burnInPeriod < self.budget.steps",
            "strategy.pbt.burnInPeriod must be smaller than budget.steps",
            ".strategy.pbt.burnInPeriod",
        ),
        Rule(
            "has(self.checkpoints) && has(self.checkpoints.persistentVolumeClaim)",
            "PBT runs one pod per member and copies checkpoints between them: "
            "set checkpoints.persistentVolumeClaim (an emptyDir is private to one pod; a local "
            "run needs neither)",
            ".checkpoints",
            cluster_only=True,
        ),
        Rule(
            "!has(self.failurePolicy) || !has(self.failurePolicy.maxFailedMembers) || "
            "self.failurePolicy.maxFailedMembers < self.strategy.pbt.population",
            "failurePolicy.maxFailedMembers must be smaller than strategy.pbt.population",
            ".failurePolicy.maxFailedMembers",
        ),
    )

    def members(self, config: PBTConfig) -> int:
        return config.population

    def interval(self, config: PBTConfig) -> int:
        return config.perturbation_interval

    def problems(self, config: PBTConfig, spec: SpecView) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        steps = spec.steps
        if config.perturbation_interval >= steps:
            problems.append(
                (
                    loc(self.name, "perturbationInterval"),
                    f"must be smaller than budget.steps ({config.perturbation_interval} >= "
                    f"{steps}): no member would ever exploit",
                )
            )
        if config.burn_in_period >= steps:
            problems.append(
                (
                    loc(self.name, "burnInPeriod"),
                    f"must be smaller than budget.steps ({config.burn_in_period} >= {steps})",
                )
            )
        failed = spec.max_failed_members
        if failed is not None and failed >= config.population:
            problems.append(
                (
                    ("failurePolicy", "maxFailedMembers"),
                    f"must be smaller than strategy.pbt.population ({failed} >= "
                    f"{config.population})",
                )
            )
        return problems

    def cluster_problems(self, config: PBTConfig, spec: SpecView) -> list[tuple[Loc, str]]:
        if spec.checkpoint_claim is False:
            return [
                (
                    ("checkpoints",),
                    f"PBT runs one pod per member ({config.population}) and exploit copies "
                    "checkpoints between them: set checkpoints.persistentVolumeClaim to a "
                    "ReadWriteMany claim (an emptyDir is private to one pod; a local run needs "
                    "neither: schedsearch validate --local)",
                )
            ]
        return []

    def run(self, config: PBTConfig, ctx: RunContext) -> base.SearchResult:
        from schedsearch.trainers.strategies.pbt.runner import run_pbt

        keywords = ctx.runner_keywords()
        return run_pbt(config, ctx.workload, device=ctx.device, metric=ctx.metric, **keywords)

    def config_for_budget(self, total_steps: int, *, members: int, seed: int) -> PBTConfig:
        return PBTConfig(
            population=members, perturbation_interval=max(1, total_steps // ROUNDS), seed=seed
        )

    def planned_cost(
        self, config: PBTConfig, total_steps: int, evaluation: EvaluationConfig
    ) -> tuple[float, int]:
        # A branch of anneal.fraction intervals at each decision (every round before the cooldown).
        branches = (1.0 - evaluation.cooldown.fraction) * evaluation.anneal.fraction
        rounds = max(1, total_steps // config.perturbation_interval)
        return config.population * total_steps * (1 + branches), 2 * config.population * rounds
