"""Building a search's status: conditions by Kubernetes conventions and a bounded member list.

Conditions keep their ``lastTransitionTime`` unless their status flips, and carry the generation
they were computed for. The member list holds at most ``MAX_STATUS_MEMBERS`` entries (the best
members of a larger population), so the object stays small however long the search runs; the
full history lives in the state ConfigMap and in Events.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from schedsearch.api.spec import (
    MAX_STATUS_MEMBERS,
    Condition,
    MemberSummary,
    ScheduleSearchStatus,
)


@dataclass(frozen=True)
class Cond:
    """A condition before timestamps: type, status (True/False/Unknown), reason, message."""

    type: str
    status: str
    reason: str
    message: str = ""


def conditions(
    wanted: Iterable[Cond],
    previous: Sequence[Condition],
    *,
    now: datetime.datetime,
    generation: int,
) -> list[Condition]:
    """``wanted`` as API conditions; a condition whose status did not change keeps its time."""
    before = {c.type: c for c in previous}
    out = []
    for cond in wanted:
        old = before.get(cond.type)
        since = old.last_transition_time if old is not None and old.status == cond.status else now
        out.append(
            Condition(
                type=cond.type,
                status=cond.status,  # type: ignore[arg-type]
                reason=cond.reason,
                message=cond.message[:32768],
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return out


def capped_members(members: Sequence[MemberSummary], mode: str) -> list[MemberSummary]:
    """All members if they fit, else the best ``MAX_STATUS_MEMBERS`` by objective, by id."""
    if len(members) <= MAX_STATUS_MEMBERS:
        return sorted(members, key=lambda m: m.id)

    def rank(m: MemberSummary) -> tuple[int, float, int]:
        value = m.objective
        if value is None or not math.isfinite(value):
            return (1, 0.0, m.id)
        return (0, value if mode == "min" else -value, m.id)

    best = sorted(members, key=rank)[:MAX_STATUS_MEMBERS]
    return sorted(best, key=lambda m: m.id)


def wire(status: ScheduleSearchStatus) -> dict[str, object]:
    """The status as the API stores it: camelCase; ``None`` kept so a merge patch clears it."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=False)


def same(a: ScheduleSearchStatus, b: ScheduleSearchStatus) -> bool:
    return wire(a) == wire(b)
