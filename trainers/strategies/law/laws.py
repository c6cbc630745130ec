"""Two loss-vs-schedule laws, evaluated on the per-step LRs of a run (pure numpy).

``lrs[i]`` is the LR of training step ``i`` (0-based); "the loss at ``n``" is the loss after ``n``
steps, i.e. after steps ``0..n-1``. Steps before ``warmup`` are the warm-up: they count in the LR
area (Luo et al.'s S_W) but their LR rises are not annealing.

Multi-Power Law (Luo et al., ICLR 2025):
    L(n) = L0 + A * area(n)^-alpha - LD(n),
    LD(n) = B * sum_{warmup < k < n} (lrs[k-1] - lrs[k]) * G(lrs[k]^-gamma * S_k(n)),
    G(x) = 1 - (C x + 1)^-beta,   S_k(n) = lrs[k] + ... + lrs[n-1],
    area(n) = lrs[0] + ... + lrs[n-1].

Tissue et al. 2024 ("Scaling Law with Learning Rate Annealing"):
    L(n) = L0 + A * area(n)^-alpha - C * S2(n),  S2(n) = sum_{k < n} m_k,
    m_k = lam * m_{k-1} + (lrs[k-1] - lrs[k])   (the annealing area with its momentum).

Both laws see LRs divided by ``lr_scale`` (the probes' trunk LR): the areas are then counted in
steps at that LR, which keeps the fitted numbers of order one for any optimizer. Rescaling the LR
only rescales A, B and C, so the laws themselves are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import signal

Array = NDArray[np.float64]
LawName = Literal["multiPower", "tissue"]
# An LR of exactly 0 would make lrs[k]^-gamma infinite; below this fraction of the scale it is
# treated as this (G is then ~1: a drop to ~0 has given all it can).
MIN_SCALED_LR = 1e-12


@dataclass(frozen=True)
class Design:
    """One run's LRs prepared for evaluating a law at steps ``at`` (the parts that do not depend
    on the law's parameters, computed once per fit)."""

    at: NDArray[np.int64]
    area: Array  # area(n) for n in at
    drop_lr: Array  # lrs[k] at each annealing step k (a nonzero drop after the warm-up)
    drop: Array  # (len(at), len(drop_lr)): lrs[k-1] - lrs[k] where k < n, else 0
    span: Array  # (len(at), len(drop_lr)): S_k(n) where k < n, else 0
    drops_all: Array  # lrs[k-1] - lrs[k] for every step k (0 in the warm-up), for Tissue's S2


def design(lrs: ArrayLike, at: ArrayLike, *, warmup: int = 0, lr_scale: float = 1.0) -> Design:
    """Prepare the LRs ``lrs`` (per step) for evaluation at the step counts ``at`` (each in
    ``1..len(lrs)``)."""
    eta = np.asarray(lrs, dtype=np.float64) / lr_scale
    points = np.asarray(at, dtype=np.int64)
    if eta.ndim != 1 or eta.size == 0:
        raise ValueError(f"lrs: expected a non-empty 1-D sequence, got shape {eta.shape}")
    if not np.all(np.isfinite(eta)) or np.any(eta < 0):
        raise ValueError("lrs: every LR must be finite and >= 0")
    if points.size and (points.min() < 1 or points.max() > eta.size):
        raise ValueError(f"at: steps must lie in 1..{eta.size}, got {points.min()}..{points.max()}")
    if not 0 <= warmup < eta.size:
        raise ValueError(f"warmup: must lie in 0..{eta.size - 1}, got {warmup}")
    cumulative = np.concatenate(([0.0], np.cumsum(eta)))
    drops_all = np.zeros_like(eta)
    drops_all[warmup + 1 :] = eta[warmup:-1] - eta[warmup + 1 :]
    ks = np.flatnonzero(drops_all)
    before = ks[None, :] < points[:, None]
    span = np.where(before, cumulative[points][:, None] - cumulative[ks][None, :], 0.0)
    drop = np.where(before, drops_all[ks][None, :], 0.0)
    return Design(
        at=points,
        area=cumulative[points],
        drop_lr=np.maximum(eta[ks], MIN_SCALED_LR),
        drop=drop,
        span=span,
        drops_all=drops_all,
    )


@dataclass(frozen=True)
class MultiPowerLaw:
    """The Multi-Power Law's parameters (LRs in units of ``lr_scale``)."""

    name: ClassVar[LawName] = "multiPower"
    l0: float
    a: float
    alpha: float
    b: float
    c: float
    beta: float
    gamma: float
    lr_scale: float = 1.0

    def evaluate(self, prepared: Design) -> Array:
        """The loss at each of ``prepared.at``."""
        base = self.l0 + self.a * prepared.area ** (-self.alpha)
        if prepared.drop_lr.size == 0:
            return base
        x = prepared.drop_lr ** (-self.gamma) * prepared.span
        g = 1.0 - (self.c * x + 1.0) ** (-self.beta)
        return base - self.b * np.sum(prepared.drop * g, axis=1)

    def predict(self, lrs: ArrayLike, at: ArrayLike, *, warmup: int = 0) -> Array:
        return self.evaluate(design(lrs, at, warmup=warmup, lr_scale=self.lr_scale))

    def to_dict(self) -> dict[str, Any]:
        return {"law": self.name, **asdict(self)}


@dataclass(frozen=True)
class TissueLaw:
    """Tissue et al.'s law's parameters (LRs in units of ``lr_scale``); ``lam`` is the decay
    factor of the annealing momentum."""

    name: ClassVar[LawName] = "tissue"
    l0: float
    a: float
    alpha: float
    c: float
    lam: float
    lr_scale: float = 1.0

    def evaluate(self, prepared: Design) -> Array:
        momentum = signal.lfilter([1.0], [1.0, -self.lam], prepared.drops_all)
        s2 = np.concatenate(([0.0], np.cumsum(momentum)))[prepared.at]
        return self.l0 + self.a * prepared.area ** (-self.alpha) - self.c * s2

    def predict(self, lrs: ArrayLike, at: ArrayLike, *, warmup: int = 0) -> Array:
        return self.evaluate(design(lrs, at, warmup=warmup, lr_scale=self.lr_scale))

    def to_dict(self) -> dict[str, Any]:
        return {"law": self.name, **asdict(self)}


Law = MultiPowerLaw | TissueLaw
LAWS: dict[str, type[MultiPowerLaw] | type[TissueLaw]] = {
    MultiPowerLaw.name: MultiPowerLaw,
    TissueLaw.name: TissueLaw,
}


def law_from_dict(data: Mapping[str, Any]) -> Law:
    """Inverse of ``to_dict``; names the bad field."""
    kind = data.get("law")
    if kind not in LAWS:
        raise ValueError(f"law: must be one of {', '.join(LAWS)}, got {kind!r}")
    cls = LAWS[kind]
    names = [f.name for f in fields(cls)]
    values = {}
    for name in names:
        value = data.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"law.{name}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"law.{name}: must be finite, got {value!r}")
        values[name] = float(value)
    unknown = set(data) - {"law", *names}
    if unknown:
        raise ValueError(f"law: unknown field(s) {sorted(unknown)}; allowed: {', '.join(names)}")
    return cls(**values)


def final_loss(law: Law, lrs: Sequence[float] | Array, *, warmup: int = 0) -> float:
    """The predicted loss at the end of ``lrs``."""
    return float(law.predict(lrs, [len(lrs)], warmup=warmup)[0])
