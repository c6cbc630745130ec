"""Schedules for real runs: a torch ``LRScheduler`` holding a schedule as data; standalone files.

``ScheduleLR`` sets every param group's LR to ``schedule.lr_at(step) * scale`` and keeps only plain
data (the schedule's dict form, the per-group scales, the step), so its ``state_dict`` is JSON.
``render_torch_module`` writes a ``.py`` file that depends on torch alone: it embeds the schedule as
a literal and the *source* of this module's scheduler and of the replay core of ``schedules``, so
the exported file computes bit-for-bit the LRs the search saw.
"""

from __future__ import annotations

import inspect
import json
import pprint
import re
from typing import Any

import torch

from schedsearch.trainers import schedules
from schedsearch.trainers.schedules import RawPoint, ResolvedPoint, lr_at_resolved, resolve_points

STATE_FORMAT = "schedsearch.io/torch-scheduler-v1"


def schedule_data(schedule: Any) -> dict[str, Any]:
    """The plain-data form of a schedule: ``Schedule.to_dict()``, or a copy of such a mapping."""
    to_dict = getattr(schedule, "to_dict", None)
    data = to_dict() if callable(to_dict) else dict(schedule)
    # A JSON round trip is a deep copy that also proves the state stays serialisable.
    return dict(json.loads(json.dumps(data, allow_nan=False)))


def compile_schedule(data: dict[str, Any]) -> tuple[list[int], tuple[ResolvedPoint, ...]]:
    """Steps and resolved points of a schedule's dict form, ready for ``lr_at_resolved``."""
    raw: list[RawPoint] = [
        (
            int(p["step"]),
            float(p["lr"]),
            str(p.get("interp", "constant")),
            p.get("endLR"),
            p.get("span"),
        )
        for p in data["points"]
    ]
    return [point[0] for point in raw], resolve_points(raw)


class ScheduleLR(torch.optim.lr_scheduler.LRScheduler):
    """LR of optimizer step ``k`` = ``schedule.lr_at(k) * group_scales[g]`` for param group ``g``.

    Call ``scheduler.step()`` after each ``optimizer.step()``, as with any torch scheduler.
    ``schedule`` is a ``Schedule`` or its ``to_dict()`` form; the optimizer's own initial LRs are
    ignored (the schedule gives absolute LRs; ``group_scales`` give per-group multiples).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Any,
        group_scales: list[float] | None = None,
        last_epoch: int = -1,
    ) -> None:
        self._set_schedule(schedule, group_scales, len(optimizer.param_groups))
        super().__init__(optimizer, last_epoch)

    def _set_schedule(self, schedule: Any, group_scales: list[float] | None, groups: int) -> None:
        self.schedule_data = schedule_data(schedule)
        self._steps, self._resolved = compile_schedule(self.schedule_data)
        scales = [1.0] * groups if group_scales is None else [float(s) for s in group_scales]
        if len(scales) != groups:
            raise ValueError(
                f"group_scales: expected one scale per param group ({groups}), got {len(scales)}"
            )
        self.group_scales = scales

    def lr_at(self, step: int) -> float:
        return lr_at_resolved(self._steps, self._resolved, step)

    def get_lr(self) -> list[float | torch.Tensor]:
        base = self.lr_at(max(self.last_epoch, 0))
        return [base * scale for scale in self.group_scales]

    def _get_closed_form_lr(self) -> list[float | torch.Tensor]:
        return self.get_lr()

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "schedule": schedule_data(self.schedule_data),
            "group_scales": list(self.group_scales),
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("format") != STATE_FORMAT:
            raise ValueError(f"format: expected {STATE_FORMAT!r}, got {state_dict.get('format')!r}")
        groups = len(self.optimizer.param_groups)
        self._set_schedule(state_dict["schedule"], state_dict["group_scales"], groups)
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict["_step_count"])
        # Apply the restored step's LR now: the next optimizer step must not run at whatever LR a
        # freshly built optimizer happened to hold.
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


_MODULE_HEADER = '''"""Learning-rate schedule exported by schedsearch{title}. Needs only torch.

    from {module} import make_scheduler

    scheduler = make_scheduler(optimizer)      # sets the LR of step 0
    for batch in batches:
        loss = ...; loss.backward()
        optimizer.step(); optimizer.zero_grad()
        scheduler.step()                       # LR of the next step

``lr_at(step)`` gives the LR of any step; ``scheduler.state_dict()`` is plain JSON-able data and
``load_state_dict`` resumes the same LR sequence.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from typing import Any

import torch

RawPoint = tuple[int, float, str, "float | None", "int | None"]
ResolvedPoint = tuple[int, float, str, float, int]
STATE_FORMAT = {state_format!r}

SCHEDULE: dict[str, Any] = {schedule}
'''

_MODULE_FOOTER = '''

_STEPS, _RESOLVED = compile_schedule(SCHEDULE)


def lr_at(step: int) -> float:
    """The schedule's LR for training step ``step`` (0-based)."""
    return lr_at_resolved(_STEPS, _RESOLVED, step)


def make_scheduler(
    optimizer: torch.optim.Optimizer, group_scales: list[float] | None = None
) -> ScheduleLR:
    """A ``ScheduleLR`` over ``optimizer`` following ``SCHEDULE``."""
    return ScheduleLR(optimizer, SCHEDULE, group_scales)
'''

# Embedded by source, in dependency order: one implementation of the arithmetic and the scheduler.
_EMBEDDED = (
    schedules.shape_value,
    schedules.resolve_points,
    schedules.lr_at_resolved,
    schedule_data,
    compile_schedule,
    ScheduleLR,
)


def render_torch_module(schedule: schedules.Schedule, *, module_name: str = "schedule") -> str:
    """Source of a standalone module defining ``SCHEDULE``, ``lr_at``, ``ScheduleLR`` and
    ``make_scheduler``; ``module_name`` is only used in its usage example."""
    title = str(schedule.provenance.get("name") or schedule.provenance.get("search") or "")
    # The title lands in a docstring: keep it to characters that cannot end or escape one.
    title = re.sub(r"[^\w .:/-]", "_", title)
    header = _MODULE_HEADER.format(
        title=f" ({title})" if title else "",
        module=module_name,
        state_format=STATE_FORMAT,
        schedule=pprint.pformat(schedule.to_dict(), width=100, sort_dicts=False),
    )
    bodies = [inspect.getsource(obj) for obj in _EMBEDDED]
    return header + "\n\n" + "\n\n".join(bodies) + _MODULE_FOOTER
