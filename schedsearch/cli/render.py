"""How the CLI shows results: rich tables for people, JSON/YAML documents for programs.

The documents are the Kubernetes-shaped objects (ScheduleSearch with status, LRSchedule), so the
output of ``schedsearch get -o yaml`` reads like ``kubectl get -o yaml`` of the same search.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Literal, get_args

import yaml
from rich.table import Table

from schedsearch.api import spec as api
from schedsearch.cli import textplot
from schedsearch.store.base import SearchRecord, StoredSchedule
from schedsearch.trainers.schedules import Schedule

OutputFormat = Literal["table", "json", "yaml"]
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)


def dump(document: Any, fmt: str) -> str:
    """A JSON-ready document as JSON or YAML text."""
    if fmt == "json":
        return json.dumps(document, indent=2) + "\n"
    return yaml.safe_dump(document, sort_keys=False)


def number(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def age(since: datetime, now: datetime | None = None) -> str:
    """kubectl-style age: 45s, 12m, 3h, 5d."""
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def search_resource(
    record: SearchRecord, members: Sequence[api.MemberSummary] = ()
) -> dict[str, Any]:
    """The ScheduleSearch object of a record, with its status, as a JSON-ready dict."""
    document = dict(record.spec)
    document["status"] = record.status(members).to_wire()
    return document


def searches_table(records: Sequence[SearchRecord]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "STRATEGY", "WORKLOAD", "PHASE", "BEST", "COST", "AGE"):
        table.add_column(column, no_wrap=True)
    for r in records:
        cost = "-" if r.member_steps is None else str(r.member_steps)
        table.add_row(
            r.name,
            r.strategy,
            r.workload,
            r.phase,
            number(r.best_objective),
            cost,
            age(r.created_at),
        )
    return table


def search_summary(record: SearchRecord) -> Table:
    """Key/value lines describing one search."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    body = record.spec.get("spec", {})
    objective = body.get("objective", {})
    rows = [
        ("Name", record.name),
        ("Strategy", record.strategy),
        ("Workload", record.workload),
        ("Phase", record.phase + (f" ({record.message})" if record.message else "")),
        ("Objective", f"{objective.get('metric', 'val_loss')} ({objective.get('mode', 'min')})"),
        ("Budget", f"{record.budget_steps} steps"),
        ("Best", _best_line(record)),
        *([("Control", record.control.summary)] if record.control is not None else []),
        ("Cost", "-" if record.member_steps is None else f"{record.member_steps} member-steps"),
        ("Created", record.created_at.isoformat()),
        ("Started", record.started_at.isoformat() if record.started_at else "-"),
        ("Completed", record.completed_at.isoformat() if record.completed_at else "-"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def _best_line(record: SearchRecord) -> str:
    if record.best_objective is None:
        return "-"
    return (
        f"{number(record.best_objective)} (member {record.best_member}, step {record.best_step}, "
        f"schedule {api.best_schedule_name(record.name)})"
    )


def members_table(members: Sequence[api.MemberSummary]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("MEMBER", "PHASE", "STEP", "LR", "BEST OBJECTIVE", "RESTARTS"):
        table.add_column(column, no_wrap=True, justify="left" if column == "PHASE" else "right")
    for m in members:
        table.add_row(
            str(m.id), m.phase, str(m.step), number(m.lr), number(m.objective), str(m.restarts)
        )
    return table


def change_points_table(schedule: Schedule) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("STEP", "LR", "SHAPE", "TARGET LR", "SPAN"):
        table.add_column(column, no_wrap=True, justify="right")
    for point in schedule.points:
        table.add_row(
            str(point.step),
            f"{point.lr:.6g}",
            point.interp,
            "-" if point.end_lr is None else f"{point.end_lr:.6g}",
            "-" if point.span is None else str(point.span),
        )
    return table


def provenance_lines(stored: StoredSchedule) -> list[str]:
    p = stored.provenance
    lines = [
        f"schedule {stored.name} of search {stored.search} ({stored.schedule.total_steps} steps)"
    ]
    if p.strategy or p.workload:
        lines.append(f"strategy {p.strategy or '-'} on workload {p.workload or '-'}")
    if p.objective is not None:
        member = f", member {p.member}" if p.member is not None else ""
        lines.append(
            f"{p.objective.metric} {number(p.objective.value)}{member} "
            "(the search's best, selected on the validation data it is scored on)"
        )
    control = (p.model_extra or {}).get("control")
    if isinstance(control, dict) and "summary" in control:
        lines.append(f"control: {control['summary']}")
    if p.created_at is not None:
        lines.append(f"stored {p.created_at.isoformat()}")
    return lines


def schedule_plot(schedule: Schedule, *, width: int = 60, height: int = 12) -> str:
    return textplot.plot_function(
        schedule.lr_at, 0, schedule.total_steps - 1, width=width, height=height, x_label="step"
    )
