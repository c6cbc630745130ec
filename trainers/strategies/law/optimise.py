"""The schedule that minimises a fitted law's predicted final loss, as change points.

Shape: a linear warm-up from 0 to the first change point's LR over ``warmup`` steps (the base
schedule's), then ``change_points`` points at free steps joined linearly, then a linear segment to
``floor`` at the end of the budget, at least ``min_decay`` steps long (the spec's cooldown: where
the probes show no gain from annealing, the law is indifferent to how the LR reaches the floor,
and a drop of a few steps at the very end, which it would then allow, replays badly on other
seeds). Every change point's LR lies in ``[lr_min, lr_max]``, where
``lr_max`` is the highest LR the law was fitted on (it is not trusted beyond: the laws describe
schedules below a tuned peak and would reward any larger LR with a larger area).

``monotone`` (the default) keeps each point at or below the one before it, the non-increasing
schedules Luo et al. validated the Multi-Power Law on and optimised over: a rise after the peak is
an extrapolation of the law (its drop term read backwards), and the search space is smaller and
smoother. ``free`` lets each point anywhere in the bounds.

The optimiser works on unbounded numbers (sigmoids give the LRs, a softmax the segment lengths)
with L-BFGS-B from several starting points: a WSD-like and a cosine-like shape, then random ones.
The prediction reported is that of the stored schedule itself, after its steps are rounded.
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
    """The schedules the optimiser chooses among."""

    total_steps: int
    warmup: int
    lr_min: float
    lr_max: float
    floor: float
    change_points: int
    monotone: bool = True
    min_decay: int = 0

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

    @property
    def size(self) -> int:
        """Parameters: one LR per change point, one length per segment (points and the last)."""
        return 2 * self.change_points

    def knots(self, u: Array) -> tuple[Array, Array]:
        """The change points' (fractional) steps and LRs for parameters ``u``."""
        k = self.change_points
        lengths = softmax(u[k:]) * (self.total_steps - self.warmup - self.min_decay)
        lengths[-1] += self.min_decay
        steps = self.warmup + np.concatenate(([0.0], np.cumsum(lengths[:-1])))
        unit = expit(u[:k])
        log_low, log_high = math.log(self.lr_min), math.log(self.lr_max)
        if not self.monotone:
            return steps, np.exp(log_low + (log_high - log_low) * unit)
        # Each point is a fraction (in log LR) of the way from lr_min to the point before.
        values = np.empty(k)
        current = log_high
        for index in range(k):
            current = log_low + (current - log_low) * unit[index]
            values[index] = current
        return steps, np.exp(values)

    def lrs(self, u: Array) -> Array:
        """The LR of every step for parameters ``u``."""
        steps, values = self.knots(u)
        grid = np.arange(self.total_steps, dtype=np.float64)
        xs = np.concatenate((steps, [float(self.total_steps)]))
        ys = np.concatenate((values, [self.floor]))
        lrs = np.interp(grid, xs, ys)
        if self.warmup:
            lrs[: self.warmup] = values[0] * grid[: self.warmup] / self.warmup
        return lrs

    def schedule(self, u: Array) -> schedules.Schedule:
        """The stored form: change points on whole steps (a point that would share a step with
        the one before it is dropped)."""
        steps, values = self.knots(u)
        points = [schedules.ChangePoint(0, 0.0, "linear")] if self.warmup else []
        last = -1
        for step, lr in zip(np.rint(steps).astype(int), values, strict=True):
            at = max(int(step), self.warmup)
            if at <= last or at >= self.total_steps:
                continue
            points.append(schedules.ChangePoint(at, float(lr), "linear"))
            last = at
        points.append(schedules.ChangePoint(self.total_steps, self.floor))
        return schedules.Schedule(tuple(points), self.total_steps)

    def starts(self, rng: np.random.Generator, count: int) -> list[Array]:
        """``count`` starting points: WSD-like (flat at the top, decay over the last fifth),
        cosine-like (an even decay), then random."""
        k = self.change_points
        found = []
        wsd_lengths = np.log(np.concatenate((np.full(k - 1, 0.8 / max(k - 1, 1)), [0.2])))
        found.append(np.concatenate((np.full(k, 3.0), wsd_lengths)))
        even = np.concatenate((np.full(k, 1.0), np.zeros(k)))
        even[0] = 3.0
        found.append(even)
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
