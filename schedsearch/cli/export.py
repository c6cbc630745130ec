"""A stored schedule as a file others consume: JSON or YAML data, per-step CSV, or a torch module.

JSON is the trainers' schedule format (``Schedule.from_json`` reads it back, provenance
included); YAML is the same document (``Schedule.from_dict(yaml.safe_load(text))``); CSV has one
``step,lr`` row per training step; torch is a standalone Python module with an ``LRScheduler``
subclass holding the change points (``export_torch``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal, get_args

import yaml

from schedsearch.trainers.schedules import Schedule

ExportFormat = Literal["json", "yaml", "csv", "torch"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
MAX_CSV_STEPS = 10_000_000
# The format a file's extension implies when no format is given.
SUFFIX_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".csv": "csv", ".py": "torch"}


def export_schedule(schedule: Schedule, fmt: str, *, module_name: str = "schedule") -> str:
    """The text of ``schedule`` in format ``fmt`` (one of ``FORMATS``); ``module_name`` is the
    import name a torch module's usage example shows."""
    if fmt == "json":
        return schedule.to_json(indent=2) + "\n"
    if fmt == "yaml":
        # PyYAML writes floats with repr(): the LRs read back exactly.
        return yaml.safe_dump(schedule.to_dict(), sort_keys=False)
    if fmt == "csv":
        return to_csv(schedule)
    if fmt == "torch":
        # Imported here: the renderer is only needed for this format.
        from schedsearch.trainers.export_torch import render_torch_module

        return render_torch_module(schedule, module_name=module_name)
    raise ValueError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")


def format_for(path: Path | None, fmt: str | None) -> str:
    """The format asked for, else the one ``path``'s extension implies, else JSON."""
    if fmt is not None:
        return fmt
    if path is not None:
        return SUFFIX_FORMATS.get(path.suffix.lower(), "json")
    return "json"


def to_csv(schedule: Schedule) -> str:
    """``step,lr`` for every step; ``repr`` keeps each LR exact."""
    if schedule.total_steps > MAX_CSV_STEPS:
        raise ValueError(
            f"the schedule spans {schedule.total_steps} steps; CSV is one row per step and "
            f"stops at {MAX_CSV_STEPS}: export --format json (the change points) instead"
        )
    out = io.StringIO()
    out.write("step,lr\n")
    for step, lr in enumerate(schedule.lrs()):
        out.write(f"{step},{lr!r}\n")
    return out.getvalue()
