"""How a search judges LRs and how every found schedule ends: annealed evaluation and cooldowns.

Why: comparing LRs by the loss a short horizon later favours LRs that are too small (Wu, Ren,
Liao, Grosse, ICLR 2018, "short-horizon bias"): a low LR lowers the loss *now*, a high LR followed
by a decay lowers it *at the end*. Measured on the regression workload (a trunk at LR 0.08 to step
937 of 3000, 8 branches at LRs 0.0009-0.2 for one PBT interval): ranking the branches by their raw
validation loss has Spearman -0.74 with the final loss each reaches when continued and annealed;
ranking them by the loss after a short cooldown branch has +0.86. A cooldown can branch from any
point (Hägele et al. 2024; the WSD schedule): the loss after it is a cheap, faithful estimate of
what a run is worth. So:

* **Annealed evaluation** (:meth:`harness.Trainer.annealed_evaluate`): from the trainer's state,
  train a branch whose LR decays from the current LR to the floor, evaluate, restore the trainer
  exactly. Strategies rank by that value at their decision points; the branch's steps are search
  cost.
* **Cooldown**: the last part of the budget anneals from the found LR to the floor, and the
  members really train it, so the stored schedule ends the way the run that produced its
  objective ended.

:class:`Phases` lays a budget out as warm-up / searched part / cooldown and gives the LR a member
trains at; the lineages and stored schedules use the very same arithmetic
(``schedules.shape_value``), so a found schedule replays bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from schedsearch.trainers.config import BaseScheduleConfig, ConfigModel, DecayShape
from schedsearch.trainers.schedules import Schedule, ScheduleBuilder, shape_value

if TYPE_CHECKING:
    from schedsearch.trainers.workloads.base import Workload

# The control run's default seed: far from the seeds members use (seed + member index).
CONTROL_SEED_OFFSET = 1_000_003


class AnnealConfig(ConfigModel):
    """Annealed evaluation at the search's decision points."""

    fraction: float = Field(
        0.5,
        ge=0.0,
        le=4.0,
        description=(
            "Length of the cooldown branch as a fraction of the decision interval (PBT's "
            "perturbationInterval, AutoLRS's probe length tau'); 0 turns annealed evaluation "
            "off and strategies rank by the raw objective."
        ),
    )
    shape: DecayShape = Field(
        "linear", description="How the branch's LR decays to the floor: linear, cosine or sqrt."
    )


class CooldownConfig(ConfigModel):
    """The cooldown every found schedule ends with."""

    fraction: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description=(
            "Share of the budget, at its end, in which the LR decays from the found LR to the "
            "floor (baseSchedule.minLR); the members train it, so the stored schedule replays "
            "what produced the best objective. 0: no cooldown."
        ),
    )
    shape: DecayShape = Field(
        "linear", description="How the LR decays to the floor: linear, cosine or sqrt (1-sqrt)."
    )


class ControlConfig(ConfigModel):
    """A control and a verification at the end of the search."""

    enabled: bool | None = Field(
        None,
        description=(
            "Train the found schedule and the base schedule side by side from one fresh seed "
            "that no member used, and report both final objectives (cost: 2 budgets). "
            "Default: on in the local engine, off on the cluster."
        ),
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description=f"The control run's seed; default: spec.seed + {CONTROL_SEED_OFFSET}.",
    )


class EvaluationConfig(ConfigModel):
    """How the search judges LRs, how found schedules end, and whether the search is verified."""

    anneal: AnnealConfig = Field(default_factory=AnnealConfig)
    cooldown: CooldownConfig = Field(default_factory=CooldownConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)

    def control_seed(self, seed: int) -> int:
        return self.control.seed if self.control.seed is not None else seed + CONTROL_SEED_OFFSET

    def control_enabled(self, *, local: bool) -> bool:
        return local if self.control.enabled is None else self.control.enabled


