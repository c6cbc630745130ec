"""The training loop every strategy drives: one step at a given LR, evaluation, exact checkpoints.

``Trainer.step(lr)`` sets ``lr`` on the optimizer *before* the step it is meant for, so a restored
trainer never trains a step at a stale LR. A non-finite loss marks the trainer ``diverged`` (the
update is skipped) and is reported, never raised. ``state_dict`` captures everything that decides
the next step (model, optimizer, RNGs, data position, step count), so restore-then-continue is
bitwise identical to an uninterrupted run on CPU.

RNGs: each trainer owns its torch generator state (CPU, and CUDA on a CUDA device), swapped in
around its own steps. NumPy's and Python's global generators are too slow to swap every step; the
trainer seeds them at construction and its checkpoints capture and restore them, which is exact as
long as one trainer per process uses them. Evaluation never consumes training randomness.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import random
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from schedsearch.trainers import evaluation
from schedsearch.trainers.workloads.base import Workload, to_device

STATE_FORMAT = "schedsearch.io/trainer-state-v1"
THREADS_ENV = "SCHEDSEARCH_NUM_THREADS"


# --- devices and threads ----------------------------------------------------------------------


class DeviceError(ValueError):
    """A device that was asked for and does not exist here."""


def select_device(prefer: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cpu``, ``cuda`` and ``cuda:N`` are explicit and
    fail clearly when absent."""
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if prefer == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", prefer)
    if match is None:
        raise DeviceError(f"device: {prefer!r} is not one of auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device: {prefer!r} was requested but CUDA is not available here "
            f"(torch {torch.__version__}); use 'auto' or 'cpu'"
        )
    index, count = int(match.group(1) or 0), torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device: {prefer!r} was requested but there are {count} CUDA device(s)")
    return torch.device("cuda", index)


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the container's cgroup (v2 ``cpu.max`` or v1 CFS quota), if limited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def cpu_limit() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup quota (at least 1)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    count = available or os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    return count


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``num_threads``, else ``$SCHEDSEARCH_NUM_THREADS``, else
    ``$OMP_NUM_THREADS``, else the CPU limit; returns the number set.

    More threads than CPUs makes small models far slower (the threads spin waiting for each
    other), hence the cgroup quota; ``OMP_NUM_THREADS`` is honoured because process managers
    that run several trainers side by side (Ray among them) set it to each one's CPU share.
    """
    if num_threads is None:
        env = THREADS_ENV if os.environ.get(THREADS_ENV, "").strip() else "OMP_NUM_THREADS"
        raw = os.environ.get(env, "").strip()
        if raw and not (raw.isdigit() and int(raw) >= 1):
            raise ValueError(f"{env}: expected an integer >= 1, got {raw!r}")
        num_threads = int(raw) if raw else cpu_limit()
    if num_threads < 1:
        raise ValueError(f"num_threads: must be >= 1, got {num_threads}")
    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
    return num_threads


# --- results and callbacks ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StepResult:
    """Step ``step`` (0-based) ran at ``lr`` with training loss ``loss``. ``diverged``: the loss
    was not finite and the update was skipped. ``metrics``: the evaluation that followed the step,
    when one was due."""

    step: int
    loss: float
    lr: float
    diverged: bool = False
    metrics: Mapping[str, float] | None = None


@runtime_checkable
class Callback(Protocol):
    """Told about every step and every evaluation (``step`` = steps completed so far)."""

    def on_step(self, result: StepResult) -> None: ...

    def on_eval(self, step: int, metrics: Mapping[str, float]) -> None: ...


class History:
    """A callback that keeps every step result and evaluation, for tests, plots and reports."""

    def __init__(self) -> None:
        self.steps: list[StepResult] = []
        self.evals: list[tuple[int, dict[str, float]]] = []

    def on_step(self, result: StepResult) -> None:
        self.steps.append(result)

    def on_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        self.evals.append((step, dict(metrics)))


# --- RNG capture ----------------------------------------------------------------------------------


def _numpy_state() -> dict[str, Any]:
    state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    name, keys, pos, has_gauss, cached = state
    return {
        "name": name,
        "keys": keys.tolist(),
        "pos": pos,
        "has_gauss": has_gauss,
        "cached": cached,
    }


def _set_numpy_state(state: Mapping[str, Any]) -> None:
    keys = np.asarray(state["keys"], dtype=np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["cached"]))


def _python_state() -> tuple[Any, ...]:
    version, internal, gauss = random.getstate()
    return (version, list(internal), gauss)


def _set_python_state(state: Sequence[Any]) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))


@contextlib.contextmanager
def _global_rngs_preserved() -> Iterator[None]:
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


# --- the trainer ---------------------------------------------------------------------------------


class Trainer:
    """Trains ``workload`` one step at a time at LRs chosen by the caller.

    ``eval_every``: evaluate after every N completed steps (``None``: only when asked).
    ``callbacks`` are told about steps and evaluations. ``device``: a ``torch.device`` or a
    string for ``select_device``.
    """

    def __init__(
        self,
        workload: Workload,
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
        eval_every: int | None = None,
        callbacks: Sequence[Callback] = (),
        num_threads: int | None = None,
    ) -> None:
        if eval_every is not None and eval_every < 1:
            raise ValueError(f"eval_every: must be >= 1 or None, got {eval_every}")
        if seed < 0:
            raise ValueError(f"seed: must be >= 0, got {seed}")
        configure_threads(num_threads)
        self.workload, self.seed, self.eval_every = workload, seed, eval_every
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.callbacks = list(callbacks)
        self.global_step, self.diverged = 0, False
        self.current_lr: float | None = None
        self.last_metrics: dict[str, float] | None = None
        random.seed(seed)
        np.random.seed(seed)
        self._rng_cpu, self._rng_cuda = self._seeded_rng(seed)
        with self._own_torch_rng():
            self.model = workload.build_model(seed).to(self.device)
        self.optimizer = workload.make_optimizer(self.model.parameters(), workload.default_lr)
        # Groups may be built at multiples of the base LR (e.g. a slower embedding): keep them.
        self.lr_scales = [float(g["lr"]) / workload.default_lr for g in self.optimizer.param_groups]
        self.batches = workload.train_batches(seed)

    # --- training ---

    def step(self, lr: float) -> StepResult:
        """One optimizer step at ``lr`` (applied before the step). On a non-finite loss the update
        is skipped and the trainer is marked diverged; a diverged trainer does nothing until a
        checkpoint is loaded, and keeps answering ``diverged=True``."""
        _check_lr(lr)
        if self.diverged:
            return StepResult(self.global_step, math.nan, lr, diverged=True)
        index = self.global_step
        self.set_lr(lr)
        batch = to_device(next(self.batches), self.device)
        with self._own_torch_rng():
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.workload.loss(self.model, batch)
            value = float(loss.detach())
            if math.isfinite(value):
                loss.backward()
                self.optimizer.step()
                self.global_step += 1
            else:
                self.diverged = True
        result = StepResult(index, value, lr, diverged=self.diverged)
        for callback in self.callbacks:
            callback.on_step(result)
        if not self.diverged and self.eval_every and self.global_step % self.eval_every == 0:
            result = dataclasses.replace(result, metrics=self.evaluate())
        return result

    def train(self, n_steps: int, lr_fn: Callable[[int], float]) -> list[StepResult]:
        """Up to ``n_steps`` steps, step ``k`` (global count) at ``lr_fn(k)``; stops at the first
        diverged step (which is the last result)."""
        if n_steps < 0:
            raise ValueError(f"n_steps: must be >= 0, got {n_steps}")
        results: list[StepResult] = []
        for _ in range(n_steps):
            results.append(self.step(lr_fn(self.global_step)))
            if results[-1].diverged:
                break
        return results

    def set_lr(self, lr: float) -> None:
        """Put ``lr`` (times each group's scale) on the optimizer now."""
        _check_lr(lr)
        for group, scale in zip(self.optimizer.param_groups, self.lr_scales, strict=True):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr * scale)
            else:
                group["lr"] = lr * scale
        self.current_lr = lr

    def evaluate(self) -> dict[str, float]:
        """The workload's metrics (always ``val_loss``), in eval mode, without gradients and
        without consuming any randomness that training will see."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), _global_rngs_preserved(), self._own_torch_rng(keep=False):
                raw = self.workload.evaluate(self.model)
        finally:
            self.model.train(was_training)
        if "val_loss" not in raw:
            raise ValueError(
                f"workload {self.workload.name!r}: evaluate() must return 'val_loss', "
                f"got {sorted(raw)}"
            )
        metrics = {key: float(value) for key, value in raw.items()}
        self.last_metrics = metrics
        for callback in self.callbacks:
            callback.on_eval(self.global_step, metrics)
        return metrics

    def annealed_evaluate(
        self,
        steps: int,
        *,
        floor: float = 0.0,
        shape: str = "linear",
        start_lr: float | None = None,
    ) -> tuple[dict[str, float], int]:
        """Evaluate as if training cooled down now: train a branch of ``steps`` steps whose LR
        decays (``shape``: linear, cosine or sqrt) from ``start_lr`` (default: the current LR)
        to ``floor``, evaluate, then restore this trainer exactly (model, optimizer, data
        position, RNGs: bitwise on CPU). Callbacks hear nothing of the branch.

        Returns the branch's metrics and the steps it trained (search cost). A branch that
        diverges has a NaN ``val_loss``.
        """
        if steps < 0:
            raise ValueError(f"steps: must be >= 0, got {steps}")
        start = self.current_lr if start_lr is None else start_lr
        if start is None:
            raise ValueError("start_lr: the trainer has no current LR yet; pass one")
        saved = self.state_dict()
        callbacks, eval_every, last = self.callbacks, self.eval_every, self.last_metrics
        self.callbacks, self.eval_every = [], None
        trained = 0
        try:
            trained = evaluation.train_cooldown_branch(
                lambda lr: self.step(lr).diverged, steps, start=start, floor=floor, shape=shape
            )
            metrics = {"val_loss": math.nan} if self.diverged else self.evaluate()
        finally:
            self.load_state_dict(saved)
            self.callbacks, self.eval_every, self.last_metrics = callbacks, eval_every, last
        return metrics, trained

    # --- checkpoints ---

    def state_dict(self) -> dict[str, Any]:
        """Everything the next step depends on, deep-copied (later training does not change it)."""
        return {
            "format": STATE_FORMAT,
            "workload": self.workload.name,
            "seed": self.seed,
            "step": self.global_step,
            "diverged": self.diverged,
            "lr": self.current_lr,
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "data": copy.deepcopy(self.batches.state_dict()),
            "rng": {
                "torch": self._rng_cpu.clone(),
                "cuda": None if self._rng_cuda is None else self._rng_cuda.clone(),
                "numpy": _numpy_state(),
                "python": _python_state(),
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (a ``state_dict()`` of a trainer of the same workload)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"format: expected {STATE_FORMAT!r}, got {state.get('format')!r}")
        if state.get("workload") != self.workload.name:
            raise ValueError(
                f"workload: the state is for {state.get('workload')!r}, "
                f"this trainer runs {self.workload.name!r}"
            )
        self.model.load_state_dict(state["model"])
        # Optimizer.load_state_dict keeps the given tensors when dtype and device already match:
        # without a copy, training on would write into the caller's checkpoint.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.batches.load_state_dict(state["data"])
        rng = state["rng"]
        self._rng_cpu = rng["torch"].cpu().clone()
        if self._rng_cuda is not None and rng.get("cuda") is not None:
            self._rng_cuda = rng["cuda"].cpu().clone()
        _set_numpy_state(rng["numpy"])
        _set_python_state(rng["python"])
        self.global_step, self.diverged = int(state["step"]), bool(state["diverged"])
        self.current_lr = state.get("lr")
        if self.current_lr is not None:
            self.set_lr(self.current_lr)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint atomically: a reader sees the old file or the new one, never half."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                torch.save(self.state_dict(), stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return target

    def load(self, path: str | os.PathLike[str]) -> None:
        state = torch.load(Path(path), map_location=self.device, weights_only=True)
        self.load_state_dict(state)

    # --- RNG ownership ---

    def _seeded_rng(self, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        cpu = torch.Generator().manual_seed(seed).get_state()
        if self.device.type != "cuda":
            return cpu, None
        with torch.random.fork_rng(devices=[self.device]):
            torch.cuda.manual_seed(seed)
            return cpu, torch.cuda.get_rng_state(self.device)

    @contextlib.contextmanager
    def _own_torch_rng(self, keep: bool = True) -> Iterator[None]:
        """Swap this trainer's torch generator states in; with ``keep`` save what was consumed."""
        outside_cpu = torch.get_rng_state()
        torch.set_rng_state(self._rng_cpu)
        outside_cuda = None
        if self._rng_cuda is not None:
            outside_cuda = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(self._rng_cuda, self.device)
        try:
            yield
        finally:
            if keep:
                self._rng_cpu = torch.get_rng_state()
                if self._rng_cuda is not None:
                    self._rng_cuda = torch.cuda.get_rng_state(self.device)
            torch.set_rng_state(outside_cpu)
            if outside_cuda is not None:
                torch.cuda.set_rng_state(outside_cuda, self.device)


def _check_lr(lr: float) -> None:
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr: must be a finite number >= 0, got {lr!r}")


__all__ = [
    "Callback",
    "DeviceError",
    "History",
    "StepResult",
    "Trainer",
    "configure_threads",
    "cpu_limit",
    "select_device",
]
