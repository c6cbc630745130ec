"""An example user workload: two interleaved spirals, a small MLP, SGD with momentum.

Point a search at it with an entrypoint, ``module:function``:

    spec:
      workload:
        entrypoint: custom_workload:make_workload     # with this folder on PYTHONPATH
    # or, from the repository root:  entrypoint: examples/custom_workload.py:make_workload

A workload is any object with five methods (``schedsearch.trainers.workloads.Workload``):
``build_model(seed)``, ``make_optimizer(params, lr)``, ``train_batches(seed)``,
``loss(model, batch)`` and ``evaluate(model)`` (a dict with the spec's objective metric,
``val_loss``). ``name`` (default: the entrypoint) and ``default_lr`` (default: 1e-3, the LR the
optimizer is built with before the schedule sets it) are optional. The harness owns the loop, the
LR (set on the optimizer before every step), checkpoints and the device; the workload only says
what to train and how to score it.

``train_batches`` returns a stream that resumes from a small state dict (here
``PermutationBatchStream``: its position is ``(epoch, index)``). A plain generator works too: it is
wrapped so that a restored member replays the batches it already took, which costs their loading
time on every resume. ``schedsearch validate --local SPEC`` imports this file and checks all of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from schedsearch.trainers.workloads.base import PermutationBatchStream, model_device

N_PER_CLASS = 512


def spirals(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points of two spirals (class 0 and 1) with a little noise; fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    radius = torch.linspace(0.1, 1.0, n_per_class)
    angle = 3 * math.pi * radius
    points, labels = [], []
    for label, phase in ((0, 0.0), (1, math.pi)):
        xy = torch.stack([radius * torch.cos(angle + phase), radius * torch.sin(angle + phase)], 1)
        points.append(xy + 0.03 * torch.randn(xy.shape, generator=generator))
        labels.append(torch.full((n_per_class,), label))
    return torch.cat(points), torch.cat(labels)


class SpiralsWorkload:
    name = "spirals-mlp"
    default_lr = 0.1
    batch_size = 64  # this workload's own setting: the harness does not read it

    def __init__(self) -> None:
        # The data are fixed for every run; only initialisation and batch order follow the seed.
        self.x_train, self.y_train = spirals(N_PER_CLASS, seed=1)
        self.x_val, self.y_val = spirals(N_PER_CLASS // 4, seed=2)

    def build_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)  # the harness keeps its own RNG state around this call
        return nn.Sequential(
            nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2)
        )

    def make_optimizer(self, params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=0.9)

    def train_batches(self, seed: int) -> PermutationBatchStream:
        return PermutationBatchStream(
            len(self.x_train),
            self.batch_size,
            seed,
            lambda idx: (self.x_train[idx], self.y_train[idx]),
        )

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, targets = batch
        return nn.functional.cross_entropy(model(inputs), targets)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device = model_device(model)
        with torch.no_grad():
            logits = model(self.x_val.to(device))
            targets = self.y_val.to(device)
            return {
                "val_loss": float(nn.functional.cross_entropy(logits, targets)),
                "val_accuracy": float((logits.argmax(1) == targets).float().mean()),
            }


def make_workload() -> SpiralsWorkload:
    return SpiralsWorkload()
