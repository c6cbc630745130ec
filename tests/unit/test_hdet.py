"""HDET: the fan-out, the auto-LR maths and the controller (pure); scheduler and workers (torch)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from schedsearch.trainers import schedules
from schedsearch.trainers.strategies.hdet import maths
from schedsearch.trainers.strategies.hdet.config import HDETConfig
from schedsearch.trainers.strategies.hdet.controller import (
    FINAL,
    NO_SIGNAL,
    UPDATED,
    WARMUP,
    HDETController,
)

BOUNDS = (1e-5, 1.0)


def controller(total_steps: int = 1000, **fields: object) -> HDETController:
    base = schedules.Schedule.constant(0.1, total_steps)
    cfg = HDETConfig(**{"replicas": 4, "sync_interval": 100, **fields})  # type: ignore[arg-type]
    return HDETController(cfg, total_steps=total_steps, base_schedule=base, lr_bounds=BOUNDS)


def run_syncs(ctrl: HDETController, losses_of: object) -> list[float]:
    """Syncs the whole run with losses from ``losses_of(lrs)``; returns the base after each."""
    bases = []
    for step in ctrl.sync_steps():
        lrs = [ctrl.lr(step - 1, r) for r in range(ctrl.config.replicas)]
        ctrl.sync(step, losses_of(lrs))  # type: ignore[operator]
        bases.append(ctrl.base_lr(step))
    return bases


# -- fan-out ---------------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", range(2, 17))
def test_spread_has_mean_one_and_endpoints_one_plus_minus_alpha(replicas: int) -> None:
    rho = HDETConfig(replicas=replicas, alpha=0.2).multipliers()
    assert len(rho) == replicas
    assert sum(rho) / replicas == pytest.approx(1.0)
    assert rho[0] == pytest.approx(0.8)
    assert rho[-1] == pytest.approx(1.2)
    gaps = [b - a for a, b in itertools.pairwise(rho)]
    assert gaps == pytest.approx([gaps[0]] * len(gaps))


def test_each_replica_lr_is_base_times_its_multiplier() -> None:
    ctrl = controller()
    rho = ctrl.config.multipliers()
    assert [ctrl.lr(5, r) for r in range(4)] == pytest.approx([0.1 * m for m in rho])


# -- auto-LR maths ---------------------------------------------------------------------------


def test_weights_favour_lower_loss_and_ignore_non_finite() -> None:
    weights = maths.loss_weights([1.0, 0.9, math.nan, math.inf], sigma=0.1)
    assert weights[1] > weights[0] > 0.0
    assert weights[2] == weights[3] == 0.0
    assert sum(weights) == pytest.approx(1.0)
    assert maths.loss_weights([math.nan, -math.inf], sigma=0.1) == (0.0, 0.0)


def test_weights_survive_a_tiny_temperature() -> None:
    weights = maths.loss_weights([1.0, 0.0], sigma=1e-6)
    assert weights == pytest.approx((0.0, 1.0))


def test_all_non_finite_moves_nothing() -> None:
    step = maths.meta_step(
        base_lr=0.1,
        velocity=0.01,
        losses=[math.nan, math.inf],
        lrs=[0.09, 0.11],
        beta=0.9,
        lam=0.5,
        sigma=0.1,
        gamma=0.2,
        bounds=BOUNDS,
    )
    assert not step.moved
    assert (step.base_lr, step.velocity) == (0.1, 0.01)


def test_meta_step_follows_the_formulas() -> None:
    losses, lrs = [1.0, 0.8], [0.09, 0.11]
    step = maths.meta_step(
        base_lr=0.1,
        velocity=0.002,
        losses=losses,
        lrs=lrs,
        beta=0.9,
        lam=0.5,
        sigma=0.1,
        gamma=0.05,
        bounds=BOUNDS,
    )
    w1 = math.exp(1.0) / (math.exp(-1.0) + math.exp(1.0))  # s = (0.9 - L)/0.1 = -1, +1
    delta = (1 - w1) * 0.09 + w1 * 0.11 - 0.1
    velocity = 0.9 * 0.002 + 0.1 * delta
    assert step.delta == pytest.approx(delta)
    assert step.velocity == pytest.approx(velocity)
    assert step.base_lr == pytest.approx(0.1 * 0.95 + 0.5 * velocity)


# -- the controller --------------------------------------------------------------------------


def test_base_decays_to_the_floor_over_k_syncs_without_signal() -> None:
    ctrl = controller(total_steps=1000, lr_floor_fraction=0.05)
    k = len(ctrl.update_steps())
    assert k == 9  # syncs at 100..900; the final one at 1000 only averages
    bases = run_syncs(ctrl, lambda lrs: [1.0] * len(lrs))
    assert bases[k - 1] == pytest.approx(0.1 * 0.05)
    assert all(b > a for a, b in zip(bases[1:k], bases[: k - 1], strict=True))
    assert ctrl.schedule().lr_at(999) == pytest.approx(0.005)


def test_auto_lr_moves_towards_the_better_replicas_lr() -> None:
    # Decay off (floor = start): only the loss signal moves the base.
    up = controller(lr_floor_fraction=1.0)
    down = controller(lr_floor_fraction=1.0)
    up_bases = run_syncs(up, lambda lrs: [1.0 - 10 * lr for lr in lrs])  # higher LR, lower loss
    down_bases = run_syncs(down, lambda lrs: [1.0 + 10 * lr for lr in lrs])
    assert all(b > a for a, b in zip([0.1, *up_bases[:8]], up_bases[:9], strict=True))
    assert all(b < a for a, b in zip([0.1, *down_bases[:8]], down_bases[:9], strict=True))


def test_non_finite_replica_gets_no_weight_and_caps_the_base() -> None:
    ctrl = controller(lr_floor_fraction=1.0)
    top = max(range(4), key=ctrl.multiplier)
    losses = [1.0 - 0.1 * ctrl.multiplier(r) for r in range(4)]
    losses[top] = math.nan
    decision = ctrl.sync(100, losses)
    assert decision.auto_lr == UPDATED
    assert decision.nonfinite == (top,)
    assert decision.weights[top] == 0.0
    assert decision.losses[top] is None
    json.dumps(decision.to_dict(), allow_nan=False)
    # The cap puts the top replica one fan-out width below the LR that diverged.
    assert decision.base_lr <= 0.1 * min(decision.multipliers) * (1 + 1e-12)


def test_all_non_finite_is_reported_and_keeps_the_lr() -> None:
    ctrl = controller()
    decision = ctrl.sync(100, [math.nan] * 4)
    assert decision.auto_lr == NO_SIGNAL
    assert decision.nonfinite == (0, 1, 2, 3)
    assert ctrl.base_lr(100) == 0.1


def test_permutation_identical_across_ranks() -> None:
    # Rank 0 draws and broadcasts; the others apply its draw whatever their own seed.
    rank0 = controller()
    others = [controller() for _ in range(3)]
    for index, other in enumerate(others):
        other.load_state_dict({**other.state_dict(), "seed": 100 + index})
    for step in range(100, 1000, 100):
        losses = [1.0, 0.9, 0.95, 1.1]
        order = rank0.next_permutation()
        first = rank0.sync(step, losses, permutation=order)
        for other in others:
            assert other.sync(step, losses, permutation=order) == first
    assert len({tuple(h["assignment"]) for h in rank0.history}) > 1


def test_warmup_and_base_schedule_drive_the_lr_until_takeover() -> None:
    family = schedules.Schedule(
        (schedules.ChangePoint(0, 0.0, "linear"), schedules.ChangePoint(250, 0.2)), 1000
    )
    cfg = HDETConfig(replicas=2, sync_interval=100, warmup_steps=150)
    ctrl = HDETController(cfg, total_steps=1000, base_schedule=family, lr_bounds=BOUNDS)
    assert ctrl.takeover == 250  # the base schedule's own warm-up ends later than warmupSteps
    assert ctrl.base_lr(100) == pytest.approx(0.08)
    decisions = [ctrl.sync(s, [1.0, 1.0]) for s in ctrl.sync_steps()]
    assert [d.auto_lr for d in decisions[:3]] == [WARMUP, WARMUP, UPDATED]
    assert decisions[-1].auto_lr == FINAL
    found = ctrl.schedule()
    assert found.lrs(250) == family.lrs(250)
    assert found.lr_at(299) == pytest.approx(0.2)
    assert found.lr_at(999) == pytest.approx(0.2 * cfg.lr_floor_fraction)


def test_warmup_is_replayed_exactly_when_the_first_update_lands_on_the_takeover() -> None:
    family = schedules.Schedule(
        (
            schedules.ChangePoint(0, 0.0, "linear"),
            schedules.ChangePoint(100, 0.05, "cosine"),
            schedules.ChangePoint(1000, 0.0),
        ),
        1000,
    )
    cfg = HDETConfig(replicas=2, sync_interval=100)
    ctrl = HDETController(cfg, total_steps=1000, base_schedule=family, lr_bounds=BOUNDS)
    assert ctrl.sync(100, [1.0, 1.0]).auto_lr == UPDATED  # the start (0.05) is never trained
    found = ctrl.schedule()
    assert found.lrs(100) == family.lrs(100)
    assert found.lr_at(100) == ctrl.base_lr(100) < 0.05


def test_without_auto_lr_the_base_schedule_is_the_schedule_and_syncs_still_average() -> None:
    ctrl = controller(auto_lr=False)
    decisions = [ctrl.sync(s, [1.0, 0.5, 2.0, 1.0]) for s in ctrl.sync_steps()]
    assert len(decisions) == 10  # a Converge (parameter average) at every sync
    assert {d.base_lr for d in decisions} == {0.1}
    assert ctrl.schedule().lrs() == ctrl.base_schedule.lrs()


def test_base_is_clipped_to_the_bounds() -> None:
    cfg = HDETConfig(replicas=2, sync_interval=10, lr_floor_fraction=1e-3)
    ctrl = HDETController(
        cfg,
        total_steps=100,
        base_schedule=schedules.Schedule.constant(0.1, 100),
        lr_bounds=(0.05, 1.0),
    )
    run_syncs(ctrl, lambda lrs: [1.0, 1.0])
    assert min(ctrl.schedule().lrs()) == 0.05


def test_state_dict_round_trip_continues_identically() -> None:
    first = controller()
    for step in (100, 200, 300):
        first.sync(step, [1.0, 0.9, 0.8, 1.2])
    resumed = controller()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for step in (400, 500):
        assert resumed.sync(step, [1.0, 0.7, 0.8, 1.2]) == first.sync(step, [1.0, 0.7, 0.8, 1.2])
    assert resumed.schedule() == first.schedule()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lr_bounds": (0.1, 0.01)}, "lrBounds"),
        ({"total_steps": 0}, "steps"),
    ],
)
def test_bad_input_is_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"total_steps": 100, "lr_bounds": BOUNDS, **kwargs}
    with pytest.raises(ValueError, match=field):
        HDETController(HDETConfig(), **args)  # type: ignore[arg-type]


def test_sync_out_of_turn_is_refused() -> None:
    ctrl = controller()
    with pytest.raises(ValueError, match="sync step"):
        ctrl.sync(150, [1.0] * 4)
    with pytest.raises(ValueError, match="losses"):
        ctrl.sync(100, [1.0] * 3)
    with pytest.raises(ValueError, match="sync step"):
        ctrl.sync(1100, [1.0] * 4)  # past the budget


# -- the scheduler, two gloo processes --------------------------------------------------------

SCHED_STEPS, SCHED_SYNC, SCHED_ALPHA, SCHED_PEAK = 12, 5, 0.5, 0.1


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scheduler_replica(rank: int, world: int, port: int, out: str, ddp: bool) -> None:
    import torch
    import torch.distributed as dist

    from schedsearch.trainers.strategies.hdet import scheduler as hdet_scheduler

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(0)
        model: torch.nn.Module = torch.nn.Linear(4, 1)
        if ddp:
            # DDP broadcasts rank 0's parameters when built: spread after wrapping.
            model = torch.nn.parallel.DistributedDataParallel(model)
        hdet_scheduler.spread_parameters(model, 0.01, seed=0, rank=rank)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
        cfg = HDETConfig(replicas=world, alpha=SCHED_ALPHA, sync_interval=SCHED_SYNC)
        sched = hdet_scheduler.HDETScheduler(
            optimizer, cfg, total_steps=SCHED_STEPS, peak_lr=SCHED_PEAK, model=model
        )
        data = torch.Generator().manual_seed(100 + rank)  # each replica its own shard
        record: dict[str, list] = {"lr": [], "base": [], "params": []}
        for step in range(SCHED_STEPS):
            x = torch.randn(8, 4, generator=data)
            loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            if not ddp:
                hdet_scheduler.average_gradients(model)
            record["lr"].append(optimizer.param_groups[0]["lr"])
            record["base"].append(sched.controller.base_lr(step))
            optimizer.step()
            sched.step(loss)
            record["params"].append(
                torch.nn.utils.parameters_to_vector(model.parameters()).tolist()
            )
        record["converge_seconds"] = [sched.converge_seconds]
        record["state"] = [sched.state_dict()["controller"]]
        with open(f"{out}/rank{rank}.json", "w") as fh:
            json.dump(record, fh)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("ddp", [False, True], ids=["average_gradients", "ddp"])
def test_two_gloo_replicas_fan_out_between_syncs_and_agree_after(
    tmp_path: object, ddp: bool
) -> None:
    mp = pytest.importorskip("torch.multiprocessing")
    mp.spawn(_scheduler_replica, args=(2, _free_port(), str(tmp_path), ddp), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]  # type: ignore[operator]

    # Between syncs the replicas differ (noisy init, then their own LRs); after a sync
    # (steps 5 and 10, and the end) they hold identical parameters.
    for step in range(SCHED_STEPS):
        same = ranks[0]["params"][step] == ranks[1]["params"][step]
        assert same == ((step + 1) % SCHED_SYNC == 0 or step + 1 == SCHED_STEPS), step

    # Each replica's LR is base * rho_r, the two multipliers are 1 -/+ alpha, the ranks agree on
    # the base and never share a multiplier (they applied the same permutation).
    assert ranks[0]["base"] == ranks[1]["base"]
    assert ranks[0]["base"][:SCHED_SYNC] == [SCHED_PEAK] * SCHED_SYNC
    assert ranks[0]["base"][SCHED_SYNC] != SCHED_PEAK
    for step, base_lr in enumerate(ranks[0]["base"]):
        pair = sorted(r["lr"][step] for r in ranks)
        assert pair == pytest.approx([base_lr * (1 - SCHED_ALPHA), base_lr * (1 + SCHED_ALPHA)])
    assert ranks[0]["converge_seconds"][0] > 0
    # Only rank 0 draws; otherwise the controllers' states agree.
    states = [{k: v for k, v in r["state"][0].items() if k != "draws"} for r in ranks]
    assert states[0] == states[1]
    assert ranks[0]["state"][0]["draws"] == 2


# -- local replica sets (the runner and its workers) ------------------------------------------

FAULT_ENV = "SCHEDSEARCH_TEST_HDET_FAULT"


class FaultyRegression:
    """The ``regression`` workload, plus faults set by ``FAULT_ENV`` for one rank:
    ``crash:<rank>:<step>:<marker>`` raises once at that step (the marker file records it), and
    ``nan:<rank>:<from>:<to>`` makes that rank's loss NaN over those steps."""

    def __init__(self) -> None:
        import os

        from schedsearch.trainers.workloads import get_workload

        self._inner = get_workload("regression")
        self.name, self.default_lr = "faulty-regression", self._inner.default_lr
        self.default_steps, self.batch_size = self._inner.default_steps, self._inner.batch_size
        self._fault = os.environ.get(FAULT_ENV, "").split(":")
        self._rank = int(os.environ.get("RANK", "0"))
        self._calls = 0

    def build_model(self, seed: int) -> object:
        return self._inner.build_model(seed)

    def make_optimizer(self, params: object, lr: float) -> object:
        return self._inner.make_optimizer(params, lr)  # type: ignore[arg-type]

    def train_batches(self, seed: int) -> object:
        return self._inner.train_batches(seed)

    def evaluate(self, model: object) -> dict[str, float]:
        return self._inner.evaluate(model)  # type: ignore[arg-type]

    def loss(self, model: object, batch: object) -> object:
        import pathlib

        step, self._calls = self._calls, self._calls + 1
        kind, rank = self._fault[0], int(self._fault[1]) if len(self._fault) > 1 else -1
        loss = self._inner.loss(model, batch)  # type: ignore[arg-type]
        if rank != self._rank:
            return loss
        if kind == "crash" and step == int(self._fault[2]):
            marker = pathlib.Path(self._fault[3])
            if not marker.exists():
                marker.touch()
                raise RuntimeError("injected crash")
        if kind == "nan" and int(self._fault[2]) <= step < int(self._fault[3]):
            return loss * math.nan
        return loss


