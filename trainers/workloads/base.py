"""The ``Workload`` protocol every training job implements, and the pieces built-ins share.

A workload owns its model, optimizer, data and metrics; the harness owns the loop, the LR, the
checkpoints and the device. Data streams are deterministic given a seed and resumable from a small
state dict, so a restored trainer sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn import Parameter


@runtime_checkable
class BatchStream(Protocol):
    """An endless, deterministic iterator of batches whose position is a small state dict."""

    def __iter__(self) -> Iterator[Any]: ...

    def __next__(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Workload(Protocol):
    """What a training job provides. Schedules are searched on the LR passed to
    ``make_optimizer`` (the optimizer's base LR), which the harness sets before every step.

    ``default_lr`` is the LR the optimizer is built with before the schedule takes over; per
    parameter-group LRs keep their ratio to it. A user workload may leave out ``name`` (the
    entrypoint is used) and ``default_lr`` (``DEFAULT_LR``). The built-ins also carry
    ``default_steps`` and ``batch_size``, which describe them and are read by nothing else: a
    search's length is the spec's ``budget.steps``, and batching is the workload's own business.

    ``train_batches`` should return a ``BatchStream``; any other iterable (a generator, a
    DataLoader) is wrapped in a ``ReplayBatchStream``, which resumes by replaying."""

    name: str
    default_lr: float

    def build_model(self, seed: int) -> nn.Module: ...

    def make_optimizer(self, params: Iterable[Parameter], lr: float) -> torch.optim.Optimizer: ...

    def train_batches(self, seed: int) -> BatchStream: ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]: ...


DEFAULT_LR = 1e-3


class ReplayBatchStream:
    """A plain iterable of batches made resumable by counting: the state is the number of
    batches taken, and loading it replays that many from a fresh ``factory(seed)``.

    The cost is on resume only: a member restored at step ``n`` fetches ``n`` batches again
    before it continues (seconds for in-memory data, longer for a slow loader; a ``BatchStream``
    with its own ``state_dict`` avoids it). A finite iterable is an epoch: when it ends the
    factory is called again. Replaying gives the same batches only if ``factory(seed)`` yields
    the same sequence every time, as it must for any resumable stream.
    """

    def __init__(
        self,
        factory: Callable[[int], Iterable[Any]],
        seed: int,
        first: Iterable[Any] | None = None,
    ) -> None:
        self.factory, self.seed, self.taken = factory, seed, 0
        self._it: Iterator[Any] = iter(first if first is not None else factory(seed))

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            batch = next(self._it)
        except StopIteration:
            self._it = iter(self.factory(self.seed))
            try:
                batch = next(self._it)
            except StopIteration:
                raise ValueError("train_batches: the iterable gave no batches") from None
        self.taken += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "taken": self.taken}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("seed", "taken"):
            value = state.get(key)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"data.{key}: expected an integer >= 0, got {value!r}")
        self.seed, self.taken = state["seed"], 0
        self._it = iter(self.factory(self.seed))
        for _ in range(state["taken"]):
            next(self)


def resumable(factory: Callable[[int], Iterable[Any]], seed: int) -> BatchStream:
    """``factory(seed)`` if it is a ``BatchStream``, else that iterable in a
    ``ReplayBatchStream``."""
    stream = factory(seed)
    if isinstance(stream, BatchStream):
        return stream
    if not isinstance(stream, Iterable):
        raise TypeError(
            f"train_batches must return an iterable of batches, got {type(stream).__name__}"
        )
    return ReplayBatchStream(factory, seed, first=stream)


class PermutationBatchStream:
    """Batches of ``batch_size`` item indices drawn without replacement, epoch after epoch.

    Epoch ``e`` visits the items in a permutation drawn from ``(seed, e)``, so the position is just
    ``(epoch, index)``; ``fetch`` turns a tensor of indices into a batch. A final partial batch is
    dropped so every batch has the same size.
    """

    def __init__(
        self, n_items: int, batch_size: int, seed: int, fetch: Callable[[torch.Tensor], Any]
    ) -> None:
        if n_items < 1 or batch_size < 1:
            raise ValueError(f"n_items and batch_size must be >= 1, got {n_items}, {batch_size}")
        if seed < 0:
            raise ValueError(f"seed: must be >= 0, got {seed}")
        self.n_items = n_items
        self.batch_size = min(batch_size, n_items)
        self.batches_per_epoch = n_items // self.batch_size
        self.fetch = fetch
        self.seed, self.epoch, self.index = seed, 0, 0
        self._order: torch.Tensor | None = None

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self.index >= self.batches_per_epoch:
            self.epoch, self.index, self._order = self.epoch + 1, 0, None
        if self._order is None:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._order = torch.from_numpy(rng.permutation(self.n_items))
        start = self.index * self.batch_size
        self.index += 1
        return self.fetch(self._order[start : start + self.batch_size])

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("seed", "epoch", "index"):
            value = state.get(key)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"data.{key}: expected an integer >= 0, got {value!r}")
        self.seed, self.epoch, self.index = state["seed"], state["epoch"], state["index"]
        self._order = None


def tensor_batches(
    tensors: tuple[torch.Tensor, ...], batch_size: int, seed: int
) -> PermutationBatchStream:
    """A stream of ``tuple(t[idx] for t in tensors)`` batches (features, targets, ...)."""
    return PermutationBatchStream(
        len(tensors[0]), batch_size, seed, lambda idx: tuple(t[idx] for t in tensors)
    )


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (typically model construction) under ``seed`` without touching the caller's
    torch RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (the harness moves the model; workloads follow it)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor inside tuples, lists and dicts moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple):
        return tuple(to_device(item, device) for item in batch)
    if isinstance(batch, list):
        return [to_device(item, device) for item in batch]
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    return batch


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``logits`` (N, C) against class ``targets`` (N,)."""
    loss = nn.functional.cross_entropy(logits, targets)
    accuracy = (logits.argmax(dim=-1) == targets).float().mean()
    return {"val_loss": float(loss), "val_accuracy": float(accuracy)}


class TensorWorkload:
    """A workload over in-memory ``(inputs, targets)`` tensors, split into train and validation.

    Subclasses set the four attributes and define ``tensors``, ``build_model`` and
    ``make_optimizer``; ``criterion`` and ``metrics`` default to classification.
    """

    name: str
    default_lr: float
    default_steps: int
    batch_size: int

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(train_inputs, train_targets, val_inputs, val_targets)``, the same on every call."""
        raise NotImplementedError

    def build_model(self, seed: int) -> nn.Module:
        raise NotImplementedError

    def make_optimizer(self, params: Iterable[Parameter], lr: float) -> torch.optim.Optimizer:
        raise NotImplementedError

    def criterion(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(output.flatten(0, -2), target.flatten())

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return classification_metrics(output.flatten(0, -2), target.flatten())

    def train_batches(self, seed: int) -> BatchStream:
        inputs, targets, _, _ = self.tensors()
        return tensor_batches((inputs, targets), self.batch_size, seed)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, targets = batch
        return self.criterion(model(inputs), targets)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        _, _, inputs, targets = self.tensors()
        device = model_device(model)
        with torch.no_grad():
            return self.metrics(model(inputs.to(device)), targets.to(device))
