"""The arithmetic of HDET's auto-LR step, as pure functions over plain floats.

Kept apart from the controller so that each formula of the method can be tested on its own:
the softmax weighting of replica losses, the weighted LR shift, and the momentum update of the
base LR with its derived decay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MetaStep:
    """One auto-LR update: the new base LR and velocity, and what produced them."""

    base_lr: float
    velocity: float
    delta: float
    weights: tuple[float, ...]
    moved: bool


def loss_weights(losses: Sequence[float], sigma: float) -> tuple[float, ...]:
    """w = softmax((mean(L) - L_r) / sigma) over the finite losses; a non-finite loss weighs 0.

    Returns all zeros when no loss is finite: there is then no signal to weigh.
    """
    finite = [loss for loss in losses if math.isfinite(loss)]
    if not finite:
        return tuple(0.0 for _ in losses)
    mean = sum(finite) / len(finite)
    scores = [(mean - loss) / sigma if math.isfinite(loss) else -math.inf for loss in losses]
    top = max(scores)
    # Subtracting the largest score keeps exp() from overflowing when sigma is small.
    exps = [math.exp(s - top) if math.isfinite(s) else 0.0 for s in scores]
    total = sum(exps)
    return tuple(e / total for e in exps)


def lr_shift(weights: Sequence[float], lrs: Sequence[float]) -> float:
    """delta = sum(w_r * lr_r) - mean(lr_r): how far the loss-weighted LR sits from the mean."""
    return sum(w * lr for w, lr in zip(weights, lrs, strict=True)) - sum(lrs) / len(lrs)


def meta_step(
    *,
    base_lr: float,
    velocity: float,
    losses: Sequence[float],
    lrs: Sequence[float],
    beta: float,
    lam: float,
    sigma: float,
    gamma: float,
    bounds: tuple[float, float],
) -> MetaStep:
    """v <- beta*v + (1-beta)*delta; base <- base*(1-gamma) + lam*v, clipped to bounds.

    When every loss is non-finite nothing moves: neither the velocity nor the base LR, because
    there is no evidence about which direction is better.
    """
    if len(losses) != len(lrs):
        raise ValueError(
            f"losses ({len(losses)}) and lrs ({len(lrs)}) must have one entry per replica"
        )
    weights = loss_weights(losses, sigma)
    if not any(weights):
        return MetaStep(base_lr, velocity, 0.0, weights, moved=False)
    delta = lr_shift(weights, lrs)
    new_velocity = beta * velocity + (1.0 - beta) * delta
    new_base = base_lr * (1.0 - gamma) + lam * new_velocity
    low, high = bounds
    return MetaStep(min(max(new_base, low), high), new_velocity, delta, weights, moved=True)
