"""What a search strategy is to the rest of the system: one object behind one base class.

The engine, the controller, the trainer pods, the bench and the spec never branch on a
strategy's name: they look its object up in ``registry`` and ask it. An object knows

* its config model (the ``strategy.<name>`` part of a spec) and the checks that need the rest of
  the spec (the budget, the failure policy), in Python and as the CRD's CEL rules;
* its *shape*, i.e. how it is run, which the engine and the controller implement once per shape:

  - ``trainer``: one process runs the whole search (one Ray trial, one pod);
  - ``population``: members train apart and a coordinator answers their reports (PBT's
    ``pbt.coordinator.Coordinator``: Ray trials and the actor holding it, or one pod per member
    and the controller holding it in the search's state);
  - ``replicas``: a process group of ``members`` replicas (one trial that starts them all, or one
    pod per replica behind a headless Service);

* how many members it needs, the interval its annealed branches are a fraction of, and whether
  it follows the base schedule's warm-up;
* how to run the whole search in this process, given a :class:`RunContext`.

Nothing here imports torch: the objects are looked up by the CLI and the controller, which never
train. ``run`` imports its runner when it is called.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from schedsearch.trainers.config import BaseScheduleConfig, Loc
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.config import StrategyModel

if TYPE_CHECKING:
    from schedsearch.trainers.evaluation import EvaluationConfig, Phases

Shape = Literal["trainer", "population", "replicas"]
ConfigT = TypeVar("ConfigT", bound=StrategyModel)


@dataclass(frozen=True)
class RunContext:
    """Everything a search needs besides its strategy's config, the same for every strategy."""

    workload: str
    total_steps: int
    lr_bounds: tuple[float, float]
    seed: int = 0
    out_dir: Path | None = None
    reporter: base.Reporter | None = None
    device: str = "auto"
    # The search's phases (warm-up, annealed branches, cooldown, floor); see ``phases_for``.
    phases: Phases | None = None
    # The spec's base schedule (HDET follows it; the others take its warm-up through phases).
    base: BaseScheduleConfig | None = None
    # The objective (PBT ranks members by it; the others minimise validation loss).
    metric: str = "val_loss"

    def runner_keywords(self) -> dict[str, Any]:
        """The keyword arguments every strategy's runner takes (``run_autolrs``, ...)."""
        return {
            "total_steps": self.total_steps,
            "lr_bounds": self.lr_bounds,
            "seed": self.seed,
            "out_dir": self.out_dir,
            "reporter": self.reporter,
            "phases": self.phases,
        }


@dataclass(frozen=True)
class SpecView:
    """The parts of a spec, besides ``strategy``, that a strategy's checks read."""

    steps: int
    # The base schedule's linear warm-up (0 for onecycle, whose rise is its own).
    warmup: int = 0
    max_failed_members: int | None = None
    # Whether checkpoints name a PersistentVolumeClaim; None when the spec says nothing of
    # checkpoints (the local engine needs none).
    checkpoint_claim: bool | None = None


@dataclass(frozen=True)
class Rule:
    """A CEL rule of the ScheduleSearch spec (``self`` is the spec), checked only when this
    strategy is the one set; ``field`` is the path the API server names in its error."""

    expression: str
    message: str
    field: str
    cluster_only: bool = False


class Strategy(abc.ABC, Generic[ConfigT]):
    """One search strategy. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str]
    config_type: ClassVar[type[StrategyModel]]
    shape: ClassVar[Shape]
    # One line for listings (``schedsearch strategies``, the docs).
    summary: ClassVar[str]
    # False when the strategy follows the base schedule's own rise instead of a separate warm-up.
    warms_up: ClassVar[bool] = True
    # The config field that sets ``members`` (None: always one member).
    members_field: ClassVar[str | None] = None
    # CEL rules over the whole spec (the registry guards each with ``has(self.strategy.<name>)``).
    rules: ClassVar[Sequence[Rule]] = ()

    def members(self, config: ConfigT) -> int:
        """Members (pods, trials, replicas) the search trains at once."""
        return 1

    def processes(self, config: ConfigT) -> int:
        """Processes one run of the whole search trains in at once (a replica set's replicas;
        a population's members are runs of their own)."""
        return self.members(config) if self.shape == "replicas" else 1

    @abc.abstractmethod
    def interval(self, config: ConfigT) -> int:
        """The steps an annealed branch is a fraction of (``evaluation.anneal.fraction``)."""

    def problems(self, config: ConfigT, spec: SpecView) -> list[tuple[Loc, str]]:
        """What is wrong with ``config`` given the rest of the spec (the Python side of
        ``rules``); locations are from the spec's root."""
        return []

    def cluster_problems(self, config: ConfigT, spec: SpecView) -> list[tuple[Loc, str]]:
        """What only a run on the cluster needs (the Python side of the ``cluster_only``
        rules)."""
        return []

    def phases(
        self,
        config: ConfigT,
        total_steps: int,
        *,
        evaluation: EvaluationConfig | None = None,
        base_schedule: BaseScheduleConfig | None = None,
    ) -> Phases:
        """The search's phases: the base schedule's warm-up (unless the strategy follows the
        base's own rise) and floor, the cooldown and annealed branches of ``evaluation``."""
        from schedsearch.trainers.evaluation import Phases

        return Phases.create(
            total_steps,
            evaluation=evaluation,
            base=base_schedule,
            interval=self.interval(config),
            warmup=self.warms_up,
        )

    @abc.abstractmethod
    def run(self, config: ConfigT, ctx: RunContext) -> base.SearchResult:
        """The whole search in this process (with the processes a replica set starts), resuming
        from ``ctx.out_dir`` when it holds an earlier run's state."""

    def run_replica(self, config: ConfigT, ctx: RunContext) -> base.SearchResult | None:
        """One replica of a replica set, in a process of its own (a pod): its rank and world
        from torch.distributed's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
        ``MASTER_PORT``); rank 0 returns the result, the others None."""
        raise NotImplementedError(f"{self.name} runs as a {self.shape}, not as replicas")

    @abc.abstractmethod
    def config_for_budget(self, total_steps: int, *, members: int, seed: int) -> ConfigT:
        """The strategy's defaults scaled to a budget of ``total_steps`` (intervals and stage
        lengths in proportion), with ``members`` members where the strategy has several."""

    @abc.abstractmethod
    def planned_cost(
        self, config: ConfigT, total_steps: int, evaluation: EvaluationConfig
    ) -> tuple[float, int]:
        """The member-steps and validation passes a search is expected to cost (for plans and
        time estimates; the result reports what it really trained)."""


def loc(strategy: str, *fields: str) -> Loc:
    """The location of a field of ``strategy.<strategy>`` from the spec's root."""
    return ("strategy", strategy, *fields)
