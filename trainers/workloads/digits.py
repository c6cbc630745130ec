"""Built-ins ``digits-cnn`` and ``digits-mlp``: scikit-learn's bundled 8x8 digits, SGD + momentum.

The 1797 images ship inside scikit-learn, so nothing is downloaded. The split is fixed (stratified,
20% validation, ``random_state=0``): only the model initialisation and the batch order depend on
the run's seed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import Parameter

from schedsearch.trainers.workloads.base import TensorWorkload, seeded

SPLIT_SEED = 0
VAL_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train/validation images (N, 64) scaled to [0, 1] and their labels."""
    # Imported here: scikit-learn is only needed by these two workloads, and is slow to import.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=VAL_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return tuple(torch.from_numpy(a) for a in (x_train, y_train, x_val, y_val))  # type: ignore[return-value]


class _Digits(TensorWorkload):
    batch_size = 64

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return digits_split()

    def make_optimizer(self, params: Iterable[Parameter], lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=0.9)


class DigitsCNN(_Digits):
    """Two 3x3 conv layers, a 2x2 max-pool and a two-layer head (~38k parameters)."""

    name = "digits-cnn"
    default_lr = 0.05
    default_steps = 2000

    def build_model(self, seed: int) -> nn.Module:
        with seeded(seed):
            return nn.Sequential(
                nn.Unflatten(1, (1, 8, 8)),
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * 4 * 4, 64),
                nn.ReLU(),
                nn.Linear(64, 10),
            )


class DigitsMLP(_Digits):
    """64-128-128-10 perceptron with ReLU (~26k parameters)."""

    name = "digits-mlp"
    default_lr = 0.05
    default_steps = 2000

    def build_model(self, seed: int) -> nn.Module:
        with seeded(seed):
            return nn.Sequential(
                nn.Linear(64, 128),
                nn.ReLU(),
                nn.Linear(128, 128),
                nn.ReLU(),
                nn.Linear(128, 10),
            )
