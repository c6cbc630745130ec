"""The page's data: JSON-ready views of what a ``ResultsBackend`` holds.

Every function reads through the backend the CLI reads (the local store or the cluster) and
shapes the answer for the page; nothing here writes. Downloads are the text
``schedsearch export`` writes, from the same function.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import ValidationError

from schedsearch.api import spec as api
from schedsearch.cli import render
from schedsearch.cli.export import FORMATS, export_schedule
from schedsearch.store import (
    HistoryPoint,
    NotFoundError,
    ResultsBackend,
    SearchRecord,
    StoredSchedule,
    member_summaries,
)
from schedsearch.trainers import families
from schedsearch.trainers.config import BaseScheduleConfig, Family
from schedsearch.trainers.schedules import Schedule
from schedsearch.ui import events

JSONDict = dict[str, Any]
FAMILIES: tuple[str, ...] = get_args(Family)
# Points per plotted schedule (change points and the step before each are added: jumps show).
SAMPLES = 400
# SGDR needs its first cycle's length; the menu's SGDR restarts four times over the budget.
SGDR_CYCLES = 4
DOWNLOAD_TYPES = {
    "json": "application/json",
    "yaml": "application/yaml",
    "csv": "text/csv",
    "torch": "text/x-python",
}


@dataclass(frozen=True)
class Download:
    """A file to hand to the browser."""

    filename: str
    content_type: str
    text: str


def search_rows(backend: ResultsBackend) -> list[JSONDict]:
    """One row per search for the list page."""
    rows = []
    for record in backend.list_searches():
        members = _members(backend, record)
        rows.append(_row(record, members, _control(backend, record)))
    return rows


def search_detail(backend: ResultsBackend, name: str) -> JSONDict:
    """Everything the page of one search shows: its row, members' series, strategy events,
    best and base schedules, and the spec as YAML."""
    record = backend.get_search(name)
    history = backend.history(name)
    members = _members(backend, record, history)
    stored = _best(backend, record)
    base = base_schedule(record)
    return {
        "search": _row(record, members, _control_of(stored)),
        "members": member_series(history),
        "events": events.strategy_events(backend, name),
        "best": None if stored is None else schedule_view(stored.schedule),
        "base": None if base is None else schedule_view(base),
        "specYAML": render.dump(record.spec, "yaml"),
    }


def member_series(history: Sequence[HistoryPoint]) -> list[JSONDict]:
    """Each member's steps, LRs and losses as parallel lists (``None`` where not measured)."""
    series: dict[int, JSONDict] = {}
    for point in history:
        entry = series.setdefault(
            point.member,
            {"member": point.member, "steps": [], "lr": [], "loss": [], "valLoss": []},
        )
        entry["steps"].append(point.step)
        entry["lr"].append(_finite(point.lr))
        entry["loss"].append(_finite(point.loss))
        entry["valLoss"].append(_finite(point.val_loss))
    return [series[m] for m in sorted(series)]


def stored_schedules(backend: ResultsBackend) -> list[JSONDict]:
    """Every stored schedule, with its search's base schedule while that search exists."""
    views = []
    for stored in backend.list_schedules():
        try:
            record: SearchRecord | None = backend.get_search(stored.search)
        except NotFoundError:
            record = None  # a stored schedule outlives its search
        base = None if record is None else base_schedule(record)
        views.append(
            {
                "name": stored.name,
                "search": stored.search,
                "searchExists": record is not None,
                "strategy": stored.provenance.strategy,
                "workload": stored.provenance.workload,
                "objective": None
                if stored.provenance.objective is None
                else stored.provenance.objective.model_dump(by_alias=True, mode="json"),
                "control": _control_of(stored),
                "schedule": schedule_view(stored.schedule),
                "base": None if base is None else schedule_view(base),
                "baseFamily": None if record is None else _base_family(record),
            }
        )
    return views


