"""The training harness: LR applied before its step, exact resume, NaN guard, devices, threads."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from schedsearch.trainers import harness
from schedsearch.trainers.harness import DeviceError, History, Trainer, select_device
from schedsearch.trainers.workloads import get_workload
from schedsearch.trainers.workloads.base import TensorWorkload


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Unit tests share two cores with everything else: more threads only make them slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class NoisyWorkload(TensorWorkload):
    """Uses every RNG the harness promises to capture: dropout (torch), NumPy and Python noise,
    and an evaluation that draws random numbers too; Adam, so the optimizer has state."""

    name = "noisy"
    default_lr = 0.01
    default_steps = 100
    batch_size = 16

    def __init__(self, poison_after: int | None = None) -> None:
        self.poison_after, self.calls = poison_after, 0

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(256, 4, generator=generator)
        y = x.sum(dim=1, keepdim=True)
        return x[:192], y[:192], x[192:], y[192:]

    def build_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 1))

    def make_optimizer(self, params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        self.calls += 1
        x, y = batch
        x = x + float(np.random.normal(0, 0.01)) + random.gauss(0, 0.01)
        loss = nn.functional.mse_loss(model(x), y)
        if self.poison_after is not None and self.calls > self.poison_after:
            return loss * math.nan
        return loss

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        torch.rand(3), np.random.rand(3), random.random()  # must not shift training randomness
        _, _, x, y = self.tensors()
        return {"val_loss": float(nn.functional.mse_loss(model(x), y))}


def lr_fn(step: int) -> float:
    return 0.01 * (1 + math.cos(step / 7))


def make(workload: Any = None, **kwargs: Any) -> Trainer:
    kwargs.setdefault("seed", 3)
    return Trainer(workload or NoisyWorkload(), device="cpu", num_threads=1, **kwargs)


def params(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    "name", ["noisy", "digits-cnn", pytest.param("charlm", marks=pytest.mark.slow)]
)
def test_restore_then_continue_is_bitwise_identical(name: str, tmp_path: Path) -> None:
    workload = (lambda: NoisyWorkload()) if name == "noisy" else (lambda: get_workload(name))
    straight = make(workload(), eval_every=5)
    expected = straight.train(20, lr_fn)

    interrupted = make(workload(), eval_every=5)
    first = interrupted.train(8, lr_fn)
    state = interrupted.state_dict()
    interrupted.save(tmp_path / "ckpt.pt")
    interrupted.train(4, lambda step: 0.5)  # wander off: the checkpoint must not notice

    for restore in ("memory", "disk"):
        resumed = make(workload(), seed=99)
        if restore == "memory":
            resumed.load_state_dict(state)
        else:
            resumed.load(tmp_path / "ckpt.pt")
        rest = resumed.train(12, lr_fn)
        assert [r.loss for r in first + rest] == [r.loss for r in expected]
        assert same(params(resumed), params(straight))
        assert resumed.global_step == 20


def test_the_lr_set_after_a_restore_is_used_by_the_very_next_step() -> None:
    trainer = make()
    seen: list[float] = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"])
    )
    trainer.train(5, lambda step: 0.01)
    state = trainer.state_dict()
    trainer.train(3, lambda step: 0.02)
    trainer.load_state_dict(state)
    assert trainer.current_lr == 0.01
    trainer.step(0.004)
    assert seen[-1] == 0.004
    assert seen[:8] == [0.01] * 5 + [0.02] * 3


class TwoGroupWorkload(NoisyWorkload):
    """The last layer at a tenth of the base LR: the schedule must scale both groups."""

    def make_optimizer(self, params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        *body, head_w, head_b = list(params)
        return torch.optim.SGD(
            [{"params": body}, {"params": [head_w, head_b], "lr": lr / 10}], lr=lr
        )


def test_group_lr_ratios_are_kept() -> None:
    trainer = make(TwoGroupWorkload())
    trainer.step(0.5)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [0.5, 0.05]


def test_non_finite_loss_marks_diverged_and_skips_the_update() -> None:
    history = History()
    trainer = make(NoisyWorkload(poison_after=3), callbacks=[history])
    results = trainer.train(10, lambda step: 0.01)
    assert [r.diverged for r in results] == [False, False, False, True]
    assert math.isnan(results[-1].loss) and trainer.diverged and trainer.global_step == 3
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert history.steps == results
    # a diverged trainer keeps saying so (no exception) until a checkpoint is loaded
    again = trainer.step(0.01)
    assert again.diverged and trainer.global_step == 3
    assert trainer.train(5, lambda step: 0.01)[-1].diverged


def test_loading_a_checkpoint_clears_divergence() -> None:
    workload = NoisyWorkload(poison_after=4)
    trainer = make(workload)
    trainer.train(2, lambda step: 0.01)
    state = trainer.state_dict()
    trainer.train(10, lambda step: 0.01)
    assert trainer.diverged
    trainer.load_state_dict(state)
    workload.poison_after = None
    assert not trainer.diverged and not trainer.step(0.01).diverged


def test_a_real_workload_diverging_at_a_huge_lr_is_reported_not_raised() -> None:
    trainer = make(get_workload("regression"))
    results = trainer.train(50, lambda step: 10.0)
    assert results[-1].diverged and len(results) < 50


def test_evaluation_is_periodic_reported_and_does_not_perturb_training() -> None:
    history = History()
    with_evals = make(eval_every=4, callbacks=[history])
    results = with_evals.train(10, lr_fn)
    without = make().train(10, lr_fn)
    assert [r.loss for r in results] == [r.loss for r in without]
    assert [step for step, _ in history.evals] == [4, 8]
    assert [r.step for r in results if r.metrics is not None] == [3, 7]
    assert results[3].metrics == history.evals[0][1]
    assert set(history.evals[0][1]) == {"val_loss"}
    assert with_evals.model.training  # back in training mode


class NoValLoss(NoisyWorkload):
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"loss": 1.0}


def test_evaluate_requires_val_loss() -> None:
    with pytest.raises(ValueError, match="evaluate\\(\\) must return 'val_loss', got \\['loss'\\]"):
        make(NoValLoss()).evaluate()


def test_bad_lr_and_arguments_are_refused() -> None:
    trainer = make()
    for bad in (math.nan, math.inf, -0.1):
        with pytest.raises(ValueError, match="lr: must be a finite number >= 0"):
            trainer.step(bad)
    with pytest.raises(ValueError, match="eval_every: must be >= 1"):
        make(eval_every=0)


def test_state_is_a_deep_copy_and_checks_its_workload() -> None:
    trainer = make()
    trainer.train(3, lr_fn)
    state = trainer.state_dict()
    frozen = [t.clone() for t in state["model"].values()]
    trainer.train(3, lr_fn)
    assert same(list(state["model"].values()), frozen)
    other = make(get_workload("regression"))
    with pytest.raises(ValueError, match="workload: the state is for 'noisy', this trainer runs"):
        other.load_state_dict(state)


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make()
    path = trainer.save(tmp_path / "ckpt" / "member.pt")
    before = path.read_bytes()
    trainer.train(2, lr_fn)

    def broken_save(obj: Any, stream: Any) -> None:
        stream.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["member.pt"]


def test_select_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="'tpu' is not one of auto, cpu, cuda, cuda:N"):
        select_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="'cuda' was requested but CUDA is not available"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match="'cuda:3' was requested but there are 1 CUDA"):
        select_device("cuda:3")


def test_threads_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(harness.THREADS_ENV, "1")
    assert harness.configure_threads() == 1 == torch.get_num_threads()
    monkeypatch.setenv(harness.THREADS_ENV, "many")
    with pytest.raises(ValueError, match="SCHEDSEARCH_NUM_THREADS: expected an integer >= 1"):
        harness.configure_threads()
    monkeypatch.delenv(harness.THREADS_ENV)
    assert 1 <= harness.cpu_limit() <= (os.cpu_count() or 1)


def test_threads_fall_back_to_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.delenv(harness.THREADS_ENV, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert harness.configure_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv(harness.THREADS_ENV, "2")
        assert harness.configure_threads() == 2  # our own variable wins over OpenMP's
    finally:
        torch.set_num_threads(before)
