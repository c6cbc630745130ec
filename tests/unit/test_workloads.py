"""Workloads: the registry, entrypoints, deterministic resumable batches, the built-ins."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from schedsearch.trainers.workloads import (
    BUILTIN_WORKLOADS,
    PermutationBatchStream,
    UnknownWorkloadError,
    Workload,
    WorkloadLoadError,
    get_workload,
)
from schedsearch.trainers.workloads.base import tensor_batches

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Unit tests share two cores with everything else: more threads only make them slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_builtins_are_listed_and_load() -> None:
    assert BUILTIN_WORKLOADS == ["digits-cnn", "digits-mlp", "charlm", "regression"]
    for name in BUILTIN_WORKLOADS:
        workload = get_workload(name)
        assert isinstance(workload, Workload)
        assert workload.name == name
        assert workload.default_lr > 0 and workload.default_steps >= 1000


def test_unknown_name_lists_the_builtins() -> None:
    with pytest.raises(
        UnknownWorkloadError, match="unknown built-in 'digits'; built-ins: digits-cnn"
    ):
        get_workload("digits")
    with pytest.raises(UnknownWorkloadError, match="charlm, regression"):
        get_workload("")


def test_entrypoint_by_module_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "custom_workload", raising=False)
    workload = get_workload("custom_workload:make_workload")
    assert workload.name == "spirals-mlp"
    model = workload.build_model(0)
    batch = next(iter(workload.train_batches(0)))
    assert torch.isfinite(workload.loss(model, batch))
    assert set(workload.evaluate(model)) == {"val_loss", "val_accuracy"}


def test_entrypoint_by_file_path() -> None:
    workload = get_workload(f"{EXAMPLES / 'custom_workload.py'}:make_workload")
    assert workload.name == "spirals-mlp"


class NotAWorkload:
    name = "half"
    default_lr = 0.1

    def loss(self, model: Any, batch: Any) -> None: ...


class BadValues:
    name = "bad"
    default_lr = math.inf
    default_steps = 0
    batch_size = 8
    build_model = make_optimizer = train_batches = loss = evaluate = staticmethod(print)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module_xyz:make", "cannot import 'no_such_module_xyz'"),
        (f"{__name__}:missing", "has no attribute 'missing'"),
        (
            f"{__name__}:NotAWorkload",
            "NotAWorkload with problems: no build_model; no make_optimizer; no train_batches; "
            "no evaluate",
        ),
        (f"{__name__}:BadValues", "default_lr must be a finite number > 0, got inf"),
        ("/no/such/file.py:make", "cannot import '/no/such/file.py'"),
        (":make", "must look like 'module:function'"),
    ],
)
def test_bad_entrypoints_say_what_is_wrong(ref: str, message: str) -> None:
    with pytest.raises(WorkloadLoadError, match=message):
        get_workload(ref)


def identity_stream(n: int, batch: int, seed: int) -> PermutationBatchStream:
    return PermutationBatchStream(n, batch, seed, lambda idx: idx.tolist())


def test_stream_is_deterministic_and_covers_each_epoch() -> None:
    a, b = identity_stream(10, 3, seed=5), identity_stream(10, 3, seed=5)
    first = [next(a) for _ in range(6)]
    assert first == [next(b) for _ in range(6)]
    epoch0 = sorted(i for batch in first[:3] for i in batch)
    assert len(epoch0) == len(set(epoch0)) == 9  # without replacement, last partial batch dropped
    assert first[:3] != first[3:]  # a new permutation each epoch
    assert first != [next(identity_stream(10, 3, seed=6)) for _ in range(6)]


@pytest.mark.parametrize("stop", [0, 2, 3, 7])
def test_stream_resumes_from_its_state(stop: int) -> None:
    stream = identity_stream(10, 3, seed=1)
    for _ in range(stop):
        next(stream)
    state = stream.state_dict()
    expected = [next(stream) for _ in range(5)]
    resumed = identity_stream(10, 3, seed=99)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(5)] == expected


def test_stream_refuses_a_bad_state() -> None:
    with pytest.raises(ValueError, match=r"data\.epoch: expected an integer >= 0"):
        identity_stream(10, 3, 0).load_state_dict({"seed": 0, "epoch": -1, "index": 0})


def test_tensor_batches_yield_aligned_pairs() -> None:
    x = torch.arange(20).float()
    x_batch, y_batch = next(tensor_batches((x, x * 2), 4, seed=0))
    assert torch.equal(y_batch, x_batch * 2)


@pytest.mark.parametrize("name", BUILTIN_WORKLOADS)
def test_builtin_trains_a_step_and_evaluates(name: str) -> None:
    workload = get_workload(name)
    state = torch.get_rng_state()
    model = workload.build_model(3)
    assert torch.equal(state, torch.get_rng_state())  # building did not consume the caller's RNG
    again = workload.build_model(3)
    assert all(
        torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters(), strict=True)
    )
    optimizer = workload.make_optimizer(model.parameters(), workload.default_lr)
    batch = next(workload.train_batches(3))
    assert len(batch[0]) == workload.batch_size
    loss = workload.loss(model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    metrics = workload.evaluate(model)
    assert math.isfinite(metrics["val_loss"])
    if name != "regression":
        assert 0.0 <= metrics["val_accuracy"] <= 1.0


def test_digits_split_is_fixed_and_stratified() -> None:
    from schedsearch.trainers.workloads.digits import digits_split

    x_train, _, x_val, y_val = digits_split()
    assert (len(x_train), len(x_val)) == (1437, 360)
    assert torch.bincount(y_val).min() >= 35  # every class is in the validation split
    assert float(x_train.max()) == 1.0


def test_charlm_text_comes_from_the_standard_library() -> None:
    from schedsearch.trainers.workloads.charlm import VOCAB, charlm_split, stdlib_text

    assert "def dedent(" in stdlib_text(["textwrap"])
    x_train, y_train, x_val, _ = charlm_split()
    assert torch.equal(x_train[:, 1:], y_train[:, :-1])  # targets are the next characters
    assert int(x_train.max()) < VOCAB and len(x_val) == 128


@pytest.mark.parametrize("name", ["digits-mlp", "regression"])
def test_small_workloads_learn_at_their_default_lr(name: str) -> None:
    workload = get_workload(name)
    model = workload.build_model(0)
    optimizer = workload.make_optimizer(model.parameters(), workload.default_lr)
    stream = workload.train_batches(0)
    before = workload.evaluate(model)["val_loss"]
    for _ in range(100):
        optimizer.zero_grad()
        workload.loss(model, next(stream)).backward()
        optimizer.step()
    assert workload.evaluate(model)["val_loss"] < 0.5 * before


def test_seeds_change_initialisation() -> None:
    workload = get_workload("digits-mlp")
    first = next(workload.build_model(0).parameters())
    other = next(workload.build_model(1).parameters())
    assert not torch.equal(first, other)
