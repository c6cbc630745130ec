"""A search's result, read from its durable state, and the LRSchedule object that stores it.

AutoLRS and HDET trainers send their result with their final report; PBT's result is the PBT
coordinator's (kept in the state): the best finished member's lineage, by the same rule as the
local engine's. Either way the result is a function of the state, so computing it again (after a
controller restart) gives the same object.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from typing import Any

from schedsearch.api.spec import (
    API_VERSION,
    SCHEDULE_KIND,
    LRScheduleSpec,
    ObjectiveValue,
    Provenance,
    ScheduleSearchSpec,
    best_schedule_name,
)
from schedsearch.controller import names
from schedsearch.controller import state as state_mod
from schedsearch.trainers import schedules

JsonObj = dict[str, Any]
ANNOTATION_SEARCH_UID = f"{names.GROUP}/search-uid"


@dataclass(frozen=True)
class Result:
    """The found schedule, its objective, where it came from, and what the search cost."""

    schedule: schedules.Schedule
    objective: float | None
    member: int
    step: int
    member_steps: int


def better(a: float, b: float, mode: str) -> bool:
    return a < b if mode == "min" else a > b


@dataclass(frozen=True)
class Best:
    """The best member so far of a running search, its objective and step."""

    member: int
    objective: float
    step: int


def best_so_far(state: state_mod.SearchState, mode: str) -> Best | None:
    """The best member so far with a finite objective, if any: PBT's by its coordinator's rule;
    for the others, the member whose last report is best (lowest index on ties)."""
    if state.population is not None:
        coordinator = state_mod.read_coordinator(state)
        member = coordinator.best_member(finished_only=False)
        if member is None:
            return None
        known = coordinator.population.members[member]
        assert known.objective is not None
        return Best(member, known.objective, known.step)
    best: Best | None = None
    for index, record in sorted(state.members.items()):
        value = record.objective
        if value is None or not math.isfinite(value):
            continue
        if best is None or better(value, best.objective, mode):
            best = Best(index, value, record.step)
    return best


def member_steps(state: state_mod.SearchState) -> int:
    """The search's cost so far: every member's steps, and the control run's once it reported."""
    return _members_steps(state) + state.control.member_steps


def _members_steps(state: state_mod.SearchState) -> int:
    return sum(r.member_steps for r in state.members.values())


def compute(state: state_mod.SearchState, spec: ScheduleSearchSpec) -> Result | None:
    """The search's result, or None when it has none (yet, or because every member diverged)."""
    if state.result is not None:
        return _reported(state.result, state)
    if state.population is None:
        return None
    coordinator = state_mod.read_coordinator(state)
    member = coordinator.best_member()
    if member is None:
        return None
    found = coordinator.result(spec.workload.ref)
    step = coordinator.population.members[member].step
    return Result(found.best_schedule, found.best_objective, member, step, member_steps(state))


def _reported(result: JsonObj, state: state_mod.SearchState) -> Result:
    objective = result.get("bestObjective")
    return Result(
        schedule=schedules.Schedule.from_dict(result["bestSchedule"]),
        objective=float(objective) if isinstance(objective, int | float) else None,
        member=int(result.get("bestMember") or 0),
        step=int(result["bestSchedule"].get("totalSteps") or 0),
        member_steps=int(result.get("memberSteps") or _members_steps(state))
        + state.control.member_steps,
    )


_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def label_value(text: str) -> str:
    """``text`` made a valid label value (an entrypoint's ``:`` becomes ``_``)."""
    value = _LABEL_UNSAFE.sub("_", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def schedule_object(
    *,
    namespace: str,
    search: str,
    search_uid: str,
    spec: ScheduleSearchSpec,
    result: Result,
    created_at: datetime.datetime,
    control: JsonObj | None = None,
) -> JsonObj:
    """The LRSchedule storing ``result``: labelled by workload and strategy, owned by no one;
    ``control`` (the control run's result) goes into its provenance as the local engine puts it."""
    objective = None
    if result.objective is not None and math.isfinite(result.objective):
        objective = ObjectiveValue(metric=spec.objective.metric, value=result.objective)
    provenance = Provenance(
        search=search,
        namespace=namespace,
        strategy=spec.strategy.name,
        workload=spec.workload.ref,
        objective=objective,
        member=result.member,
        created_at=created_at,
        searchUID=search_uid,  # type: ignore[call-arg]
        memberSteps=result.member_steps,  # type: ignore[call-arg]
        **({"control": control} if control is not None else {}),
    )
    body = LRScheduleSpec.from_schedule(result.schedule, provenance)
    labels = {
        names.LABEL_SEARCH: search,
        names.LABEL_WORKLOAD: label_value(spec.workload.ref),
        names.LABEL_STRATEGY: spec.strategy.name,
        **names.MANAGED_BY,
    }
    return {
        "apiVersion": API_VERSION,
        "kind": SCHEDULE_KIND,
        "metadata": {
            "name": best_schedule_name(search),
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_SEARCH_UID: search_uid},
        },
        "spec": body.to_wire(),
    }


def schedule_owner_uid(obj: JsonObj) -> str:
    """The uid of the search an existing LRSchedule came from ("" when unknown)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ANNOTATION_SEARCH_UID, ""))
