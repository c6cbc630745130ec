"""Loss forecasting for AutoLRS: fit L(x) = a*exp(b*x) + c (b < 0) and extrapolate.

A candidate LR is tried for tau' steps; its loss curve is fitted with a decaying exponential and
read off tau steps after the checkpoint. Steps are rescaled by the length of the observed window
so the bounds on b mean the same thing for any tau'. Outliers (loss spikes from a hard batch) are
removed first by iterative spline-residual trimming, then b is found by a bounded 1-D search while
a and c, given b, are a linear least-squares problem.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import interpolate, optimize, stats

# -b in window units (x scaled so the observed window spans 1): by default from a curve that has
# barely started to decay (time constant 10 windows, the forecast distance of AutoLRS, where
# tau = 10 tau') to one that settled within 1/50 of the window. Outside this range the fit is
# unidentifiable: a tiny |b| turns the exponential into a line whose extrapolation is unbounded.
_B_MIN, _B_MAX = 0.1, 50.0
_MIN_POINTS_FOR_TRIMMING = 8
_MAX_TRIM_FRACTION = 0.3
# 1.4826 * MAD estimates a Gaussian's standard deviation.
_MAD_TO_STD = 1.4826


@dataclass(frozen=True)
class ExpFit:
    """A fitted a*exp(b*x)+c in the original step units, plus which points were kept."""

    a: float
    b: float
    c: float
    kept: tuple[bool, ...]
    significant: bool = True

    def predict(self, x: float | np.ndarray) -> float | np.ndarray:
        return self.a * np.exp(self.b * np.asarray(x, dtype=float)) + self.c


def forecast(
    steps: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    at_step: float,
    *,
    z: float = 3.0,
) -> float:
    """The loss the series would reach at ``at_step``, or NaN if no finite point was observed.

    A fit whose trend is not significant (F-test against a constant, 5%) forecasts the series'
    level; a curve that does not settle within the forecast distance forecasts where it got to.
    Short series degrade gracefully: one point forecasts itself, two or three their mean.
    """
    x, y = _finite(steps, losses)
    if len(y) == 0:
        return math.nan
    if len(y) < 4 or np.ptp(y) == 0.0:
        return float(np.mean(y))
    # The curve must settle within the forecast distance (time constant <= horizon), else a
    # still-linear probe would be extrapolated as a line.
    span = max(float(np.ptp(x)), 1.0)
    min_decay = 1.0 / max((at_step - x[0]) / span, 1.0)
    fit = fit_exponential(x, y, z=z, min_decay=min_decay)
    kept = y[np.asarray(fit.kept)]
    if not fit.significant:
        # Noise with no real trend: extrapolating it ten windows ahead would rank candidates
        # by chance. Their level is the honest forecast.
        return float(np.mean(kept))
    if -fit.b * span <= min_decay * 1.01:
        # The best decay is the slowest allowed: the curve shows no sign of settling (a straight
        # or accelerating drop, typical right after initialisation). Its extrapolation would
        # reward whichever LR falls fastest now, however it ends; only the progress made is
        # certain, so that is the forecast.
        return _level_at_end(x[np.asarray(fit.kept)], kept)
    value = float(fit.predict(at_step))
    return value if math.isfinite(value) else float(np.mean(kept[-3:]))


def _level_at_end(x: np.ndarray, y: np.ndarray) -> float:
    """Where the series got to: a straight line through its last third, read at its last step
    (it follows the recent slope, which the convex exponential cannot, and averages noise)."""
    tail = max(3, len(y) // 3)
    slope, intercept = np.polyfit(x[-tail:], y[-tail:], 1)
    return float(slope * x[-1] + intercept)


def fit_exponential(
    steps: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    z: float = 3.0,
    min_decay: float = _B_MIN,
) -> ExpFit:
    """Fit a*exp(b*x)+c with b < 0 to the finite points after trimming outliers (|r| > z sigma).

    ``min_decay`` bounds -b from below in window units (the observed span of x counts as 1).
    """
    x, y = _finite(steps, losses)
    if len(y) < 2:
        raise ValueError(f"fit_exponential needs at least 2 finite points, got {len(y)}")
    keep = trim_outliers(x, y, z=z)
    x0, scale = float(x[0]), float(max(np.ptp(x), 1.0))
    u = (x[keep] - x0) / scale
    a, b_unit, c = _fit_scaled(u, y[keep], min(min_decay, _B_MAX / 2))
    # Undo the rescaling: a*exp(b_unit*(x-x0)/scale) = (a*exp(-b*x0)) * exp(b*x).
    b = b_unit / scale
    return ExpFit(
        a=a * math.exp(-b * x0),
        b=b,
        c=c,
        kept=tuple(bool(k) for k in keep),
        significant=_trend_is_significant(u, y[keep], a, b_unit, c),
    )


def _trend_is_significant(u: np.ndarray, y: np.ndarray, a: float, b: float, c: float) -> bool:
    """F-test of the exponential (3 parameters) against a constant (1), at the 5% level."""
    n = len(y)
    if n <= 3:
        return True
    sse_fit = float(np.sum((y - (a * np.exp(b * u) + c)) ** 2))
    sse_flat = float(np.sum((y - y.mean()) ** 2))
    if sse_fit <= 1e-300:
        return sse_flat > 0.0
    f_value = ((sse_flat - sse_fit) / 2.0) / (sse_fit / (n - 3))
    return f_value > float(stats.f.ppf(0.95, 2, n - 3))


def trim_outliers(x: np.ndarray, y: np.ndarray, *, z: float = 3.0) -> np.ndarray:
    """Mask of points kept after iteratively dropping the worst point far from a spline.

    The spline follows the trend but not single spikes; one point, the worst, is dropped per
    round (beyond z robust standard deviations of the residuals) and the spline refitted,
    because a spike also drags the spline off its neighbours, which recover once it is gone.
    At most 30% of the points are ever dropped.
    """
    keep = np.ones(len(y), dtype=bool)
    if len(y) < _MIN_POINTS_FOR_TRIMMING:
        return keep
    for _ in range(int(_MAX_TRIM_FRACTION * len(y))):
        residual = _spline_residuals(x[keep], y[keep])
        deviation = np.abs(residual - np.median(residual))
        sigma = _MAD_TO_STD * float(np.median(deviation))
        worst = int(np.argmax(deviation))
        if sigma <= 0.0 or deviation[worst] <= z * sigma:
            break
        keep[np.flatnonzero(keep)[worst]] = False
    return keep


def _spline_residuals(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # A least-squares cubic spline with few knots (one per ~8 points, at most 8): flexible enough
    # for a loss curve's bend, too stiff to chase a single spike. A smoothing spline would not do:
    # its residual budget is global, so with the right noise level it bends through outliers.
    n_knots = min(8, max(1, len(x) // 8))
    knots = np.quantile(x, np.linspace(0.0, 1.0, n_knots + 2)[1:-1])
    spline = interpolate.LSQUnivariateSpline(x, y, knots, k=3)
    return np.asarray(y - spline(x), dtype=float)


def _fit_scaled(u: np.ndarray, y: np.ndarray, min_decay: float) -> tuple[float, float, float]:
    """(a, b, c) on u in [0, 1]: coarse grid over log(-b), then a bounded refinement."""
    log_grid = np.linspace(math.log(min_decay), math.log(_B_MAX), 40)
    errors = [_sse(lb, u, y) for lb in log_grid]
    i = int(np.argmin(errors))
    lo, hi = log_grid[max(i - 1, 0)], log_grid[min(i + 1, len(log_grid) - 1)]
    best = optimize.minimize_scalar(
        _sse, bounds=(lo, hi), args=(u, y), method="bounded", options={"xatol": 1e-6}
    )
    log_b = float(best.x) if best.fun <= errors[i] else float(log_grid[i])
    b = -math.exp(log_b)
    a, c = _linear_part(b, u, y)
    return a, b, c


def _sse(log_neg_b: float, u: np.ndarray, y: np.ndarray) -> float:
    a, c = _linear_part(-math.exp(log_neg_b), u, y)
    residual = y - (a * np.exp(-math.exp(log_neg_b) * u) + c)
    return float(residual @ residual)


def _linear_part(b: float, u: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares a, c for fixed b: a simple regression of y on exp(b*u), in closed form."""
    e = np.exp(b * u)
    e_centred = e - e.mean()
    denominator = float(e_centred @ e_centred)
    a = float(e_centred @ (y - y.mean())) / denominator if denominator > 1e-300 else 0.0
    return a, float(y.mean() - a * e.mean())


def _finite(
    steps: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(steps, dtype=float)
    y = np.asarray(losses, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"steps and losses differ in length: {x.shape} vs {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    order = np.argsort(x[ok], kind="stable")
    return x[ok][order], y[ok][order]
