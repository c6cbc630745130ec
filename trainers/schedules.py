"""Learning-rate schedules as data: change points that replay exactly, plus builders.

A schedule is a tuple of change points. Point ``i`` says: at step ``points[i].step`` the LR is
``points[i].lr``, and from there it moves with ``points[i].interp`` towards a target that it
reaches ``span`` steps later (by default: the next point's LR, at the next point's step). The last
point's LR holds forever (unless it has an explicit target and span: then it moves there and holds
that). Nothing here is a closure, so a schedule serialises to JSON and back without loss and every
consumer (trainer, exported torch scheduler, plots) computes bit-for-bit the same LRs.

The "replay core" functions below work on plain tuples and import only ``bisect`` and ``math``:
``export_torch`` copies their source into generated standalone modules, so there is one
implementation of the arithmetic.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Interp = Literal["constant", "linear", "cosine", "exponential", "sqrt", "rex"]
INTERPS: tuple[str, ...] = get_args(Interp)
SCHEDULE_FORMAT = "schedsearch.io/schedule-v1"

# A point as plain data: (step, lr, interp, end_lr or None, span or None).
RawPoint = tuple[int, float, str, float | None, int | None]
# A resolved point: (step, lr, interp, target_lr, span); a point that holds is ("constant", lr, 1).
ResolvedPoint = tuple[int, float, str, float, int]


# --- replay core (plain functions; their source is embedded in exported modules) ---------------


def shape_value(interp: str, start: float, target: float, progress: float) -> float:
    """LR at ``progress`` in [0, 1] of a segment that moves from ``start`` to ``target``."""
    if interp == "constant" or progress <= 0.0:
        return start
    if progress >= 1.0:
        return target
    if interp == "linear":
        return start + (target - start) * progress
    if interp == "cosine":
        return target + (start - target) * (1.0 + math.cos(math.pi * progress)) / 2.0
    if interp == "exponential":
        return start * (target / start) ** progress
    if interp == "sqrt":
        return target + (start - target) * (1.0 - math.sqrt(progress))
    if interp == "rex":
        return target + (start - target) * (1.0 - progress) / (1.0 - progress / 2.0)
    raise ValueError(f"unknown interp {interp!r}")


def resolve_points(points: Sequence[RawPoint]) -> tuple[ResolvedPoint, ...]:
    """Fill in each point's target LR and span from its successor (see ``ChangePoint``)."""
    resolved: list[ResolvedPoint] = []
    for index, (step, lr, interp, end_lr, span) in enumerate(points):
        if index == len(points) - 1:
            if end_lr is None or span is None:
                resolved.append((step, lr, "constant", lr, 1))
                continue
            target, length = end_lr, span
        else:
            next_step, next_lr = points[index + 1][0], points[index + 1][1]
            target = next_lr if end_lr is None else end_lr
            length = next_step - step if span is None else span
        if interp == "exponential" and (lr <= 0 or target <= 0):
            raise ValueError(
                f"points[{index}]: an exponential segment needs start and target LR > 0, "
                f"got {lr!r} -> {target!r}"
            )
        resolved.append((step, lr, interp, target, length))
    return tuple(resolved)


