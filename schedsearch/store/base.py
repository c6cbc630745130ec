"""What the CLI reads results through: records of searches, stored schedules, member history.

``ResultsBackend`` is the read side every backend implements: the local SQLite store today, a
cluster backend (ScheduleSearch/LRSchedule objects) behind the same CLI commands later. Records are
plain frozen dataclasses; the Kubernetes-shaped views (status, LRSchedule) are built from them with
the spec models, so the local store and the cluster print the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from schedsearch.api import spec as api
from schedsearch.trainers.schedules import Schedule

# The local engine can also be Interrupted (Ctrl-C, state saved, ``run --resume`` continues);
# the cluster never is, so the resource's status shows such a search as Pending.
StorePhase = Literal["Pending", "Running", "Interrupted", "Succeeded", "Failed"]


class StoreError(RuntimeError):
    """The store cannot be used (unreadable file, written by a newer version, ...)."""


class NotFoundError(LookupError):
    """No search (or no stored schedule) of that name."""

    def __init__(self, what: str, name: str, hint: str = "") -> None:
        self.what = what
        self.name = name
        super().__init__(f"{what} {name!r} not found" + (f": {hint}" if hint else ""))


class SearchExistsError(ValueError):
    """A search of that name is already in the store."""


@dataclass(frozen=True)
class HistoryPoint:
    """One coarse observation of a member: its step, LR and losses (None when not measured)."""

    member: int
    step: int
    lr: float
    loss: float | None = None
    val_loss: float | None = None

    def metric(self, name: str) -> float | None:
        """The value of an objective metric (``val_loss`` or ``train_loss``) if measured."""
        value = self.val_loss if name == "val_loss" else self.loss
        return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class SearchRecord:
    """A search as the store knows it; ``spec`` is the ScheduleSearch object as submitted."""

    name: str
    spec: dict[str, Any]
    phase: StorePhase
    strategy: api.StrategyName
    workload: str
    created_at: datetime
    updated_at: datetime
    best_objective: float | None = None
    best_member: int | None = None
    best_step: int | None = None
    member_steps: int | None = None
    message: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    # What only the cluster keeps: each member's own phase and the resource's conditions. The
    # local store leaves ``members`` None (the CLI derives them from the history instead).
    members: tuple[api.MemberSummary, ...] | None = None
    conditions: tuple[api.Condition, ...] = ()
    observed_generation: int | None = None
    # The control run's comparison (``status.control``), when the search had one.
    control: api.ControlStatus | None = None

    @property
    def objective_metric(self) -> str:
        return str(self.spec.get("spec", {}).get("objective", {}).get("metric", "val_loss"))

    @property
    def budget_steps(self) -> int | None:
        steps = self.spec.get("spec", {}).get("budget", {}).get("steps")
        return steps if isinstance(steps, int) else None

    def parsed(self) -> api.ScheduleSearch:
        """The spec validated again (raises ``pydantic.ValidationError`` if it no longer is)."""
        return api.ScheduleSearch.model_validate(self.spec)

    def status(self, members: Sequence[api.MemberSummary] = ()) -> api.ScheduleSearchStatus:
        """The Kubernetes-shaped status of this record (``members`` when it holds none)."""
        if self.members is not None:
            members = self.members
        best = None
        if self.best_objective is not None:
            best = api.BestResult(
                objective=self.best_objective,
                member=self.best_member or 0,
                step=self.best_step or 0,
                schedule=api.best_schedule_name(self.name),
            )
        return api.ScheduleSearchStatus(
            phase="Pending" if self.phase == "Interrupted" else self.phase,
            message=self.message,
            strategy=self.strategy,
            conditions=list(self.conditions),
            observed_generation=self.observed_generation,
            members=list(members)[: api.MAX_STATUS_MEMBERS],
            best=best,
            member_steps=self.member_steps,
            control=self.control,
            start_time=self.started_at,
            completion_time=self.completed_at,
        )


@dataclass(frozen=True)
class StoredSchedule:
    """A best schedule with where it came from; replays exactly through ``schedule.lr_at``."""

    name: str
    search: str
    schedule: Schedule
    provenance: api.Provenance

    def to_resource(self) -> api.LRSchedule:
        """The LRSchedule object (``kubectl apply``-able) holding this schedule."""
        meta = api.ScheduleMeta(name=self.name, namespace=self.provenance.namespace)
        return api.LRSchedule(
            metadata=meta, spec=api.LRScheduleSpec.from_schedule(self.schedule, self.provenance)
        )


def member_summaries(
    history: Iterable[HistoryPoint],
    metric: str,
    *,
    mode: str = "min",
    phase: api.MemberPhase = "Running",
) -> list[api.MemberSummary]:
    """Each member's latest step, LR and best objective; at most ``MAX_STATUS_MEMBERS``, best
    first (a bounded status even for large populations)."""
    latest: dict[int, HistoryPoint] = {}
    best: dict[int, float] = {}
    for point in history:
        if point.member not in latest or point.step >= latest[point.member].step:
            latest[point.member] = point
        value = point.metric(metric)
        if value is not None:
            old = best.get(point.member)
            better = old is None or (value < old if mode == "min" else value > old)
            best[point.member] = value if better else old  # type: ignore[assignment]
    summaries = [
        api.MemberSummary(
            id=member,
            phase=phase,
            step=point.step,
            lr=point.lr if math.isfinite(point.lr) and point.lr >= 0 else None,
            objective=best.get(member),
        )
        for member, point in latest.items()
    ]
    sign = 1.0 if mode == "min" else -1.0
    summaries.sort(key=lambda s: (s.objective is None, sign * (s.objective or 0.0), s.id))
    return summaries[: api.MAX_STATUS_MEMBERS]


@runtime_checkable
class ResultsBackend(Protocol):
    """The read side of results, whatever holds them. Missing names raise ``NotFoundError``."""

    def list_searches(self) -> list[SearchRecord]:
        """Every search, by name."""
        ...

    def get_search(self, name: str) -> SearchRecord:
        """One search."""
        ...

    def best_schedule(self, name: str) -> StoredSchedule:
        """The best schedule a search stored (``NotFoundError`` until it stored one)."""
        ...

    def history(self, name: str) -> list[HistoryPoint]:
        """Coarse member history (every evaluation), ordered by member then step."""
        ...

    def list_schedules(self) -> list[StoredSchedule]:
        """Every stored schedule, by name, those whose search was deleted included."""
        ...