@dataclass(frozen=True)
class Phases:
    """A budget of ``total_steps`` laid out as warm-up, searched part and cooldown.

    Steps ``[0, warmup_steps)``: the LR rises linearly from 0 to the member's LR (PBT) or to the
    base schedule's ``peak_lr`` (AutoLRS, whose first stage starts after the warm-up). Steps
    ``[warmup_steps, cooldown_start)``: the searched part, the member's LR as the search sets it.
    Steps ``[cooldown_start, total_steps)``: the LR decays (``cooldown_shape``) from the member's
    LR to ``floor``. ``anneal_steps``: the length of the annealed-evaluation branch at a decision
    point (0: rank by the raw objective).
    """

    total_steps: int
    warmup_steps: int = 0
    cooldown_start: int | None = None
    floor: float = 0.0
    cooldown_shape: str = "linear"
    anneal_steps: int = 0
    anneal_shape: str = "linear"
    # The branch as a share of a decision interval, for strategies whose interval varies.
    anneal_fraction: float = 0.0
    # The base schedule's peak: what a single-run strategy (AutoLRS) warms up to.
    peak_lr: float | None = None

    def __post_init__(self) -> None:
        start = self.total_steps if self.cooldown_start is None else self.cooldown_start
        if not 0 <= self.warmup_steps <= start <= self.total_steps:
            raise ValueError(
                f"phases: need 0 <= warmup ({self.warmup_steps}) <= cooldown start ({start}) "
                f"<= total steps ({self.total_steps})"
            )
        object.__setattr__(self, "cooldown_start", start)
        if self.floor < 0 or not math.isfinite(self.floor):
            raise ValueError(f"floor: must be a finite LR >= 0, got {self.floor}")

    @classmethod
    def create(
        cls,
        total_steps: int,
        *,
        evaluation: EvaluationConfig | None = None,
        base: BaseScheduleConfig | None = None,
        interval: int = 0,
        warmup: bool = True,
    ) -> Phases:
        """The phases of a search: warm-up from ``base`` (when ``warmup``), floor ``base.minLR``,
        cooldown and annealed branches of ``interval * anneal.fraction`` steps from
        ``evaluation`` (defaults when not given)."""
        evaluation = evaluation or EvaluationConfig()
        warmup_steps = base.warmup_steps if (base is not None and warmup) else 0
        if base is not None and base.family == "onecycle":
            warmup_steps = 0  # onecycle's warmupSteps is its own rise, not a linear warm-up
        cooldown = round(evaluation.cooldown.fraction * total_steps)
        start = max(warmup_steps, total_steps - cooldown)
        return cls(
            total_steps=total_steps,
            warmup_steps=min(warmup_steps, total_steps),
            cooldown_start=start,
            floor=base.min_lr if base is not None else 0.0,
            cooldown_shape=evaluation.cooldown.shape,
            anneal_steps=round(evaluation.anneal.fraction * interval),
            anneal_shape=evaluation.anneal.shape,
            anneal_fraction=evaluation.anneal.fraction,
            peak_lr=base.peak_lr if base is not None else None,
        )

    @property
    def search_end(self) -> int:
        """The first step of the cooldown (the budget's end when there is none)."""
        assert self.cooldown_start is not None
        return self.cooldown_start

    @property
    def has_cooldown(self) -> bool:
        return self.search_end < self.total_steps

    def lr(self, member_lr: float, step: int) -> float:
        """The LR of training step ``step`` for a member whose own (searched) LR is
        ``member_lr`` (in the cooldown: its LR when the cooldown began)."""
        if step < self.warmup_steps:
            return shape_value("linear", 0.0, member_lr, step / self.warmup_steps)
        if step >= self.search_end and self.has_cooldown:
            span = self.total_steps - self.search_end
            return shape_value(
                self.cooldown_shape, member_lr, self.floor, (step - self.search_end) / span
            )
        return member_lr

    def decides_at(self, step: int) -> bool:
        """Whether a report at ``step`` can lead to a decision (after warm-up, up to the
        cooldown's start, before the end of the budget)."""
        return self.warmup_steps <= step <= self.search_end and step < self.total_steps

    def branches_at(self, step: int) -> bool:
        """Whether a member evaluates with an annealed branch at ``step``."""
        return self.anneal_steps > 0 and self.decides_at(step)

    def with_cooldown(self, schedule: Schedule) -> Schedule:
        """``schedule`` up to the cooldown's start, then the cooldown from its LR there to the
        floor (the schedule as it is when there is no cooldown)."""
        if not self.has_cooldown:
            return schedule
        start = self.search_end
        builder = ScheduleBuilder(schedule.points).truncate(start)
        builder.set_lr(start, schedule.lr_at(start), self.cooldown_shape)
        builder.set_lr(self.total_steps, self.floor)
        return builder.build(self.total_steps, schedule.provenance)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Phases:
        return cls(**data)


