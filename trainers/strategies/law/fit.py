"""Fitting a law to probe curves: robust least squares on relative errors, several restarts.

Positive parameters are fitted as logarithms (so a restart can move them by orders of magnitude
and they never change sign); L0 is fitted as is, between 0 and the highest observed loss (not the
lowest: an annealed run ends below L0, the loss a constant LR tends to). The
residual of a point is its relative error ``predicted / observed - 1``, so a curve that falls by a
factor of 100 weighs the same at its start and at its end, and scipy's Huber loss (``f_scale``:
``huberScale``) keeps a noisy evaluation from pulling the fit.

Every curve weighs the same, however many points it has, except the last point of an annealed
curve (a cooldown branch that reached its floor), which weighs ``ENDPOINT_WEIGHT`` times a whole
curve: a final loss is what the law is asked to predict, and an annealed loss is the least noisy
point a probe gives (a constant-LR curve at a high LR scatters by tens of percent). Weighted
equally, the fit traded the branch ends for the trunk's scatter and predicted the found
schedule's final loss 13-15% too low on the regression workload (search seeds 0-2, every point
weighed alike), 2-4% with the ends weighted.

How good a fit is: the held-out points (the tail of the probes' constant-LR trunk: extrapolating
the trunk in LR area is what predicting a longer run takes) are left out of a first fit and
predicted by it; that error is reported. The law used afterwards is refitted on every point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from schedsearch.trainers.strategies.law import laws

# Ranges of the random starting points (LRs in units of the trunk LR, areas in steps at it).
_START_RANGES: dict[str, tuple[float, float]] = {
    "alpha": (0.2, 1.0),
    "c": (1e-3, 1.0),
    "beta": (0.3, 1.5),
    "gamma": (0.3, 1.0),
    "one_minus_lam": (1e-3, 3e-2),
}
# Bounds of the fitted parameters. beta and gamma stay within a decade of the published fits
# (0.58 and 0.64): on noisy probes an unbounded fit drifts to beta, gamma -> 0, a logarithmic
# annealing term that fits the noise as well and extrapolates worse.
_BOUNDS: dict[str, tuple[float, float]] = {
    "a": (1e-8, 1e8),
    "alpha": (1e-3, 5.0),
    "b": (1e-8, 1e6),
    "c": (1e-8, 1e4),
    "beta": (0.05, 5.0),
    "gamma": (0.05, 2.0),
    "tissue_c": (1e-10, 1e4),
    "one_minus_lam": (1e-5, 0.5),
}
MAX_EVALUATIONS = 2000
# How many whole curves an annealed curve's final point weighs as (see the module's docstring).
ENDPOINT_WEIGHT = 50.0


@dataclass(frozen=True)
class Curve:
    """One probe run: its LR at every step, and the losses measured after ``steps[i]`` steps.
    ``held_out_from``: the index of its first point that is predicted, not fitted, when the fit
    error is measured (None: every point is fitted; 0: the whole curve is held out).
    ``annealed``: the run ends annealed (its LR at the floor), so its last point is a final loss
    and weighs more in the fit."""

    name: str
    lrs: tuple[float, ...]
    steps: tuple[int, ...]
    losses: tuple[float, ...]
    held_out_from: int | None = None
    annealed: bool = False

    def split(self) -> tuple[Curve | None, Curve | None]:
        """The fitted part and the held-out part (either may be None); only a part that ends
        where the run does is annealed."""
        cut = len(self.steps) if self.held_out_from is None else self.held_out_from
        parts = []
        for chosen in (slice(0, cut), slice(cut, None)):
            steps = self.steps[chosen]
            annealed = self.annealed and chosen.stop in (None, len(self.steps))
            parts.append(
                Curve(self.name, self.lrs, steps, self.losses[chosen], annealed=annealed)
                if steps
                else None
            )
        return parts[0], parts[1]

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.losses):
            raise ValueError(f"{self.name}: {len(self.steps)} steps but {len(self.losses)} losses")


@dataclass(frozen=True)
class FitResult:
    """The fitted law, its in-sample error, and the error of a fit without the held-out curves
    on those curves (mean absolute relative error, and at each held-out curve's last point)."""

    law: laws.Law
    train_error: float
    held_out_error: float | None = None
    held_out_final_error: float | None = None
    points: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": self.law.to_dict(),
            "trainError": self.train_error,
            "heldOutError": self.held_out_error,
            "heldOutFinalError": self.held_out_final_error,
            "points": self.points,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitResult:
        return cls(
            law=laws.law_from_dict(data["law"]),
            train_error=float(data["trainError"]),
            held_out_error=data.get("heldOutError"),
            held_out_final_error=data.get("heldOutFinalError"),
            points=int(data.get("points", 0)),
        )


@dataclass(frozen=True)
class _Data:
    designs: list[laws.Design]
    losses: np.ndarray
    # Each point's residual is multiplied by this: every curve weighs the same in the fit, however
    # many points it has (the trunk has the most points and, at a constant high LR, the noisiest),
    # and an annealed curve's final point ENDPOINT_WEIGHT times a curve.
    scale: np.ndarray

    @classmethod
    def of(cls, curves: Sequence[Curve], warmup: int, lr_scale: float) -> _Data:
        designs: list[laws.Design] = []
        losses: list[float] = []
        counts: list[int] = []
        ends: list[bool] = []
        for curve in curves:
            # The laws describe training after the warm-up; points inside it are not fitted.
            keep = [i for i, step in enumerate(curve.steps) if step > warmup]
            good = [i for i in keep if math.isfinite(curve.losses[i]) and curve.losses[i] > 0]
            if not good:
                continue
            at = [curve.steps[i] for i in good]
            designs.append(laws.design(curve.lrs, at, warmup=warmup, lr_scale=lr_scale))
            losses.extend(curve.losses[i] for i in good)
            counts.append(len(good))
            ends.append(curve.annealed and good[-1] == len(curve.steps) - 1)
        mean = float(np.mean(counts)) if counts else 1.0
        parts = []
        for n, end in zip(counts, ends, strict=True):
            weights = np.full(n, math.sqrt(mean / n))
            if end:
                weights[-1] = math.sqrt(ENDPOINT_WEIGHT * mean)
            parts.append(weights)
        scale = np.concatenate(parts or [np.zeros(0)])
        return cls(designs, np.asarray(losses, dtype=np.float64), scale)

    def predict(self, law: laws.Law) -> np.ndarray:
        if not self.designs:
            return np.zeros(0)
        return np.concatenate([law.evaluate(d) for d in self.designs])

    def relative_errors(self, law: laws.Law) -> np.ndarray:
        return self.predict(law) / self.losses - 1.0


class _Parameterisation:
    """A law's parameters as an unbounded-ish vector: L0 as is, the rest as logarithms."""

    def __init__(self, kind: laws.LawName, l0_max: float, lr_scale: float) -> None:
        self.kind = kind
        self.lr_scale = lr_scale
        self.names = (
            ["a", "alpha", "b", "c", "beta", "gamma"]
            if kind == "multiPower"
            else ["a", "alpha", "tissue_c", "one_minus_lam"]
        )
        low = [0.0] + [math.log(_BOUNDS[n][0]) for n in self.names]
        high = [l0_max] + [math.log(_BOUNDS[n][1]) for n in self.names]
        self.bounds = (np.asarray(low), np.asarray(high))

    def law(self, theta: np.ndarray) -> laws.Law:
        values = dict(zip(self.names, np.exp(theta[1:]), strict=True))
        l0 = float(theta[0])
        if self.kind == "multiPower":
            return laws.MultiPowerLaw(
                l0=l0, lr_scale=self.lr_scale, **{k: float(v) for k, v in values.items()}
            )
        return laws.TissueLaw(
            l0=l0,
            a=float(values["a"]),
            alpha=float(values["alpha"]),
            c=float(values["tissue_c"]),
            lam=1.0 - float(values["one_minus_lam"]),
            lr_scale=self.lr_scale,
        )

    def start(self, rng: np.random.Generator, data: _Data) -> np.ndarray:
        """A random starting point that puts the law's curve near the data."""
        low_loss, high_loss = float(data.losses.min()), float(data.losses.max())
        l0 = low_loss * rng.uniform(0.3, 1.3)
        alpha = rng.uniform(*_START_RANGES["alpha"])
        first_area = float(min(d.area.min() for d in data.designs))
        a = max(high_loss - l0, 1e-6) * first_area**alpha
        draws = {
            "a": a,
            "alpha": alpha,
            # The loss an annealing to zero gains, as a share of the loss left above L0.
            "b": low_loss * _log_uniform(rng, 0.03, 1.0),
            "c": _log_uniform(rng, *_START_RANGES["c"]),
            "beta": rng.uniform(*_START_RANGES["beta"]),
            "gamma": rng.uniform(*_START_RANGES["gamma"]),
            "tissue_c": low_loss * _log_uniform(rng, 1e-3, 1.0),
            "one_minus_lam": _log_uniform(rng, *_START_RANGES["one_minus_lam"]),
        }
        theta = np.asarray([l0] + [math.log(draws[n]) for n in self.names])
        return np.clip(theta, self.bounds[0], self.bounds[1])


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def fit_law(
    kind: laws.LawName,
    curves: Sequence[Curve],
    *,
    warmup: int,
    lr_scale: float,
    huber_scale: float = 0.01,
    restarts: int = 8,
    seed: int = 0,
) -> FitResult:
    """Fit law ``kind`` to every curve, after measuring the error of a fit without the held-out
    curves on them (no held-out curve: no held-out error)."""
    if lr_scale <= 0 or not math.isfinite(lr_scale):
        raise ValueError(f"lr_scale: must be a finite LR > 0, got {lr_scale}")
    parts = [curve.split() for curve in curves]
    fitted = [part for part, _ in parts if part is not None]
    held = [part for _, part in parts if part is not None]
    held_error = held_final = None
    held_data = _Data.of(held, warmup, lr_scale)
    if held_data.losses.size and fitted:
        first = _fit(kind, fitted, warmup, lr_scale, huber_scale, restarts, seed)
        held_error = float(np.mean(np.abs(held_data.relative_errors(first))))
        finals = _Data.of([_last_point(c) for c in held], warmup, lr_scale)
        if finals.losses.size:
            held_final = float(np.mean(np.abs(finals.relative_errors(first))))
    law = _fit(kind, curves, warmup, lr_scale, huber_scale, restarts, seed)
    data = _Data.of(curves, warmup, lr_scale)
    return FitResult(
        law=law,
        train_error=float(np.mean(np.abs(data.relative_errors(law)))),
        held_out_error=held_error,
        held_out_final_error=held_final,
        points=int(data.losses.size),
    )


def _last_point(curve: Curve) -> Curve:
    return Curve(curve.name, curve.lrs, curve.steps[-1:], curve.losses[-1:])


def _fit(
    kind: laws.LawName,
    curves: Sequence[Curve],
    warmup: int,
    lr_scale: float,
    huber_scale: float,
    restarts: int,
    seed: int,
) -> laws.Law:
    data = _Data.of(curves, warmup, lr_scale)
    if data.losses.size < 8:
        raise ValueError(
            f"curves: {data.losses.size} finite points after the warm-up; the law needs at least 8"
        )
    shape = _Parameterisation(kind, float(data.losses.max()), lr_scale)
    residuals = _residuals(shape, data)
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(restarts):
        start = shape.start(rng, data)
        if not np.all(np.isfinite(residuals(start))):
            continue
        solution = optimize.least_squares(
            residuals,
            start,
            bounds=shape.bounds,
            loss="huber",
            f_scale=huber_scale,
            max_nfev=MAX_EVALUATIONS,
        )
        if np.isfinite(solution.cost) and (best is None or solution.cost < best[0]):
            best = (float(solution.cost), solution.x)
    if best is None:
        raise ValueError(f"law {kind}: no starting point gave a finite prediction")
    return shape.law(best[1])


def _residuals(shape: _Parameterisation, data: _Data) -> Callable[[np.ndarray], np.ndarray]:
    def residuals(theta: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            errors = data.relative_errors(shape.law(theta)) * data.scale
        # A non-finite prediction is a very bad one, not a crash of the optimiser.
        return np.where(np.isfinite(errors), errors, 1e6)

    return residuals


# The Multi-Power Law is preferred unless another law predicts the held-out points clearly
# better: Tissue's annealing term credits a drop in full however late and fast it comes, so
# optimising it ends schedules with a drop of a few steps, which no measured run rewards.
PREFERENCE_MARGIN = 1.25


def fit_best(
    kinds: Sequence[laws.LawName],
    curves: Sequence[Curve],
    **options: Any,
) -> tuple[FitResult, list[FitResult]]:
    """Fit every law in ``kinds`` (in order of preference); the chosen one is the first whose
    held-out error (in-sample error when nothing is held out) is within ``PREFERENCE_MARGIN``
    of the lowest. Returns it and all the fits."""
    results = [fit_law(kind, curves, **options) for kind in kinds]

    def score(result: FitResult) -> float:
        held = result.held_out_error
        return held if held is not None else result.train_error

    lowest = min(score(r) for r in results)
    chosen = next(r for r in results if score(r) <= lowest * PREFERENCE_MARGIN)
    return chosen, results