def faulty_regression() -> FaultyRegression:
    return FaultyRegression()


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, object]]] = []
        self.val_losses: list[tuple[int, float]] = []

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        if val_loss is not None:
            self.val_losses.append((step, val_loss))

    def on_event(self, kind: str, message: str, **data: object) -> None:
        self.events.append((kind, message, data))


def _run_local(out_dir: object, recorder: Recorder | None = None) -> object:
    from schedsearch.trainers.strategies.hdet.runner import run_hdet

    # No probes: the faults count the workload's loss calls from the first training step.
    config = HDETConfig.model_validate(
        {"replicas": 2, "syncInterval": 10, "alpha": 0.3, "probe": {"factors": []}}
    )
    return run_hdet(
        config,
        "tests.unit.test_hdet:faulty_regression",
        total_steps=40,
        base=None,
        lr_bounds=(1e-3, 0.1),
        seed=3,
        out_dir=str(out_dir),
        reporter=recorder,
    )


@pytest.mark.slow
def test_local_replica_set_survives_a_crash_and_resumes_exactly(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = _run_local(tmp_path / "clean")  # type: ignore[operator]
    assert clean.member_steps == 80  # type: ignore[attr-defined]
    assert math.isfinite(clean.best_objective)  # type: ignore[attr-defined]
    timing = clean.history[-1]  # type: ignore[attr-defined]
    assert timing["kind"] == "Timing" and 0 < timing["convergeFraction"] < 1

    marker = tmp_path / "crashed"  # type: ignore[operator]
    monkeypatch.setenv(FAULT_ENV, f"crash:1:25:{marker}")
    with pytest.raises(RuntimeError, match="injected crash"):
        _run_local(tmp_path / "killed")  # type: ignore[operator]
    assert marker.exists()
    recorder = Recorder()
    resumed = _run_local(tmp_path / "killed", recorder)  # type: ignore[operator]
    start = next(data for kind, _, data in recorder.events if kind == "start")
    assert start["resumed"] is True and start["step"] == 20
    assert resumed.best_schedule == clean.best_schedule  # type: ignore[attr-defined]
    assert resumed.best_objective == clean.best_objective  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_diverging_replica_is_left_out_and_reset(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_ENV, "nan:1:12:15")
    recorder = Recorder()
    result = _run_local(tmp_path, recorder)
    assert math.isfinite(result.best_objective)  # type: ignore[attr-defined]
    diverged = [data for kind, _, data in recorder.events if kind == "diverged"]
    assert diverged == [{"step": 20, "replicas": [1]}]
    assert [step for step, _ in recorder.val_losses] == [10, 20, 30, 40]
    assert all(math.isfinite(v) for _, v in recorder.val_losses)


def test_a_failed_replica_is_named_by_its_exception_not_its_last_words(tmp_path: Path) -> None:
    """A replica that raised may print more while it exits (torch.distributed's threads aborting
    it): the failure names the exception."""
    from schedsearch.trainers.strategies.hdet import runner as hdet_runner

    log = tmp_path / "replica-1.log"
    log.write_text(
        'step 20\nTraceback (most recent call last):\n  File "w.py", line 3, in <module>\n'
        "    crash()\nRuntimeError: injected crash at step 25\n"
        "terminate called without an active exception\n"
    )
    assert hdet_runner._failure_line(log) == "RuntimeError: injected crash at step 25"
    log.write_text("loading\nSegmentation fault\n\n")
    assert hdet_runner._failure_line(log) == "Segmentation fault"
    assert hdet_runner._failure_line(tmp_path / "missing.log") == "(no log)"