def baseline(backend: ResultsBackend, name: str, family: str) -> JSONDict:
    """Family ``family`` laid out like search ``name``'s base schedule (same peak, floor,
    warm-up and budget), for comparison with its best schedule."""
    if family not in FAMILIES:
        raise ValueError(f"family: {family!r} is not one of {', '.join(FAMILIES)}")
    record = backend.get_search(name)
    parsed = record.parsed().spec
    steps = parsed.budget.steps
    base = parsed.base_schedule
    fields: JSONDict = {
        "family": family,
        "peak_lr": base.peak_lr,
        "min_lr": 0.0 if family == "constant" else base.min_lr,
        "warmup_steps": base.warmup_steps,
    }
    if family == "sgdr":
        fields["t0"] = max(1, (steps - base.warmup_steps) // SGDR_CYCLES)
    if family == "onecycle":
        fields["warmup_steps"] = 0  # onecycle's own rise (30% of the steps) by default
    schedule = families.build_schedule(BaseScheduleConfig.model_validate(fields), steps)
    return {"search": name, "family": family, "schedule": schedule_view(schedule)}


def download(backend: ResultsBackend, name: str, fmt: str) -> Download:
    """Search ``name``'s best schedule as ``schedsearch export NAME -o FMT -f FILENAME`` writes
    it, with that file name."""
    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    stored = backend.best_schedule(name)
    filename = download_filename(name, fmt)
    stem = filename.rsplit(".", 1)[0]
    text = export_schedule(stored.schedule, fmt, module_name=stem)
    return Download(filename, DOWNLOAD_TYPES[fmt], text)


def download_filename(name: str, fmt: str) -> str:
    """``NAME-best.json``/``.yaml``/``.csv``; a torch module gets an importable name."""
    if fmt == "torch":
        return re.sub(r"\W", "_", name) + "_schedule.py"
    return f"{api.best_schedule_name(name)}.{fmt}"


def schedule_view(schedule: Schedule) -> JSONDict:
    """A schedule as plot points plus its change points."""
    # sample() needs two distinct steps; a one-step schedule is its one LR.
    pairs = schedule.sample(SAMPLES) if schedule.total_steps > 1 else [(0, schedule.lr_at(0))]
    return {
        "totalSteps": schedule.total_steps,
        "steps": [step for step, _ in pairs],
        "lr": [lr for _, lr in pairs],
        "points": [p.to_dict() for p in schedule.points],
    }


def base_schedule(record: SearchRecord) -> Schedule | None:
    """The search's base schedule over its budget (None if its spec no longer validates)."""
    try:
        return record.parsed().spec.base_schedule_for_budget()
    except (ValidationError, ValueError):
        return None


# --- internals ------------------------------------------------------------------------------


def _members(
    backend: ResultsBackend,
    record: SearchRecord,
    history: Sequence[HistoryPoint] | None = None,
) -> list[api.MemberSummary]:
    """The members as ``schedsearch get`` shows them (the cluster keeps their phases; locally
    the search's phase is every member's)."""
    if record.members is not None:
        return list(record.members)
    mode = str(record.spec.get("spec", {}).get("objective", {}).get("mode", "min"))
    phase: api.MemberPhase = "Pending" if record.phase == "Interrupted" else record.phase
    points = backend.history(record.name) if history is None else history
    return member_summaries(points, record.objective_metric, mode=mode, phase=phase)


def _row(
    record: SearchRecord, members: Sequence[api.MemberSummary], control: JSONDict | None
) -> JSONDict:
    steps = [m.step for m in members]
    objective = record.spec.get("spec", {}).get("objective", {})
    return {
        "name": record.name,
        "strategy": record.strategy,
        "workload": record.workload,
        "phase": record.phase,
        "message": record.message,
        "metric": objective.get("metric", "val_loss"),
        "mode": objective.get("mode", "min"),
        # Every member has trained at least this far.
        "steps": min(steps) if steps else 0,
        "budget": record.budget_steps,
        "members": len(members),
        "running": sum(1 for m in members if m.phase == "Running"),
        "best": _finite(record.best_objective),
        "bestMember": record.best_member,
        "control": control,
        "cost": record.member_steps,
        "created": record.created_at.isoformat(),
        "updated": record.updated_at.isoformat(),
    }


def _best(backend: ResultsBackend, record: SearchRecord) -> StoredSchedule | None:
    if record.best_objective is None:
        return None
    try:
        return backend.best_schedule(record.name)
    except NotFoundError:
        return None


def _control(backend: ResultsBackend, record: SearchRecord) -> JSONDict | None:
    return _control_of(_best(backend, record))


def _control_of(stored: StoredSchedule | None) -> JSONDict | None:
    """The control run's comparison (found vs base schedule on a fresh seed), if there was one."""
    if stored is None:
        return None
    control = (stored.provenance.model_extra or {}).get("control")
    if not isinstance(control, dict):
        return None
    found, base = _finite(control.get("found")), _finite(control.get("base"))
    return {
        "found": found,
        "base": base,
        "seed": control.get("seed"),
        "metric": control.get("metric"),
        "change": None if found is None or not base else found / base - 1.0,
        "summary": control.get("summary"),
    }


def _base_family(record: SearchRecord) -> str | None:
    family = record.spec.get("spec", {}).get("baseSchedule", {}).get("family")
    return family if isinstance(family, str) else None


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
