"""Every registered strategy, through the one interface the engine, the pods and the bench use.

The decision-level suite (``test_strategy_conformance``) checks each strategy's ask/tell object;
this one runs the whole search of every strategy in ``registry.STRATEGIES`` from a spec, exactly
as the local engine and the bench call it (``Strategy.run`` with a ``RunContext``), and checks
what every strategy owes its caller.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, get_args

import pytest

from schedsearch.api import spec as api
from schedsearch.trainers.config import BaseScheduleConfig
from schedsearch.trainers.evaluation import EvaluationConfig
from schedsearch.trainers.strategies import base, registry
from schedsearch.trainers.strategies.strategy import RunContext, SpecView

STEPS = 240
BOUNDS = (2e-4, 0.2)
BASE = BaseScheduleConfig(family="constant", peak_lr=0.02, warmup_steps=12)
# Small configurations of every strategy, so each whole search takes seconds.
SMALL: dict[str, dict[str, Any]] = {
    "autolrs": {"tau": 40, "tauPrime": 8, "tauMax": 80, "candidates": 3},
    "pbt": {"population": 2, "perturbationInterval": 40},
    "hdet": {"replicas": 2, "syncInterval": 40, "probe": {"factors": [1.0, 2.0]}},
    "law": {"peakFactors": [1.0, 2.0], "fitRestarts": 2, "optimiseRestarts": 2},
}


def test_the_registry_lists_every_strategy_name_once() -> None:
    assert get_args(registry.StrategyName) == registry.NAMES
    assert set(SMALL) == set(registry.NAMES), "give every strategy a small configuration here"
    for name, strategy in registry.STRATEGIES.items():
        assert strategy.name == name
        assert strategy.shape in ("trainer", "population", "replicas")
        assert set(registry.StrategyConfig.model_fields) == set(registry.NAMES)
        assert registry.StrategyConfig.model_fields[name].annotation == (
            strategy.config_type | None
        )


def test_unknown_strategy_is_named() -> None:
    with pytest.raises(ValueError, match="strategy: 'grid' is not one of autolrs, pbt, hdet, law"):
        registry.get("grid")


@pytest.mark.parametrize("name", registry.NAMES)
def test_spec_rules_name_fields_of_that_strategy_or_the_spec(name: str) -> None:
    """Each rule is guarded by its strategy and names a field the CRD has (checked against the
    schema in test_crd); its Python side accepts the strategy's scaled defaults."""
    strategy = registry.get(name)
    rules = [
        r for r in registry.spec_rules() if r.expression.startswith(f"!has(self.strategy.{name})")
    ]
    assert len(rules) == len(strategy.rules)
    config = strategy.config_for_budget(4000, members=2, seed=0)
    assert strategy.problems(config, SpecView(steps=4000, warmup=200)) == []


def _spec(
    name: str, strategy: dict[str, Any] | None = None, lr_bounds: tuple[float, float] = BOUNDS
) -> api.ScheduleSearchSpec:
    return api.ScheduleSearchSpec.model_validate(
        {
            "workload": {"builtin": "regression"},
            "budget": {"steps": STEPS},
            "lrBounds": {"min": lr_bounds[0], "max": lr_bounds[1]},
            "baseSchedule": BASE.model_dump(by_alias=True),
            "strategy": {name: SMALL[name] if strategy is None else strategy},
        },
        context={"target": "local"},
    )


