"""Bayesian optimisation over one learning rate for an AutoLRS stage (ask/tell).

The search variable is log(lr) normalised to [0, 1] over the LR bounds. A Gaussian process with a
Matern 5/2 kernel models the forecast loss; the next candidate minimises the lower confidence
bound mu - kappa*sigma on a dense grid, deterministic given the seed and the observations.

Why not optuna's GPSampler: it always maximises log expected improvement and exposes neither the
acquisition function nor its exploration weight. AutoLRS relies on LCB with a very large kappa
(1000), which makes each stage's k probes spread over the whole range instead of sampling near
the incumbent; with one dimension and at most tens of points, an exact GP in numpy is small,
fast, and its state is just the observations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import linalg

_GRID = np.linspace(0.0, 1.0, 501)
_SQRT5 = math.sqrt(5.0)
# Hyperparameter bounds (log space): lengthscale in normalised log-LR, noise variance of
# standardised values. Lengthscales below 0.03 would let the GP interpolate noise.
_LENGTHSCALE_GRID = np.linspace(math.log(0.03), math.log(3.0), 15)
_NOISE_GRID = np.linspace(math.log(1e-6), math.log(1.0), 7)


def matern52(x1: np.ndarray, x2: np.ndarray, lengthscale: float) -> np.ndarray:
    """Matern 5/2 kernel with unit variance between 1-D point sets."""
    r = np.abs(x1[:, None] - x2[None, :]) / lengthscale
    return (1.0 + _SQRT5 * r + 5.0 / 3.0 * r**2) * np.exp(-_SQRT5 * r)


class LogLRBayesOpt:
    """Ask/tell BO over lr in [lr_min, lr_max] (log scale), minimising the told values.

    The first ``n_initial`` asks are seeded uniform draws; later asks minimise the LCB. Calling
    :meth:`ask` twice without :meth:`tell` returns the same point.
    """

    def __init__(
        self, lr_min: float, lr_max: float, *, kappa: float, seed: int, n_initial: int = 1
    ) -> None:
        if not (0.0 < lr_min < lr_max and math.isfinite(lr_max)):
            raise ValueError(f"lrBounds must satisfy 0 < min < max, got min={lr_min} max={lr_max}")
        self.lr_min, self.lr_max = lr_min, lr_max
        self.kappa = kappa
        self.seed = seed
        self.n_initial = max(1, n_initial)
        self.xs: list[float] = []
        self.ys: list[float] = []

    # -- public ask/tell ------------------------------------------------------------------------

    def ask(self) -> float:
        """The next LR to try."""
        return self.to_lr(self._next_x())

    def tell(self, lr: float, value: float) -> None:
        """Record the (finite) value observed for ``lr``; callers map divergence to a big loss."""
        if not math.isfinite(value):
            raise ValueError(f"BO values must be finite, got {value} for lr={lr}")
        self.xs.append(self.to_unit(lr))
        self.ys.append(float(value))

    def best(self) -> tuple[float, float]:
        """(lr, value) of the best tried point; the first one wins ties."""
        if not self.ys:
            raise ValueError("no observations yet")
        i = int(np.argmin(self.ys))
        return self.to_lr(self.xs[i]), self.ys[i]

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"xs": list(self.xs), "ys": list(self.ys)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.xs = [float(v) for v in state["xs"]]
        self.ys = [float(v) for v in state["ys"]]

    # -- maths ----------------------------------------------------------------------------------

    def to_unit(self, lr: float) -> float:
        span = math.log(self.lr_max) - math.log(self.lr_min)
        return min(1.0, max(0.0, (math.log(lr) - math.log(self.lr_min)) / span))

    def to_lr(self, x: float) -> float:
        log_lr = math.log(self.lr_min) + x * (math.log(self.lr_max) - math.log(self.lr_min))
        return min(self.lr_max, max(self.lr_min, math.exp(log_lr)))

    def _next_x(self) -> float:
        if len(self.xs) < self.n_initial:
            # A fresh generator per draw, keyed on the draw's index: reproducible with no RNG
            # state to carry in state_dict.
            rng = np.random.default_rng([self.seed, len(self.xs)])
            return float(rng.uniform(0.0, 1.0))
        mean, std = self.posterior(_GRID)
        return float(_GRID[int(np.argmin(mean - self.kappa * std))])

    def posterior(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """GP posterior mean and std at ``grid``, in the units of the told values."""
        x = np.asarray(self.xs)
        y, centre, scale = _standardise(np.asarray(self.ys))
        lengthscale, noise = _fit_hyperparameters(x, y)
        chol = _cholesky(x, lengthscale, noise)
        alpha = linalg.cho_solve(chol, y)
        k_star = matern52(grid, x, lengthscale)
        mean = k_star @ alpha
        v = linalg.solve_triangular(chol[0], k_star.T, lower=chol[1])
        var = np.clip(1.0 - np.sum(v**2, axis=0), 1e-12, None)
        return centre + scale * mean, scale * np.sqrt(var)


def _standardise(y: np.ndarray) -> tuple[np.ndarray, float, float]:
    # A diverged candidate's huge loss would flatten every other difference once standardised:
    # clip values far above the bulk (rank order is kept, magnitudes are not needed to avoid them).
    if len(y) >= 3:
        low, median = float(np.min(y)), float(np.median(y))
        y = np.minimum(y, median + 3.0 * max(median - low, 1e-12))
    centre = float(np.mean(y))
    scale = float(np.std(y)) or 1.0
    return (y - centre) / scale, centre, scale


def _cholesky(x: np.ndarray, lengthscale: float, noise: float) -> tuple[np.ndarray, bool]:
    gram = matern52(x, x, lengthscale) + (noise + 1e-9) * np.eye(len(x))
    return linalg.cho_factor(gram, lower=True)


def _neg_log_marginal_likelihood(params: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    lengthscale, noise = math.exp(params[0]), math.exp(params[1])
    try:
        chol = _cholesky(x, lengthscale, noise)
    except linalg.LinAlgError:
        return 1e10
    alpha = linalg.cho_solve(chol, y)
    log_det = 2.0 * float(np.sum(np.log(np.diag(chol[0]))))
    return 0.5 * float(y @ alpha) + 0.5 * log_det + 0.5 * len(x) * math.log(2.0 * math.pi)


def _fit_hyperparameters(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Maximum marginal likelihood over a fixed log-spaced grid.

    With at most tens of 1-D points a 15 x 7 grid is exact enough, cheaper than a gradient
    optimiser with numerical derivatives, and deterministic by construction.
    """
    if len(x) < 3:
        return 0.3, 1e-3
    best = min(
        (_neg_log_marginal_likelihood(np.array([ls, nz]), x, y), ls, nz)
        for ls in _LENGTHSCALE_GRID
        for nz in _NOISE_GRID
    )
    return math.exp(best[1]), math.exp(best[2])
