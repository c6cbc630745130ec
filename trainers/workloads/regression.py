"""Built-in ``regression``: a fixed synthetic nonlinear regression in 8 dimensions, MLP, SGD.

The data come from a fixed generator seed (the same for every run); targets are standardised with
the training split's statistics, so a constant predictor has a validation loss of about 1.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import Parameter

from schedsearch.trainers.workloads.base import TensorWorkload, seeded

DATA_SEED = 20240601
N_TRAIN, N_VAL, N_FEATURES = 4096, 1024, 8
NOISE = 0.1


def target_function(x: np.ndarray) -> np.ndarray:
    """Smooth, interacting, partly periodic: enough curvature that the LR schedule matters."""
    return (
        np.sin(2.0 * x[:, 0])
        + 0.5 * x[:, 1] * x[:, 2]
        + 0.3 * x[:, 3] ** 2
        + np.tanh(x[:, 4] - x[:, 5])
        - 0.2 * x[:, 6]
        + 0.5 * np.cos(x[:, 7]) * x[:, 0]
    )


@functools.lru_cache(maxsize=1)
def regression_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(DATA_SEED)
    x = rng.standard_normal((N_TRAIN + N_VAL, N_FEATURES))
    y = target_function(x) + NOISE * rng.standard_normal(N_TRAIN + N_VAL)
    mean, std = y[:N_TRAIN].mean(), y[:N_TRAIN].std()
    y = ((y - mean) / std)[:, None]
    x32, y32 = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
    return x32[:N_TRAIN], y32[:N_TRAIN], x32[N_TRAIN:], y32[N_TRAIN:]


class Regression(TensorWorkload):
    """8-64-64-1 perceptron with SiLU, mean squared error."""

    name = "regression"
    default_lr = 0.02
    default_steps = 3000
    batch_size = 128

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return regression_split()

    def build_model(self, seed: int) -> nn.Module:
        with seeded(seed):
            return nn.Sequential(
                nn.Linear(N_FEATURES, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1)
            )

    def make_optimizer(self, params: Iterable[Parameter], lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=0.9)

    def criterion(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(output, target)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return {"val_loss": float(nn.functional.mse_loss(output, target))}
