"""HDET as the rest of the system sees it: a replica set that trains one model together."""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, ClassVar, Final

from schedsearch.trainers.config import Loc
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.hdet.config import HDETConfig
from schedsearch.trainers.strategies.strategy import Rule, RunContext, SpecView, Strategy, loc

if TYPE_CHECKING:
    from schedsearch.trainers.evaluation import EvaluationConfig

# Syncs in a budget: syncInterval = S / SYNCS.
SYNCS: Final = 20


class HDET(Strategy[HDETConfig]):
    name = "hdet"
    config_type = HDETConfig
    shape = "replicas"
    members_field = "replicas"
    summary = "Replicas fan out over LRs, average weights, an auto-LR moves the base (Cheng 2026)."
    # The replicas follow the base schedule's own rise (scaled to the peak the probes chose).
    warms_up = False
    rules: ClassVar = (
        Rule(
            "self.strategy.hdet.syncInterval <= self.budget.steps",
            "strategy.hdet.syncInterval must not exceed budget.steps",
            ".strategy.hdet.syncInterval",
        ),
        Rule(
            "self.strategy.hdet.warmupSteps < self.budget.steps",
            "strategy.hdet.warmupSteps must be smaller than budget.steps",
            ".strategy.hdet.warmupSteps",
        ),
    )

    def members(self, config: HDETConfig) -> int:
        return config.replicas

    def interval(self, config: HDETConfig) -> int:
        return config.sync_interval

    def problems(self, config: HDETConfig, spec: SpecView) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        if config.sync_interval > spec.steps:
            problems.append(
                (
                    loc(self.name, "syncInterval"),
                    f"must not exceed budget.steps ({config.sync_interval} > {spec.steps})",
                )
            )
        if config.warmup_steps >= spec.steps:
            problems.append(
                (
                    loc(self.name, "warmupSteps"),
                    f"must be smaller than budget.steps ({config.warmup_steps} >= {spec.steps}): "
                    "auto-LR would never start",
                )
            )
        return problems

    def run(self, config: HDETConfig, ctx: RunContext) -> base.SearchResult:
        from schedsearch.trainers.strategies.hdet.runner import run_hdet

        # The replicas meet in a folder (their job file, checkpoints, rank 0's result).
        out = ctx.out_dir or tempfile.mkdtemp(prefix="schedsearch-hdet-")
        keywords = {**ctx.runner_keywords(), "out_dir": out}
        return run_hdet(config, ctx.workload, base=ctx.base, **keywords)

    def run_replica(self, config: HDETConfig, ctx: RunContext) -> base.SearchResult | None:
        from schedsearch.trainers.strategies.hdet.job import ReplicaJob
        from schedsearch.trainers.strategies.hdet.worker import run_replica

        job = ReplicaJob(
            config=config,
            workload=ctx.workload,
            total_steps=ctx.total_steps,
            lr_bounds=ctx.lr_bounds,
            out_dir=str(ctx.out_dir),
            base=ctx.base,
            seed=ctx.seed,
            phases=ctx.phases,
        )
        return run_replica(job, ctx.reporter or base.NullReporter())

    def config_for_budget(self, total_steps: int, *, members: int, seed: int) -> HDETConfig:
        return HDETConfig(replicas=members, sync_interval=max(1, total_steps // SYNCS))

    def planned_cost(
        self, config: HDETConfig, total_steps: int, evaluation: EvaluationConfig
    ) -> tuple[float, int]:
        # The probes (each with its branch) and, when scoring is annealed, every replica's
        # branch at each sync of the searched part.
        anneal = evaluation.anneal.fraction
        probes = len(config.probe.factors) * config.probe_steps() * (1 + anneal)
        syncs = (1.0 - evaluation.cooldown.fraction) * total_steps / config.sync_interval
        branches = config.replicas * syncs * anneal * config.sync_interval
        scoring = branches if config.score == "annealed" else 0.0
        return config.replicas * total_steps + probes + scoring, round(syncs)
