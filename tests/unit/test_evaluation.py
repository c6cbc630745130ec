"""Annealed evaluation, phases (warm-up, cooldown) and their part in PBT and AutoLRS."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from schedsearch.trainers import harness, schedules
from schedsearch.trainers.config import BaseScheduleConfig
from schedsearch.trainers.evaluation import EvaluationConfig, Phases, search_phases
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.autolrs.search import plausible_floor
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.pbt.population import Population
from schedsearch.trainers.strategies.pbt.runner import MemberLoop, run_pbt
from schedsearch.trainers.workloads import get_workload


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    for key in ("model", "optimizer"):
        flat_a, flat_b = _flatten(a[key]), _flatten(b[key])
        if flat_a.keys() != flat_b.keys():
            return False
        for name, value in flat_a.items():
            other = flat_b[name]
            if isinstance(value, torch.Tensor):
                if not torch.equal(value, other):
                    return False
            elif value != other:
                return False
    return (
        a["step"] == b["step"]
        and a["data"] == b["data"]
        and torch.equal(a["rng"]["torch"], b["rng"]["torch"])
        and a["rng"]["numpy"] == b["rng"]["numpy"]
    )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}/{key}"))
        return out
    if isinstance(tree, list | tuple):
        out = {}
        for index, value in enumerate(tree):
            out.update(_flatten(value, f"{prefix}/{index}"))
        return out
    return {prefix: tree}


def test_annealed_branch_restores_the_trainer_bitwise_and_counts_its_steps() -> None:
    history = harness.History()
    trainer = harness.Trainer(get_workload("regression"), seed=3, device="cpu", eval_every=5)
    trainer.callbacks.append(history)
    twin = harness.Trainer(get_workload("regression"), seed=3, device="cpu", eval_every=5)
    trainer.train(20, lambda _: 0.05)
    twin.train(20, lambda _: 0.05)
    before = trainer.state_dict()
    heard = (len(history.steps), len(history.evals))
    raw = trainer.evaluate()["val_loss"]
    metrics, trained = trainer.annealed_evaluate(15, floor=0.0, shape="sqrt")
    assert trained == 15
    assert metrics["val_loss"] != raw  # the branch trained: its loss is its own
    assert _same_state(before, trainer.state_dict())
    assert trainer.current_lr == 0.05 and trainer.eval_every == 5
    assert (len(history.steps), len(history.evals) - 1) == heard  # only the raw evaluation
    # Training on after the branch is exactly training on without it.
    trainer.train(10, lambda _: 0.03)
    twin.train(10, lambda _: 0.03)
    assert _same_state(trainer.state_dict(), twin.state_dict())


def test_a_branch_that_diverges_reports_nan_and_leaves_the_trainer_as_it_was() -> None:
    trainer = harness.Trainer(get_workload("regression"), seed=0, device="cpu")
    trainer.train(5, lambda _: 0.01)
    before = trainer.state_dict()
    metrics, trained = trainer.annealed_evaluate(10, start_lr=1e12)
    assert math.isnan(metrics["val_loss"]) and 1 <= trained <= 10
    assert not trainer.diverged and _same_state(before, trainer.state_dict())


def test_phases_lay_out_warmup_search_and_cooldown() -> None:
    base_config = BaseScheduleConfig(family="cosine", peak_lr=0.1, min_lr=0.001, warmup_steps=50)
    evaluation = EvaluationConfig.model_validate(
        {"anneal": {"fraction": 0.5}, "cooldown": {"fraction": 0.2, "shape": "sqrt"}}
    )
    phases = Phases.create(1000, evaluation=evaluation, base=base_config, interval=100)
    assert (phases.warmup_steps, phases.search_end, phases.anneal_steps) == (50, 800, 50)
    assert phases.lr(0.2, 0) == 0.0 and phases.lr(0.2, 25) == pytest.approx(0.1)
    assert phases.lr(0.2, 50) == 0.2 and phases.lr(0.2, 799) == 0.2
    assert phases.lr(0.2, 800) == 0.2 and phases.lr(0.2, 999) < 0.02
    assert not phases.decides_at(49) and phases.decides_at(50) and phases.decides_at(800)
    assert not phases.decides_at(801) and not phases.branches_at(1000)
    # The cooldown a member trains is the one a stored schedule replays, to the bit.
    held = schedules.ScheduleBuilder().set_lr(0, 0.0, "linear").set_lr(50, 0.2).build(1000)
    ending = phases.with_cooldown(held)
    assert [ending.lr_at(s) for s in range(1000)] == [phases.lr(0.2, s) for s in range(1000)]
    assert ending.points[-1].step == 1000 and ending.points[-1].lr == 0.001
    assert Phases.from_dict(phases.to_dict()) == phases


def test_evaluation_fields_are_validated_naming_the_field() -> None:
    with pytest.raises(ValueError, match="fraction"):
        EvaluationConfig.model_validate({"cooldown": {"fraction": 1.0}})
    with pytest.raises(ValueError, match="fraction"):
        EvaluationConfig.model_validate({"anneal": {"fraction": -0.1}})
    with pytest.raises(ValueError, match="shape"):
        EvaluationConfig.model_validate({"anneal": {"shape": "cubic"}})
    with pytest.raises(ValueError, match="seed"):
        EvaluationConfig.model_validate({"control": {"seed": -1}})
    with pytest.raises(ValueError, match="fractoin"):
        EvaluationConfig.model_validate({"anneal": {"fractoin": 0.5}})


class _Coordinator:
    """Records what members report; answers from a real Population."""

    def __init__(self, population: Population) -> None:
        self.population = population
        self.reports: list[tuple[int, int, float]] = []

    def report(
        self,
        member: int,
        step: int,
        objective: float,
        checkpoint_path: str | None,
        config: dict[str, float] | None = None,
    ) -> base.PBTDecision:
        self.reports.append((member, step, objective))
        return self.population.report(member, step, objective, checkpoint_path, config)

    def poll(self, member: int) -> base.PBTDecision:
        return self.population.poll(member)

    def finish(self, member: int, step: int) -> None:
        self.population.finish(member, step)


class _BiasedTrainer:
    """A trainer with short-horizon bias built in: progress is the area under the LR curve, but
    the loss measured right now pays a noise term proportional to the current LR. A high LR looks
    worse now and is better once decayed."""

    def __init__(self) -> None:
        self.global_step, self.area, self.current_lr = 0, 0.0, 0.0
        self.diverged, self.callbacks, self.eval_every = False, [], None
        self.last_metrics: dict[str, float] | None = None

    annealed_evaluate = harness.Trainer.annealed_evaluate

    def step(self, lr: float) -> harness.StepResult:
        self.current_lr, self.area = lr, self.area + lr
        self.global_step += 1
        return harness.StepResult(self.global_step - 1, self.loss(), lr)

    def loss(self) -> float:
        return 1.0 / (1.0 + self.area) + 5.0 * self.current_lr

    def evaluate(self) -> dict[str, float]:
        return {"val_loss": self.loss()}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.global_step, "area": self.area, "lr": self.current_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step, self.area, self.current_lr = state["step"], state["area"], state["lr"]

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.state_dict()))
        return path

    def load(self, path: Path) -> None:
        self.load_state_dict(json.loads(path.read_text()))


@pytest.mark.parametrize(("fraction", "winner"), [(0.0, 0), (1.0, 1)])
def test_pbt_ranks_ready_members_by_the_annealed_objective(
    tmp_path: Path, fraction: float, winner: int
) -> None:
    # Member 0 trains at a low LR, member 1 at a high one. Raw losses rank 0 first (the high LR
    # pays its noise now); annealed losses rank 1 first. The loser copies the winner.
    config = PBTConfig(population=2, perturbation_interval=10, quantile_fraction=0.5)
    evaluation = EvaluationConfig.model_validate(
        {"anneal": {"fraction": fraction}, "cooldown": {"fraction": 0.0}}
    )
    phases = Phases.create(40, evaluation=evaluation, interval=10)
    population = Population(config, 0.001, 1.0, 40, phases=phases)
    population.members[0].config["lr"], population.members[1].config["lr"] = 0.01, 0.2
    coordinator = _Coordinator(population)
    loops = [
        MemberLoop(
            member,
            _BiasedTrainer(),  # type: ignore[arg-type]
            population.members[member].config,
            coordinator,
            total_steps=40,
            interval=10,
            checkpoint_dir=tmp_path,
            phases=phases,
        )
        for member in (0, 1)
    ]
    for _ in range(2):  # two rounds: the first member to report has nobody to compare with
        for loop in loops:
            loop.advance()
    exploits = [e for e in population.history if e["event"] == "exploit"]
    assert exploits and exploits[0]["src"] == winner and exploits[0]["dst"] == 1 - winner
    raw = [o for (_, _, o) in coordinator.reports]
    if fraction > 0:
        # The reported objectives are the annealed ones, and they rank the other way round.
        assert raw[1] < raw[0]
        assert population.anneal_steps == 10 * len(coordinator.reports)
        assert loops[1].trained_steps == 2 * (10 + 10)
    else:
        assert raw[0] < raw[1] and population.anneal_steps == 0


def test_pbt_found_schedule_warms_up_cools_down_and_replays_the_best_member_exactly(
    tmp_path: Path,
) -> None:
    base_config = BaseScheduleConfig(family="constant", peak_lr=0.02, warmup_steps=10)
    evaluation = EvaluationConfig.model_validate({"anneal": {"fraction": 0.5}})
    config = PBTConfig(population=3, perturbation_interval=20, quantile_fraction=0.34)
    phases = Phases.create(120, evaluation=evaluation, base=base_config, interval=20)
    result = run_pbt(
        config,
        "regression",
        total_steps=120,
        lr_bounds=(0.002, 0.2),
        seed=5,
        out_dir=tmp_path,
        device="cpu",
        phases=phases,
    )
    found = result.best_schedule
    assert found.lr_at(0) == 0.0 and found.lr_at(5) > 0.0
    assert found.points[-1].step == 120 and found.points[-1].lr == 0.0
    assert found.lr_at(119) < found.lr_at(96) == found.lr_at(95)
    assert result.member_steps > 3 * 120  # the branches are counted
    # Replayed from scratch with the seed its lineage started from, the found schedule gives the
    # best member's final objective to the bit: warm-up and cooldown were really trained, and the
    # annealed branches left no trace.
    exploits = found.provenance["exploits"]
    root = exploits[0]["from"] if exploits else found.provenance["member"]
    replay = harness.Trainer(get_workload("regression"), seed=5 + root, device="cpu")
    replay.train(120, found.lr_at)
    assert replay.evaluate()["val_loss"] == result.best_objective


def test_search_phases_reads_a_spec() -> None:
    from tests.unit.controller_fixtures import parsed

    spec = parsed("pbt")
    phases = search_phases(spec)
    pbt = spec.strategy.pbt
    assert pbt is not None
    assert phases.total_steps == spec.budget.steps
    assert phases.anneal_steps == round(0.5 * pbt.perturbation_interval)
    assert phases.warmup_steps == spec.base_schedule.warmup_steps


def test_a_forecast_cannot_predict_an_impossible_loss() -> None:
    assert plausible_floor([0.5, 0.4, 0.3]) == pytest.approx(0.1)
    assert plausible_floor([0.2, 0.05]) == 0.0  # never below zero for non-negative losses
    assert plausible_floor([-1.0, -2.0]) == -3.0


def test_autolrs_warms_up_searches_then_cools_down_and_its_schedule_replays_exactly(
    tmp_path: Path,
) -> None:
    from schedsearch.trainers.strategies.autolrs.config import AutoLRSConfig
    from schedsearch.trainers.strategies.autolrs.runner import run_autolrs

    base_config = BaseScheduleConfig(family="cosine", peak_lr=0.02, warmup_steps=10)
    phases = Phases.create(200, base=base_config, interval=10)
    config = AutoLRSConfig(tau=40, tau_prime=10, tau_max=80, candidates=2)
    result = run_autolrs(
        config,
        "regression",
        total_steps=200,
        lr_bounds=(1e-3, 0.2),
        seed=4,
        out_dir=tmp_path,
        device="cpu",
        phases=phases,
    )
    found = result.best_schedule
    first = found.points[0]
    assert (first.step, first.lr, first.interp, first.end_lr, first.span) == (
        0,
        0.0,
        "linear",
        0.02,
        10,
    )
    assert found.points[1].step == 10  # the first stage starts after the warm-up
    cooldown, end = found.points[-2:]
    assert (cooldown.step, cooldown.interp, end.step, end.lr) == (160, "linear", 200, 0.0)
    # Each probe's branch (half of tau') is counted; 200 trained steps plus probes and branches.
    assert result.evaluation_steps > 0
    assert result.member_steps > 200 + result.evaluation_steps
    replay = harness.Trainer(get_workload("regression"), seed=4, device="cpu")
    replay.train(200, found.lr_at)
    assert replay.evaluate()["val_loss"] == result.best_objective
