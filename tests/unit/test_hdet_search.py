"""HDET as a search: the starting peak from annealed probes, scores instead of interval losses,
and the trained cooldown that ends every found schedule."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from schedsearch.trainers import schedules
from schedsearch.trainers.evaluation import EvaluationConfig, Phases
from schedsearch.trainers.strategies import peaks
from schedsearch.trainers.strategies.hdet import probe
from schedsearch.trainers.strategies.hdet.config import HDETConfig
from schedsearch.trainers.strategies.hdet.controller import FINAL, UPDATED, HDETController

BOUNDS = (1e-4, 1.0)


def searched(total_steps: int = 1000, *, cooldown: float = 0.2, **fields: object) -> HDETController:
    """A controller over a constant base of 0.1 whose last ``cooldown`` share is a cooldown."""
    cfg = HDETConfig(**{"replicas": 2, "sync_interval": 100, **fields})  # type: ignore[arg-type]
    phases = Phases.create(
        total_steps,
        evaluation=EvaluationConfig.model_validate({"cooldown": {"fraction": cooldown}}),
        interval=cfg.sync_interval,
    )
    return HDETController(
        cfg,
        total_steps=total_steps,
        base_schedule=schedules.Schedule.constant(0.1, total_steps),
        lr_bounds=BOUNDS,
        phases=phases,
    )


def sync_all(ctrl: HDETController, scores_of: object = None) -> list[float]:
    """Walk the run as the scheduler does (sync after step k, then train step k); returns the
    base LR each step trained with."""
    trained = []
    for step in range(ctrl.total_steps + 1):
        if ctrl.is_sync(step):
            lrs = [ctrl.lr(step - 1, r) for r in range(ctrl.config.replicas)]
            scores = scores_of(lrs) if scores_of is not None else None  # type: ignore[operator]
            ctrl.sync(step, [1.0] * len(lrs), scores=scores)
        if step < ctrl.total_steps:
            trained.append(ctrl.base_lr(step))
    return trained


# -- the cooldown ------------------------------------------------------------------------------


def test_the_base_stops_moving_at_the_cooldown_and_anneals_to_the_floor() -> None:
    ctrl = searched()
    assert ctrl.gamma == 0.0  # the cooldown does the annealing; the searched part holds
    assert ctrl.update_steps() == [100, 200, 300, 400, 500, 600, 700, 800]
    # Scores that always favour the higher LR push the base up at every update.
    sync_all(ctrl, lambda lrs: [-lr for lr in lrs])
    reasons = {h["step"]: h["auto_lr"] for h in ctrl.history}
    assert reasons[800] == UPDATED and reasons[900] == FINAL and reasons[1000] == FINAL
    at_cooldown = ctrl.base_lr(799 + 1)
    assert at_cooldown > 0.1
    assert ctrl.base_lr(900) == pytest.approx(at_cooldown / 2)
    assert ctrl.base_lr(999) == pytest.approx(at_cooldown / 200)


def test_the_found_schedule_is_the_trained_base_step_for_step() -> None:
    ctrl = searched()
    trained = sync_all(ctrl, lambda lrs: [-lr for lr in lrs])
    found = ctrl.schedule()
    # Bit for bit: replaying the stored schedule trains with the LRs the replicas' base had.
    assert [found.lr_at(s) for s in range(1000)] == trained
    assert found.lr_at(999) < found.lr_at(799) / 100


def test_without_phases_the_paper_decay_still_applies() -> None:
    cfg = HDETConfig(replicas=2, sync_interval=100)
    ctrl = HDETController(
        cfg,
        total_steps=1000,
        base_schedule=schedules.Schedule.constant(0.1, 1000),
        lr_bounds=BOUNDS,
    )
    assert ctrl.gamma > 0


# -- the starting peak -------------------------------------------------------------------------


def test_set_peak_scales_the_base_schedule_and_its_replay() -> None:
    cfg = HDETConfig(replicas=2, sync_interval=100, warmup_steps=200)
    base = schedules.ScheduleBuilder().set_lr(0, 0.0, "linear").set_lr(100, 0.02).build(1000)
    ctrl = HDETController(cfg, total_steps=1000, base_schedule=base, lr_bounds=BOUNDS)
    ctrl.set_peak(0.08)
    assert ctrl.peak == pytest.approx(0.08)
    assert ctrl.base_lr(50) == pytest.approx(0.04)  # the rise, scaled
    assert ctrl.base_lr(200) == pytest.approx(0.08)  # the auto-LR starts from the new peak
    trained = sync_all(ctrl, lambda lrs: [-lr for lr in lrs])
    found = ctrl.schedule()
    assert [found.lr_at(s) for s in range(1000)] == trained


def test_set_peak_is_refused_once_the_run_has_started() -> None:
    ctrl = searched()
    ctrl.sync(100, [1.0, 1.0])
    with pytest.raises(ValueError, match="set_peak"):
        ctrl.set_peak(0.05)


def test_set_peak_round_trips_through_the_state() -> None:
    ctrl = searched()
    ctrl.set_peak(0.3)
    again = searched()
    again.load_state_dict(ctrl.state_dict())
    assert again.peak == pytest.approx(0.3)
    assert again.base_lr(150) == ctrl.base_lr(150)


def test_probe_candidates_are_clipped_deduplicated_and_sorted() -> None:
    assert peaks.candidates(0.1, [8.0, 0.5, 1.0, 16.0], (1e-3, 1.0)) == [0.05, 0.1, 0.8, 1.0]
    assert peaks.candidates(0.1, [20.0, 40.0], (1e-3, 1.0)) == [1.0]


def test_probes_are_shared_round_robin_and_rise_within_a_quarter() -> None:
    plan = probe.plan(
        base_peak=0.1,
        factors=[0.25, 0.5, 1, 2, 4],
        bounds=(1e-3, 1.0),
        steps=100,
        rise=300,
        branch_steps=50,
        floor=0.0,
        shape="linear",
    )
    assert plan.assigned(0, 2) == [0, 2, 4] and plan.assigned(1, 2) == [1, 3]
    assert plan.warmup == 25
    assert plan.lr(0.4, 0) == 0.0 and plan.lr(0.4, 25) == 0.4


def test_the_lowest_annealed_loss_wins_and_all_diverged_falls_back_to_the_lowest_peak() -> None:
    outcomes = [peaks.ProbeOutcome(0.01, 0.5, 10), peaks.ProbeOutcome(0.1, 0.2, 10)]
    assert peaks.choose([*outcomes, peaks.ProbeOutcome(1.0, math.nan, 3)]).peak == 0.1
    diverged = [peaks.ProbeOutcome(0.5, math.nan, 3), peaks.ProbeOutcome(0.2, math.nan, 3)]
    assert peaks.choose(diverged).peak == 0.2


# -- scores --------------------------------------------------------------------------------------


def test_scores_replace_the_interval_losses_in_the_auto_lr() -> None:
    """Interval losses favour the lower LR (short-horizon bias), the annealed scores the higher
    one: the base follows the scores."""
    by_loss, by_score = searched(), searched()
    for step in (100, 200, 300):
        lrs = [by_loss.lr(step - 1, r) for r in range(2)]
        interval = [lr for lr in lrs]  # the lower LR has the lower interval loss
        by_loss.sync(step, interval)
        lrs = [by_score.lr(step - 1, r) for r in range(2)]
        by_score.sync(step, [lr for lr in lrs], scores=[-lr for lr in lrs])
    assert by_loss.base_lr(300) < 0.1 < by_score.base_lr(300)
    recorded = by_score.history[-1]
    assert recorded["scores"] != recorded["losses"]


def test_scores_must_match_the_replicas() -> None:
    with pytest.raises(ValueError, match="scores"):
        searched().sync(100, [1.0, 1.0], scores=[1.0])


# -- the spec fields -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"probe": {"factors": [1.0, -2.0]}}, "probe.factors.1"),
        ({"probe": {"steps": 0}}, "probe.steps"),
        ({"probe": {"factor": [1.0]}}, "probe.factor"),
        ({"score": "raw"}, "score"),
    ],
)
def test_bad_hdet_search_fields_are_named(fields: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        HDETConfig.model_validate({"replicas": 2, **fields})
    assert where in {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_probe_length_defaults_to_two_sync_intervals() -> None:
    assert HDETConfig(replicas=2, sync_interval=50).probe_steps() == 100
    assert HDETConfig.model_validate({"replicas": 2, "probe": {"steps": 7}}).probe_steps() == 7


# -- a real replica set --------------------------------------------------------------------------


class Reports:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def on_progress(self, *args: object, **kwargs: object) -> None:
        pass

    def on_event(self, kind: str, message: str, **data: object) -> None:
        self.events.append((kind, data))


@pytest.mark.slow
def test_a_local_search_probes_scores_and_ends_in_its_cooldown(tmp_path: object) -> None:
    from schedsearch.trainers.config import BaseScheduleConfig
    from schedsearch.trainers.strategies.hdet.runner import run_hdet

    steps, interval = 200, 20
    config = HDETConfig.model_validate(
        {"replicas": 2, "syncInterval": interval, "probe": {"factors": [0.5, 2.0, 8.0]}}
    )
    base = BaseScheduleConfig.model_validate({"family": "wsd", "peakLR": 0.01, "warmupSteps": 10})
    phases = Phases.create(steps, base=base, interval=interval)
    reports = Reports()
    result = run_hdet(
        config,
        "regression",
        total_steps=steps,
        base=base,
        lr_bounds=(1e-4, 0.2),
        seed=1,
        out_dir=str(tmp_path),
        reporter=reports,
        phases=phases,
    )
    probed = next(data for kind, data in reports.events if kind == "probe")
    peaks = [p["peak"] for p in probed["probes"]]  # type: ignore[attr-defined]
    assert peaks == pytest.approx([0.005, 0.02, 0.08])
    chosen = probed["peak"]
    found = result.best_schedule
    assert found.lr_at(10) == pytest.approx(chosen)  # the base schedule, scaled to the probe
    # The cooldown: from the base where it stood at step 160 down to the floor (0).
    assert found.lr_at(steps - 1) < found.lr_at(phases.search_end) / 20
    # Cost: 3 probes of 40 + 20 steps, every update sync's two branches of 10 steps.
    updates = [h for h in result.history if h.get("auto_lr") == UPDATED]
    assert updates and all(h["scores"] != h["losses"] for h in updates)
    assert result.evaluation_steps == 3 * (40 + 20) + 2 * 10 * len(updates)
    assert result.member_steps == 2 * steps + result.evaluation_steps
