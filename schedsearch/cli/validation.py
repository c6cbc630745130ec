"""What ``schedsearch validate`` checks: the spec (as the API server would, or for a local run),
a user entrypoint (it imports, follows the workload protocol, yields a batch), and how a local
run would share this machine's CPUs. Every problem of a file is reported in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from schedsearch.api import loading
from schedsearch.api.fields import parse_quantity
from schedsearch.api.spec import ScheduleSearch, Target


@dataclass
class Report:
    """The lines ``validate`` prints for one source, and whether it passed."""

    lines: list[str] = field(default_factory=list)
    ok: bool = True

    def problem(self, line: str) -> None:
        self.lines.append(line)
        self.ok = False


def validate_source(path: str | Path, target: Target, cpus: int | None = None) -> Report:
    """Check one file (or ``-``, standard input) for ``target``."""
    report = Report()
    try:
        source, documents = loading.read_documents(path)
    except loading.SpecError as err:
        report.lines, report.ok = err.lines(), False
        return report
    specs: list[ScheduleSearch] = []
    try:
        specs = loading.parse_documents(source, documents, target)
    except loading.SpecError as err:
        for line in err.lines():
            report.problem(line)
    for index, document in enumerate(documents, start=1):
        where = f"{source}: " + (f"document {index}: " if len(documents) > 1 else "")
        _check_entrypoint(report, where, document, target)
    if target == "local":
        for spec in specs:
            warning = cpu_share_warning(spec, cpus or os.cpu_count() or 1)
            if warning:
                report.lines.append(f"{source}: warning: {warning}")
    if report.ok:
        report.lines.append(f"{source}: ok ({', '.join(spec.name for spec in specs)})")
    return report


def _entrypoint_of(document: Any) -> str | None:
    spec = document.get("spec") if isinstance(document, Mapping) else None
    workload = spec.get("workload") if isinstance(spec, Mapping) else None
    ref = workload.get("entrypoint") if isinstance(workload, Mapping) else None
    return ref if isinstance(ref, str) and ":" in ref else None


def _check_entrypoint(report: Report, where: str, document: Any, target: Target) -> None:
    ref = _entrypoint_of(document)
    if ref is None:
        return
    # Imported only for an entrypoint: the registry loads torch.
    from schedsearch.trainers.workloads import registry

    problems, notes = registry.entrypoint_report(ref)
    prefix = f"{where}spec.workload.entrypoint: "
    if problems and target == "cluster" and registry.is_import_problem(problems[0]):
        # On the cluster the module lives in the image; this machine may not have it.
        report.lines.append(f"{prefix}note: not checked here ({problems[0]})")
        return
    for problem in problems:
        report.problem(prefix + problem)
    report.lines.extend(f"{prefix}note: {note}" for note in notes)


def cpu_share_warning(search: ScheduleSearch, cpus: int) -> str | None:
    """A warning when a local run gives each member (a population's members, a replica set's
    replicas) less CPU than the spec asks: they run at once and share this machine's CPUs."""
    chosen = search.spec.strategy
    members = chosen.strategy.members(chosen.config)
    if members <= 1:
        return None
    asked = parse_quantity(search.spec.resources.cpu)
    share = Decimal(cpus) / members
    if share >= asked:
        return None
    return (
        f"spec.resources.cpu: {members} members share this machine's {cpus} CPU(s) when "
        f"run here: each gets about {share:.2f} CPU, not the {asked:g} the spec asks "
        "(on the cluster each member pod gets its request)"
    )