def train_cooldown_branch(
    step: Callable[[float], bool], steps: int, *, start: float, floor: float, shape: str
) -> int:
    """Train the steps of an annealed-evaluation branch: ``steps`` calls of ``step(lr)`` with the
    LR decaying (``shape``) from ``start`` towards ``floor``; step k of n trains at progress k/n
    (the first at ``start``; the LR at the branch's end would be the floor: the same arithmetic
    as a stored cooldown). ``step`` returns True when training diverged, which ends the branch.
    Returns the steps trained. Saving, evaluating and restoring are the caller's."""
    if steps < 0:
        raise ValueError(f"steps: must be >= 0, got {steps}")
    trained = 0
    for index in range(steps):
        trained += 1
        if step(shape_value(shape, start, floor, index / steps)):
            break
    return trained


def search_phases(spec: Any) -> Phases:
    """The phases of a search spec (the ScheduleSearch spec, or the part a trainer pod reads):
    its budget, base schedule (warm-up, floor) and evaluation settings, laid out by its strategy
    (``Strategy.phases``: the interval its annealed branches are a fraction of, and whether it
    takes the base schedule's warm-up)."""
    chosen = spec.strategy
    return chosen.strategy.phases(  # type: ignore[no-any-return]
        chosen.config,
        spec.budget.steps,
        evaluation=spec.evaluation,
        base_schedule=spec.base_schedule,
    )


@dataclass(frozen=True)
class ControlResult:
    """The found schedule and the base schedule trained from one fresh seed, side by side.

    The search's own best objective is selected on the validation data it is scored on, so it
    flatters the search; this pair is an honest answer to "did the search pay off?".
    """

    seed: int
    metric: str
    mode: str
    found: float
    base: float
    steps: int

    @property
    def change(self) -> float:
        """Relative change of the found schedule's objective against the base schedule's."""
        return (self.found - self.base) / abs(self.base) if self.base else math.nan

    @property
    def found_wins(self) -> bool:
        return self.found < self.base if self.mode == "min" else self.found > self.base

    def summary(self) -> str:
        """E.g. ``found 0.0081 vs base 0.0112 on a fresh seed (1000003), -28%``."""
        return (
            f"found {self.found:.4g} vs base {self.base:.4g} {self.metric} on a fresh seed "
            f"({self.seed}), {self.change:+.0%}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "metric": self.metric,
            "mode": self.mode,
            "found": self.found,
            "base": self.base,
            "steps": self.steps,
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlResult:
        fields = {k: data[k] for k in ("seed", "metric", "mode", "found", "base", "steps")}
        return cls(**fields)


def control_run(
    workload: Workload,
    found: Schedule,
    base: Schedule,
    *,
    seed: int,
    metric: str = "val_loss",
    mode: str = "min",
    device: str = "auto",
    on_progress: Callable[[str, int], None] | None = None,
) -> ControlResult:
    """Train ``found`` and ``base`` from scratch with ``seed`` (one no member used) and evaluate
    both at the end. Costs ``found.total_steps + base.total_steps`` steps."""
    values = []
    for label, schedule in (("found", found), ("base", base)):
        from schedsearch.trainers.harness import Trainer  # torch, only when a control runs

        trainer = Trainer(workload, seed=seed, device=device)
        for step in range(schedule.total_steps):
            if trainer.step(schedule.lr_at(step)).diverged:
                break
            if on_progress is not None and (step + 1) % 100 == 0:
                on_progress(label, step + 1)
        value = math.nan if trainer.diverged else float(trainer.evaluate()[metric])
        values.append(value)
    return ControlResult(seed, metric, mode, values[0], values[1], found.total_steps)