def _search(
    name: str,
    out_dir: Path,
    events: list[str],
    *,
    reporter: base.Reporter | None = None,
    strategy: dict[str, Any] | None = None,
    lr_bounds: tuple[float, float] = BOUNDS,
) -> base.SearchResult:
    """The whole search of strategy ``name`` from its spec, as the engine and the bench run it
    (``reporter``: instead of one recording the events' kinds in ``events``; ``strategy``: its
    config instead of ``SMALL``'s)."""
    spec = _spec(name, strategy, lr_bounds)
    chosen = spec.strategy
    assert chosen.name == name and chosen.strategy is registry.get(name)
    phases = chosen.strategy.phases(
        chosen.config, STEPS, evaluation=EvaluationConfig(), base_schedule=spec.base_schedule
    )

    class Events(base.NullReporter):
        def on_event(self, kind: str, message: str, **data: Any) -> None:
            events.append(kind)

    context = RunContext(
        workload="regression",
        total_steps=STEPS,
        lr_bounds=lr_bounds,
        seed=1,
        out_dir=out_dir,
        reporter=reporter or Events(),
        device="cpu",
        phases=phases,
        base=spec.base_schedule,
    )
    return chosen.strategy.run(chosen.config, context)


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.NAMES)
def test_every_strategy_runs_a_whole_search_from_its_spec(name: str, tmp_path: Path) -> None:
    events: list[str] = []
    result = _search(name, tmp_path / "first", events)
    spec = _spec(name)
    chosen = spec.strategy

    assert result.strategy == name
    assert result.workload == "regression"
    assert math.isfinite(result.best_objective)
    schedule = result.best_schedule
    assert schedule.total_steps == STEPS
    # Every found schedule ends in the cooldown its search trained: at the base's floor.
    assert schedule.lr_at(STEPS - 1) <= 0.1 * max(schedule.lr_at(s) for s in range(STEPS))
    assert all(0.0 <= schedule.lr_at(s) <= BOUNDS[1] * (1 + 1e-9) for s in range(STEPS))
    assert schedule.provenance.get("strategy") == name
    # The cost counts at least one budget per member, and the annealed branches within it.
    members = chosen.strategy.members(chosen.config)
    assert result.member_steps >= members * STEPS
    assert 0 <= result.evaluation_steps <= result.member_steps
    assert "finished" in events
    assert result.to_dict()["strategy"] == name
    # The same spec and seed repeat the same search (the spec's promise), on CPU bit for bit.
    again = _search(name, tmp_path / "second", [])
    assert again.best_schedule.points == schedule.points
    assert again.best_objective == result.best_objective
    assert again.member_steps == result.member_steps


class _Interrupted(Exception):
    """Stands for the process being killed mid-search."""


# Strategies that train in this process: the reporter's exception stops them where they are.
# A replica set trains in worker processes (the reporter runs on a thread that relays their
# reports); test_hdet's test_local_replica_set_survives_a_crash_and_resumes_exactly kills one.
IN_PROCESS = [name for name in registry.NAMES if registry.get(name).shape != "replicas"]


@pytest.mark.slow
@pytest.mark.parametrize("name", IN_PROCESS)
def test_every_strategy_resumes_an_interrupted_search_to_the_same_result(
    name: str, tmp_path: Path
) -> None:
    """A search cut short half-way through its training steps, then run again with the same
    output folder, finds what the uninterrupted search found (from the same spec and seed)."""
    counted = _Progress()
    whole = _search(name, tmp_path / "whole", [], reporter=counted)
    assert counted.calls >= 4, f"{name} reports too little progress to interrupt it half-way"

    with pytest.raises(_Interrupted):
        _search(name, tmp_path / "cut", [], reporter=_Progress(stop_after=counted.calls // 2))
    events: list[str] = []
    resumed = _search(name, tmp_path / "cut", events)

    assert "finished" in events
    assert resumed.best_schedule.points == whole.best_schedule.points
    assert resumed.best_objective == whole.best_objective
    assert resumed.best_member == whole.best_member
    # What was trained again after the interruption counts too.
    assert resumed.member_steps >= whole.member_steps


class _Progress(base.NullReporter):
    """Counts progress reports; raises after ``stop_after`` of them, as a kill would cut in."""

    def __init__(self, stop_after: float = math.inf) -> None:
        self.calls, self.stop_after = 0, stop_after

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        self.calls += 1
        if self.calls > self.stop_after:
            raise _Interrupted


# Candidate LRs up to 100x the base peak (2.0 on regression: the loss turns NaN within steps).
DIVERGING: dict[str, dict[str, Any]] = {
    "autolrs": SMALL["autolrs"],
    "pbt": {**SMALL["pbt"], "population": 3},
    "hdet": {**SMALL["hdet"], "probe": {"factors": [1.0, 100.0]}},
    "law": {**SMALL["law"], "peakFactors": [1.0, 100.0]},
}
DIVERGING_BOUNDS = (2e-4, 50.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.NAMES)
def test_every_strategy_ends_with_a_finite_loss_when_its_high_lrs_diverge(
    name: str, tmp_path: Path
) -> None:
    events: list[str] = []
    result = _search(name, tmp_path, events, strategy=DIVERGING[name], lr_bounds=DIVERGING_BOUNDS)
    assert math.isfinite(result.best_objective)
    schedule = result.best_schedule
    assert max(schedule.lr_at(s) for s in range(STEPS)) < 1.0
    if name in IN_PROCESS:
        assert "diverged" in events, f"{name}: no LR diverged, the test tests nothing"
