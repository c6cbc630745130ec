"""The schedule that minimises a fitted law's predicted final loss: the trunk, then a decay.

Shape: the probes' trunk (a linear warm-up from 0 to the trunk LR ``lr_max`` over ``warmup``
steps, then ``lr_max`` held) until a decay start chosen in ``[hold_from, total_steps -
min_decay]``, then ``change_points`` points joined linearly and a last linear segment to
``floor`` at the end of the budget. ``hold_from`` is where the probes' trunk ended: the law was
fitted on it, and the search continues that very run, so the schedule's first ``hold_from``
steps are what was trained and the whole schedule is trained exactly once (the verification).
The final decay is at least ``min_decay`` steps (the spec's cooldown: where the probes show no
gain from annealing the law is indifferent to how the LR reaches the floor, and a drop of a few
steps at the very end, which it would then allow, replays badly on other seeds). No LR exceeds
``lr_max``, the highest LR the law was fitted on (it is not trusted beyond: the laws describe
schedules below a tuned peak and would reward any larger LR with a larger area).

Why hold, then decay, rather than any schedule of change points: the law then predicts only how
long to hold and how to decay, from a run it has seen up to ``hold_from``, instead of extrapolating
a whole schedule it has not (a free schedule over the budget let the optimiser pick where the law
was most optimistic: predictions 5-42% below the measured loss of the schedule it chose, on the
search seed, in the full benchmark). The shape is the one Luo et al. found optimal under the
Multi-Power Law (warm-up, stable, decay).

``monotone`` (the default) keeps each decay point at or below the one before it, the
non-increasing schedules the laws were validated on: a rise is an extrapolation of the law (its
drop term read backwards). ``free`` lets each decay point anywhere in ``[lr_min, lr_max]``.

The optimiser works on unbounded numbers (a sigmoid gives the decay start and the LRs, a softmax
the segment lengths) with L-BFGS-B from the best of many screened starting points. The prediction
reported is that of the stored schedule itself, after its steps are rounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import expit, softmax

from schedsearch.trainers import schedules
from schedsearch.trainers.strategies.law import laws

Array = np.ndarray
# Random shapes evaluated per descent: evaluating one costs a fraction of a millisecond.
SCREENED_PER_RESTART = 64


@dataclass(frozen=True)
class ScheduleSpace:
    """The schedules the optimiser chooses among (see the module's docstring)."""

    total_steps: int
    warmup: int
    lr_min: float
    lr_max: float
    floor: float
    change_points: int
    monotone: bool = True
    min_decay: int = 0
    hold_from: int = 0
    # The steepest fall of the LR per step the decay may have (None: any): the probes' steepest
    # cooldown. The law has seen no faster drop, and it would credit one in full.
    max_slope: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.lr_min <= self.lr_max or not math.isfinite(self.lr_max):
            raise ValueError(f"lr bounds: need 0 < min <= max, got {self.lr_min}, {self.lr_max}")
        if not 0 <= self.floor <= self.lr_max:
            raise ValueError(f"floor: must lie in [0, {self.lr_max}], got {self.floor}")
        if self.change_points < 1:
            raise ValueError(f"change_points: must be >= 1, got {self.change_points}")
        if not 0 <= self.warmup < self.total_steps - self.change_points - self.min_decay:
            raise ValueError(
                f"warmup: {self.warmup} steps and a final decay of {self.min_decay} leave no "
                f"room for {self.change_points} change points in {self.total_steps} steps"
            )
        if not 0 <= self.hold_from <= self.latest_start:
            raise ValueError(
                f"hold_from: the trunk's end ({self.hold_from}) must lie in [0, "
                f"{self.latest_start}] (the budget less the final decay of {self.min_decay})"
            )

    @property
    def earliest_start(self) -> int:
        return max(self.warmup, self.hold_from)

    @property
    def latest_start(self) -> int:
        """The last step the decay may start at: the budget less the points and the decay."""
        return self.total_steps - self.change_points - self.min_decay

    @property
    def size(self) -> int:
        """Parameters: the decay start, one LR per point, one length per segment after it."""
        return 2 * self.change_points + 2

    def knots(self, u: Array) -> tuple[float, Array, Array]:
        """The decay start, the decay points' (fractional) steps and their LRs for ``u``."""
        k = self.change_points
        start = self.earliest_start + expit(u[0]) * (self.latest_start - self.earliest_start)
        span = self.total_steps - start
        lengths = softmax(u[k + 1 :]) * (span - self.min_decay)
        lengths[-1] += self.min_decay
        steps = start + np.cumsum(lengths[:-1])
        unit = expit(u[1 : k + 1])
        log_low, log_high = math.log(self.lr_min), math.log(self.lr_max)
        if not self.monotone:
            return start, steps, np.exp(log_low + (log_high - log_low) * unit)
        # Each point is a fraction (in log LR) of the way from lr_min to the point before.
        values = np.empty(k)
        current = log_high
        for index in range(k):
            current = log_low + (current - log_low) * unit[index]
            values[index] = current
        lrs = np.exp(values)
        if self.max_slope is not None:
            # No faster than the steepest cooldown the probes trained: each point at most
            # max_slope x its segment's length below the one before it.
            previous = self.lr_max
            for index in range(k):
                lrs[index] = max(lrs[index], previous - self.max_slope * lengths[index])
                previous = lrs[index]
        return start, steps, lrs

    def lrs(self, u: Array) -> Array:
        """The LR of every step for parameters ``u``."""
        start, steps, values = self.knots(u)
        grid = np.arange(self.total_steps, dtype=np.float64)
        xs = np.concatenate(([start], steps, [float(self.total_steps)]))
        ys = np.concatenate(([self.lr_max], values, [self.floor]))
        lrs = np.interp(grid, xs, ys)
        lrs[: self.warmup] = self.lr_max * grid[: self.warmup] / max(self.warmup, 1)
        return lrs

    def schedule(self, u: Array) -> schedules.Schedule:
        """The stored form: the trunk's change points (the same objects the trunk trained
        with, so the held part replays exactly), then the decay's, on whole steps (a point that
        would share a step with the one before it is dropped)."""
        start, steps, values = self.knots(u)
        hold = max(int(np.rint(start)), self.earliest_start)
        points = [schedules.ChangePoint(0, 0.0, "linear")] if self.warmup else []
        if hold > self.warmup:
            points.append(schedules.ChangePoint(self.warmup, self.lr_max, "constant"))
        points.append(schedules.ChangePoint(hold, self.lr_max, "linear"))
        last, previous = hold, self.lr_max
        for step, lr in zip(np.rint(steps).astype(int), values, strict=True):
            if step <= last or step >= self.total_steps:
                continue
            if self.max_slope is not None:  # rounding a short segment must not steepen it
                lr = max(lr, previous - self.max_slope * (int(step) - last))
            points.append(schedules.ChangePoint(int(step), float(lr), "linear"))
            last, previous = int(step), float(lr)
        points.append(schedules.ChangePoint(self.total_steps, self.floor))
        return schedules.Schedule(tuple(points), self.total_steps)

    def starts(self, rng: np.random.Generator, count: int) -> list[Array]:
        """``count`` starting points: WSD-like (the latest start, a gentle decay), a long decay
        from the earliest start, then random."""
        k = self.change_points
        found = [
            np.concatenate(([4.0], np.full(k, 2.0), np.zeros(k + 1))),
            np.concatenate(([-4.0], np.full(k, 1.0), np.zeros(k + 1))),
        ]
        while len(found) < count:
            found.append(rng.normal(0.0, 2.0, self.size))
        return found[:count]


@dataclass(frozen=True)
class Optimised:
    """The schedule found and the law's predicted final loss for it (the stored schedule's)."""

    schedule: schedules.Schedule
    predicted: float


def optimise(law: laws.Law, space: ScheduleSpace, *, restarts: int = 8, seed: int = 0) -> Optimised:
    """Minimise ``law``'s predicted final loss over ``space``."""
    objective = _objective(law, space)
    rng = np.random.default_rng(seed)
    # The landscape has many local minima (where the decay starts, how many steps it takes):
    # screen many cheap random shapes, then descend from the best few.
    screened = space.starts(rng, SCREENED_PER_RESTART * restarts)
    values = np.asarray([objective(u) for u in screened])
    order = np.argsort(values, kind="stable")
    starts = [screened[i] for i in order[:restarts]]
    best: tuple[float, Array] | None = None
    for start in starts:
        solution = optimize.minimize(objective, start, method="L-BFGS-B")
        value = float(solution.fun)
        if math.isfinite(value) and (best is None or value < best[0]):
            best = (value, solution.x)
    if best is None:
        raise ValueError("optimise: the law predicts no finite loss for any starting schedule")
    found = space.schedule(best[1])
    predicted = laws.final_loss(law, found.lrs(), warmup=space.warmup)
    return Optimised(found, predicted)


def _objective(law: laws.Law, space: ScheduleSpace) -> Callable[[Array], float]:
    def objective(u: Array) -> float:
        with np.errstate(all="ignore"):
            value = laws.final_loss(law, space.lrs(u), warmup=space.warmup)
        return value if math.isfinite(value) else 1e12

    return objective