def lr_at_resolved(steps: Sequence[int], resolved: Sequence[ResolvedPoint], step: int) -> float:
    """LR at ``step`` given the points' steps and their resolved tuples (see ``ResolvedPoint``)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    index = bisect.bisect_right(steps, step) - 1
    start_step, lr, interp, target, span = resolved[index]
    return shape_value(interp, lr, target, (step - start_step) / span)


# --- the data model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangePoint:
    """At ``step`` the LR is ``lr``; ``interp`` says how it moves until the next point.

    ``end_lr`` and ``span`` are optional: the segment heads for ``end_lr`` (default: the next
    point's LR) and reaches it after ``span`` steps (default: at the next point), then holds it.
    They make jumps (SGDR restarts) and segments cut short (a lineage that left a schedule mid-way)
    exact.
    """

    step: int
    lr: float
    interp: str = "constant"
    end_lr: float | None = None
    span: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"step": self.step, "lr": self.lr, "interp": self.interp}
        if self.end_lr is not None:
            data["endLR"] = self.end_lr
        if self.span is not None:
            data["span"] = self.span
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], index: int = 0) -> ChangePoint:
        where = f"points[{index}]"
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        unknown = set(data) - {"step", "lr", "interp", "endLR", "span"}
        if unknown:
            raise ValueError(
                f"{where}: unknown field(s) {sorted(unknown)}; "
                "allowed: step, lr, interp, endLR, span"
            )
        for required in ("step", "lr"):
            if required not in data:
                raise ValueError(f"{where}.{required}: missing")
        return cls(
            step=data["step"],
            lr=data["lr"],
            interp=data.get("interp", "constant"),
            end_lr=data.get("endLR"),
            span=data.get("span"),
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_lr(value: object, where: str) -> None:
    if not _is_number(value):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    assert isinstance(value, (int, float))
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: must be finite and >= 0, got {value!r}")


def _check_point(point: ChangePoint, index: int, is_last: bool) -> None:
    where = f"points[{index}]"
    if not _is_int(point.step) or point.step < 0:
        raise ValueError(f"{where}.step: must be an integer >= 0, got {point.step!r}")
    _check_lr(point.lr, f"{where}.lr")
    if point.interp not in INTERPS:
        raise ValueError(f"{where}.interp: {point.interp!r} is not one of {', '.join(INTERPS)}")
    if point.end_lr is not None:
        _check_lr(point.end_lr, f"{where}.endLR")
    if point.span is not None and (not _is_int(point.span) or point.span < 1):
        raise ValueError(f"{where}.span: must be an integer >= 1, got {point.span!r}")
    if is_last and point.interp != "constant" and (point.end_lr is None) != (point.span is None):
        raise ValueError(f"{where}: the last point needs both endLR and span, or neither")
    if point.interp == "constant" and (point.end_lr is not None or point.span is not None):
        raise ValueError(f"{where}: endLR/span have no meaning for interp 'constant'")


@dataclass(frozen=True)
class Schedule:
    """An LR schedule over ``total_steps`` training steps, with where it came from.

    ``provenance`` is free-form JSON-serialisable metadata (strategy, member, search, family...);
    treat it as read-only.
    """

    points: tuple[ChangePoint, ...]
    total_steps: int
    provenance: dict[str, Any] = field(default_factory=dict, hash=False)
    _steps: tuple[int, ...] = field(init=False, repr=False, compare=False, hash=False)
    _resolved: tuple[ResolvedPoint, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        points = tuple(self.points)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "provenance", dict(self.provenance))
        if not points:
            raise ValueError("points: a schedule needs at least one change point")
        if not _is_int(self.total_steps) or self.total_steps < 1:
            raise ValueError(f"totalSteps: must be an integer >= 1, got {self.total_steps!r}")
        for index, point in enumerate(points):
            if not isinstance(point, ChangePoint):
                raise ValueError(f"points[{index}]: expected a ChangePoint, got {point!r}")
            _check_point(point, index, is_last=index == len(points) - 1)
            if index == 0 and point.step != 0:
                raise ValueError(
                    f"points[0].step: the first point must be at step 0, got {point.step}"
                )
            if index > 0 and point.step <= points[index - 1].step:
                raise ValueError(
                    f"points[{index}].step: steps must be strictly increasing, "
                    f"got {point.step} after {points[index - 1].step}"
                )
        if points[-1].step > self.total_steps:
            raise ValueError(
                f"points[{len(points) - 1}].step: {points[-1].step} is past totalSteps "
                f"{self.total_steps}"
            )
        object.__setattr__(self, "_steps", tuple(p.step for p in points))
        raw = [(p.step, p.lr, p.interp, p.end_lr, p.span) for p in points]
        object.__setattr__(self, "_resolved", resolve_points(raw))

    # --- evaluation ---

    def lr_at(self, step: int) -> float:
        """The LR for training step ``step`` (0-based); past the last point its LR holds."""
        return lr_at_resolved(self._steps, self._resolved, step)

    def lrs(self, n: int | None = None) -> list[float]:
        """The LRs of steps ``0..n-1`` (default: the whole schedule)."""
        count = self.total_steps if n is None else n
        return [self.lr_at(step) for step in range(count)]

    def sample(
        self, n_points: int, *, include_change_points: bool = True
    ) -> list[tuple[int, float]]:
        """``(step, lr)`` pairs for plots and tables: ``n_points`` evenly spaced steps over
        ``[0, total_steps - 1]``, plus every change point and the step before it (so jumps show)."""
        if n_points < 2:
            raise ValueError(f"n_points: must be >= 2, got {n_points}")
        last = self.total_steps - 1
        steps = {round(i * last / (n_points - 1)) for i in range(n_points)}
        if include_change_points:
            for point in self.points:
                steps.update(s for s in (point.step - 1, point.step) if 0 <= s <= last)
        return [(step, self.lr_at(step)) for step in sorted(steps)]

    @property
    def peak_lr(self) -> float:
        return max(max(p.lr for p in self.points), *(r[3] for r in self._resolved))

    # --- construction helpers ---

    @classmethod
    def constant(
        cls, lr: float, total_steps: int, provenance: Mapping[str, Any] | None = None
    ) -> Schedule:
        return cls((ChangePoint(0, lr),), total_steps, dict(provenance or {}))

    def with_provenance(self, **updates: Any) -> Schedule:
        return Schedule(self.points, self.total_steps, {**self.provenance, **updates})

    def scaled(self, factor: float) -> Schedule:
        """Every LR multiplied by ``factor`` (a new schedule; its arithmetic is its own)."""
        _check_lr(factor, "factor")
        points = tuple(
            ChangePoint(
                p.step,
                p.lr * factor,
                p.interp,
                None if p.end_lr is None else p.end_lr * factor,
                p.span,
            )
            for p in self.points
        )
        return Schedule(points, self.total_steps, self.provenance)

    # --- serialisation ---

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SCHEDULE_FORMAT,
            "totalSteps": self.total_steps,
            "points": [p.to_dict() for p in self.points],
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        if not isinstance(data, Mapping):
            raise ValueError(f"schedule: expected a mapping, got {type(data).__name__}")
        fmt = data.get("format", SCHEDULE_FORMAT)
        if fmt != SCHEDULE_FORMAT:
            raise ValueError(f"format: {fmt!r} is not supported; expected {SCHEDULE_FORMAT!r}")
        unknown = set(data) - {"format", "totalSteps", "points", "provenance"}
        if unknown:
            raise ValueError(
                f"schedule: unknown field(s) {sorted(unknown)}; "
                "allowed: format, totalSteps, points, provenance"
            )
        if "totalSteps" not in data or "points" not in data:
            raise ValueError("schedule: 'totalSteps' and 'points' are required")
        raw_points = data["points"]
        if not isinstance(raw_points, Sequence) or isinstance(raw_points, (str, bytes)):
            raise ValueError("points: expected a list")
        points = tuple(ChangePoint.from_dict(p, i) for i, p in enumerate(raw_points))
        provenance = data.get("provenance") or {}
        if not isinstance(provenance, Mapping):
            raise ValueError("provenance: expected a mapping")
        return cls(points, data["totalSteps"], dict(provenance))

    def to_json(self, *, indent: int | None = None) -> str:
        # json writes floats with repr(), which round-trips exactly; NaN/inf are refused.
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        return cls.from_dict(json.loads(text))


# --- building a schedule from what was applied ---------------------------------------------------


class ScheduleBuilder:
    """Records the LRs a run applied, as segments, and compresses them into a ``Schedule``.

    Each call defines the LR from its step on, until the next call; calls come in non-decreasing
    step order, and a call at the step of an earlier one replaces it. Runs of equal constant LR
    collapse into one point. Used for AutoLRS stages and PBT lineages.
    """

    def __init__(self, points: Iterable[ChangePoint] = ()) -> None:
        self._points: list[ChangePoint] = []
        for point in points:
            self._push(point)

    @property
    def points(self) -> tuple[ChangePoint, ...]:
        return tuple(self._points)

    @property
    def last_step(self) -> int:
        """The step of the latest change point (-1 when empty)."""
        return self._points[-1].step if self._points else -1

    def copy(self) -> ScheduleBuilder:
        return ScheduleBuilder(self._points)

    def set_lr(self, step: int, lr: float, interp: str = "constant") -> ScheduleBuilder:
        """``lr`` at ``step``, then constant (or moving with ``interp`` towards the next point)."""
        _check_lr(lr, "lr")
        if interp not in INTERPS:
            raise ValueError(f"interp: must be one of {', '.join(INTERPS)}, got {interp!r}")
        self._cut(step, rewind=False)
        self._push(ChangePoint(step, float(lr), interp))
        return self

    def append_segment(
        self, start_step: int, schedule: Schedule, n_steps: int | None = None
    ) -> ScheduleBuilder:
        """Follow ``schedule`` (from its own step 0) from ``start_step`` on. Only its points before
        ``n_steps`` (default: its ``total_steps``) are copied; the segments keep their exact shape
        even when the next call cuts them short."""
        limit = schedule.total_steps if n_steps is None else n_steps
        if not _is_int(limit) or limit < 1:
            raise ValueError(f"n_steps: must be an integer >= 1, got {limit!r}")
        self._cut(start_step, rewind=False)
        for point, (_, _, interp, target, span) in zip(
            schedule.points, schedule._resolved, strict=True
        ):
            if point.step >= limit:
                break
            if interp == "constant":
                self._push(ChangePoint(point.step + start_step, point.lr))
            else:
                self._push(ChangePoint(point.step + start_step, point.lr, interp, target, span))
        return self

    def truncate(self, step: int) -> ScheduleBuilder:
        """Forget everything defined from ``step`` on (a PBT exploit keeps the source's past)."""
        self._cut(step, rewind=True)
        return self

    def build(self, total_steps: int, provenance: Mapping[str, Any] | None = None) -> Schedule:
        if not self._points:
            raise ValueError("ScheduleBuilder: nothing recorded; call set_lr() first")
        last = self._points[-1]
        ends_inside = last.span is not None and last.step + last.span <= total_steps
        if ends_inside and last.end_lr is not None and last.span is not None:
            # Close a frozen final segment with an explicit end point (the canonical form).
            closed = ScheduleBuilder(self._points)
            closed._push(ChangePoint(last.step + last.span, last.end_lr))
            return Schedule(tuple(closed._points), total_steps, dict(provenance or {}))
        return Schedule(tuple(self._points), total_steps, dict(provenance or {}))

    # --- internals ---

    def _cut(self, step: int, *, rewind: bool) -> None:
        """Drop points at or after ``step``; freeze the shape of the segment running across it."""
        if not _is_int(step) or step < 0:
            raise ValueError(f"step: must be an integer >= 0, got {step!r}")
        if not rewind and step < self.last_step:
            raise ValueError(
                f"step: {step} is before the last recorded step {self.last_step}; "
                "calls must come in step order (truncate() rewinds)"
            )
        kept = [p for p in self._points if p.step < step]
        if kept and len(kept) < len(self._points) and kept[-1].interp != "constant":
            last, nxt = kept[-1], self._points[len(kept)]
            target = nxt.lr if last.end_lr is None else last.end_lr
            span = nxt.step - last.step if last.span is None else last.span
            kept[-1] = ChangePoint(last.step, last.lr, last.interp, target, span)
        self._points = kept

    def _push(self, point: ChangePoint) -> None:
        if self._points:
            last = self._points[-1]
            if last.interp == "constant" and point.interp == "constant" and last.lr == point.lr:
                return
            if point.step == last.step:
                self._points.pop()
                self._push(point)
                return
            # A frozen segment that ends exactly where and at what the new point starts needs no
            # explicit target/span: dropping them keeps the stored schedule canonical.
            if (
                last.span is not None
                and last.end_lr is not None
                and last.step + last.span == point.step
                and last.end_lr == point.lr
            ):
                self._points[-1] = ChangePoint(last.step, last.lr, last.interp)
        self._points.append(point)


def concat(schedules: Sequence[Schedule], provenance: Mapping[str, Any] | None = None) -> Schedule:
    """Each schedule followed for its own ``total_steps``, one after the other."""
    if not schedules:
        raise ValueError("schedules: need at least one schedule to concatenate")
    builder = ScheduleBuilder()
    offset = 0
    for schedule in schedules:
        builder.append_segment(offset, schedule)
        offset += schedule.total_steps
    return builder.build(offset, provenance)
