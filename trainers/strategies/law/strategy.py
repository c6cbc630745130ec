"""The ``law`` strategy as the rest of the system sees it: one trainer that probes, fits a
loss-vs-schedule law, optimises the whole schedule and verifies it."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from schedsearch.trainers.config import Loc
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.law import probe
from schedsearch.trainers.strategies.law.config import DEFAULT_PEAK_FACTORS, LawConfig
from schedsearch.trainers.strategies.strategy import Rule, RunContext, SpecView, Strategy, loc

if TYPE_CHECKING:
    from schedsearch.trainers.evaluation import EvaluationConfig

# The probe plan needs its first candidate run (a quarter of the trunk, the trunk being
# probeCost * S / cost_per_trunk_step) to outlast the warm-up by MIN_CANDIDATE_STEPS. One step
# more than that absorbs the plan's rounding, so the rule below (the same arithmetic in CEL and
# Python) guarantees ``probe.make_plan`` succeeds.
_CANDIDATE = probe.CANDIDATE_SHARE * (1.0 + probe.CANDIDATE_BRANCH_SHARE)
_TRUNK = probe.cost_per_trunk_step(0)
_MARGIN = probe.MIN_CANDIDATE_STEPS + 1
_CANDIDATES_CEL = (
    "(!has(self.strategy.law.peakFactors) ? "
    f"{len(DEFAULT_PEAK_FACTORS)} : size(self.strategy.law.peakFactors) > 0 ? "
    "size(self.strategy.law.peakFactors) : 1)"
)
_WARMUP_CEL = "(self.baseSchedule.family == 'onecycle' ? 0 : self.baseSchedule.warmupSteps)"


class Law(Strategy[LawConfig]):
    name = "law"
    config_type = LawConfig
    shape = "trainer"
    summary = (
        "Fits a loss-vs-schedule law on cheap probes and optimises the whole schedule "
        "(Luo 2025, Tissue 2024)."
    )
    rules: ClassVar = (
        Rule(
            f"{probe.CANDIDATE_SHARE} * "
            "(has(self.strategy.law.probeCost) ? self.strategy.law.probeCost : 1.5) * "
            f"double(self.budget.steps) / ({_CANDIDATE} * double({_CANDIDATES_CEL}) + {_TRUNK})"
            f" >= double({_WARMUP_CEL} + {_MARGIN})",
            "strategy.law.probeCost x budget.steps leaves the probes too short for their "
            "candidates after the warm-up: raise probeCost, list fewer peakFactors or shorten "
            "the warm-up",
            ".strategy.law.probeCost",
        ),
    )

    def interval(self, config: LawConfig) -> int:
        # The law's probes lay out their own cooldown branches (``probe.ProbePlan``); it trains
        # no annealed branch of ``evaluation.anneal``.
        return 0

    def problems(self, config: LawConfig, spec: SpecView) -> list[tuple[Loc, str]]:
        candidates = len(config.peak_factors) or 1
        first = (
            probe.CANDIDATE_SHARE
            * config.probe_cost
            * spec.steps
            / (_CANDIDATE * candidates + _TRUNK)
        )
        if first >= spec.warmup + _MARGIN:
            return []
        return [
            (
                loc(self.name, "probeCost"),
                f"{config.probe_cost:g} x budget.steps ({spec.steps}) gives candidate runs of "
                f"{first:.0f} steps for {candidates} trunk LR(s), which must outlast the warm-up "
                f"({spec.warmup} steps) by {_MARGIN}: raise probeCost, list fewer peakFactors "
                "or shorten the warm-up",
            )
        ]

    def run(self, config: LawConfig, ctx: RunContext) -> base.SearchResult:
        from schedsearch.trainers.strategies.law.runner import run_law

        return run_law(config, ctx.workload, device=ctx.device, **ctx.runner_keywords())

    def config_for_budget(self, total_steps: int, *, members: int, seed: int) -> LawConfig:
        return LawConfig()

    def planned_cost(
        self, config: LawConfig, total_steps: int, evaluation: EvaluationConfig
    ) -> tuple[float, int]:
        verify = 1.0 if config.verify else 0.0
        points = probe.TRUNK_POINTS * (1 + config.probe_cost) + 4 * probe.BRANCH_POINTS
        return (config.probe_cost + verify) * total_steps, round(points)
