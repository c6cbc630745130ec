"""The ``law`` strategy: the laws' arithmetic, the fit, the optimiser, the probes, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest

from schedsearch.trainers import harness, schedules
from schedsearch.trainers.evaluation import Phases
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.law import fit, laws, optimise, probe, runner
from schedsearch.trainers.strategies.law import state as law_state
from schedsearch.trainers.strategies.law.config import LawConfig
from schedsearch.trainers.workloads import get_workload

S, W = 3000, 150
TRUE_MPL = laws.MultiPowerLaw(l0=0.5, a=0.8, alpha=0.5, b=0.4, c=0.05, beta=0.6, gamma=0.6)


def trunk(steps: int, peak: float = 1.0) -> list[float]:
    return [peak * i / W if i < W else peak for i in range(steps)]


def branch(start: int, steps: int, peak: float = 1.0) -> list[float]:
    return trunk(start, peak) + [peak * (1.0 - i / steps) for i in range(steps)]


def cosine(steps: int, peak: float = 1.0) -> list[float]:
    return [
        peak * i / W if i < W else 0.5 * peak * (1 + math.cos(math.pi * (i - W) / (steps - W)))
        for i in range(steps)
    ]


def noisy_curves(
    law: laws.Law, noise: float, seed: int = 0, *, trunk_noise: float | None = None
) -> list[fit.Curve]:
    """The probe design's curves (a trunk to S/2, branches of several lengths), measured through
    ``law`` with multiplicative noise (``trunk_noise`` on the trunk, if given)."""
    rng = np.random.default_rng(seed)
    runs = [
        ("trunk", trunk(1500), 30, 40),
        ("b370", branch(370, 185), 20, None),
        ("b750", branch(750, 150), 15, None),
        ("b750-long", branch(750, 750), 75, None),
        ("b1500", branch(1500, 300), 30, None),
    ]
    curves = []
    for name, lrs, every, held in runs:
        steps = list(range(every, len(lrs) + 1, every))
        clean = law.predict(lrs, steps, warmup=W)
        scatter = trunk_noise if name == "trunk" and trunk_noise is not None else noise
        measured = clean * (1.0 + scatter * rng.standard_normal(len(steps)))
        annealed = name != "trunk"  # the branches end at the floor, LR 0
        curves.append(
            fit.Curve(name, tuple(lrs), tuple(steps), tuple(measured), held, annealed=annealed)
        )
    return curves


# --- the laws' arithmetic -------------------------------------------------------------------------


def test_multi_power_law_matches_its_formula_on_a_step_decay() -> None:
    law = laws.MultiPowerLaw(l0=2.0, a=0.5, alpha=0.5, b=0.3, c=2.0, beta=0.6, gamma=0.5)
    lrs = [1.0, 1.0, 1.0, 0.25, 0.25]
    # After 5 steps: area 3.5; one drop of 0.75 at step 3, S_3(5) = 0.5, x = 0.25^-0.5 * 0.5 = 1.
    expected = 2.0 + 0.5 * 3.5**-0.5 - 0.3 * 0.75 * (1.0 - (2.0 * 1.0 + 1.0) ** -0.6)
    # After 3 steps there was no drop yet; after 4, S_3(4) = 0.25, x = 0.5.
    at_four = 2.0 + 0.5 * 3.25**-0.5 - 0.3 * 0.75 * (1.0 - (2.0 * 0.5 + 1.0) ** -0.6)
    predicted = law.predict(lrs, [3, 4, 5])
    assert predicted == pytest.approx([2.0 + 0.5 * 3.0**-0.5, at_four, expected], rel=1e-12)


def test_multi_power_law_sums_over_drops_and_ignores_the_warm_up_rise() -> None:
    law = laws.MultiPowerLaw(l0=1.0, a=1.0, alpha=1.0, b=1.0, c=1.0, beta=1.0, gamma=1.0)
    # Warm-up of 2 steps (0.5, 1.0: its rise is not annealing), then drops at steps 3 and 4.
    lrs = [0.5, 1.0, 1.0, 0.5, 0.25]
    g = [1.0 - 1.0 / (x + 1.0) for x in (0.75 / 0.5, 0.25 / 0.25)]
    expected = 1.0 + 1.0 / 3.25 - (0.5 * g[0] + 0.25 * g[1])
    assert laws.final_loss(law, lrs, warmup=2) == pytest.approx(expected, rel=1e-12)


def test_tissue_law_matches_its_formula() -> None:
    law = laws.TissueLaw(l0=1.0, a=2.0, alpha=0.5, c=0.1, lam=0.9)
    lrs = [1.0, 1.0, 0.5, 0.5, 0.25]
    # Drops 0.5 at step 2 and 0.25 at step 4: m = 0.5, 0.45, 0.405 + 0.25; S2 sums m to n - 1.
    s2 = 0.5 + 0.45 + (0.405 + 0.25)
    expected = 1.0 + 2.0 * 3.25**-0.5 - 0.1 * s2
    assert laws.final_loss(law, lrs) == pytest.approx(expected, rel=1e-12)
    assert law.predict(lrs, [2])[0] == pytest.approx(1.0 + 2.0 * 2.0**-0.5, rel=1e-12)


def test_the_lr_scale_only_rescales_parameters() -> None:
    scale = 0.02
    lrs = np.asarray(branch(600, 400)) * scale
    scaled = laws.MultiPowerLaw(
        l0=0.5, a=0.8, alpha=0.5, b=0.4, c=0.05, beta=0.6, gamma=0.6, lr_scale=scale
    )
    # The same law in raw LR units: A s^alpha, B / s, C s^(gamma - 1).
    raw = laws.MultiPowerLaw(
        l0=0.5,
        a=0.8 * scale**0.5,
        alpha=0.5,
        b=0.4 / scale,
        c=0.05 * scale ** (0.6 - 1.0),
        beta=0.6,
        gamma=0.6,
    )
    at = [200, 700, 1000]
    assert scaled.predict(lrs, at, warmup=W) == pytest.approx(raw.predict(lrs, at, warmup=W))


def test_law_round_trips_and_names_bad_fields() -> None:
    for law in (TRUE_MPL, laws.TissueLaw(l0=1.0, a=2.0, alpha=0.5, c=0.1, lam=0.9)):
        assert laws.law_from_dict(json.loads(json.dumps(law.to_dict()))) == law
    with pytest.raises(ValueError, match=r"law\.gamma: expected a number"):
        laws.law_from_dict({**TRUE_MPL.to_dict(), "gamma": "0.6"})
    with pytest.raises(ValueError, match="law: must be one of"):
        laws.law_from_dict({**TRUE_MPL.to_dict(), "law": "chinchilla"})
    with pytest.raises(ValueError, match=r"at: steps must lie in 1\.\.3"):
        TRUE_MPL.predict([1.0, 1.0, 1.0], [4])


# --- the fit --------------------------------------------------------------------------------------


def test_fit_recovers_a_multi_power_law_from_its_own_noisy_curves() -> None:
    curves = noisy_curves(TRUE_MPL, noise=0.003)
    result = fit.fit_law("multiPower", curves, warmup=W, lr_scale=1.0, restarts=8, seed=1)
    law = result.law
    assert isinstance(law, laws.MultiPowerLaw)
    assert law.l0 == pytest.approx(TRUE_MPL.l0, rel=0.03)
    assert law.alpha == pytest.approx(TRUE_MPL.alpha, rel=0.25)
    assert law.b == pytest.approx(TRUE_MPL.b, rel=0.25)
    assert law.gamma == pytest.approx(TRUE_MPL.gamma, rel=0.25)
    assert result.train_error < 0.006
    assert result.held_out_error is not None and result.held_out_error < 0.01
    # What matters: schedules it never saw are predicted as the true law predicts them.
    for lrs in (cosine(S), branch(2400, 600), trunk(S)):
        assert laws.final_loss(law, lrs, warmup=W) == pytest.approx(
            laws.final_loss(TRUE_MPL, lrs, warmup=W), rel=0.01
        )


def test_fit_recovers_a_tissue_law_from_its_own_noisy_curves() -> None:
    true = laws.TissueLaw(l0=0.5, a=0.8, alpha=0.5, c=0.01, lam=0.99)
    result = fit.fit_law(
        "tissue", noisy_curves(true, noise=0.003), warmup=W, lr_scale=1.0, restarts=8
    )
    assert isinstance(result.law, laws.TissueLaw)
    assert result.law.l0 == pytest.approx(0.5, rel=0.03)
    assert result.law.alpha == pytest.approx(0.5, rel=0.25)
    assert result.law.lam == pytest.approx(0.99, abs=0.005)
    assert laws.final_loss(result.law, cosine(S), warmup=W) == pytest.approx(
        laws.final_loss(true, cosine(S), warmup=W), rel=0.01
    )


def test_fit_best_prefers_the_multi_power_law_unless_clearly_worse() -> None:
    curves = noisy_curves(TRUE_MPL, noise=0.003)
    chosen, results = fit.fit_best(
        ["multiPower", "tissue"], curves, warmup=W, lr_scale=1.0, restarts=4
    )
    assert [r.law.name for r in results] == ["multiPower", "tissue"]
    assert chosen.law.name == "multiPower"
    restored = fit.FitResult.from_dict(json.loads(json.dumps(chosen.to_dict())))
    assert restored.law == chosen.law and restored.held_out_error == chosen.held_out_error


def _end_errors(law: laws.Law, curves: list[fit.Curve]) -> list[float]:
    return [
        abs(law.predict(c.lrs, c.steps[-1:], warmup=W)[0] / c.losses[-1] - 1.0)
        for c in curves
        if c.annealed
    ]


def test_the_annealed_ends_weigh_more_only_when_that_predicts_a_left_out_end_better() -> None:
    # Curves the law describes: every point weighs alike (weighting the ends would follow their
    # noise and extrapolate worse).
    described = noisy_curves(TRUE_MPL, noise=0.003, seed=2)
    assert not fit.fit_law("multiPower", described, warmup=W, lr_scale=1.0).ends_weighted
    # A constant-LR trunk the law misdescribes (drifting 30% above it by its end, as a scattered
    # trunk at a high LR does): fitted alike, the branch ends are missed; weighted, they are met.
    drifted = [
        fit.Curve(
            c.name,
            c.lrs,
            c.steps,
            tuple(
                loss * (1 + 0.3 * step / 1500) for step, loss in zip(c.steps, c.losses, strict=True)
            ),
            c.held_out_from,
        )
        if c.name == "trunk"
        else c
        for c in described
    ]
    result = fit.fit_law("multiPower", drifted, warmup=W, lr_scale=1.0, restarts=4)
    assert result.ends_weighted and result.to_dict()["endsWeighted"] is True
    weighted = max(_end_errors(result.law, drifted))
    assert weighted < 0.002
    alike = [
        fit.Curve(c.name, c.lrs, c.steps, c.losses, c.held_out_from, annealed=False)
        for c in drifted
    ]
    law = fit.fit_law("multiPower", alike, warmup=W, lr_scale=1.0, restarts=4).law
    assert max(_end_errors(law, drifted)) > 2 * weighted


def test_only_the_final_part_of_an_annealed_curve_stays_annealed() -> None:
    curve = fit.Curve("b", (1.0,) * 10, (2, 4, 6, 8), (0.4, 0.3, 0.2, 0.1), 2, annealed=True)
    fitted, held = curve.split()
    assert fitted is not None and held is not None
    assert (fitted.annealed, held.annealed) == (False, True)
    whole, nothing = fit.Curve("b", (1.0,) * 10, (2, 4), (0.4, 0.3), annealed=True).split()
    assert whole is not None and whole.annealed and nothing is None


def test_a_stall_of_the_annealed_losses_is_named() -> None:
    def ends(*losses: float) -> list[fit.Curve]:
        return [
            fit.Curve(f"b{i}", (1.0,) * 2000, (100 * (i + 1),), (loss,), annealed=True)
            for i, loss in enumerate(losses)
        ] + [fit.Curve("trunk", (1.0,) * 2000, (50, 900), (9.0, 0.01))]

    assert runner.annealed_loss_stalled(ends(0.5, 0.4, 0.3)) is None
    assert runner.annealed_loss_stalled(ends(0.5)) is None
    said = runner.annealed_loss_stalled(ends(0.5, 0.4, 0.45))
    assert said is not None and "(0.4 at step 200, 0.45 at step 300)" in said


def test_fit_refuses_too_few_points() -> None:
    curve = fit.Curve("short", tuple(trunk(200)), (160, 170, 180), (1.0, 0.9, 0.8))
    with pytest.raises(ValueError, match="3 finite points after the warm-up"):
        fit.fit_law("multiPower", [curve], warmup=W, lr_scale=1.0)


# --- the optimiser --------------------------------------------------------------------------------


def space(**overrides: Any) -> optimise.ScheduleSpace:
    options: dict[str, Any] = {
        "total_steps": S,
        "warmup": W,
        "lr_min": 0.01,
        "lr_max": 1.0,
        "floor": 0.0,
        "change_points": 6,
        **overrides,
    }
    return optimise.ScheduleSpace(**options)


def test_optimised_schedule_respects_warm_up_bounds_and_monotonicity() -> None:
    found = optimise.optimise(TRUE_MPL, space(), restarts=4, seed=0)
    lrs = found.schedule.lrs()
    peak = lrs[W]
    assert found.schedule.total_steps == S
    assert lrs[:W] == pytest.approx([peak * i / W for i in range(W)])
    assert 0.01 <= peak <= 1.0
    after = np.asarray(lrs[W:])
    assert np.all(np.diff(after) <= 1e-12), "the LR rises after the warm-up"
    last_point = found.schedule.points[-2]  # the last change point before the floor
    assert all(0.01 - 1e-12 <= p.lr <= 1.0 for p in found.schedule.points[1:-1])
    assert found.schedule.points[-1].step == S and found.schedule.points[-1].lr == 0.0
    assert np.all(after[: last_point.step - W] >= 0.01 - 1e-12)
    # The prediction reported is that of the stored schedule, and it beats the usual shapes.
    assert found.predicted == laws.final_loss(TRUE_MPL, lrs, warmup=W)
    for other in (cosine(S), branch(2400, 600)):
        assert found.predicted < laws.final_loss(TRUE_MPL, other, warmup=W)


def test_final_decay_is_at_least_the_cooldown() -> None:
    # A law with no gain from annealing wants the most LR area: the peak held, then the
    # shortest decay allowed.
    flat = laws.MultiPowerLaw(l0=0.5, a=0.8, alpha=0.5, b=1e-9, c=0.05, beta=0.6, gamma=0.6)
    found = optimise.optimise(flat, space(min_decay=600), restarts=4, seed=0)
    before_floor = found.schedule.points[-2]
    assert S - 600 - 5 <= before_floor.step <= S - 600
    # Near the top the sigmoid that keeps LRs in bounds flattens the landscape: within 5%.
    assert before_floor.lr == pytest.approx(1.0, rel=0.05)
    shaped = optimise.optimise(TRUE_MPL, space(min_decay=600), restarts=2, seed=0)
    assert shaped.schedule.points[-2].step <= S - 600


def test_free_parameterisation_stays_within_bounds() -> None:
    found = optimise.optimise(TRUE_MPL, space(monotone=False, lr_max=0.5), restarts=2, seed=3)
    assert all(0.01 - 1e-12 <= p.lr <= 0.5 + 1e-12 for p in found.schedule.points[1:-1])
    assert max(found.schedule.lrs()) <= 0.5 + 1e-12


def test_the_schedule_holds_the_trunk_exactly_until_its_decay_starts() -> None:
    hold = 1400
    found = optimise.optimise(TRUE_MPL, space(hold_from=hold, min_decay=600), restarts=4, seed=1)
    schedule = found.schedule
    # The trunk the probes trained: the same warm-up, then the peak held.
    builder = schedules.ScheduleBuilder()
    builder.set_lr(0, 0.0, "linear")
    builder.set_lr(W, 1.0)
    trunk_schedule = builder.build(S)
    start = next(p.step for p in schedule.points if p.interp == "linear" and p.step >= W)
    assert hold <= start <= S - 600 - 6
    assert [schedule.lr_at(i) for i in range(start)] == [
        trunk_schedule.lr_at(i) for i in range(start)
    ]
    assert max(schedule.lrs()) == 1.0
    assert np.all(np.diff(schedule.lrs()[start:]) <= 1e-12)
    assert schedule.points[-1].step == S and schedule.points[-1].lr == 0.0
    assert found.predicted == laws.final_loss(TRUE_MPL, schedule.lrs(), warmup=W)
    # Holding longer than the trunk is the law's choice, not forced: with a law that gains
    # nothing from annealing, the peak is held to the latest start.
    flat = laws.MultiPowerLaw(l0=0.5, a=0.8, alpha=0.5, b=1e-9, c=0.05, beta=0.6, gamma=0.6)
    latest = optimise.optimise(flat, space(hold_from=hold, min_decay=600), restarts=2, seed=0)
    decay = [p for p in latest.schedule.points if p.interp == "linear" and p.step >= W]
    assert decay[0].step >= S - 600 - 6 - 10


def test_the_decay_is_no_steeper_than_the_steepest_probe() -> None:
    # A law that rewards any drop in full wants the fastest one; the space allows no fall faster
    # than max_slope per step before the last segment (here: to 0 over 300 steps at the least).
    steep = laws.MultiPowerLaw(l0=0.5, a=0.8, alpha=0.5, b=0.4, c=50.0, beta=2.0, gamma=0.1)
    found = optimise.optimise(
        steep, space(hold_from=1400, min_decay=300, max_slope=1.0 / 300), restarts=4, seed=2
    )
    lrs = np.asarray(found.schedule.lrs())
    last = found.schedule.points[-2].step  # the last point before the final segment
    falls = -np.diff(lrs[W:last])
    # Whole-step rounding of the points moves a slope by a step's worth at most.
    assert falls.max() <= (1.0 / 300) * 1.05
    unlimited = optimise.optimise(steep, space(hold_from=1400, min_decay=300), restarts=4, seed=2)
    assert found.predicted >= unlimited.predicted


def test_schedule_space_refuses_a_trunk_past_the_latest_decay_start() -> None:
    with pytest.raises(ValueError, match=r"hold_from: the trunk's end \(2500\) must lie in"):
        space(hold_from=2500, min_decay=600)


def test_schedule_space_refuses_a_warm_up_that_leaves_no_room() -> None:
    with pytest.raises(ValueError, match="warmup: 2998 steps and a final decay of 0 leave no room"):
        space(warmup=2998)


# --- the probes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("candidates", "cost"), [(1, 0.5), (5, 1.5), (4, 3.0)])
def test_probe_plan_stays_within_its_cost(candidates: int, cost: float) -> None:
    plan = probe.make_plan(total_steps=3000, warmup=150, candidates=candidates, probe_cost=cost)
    assert plan.cost <= cost * 3000
    assert plan.cost >= 0.95 * cost * 3000 or plan.trunk_steps == 3000
    assert plan.warmup < plan.candidate_steps < plan.stops[0] < plan.trunk_steps <= 3000
    assert all(b.start + b.steps <= 2 * plan.trunk_steps for b in plan.branches)
    assert len({b.steps for b in plan.branches if b.start == plan.stops[0]}) == 2


def test_probe_plan_refuses_a_budget_too_small_naming_probe_cost() -> None:
    with pytest.raises(ValueError, match=r"probeCost: 0\.5 x 200 steps gives a trunk of"):
        probe.make_plan(total_steps=200, warmup=10, candidates=5, probe_cost=0.5)


# --- the config -----------------------------------------------------------------------------------


def test_config_defaults_keep_the_cost_within_two_and_a_half_budgets() -> None:
    config = LawConfig()
    assert config.probe_cost + (1.0 if config.verify else 0.0) <= 2.5
    assert config.parameterisation == "monotone"
    assert LawConfig.model_validate(config.model_dump(by_alias=True)) == config


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"probeCost": 5.0}, "probeCost"),
        ({"peakFactors": [1.0, -2.0]}, "peakFactors"),
        ({"changePoints": 1}, "changePoints"),
        ({"parameterisation": "wiggly"}, "parameterisation"),
        ({"law": "chinchilla"}, "law"),
        ({"huberScale": 0.0}, "huberScale"),
        ({"fitRestarts": 0}, "fitRestarts"),
        ({"verify": "yes"}, "verify"),
        ({"probeCosts": 1.0}, "probeCosts"),
    ],
)
def test_config_refuses_bad_values_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as error:
        LawConfig.model_validate(data)
    assert any(item["loc"][0] == field for item in error.value.errors())


# --- state and resume -----------------------------------------------------------------------------


class _Crash(RuntimeError):
    pass


class _CrashAt(base.NullReporter):
    """Raises once training passes ``step`` after ``events`` events of kind ``kind``."""

    def __init__(self, kind: str, events: int, step: int) -> None:
        self.kind, self.events, self.step, self.seen = kind, events, step, 0
        self.messages: list[str] = []

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        self.messages.append(message)
        self.seen += kind == self.kind

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        if self.seen >= self.events and step >= self.step:
            raise _Crash(f"killed at step {step}")


class _Events(base.NullReporter):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        self.events.append((kind, message))


SMALL = LawConfig(peak_factors=(1.0, 2.0), fit_restarts=2, optimise_restarts=2)
SMALL_S = 400


def _run(out: Path | None, reporter: base.Reporter | None = None) -> base.SearchResult:
    phases = Phases(total_steps=SMALL_S, warmup_steps=20, peak_lr=0.02)
    return runner.run_law(
        SMALL,
        "regression",
        total_steps=SMALL_S,
        lr_bounds=(2e-4, 0.2),
        seed=3,
        out_dir=out,
        reporter=reporter,
        device="cpu",
        phases=phases,
    )


@pytest.mark.slow
def test_run_resumes_mid_probe_keeping_completed_curves(tmp_path: Path) -> None:
    whole = _run(None)
    plan = whole.history[0]["plan"]
    # Killed on the trunk, after both candidates and before its first branches are done.
    crash = _CrashAt("commit", 1, plan["candidateSteps"] + 5)
    with pytest.raises(_Crash):
        _run(tmp_path, crash)
    saved = json.loads((tmp_path / law_state.STATE_FILE).read_text())
    assert [c["peak"] for c in saved["candidates"]] == [0.02, 0.04]
    kept = {c["name"]: c["points"] for c in saved["curves"]}
    assert set(kept) == {"candidate-0", "candidate-0-branch", "candidate-1", "candidate-1-branch"}
    assert saved["doneBranches"] == []
    # Only the chosen candidate's trainer is kept on disk: the trunk continues from it.
    chosen = [c["peak"] for c in saved["candidates"]].index(saved["peak"])
    assert [p.name for p in tmp_path.glob("*.pt")] == [f"law-candidate-{chosen}.pt"]

    events = _Events()
    resumed = _run(tmp_path, events)
    assert events.events[0] == ("start", "law: resumed with 4 probe curves")
    assert not any(kind == "candidate" for kind, _ in events.events)
    final = json.loads((tmp_path / law_state.STATE_FILE).read_text())
    for curve in final["curves"]:
        if curve["name"].endswith("-branch") or curve["name"] == "candidate-1":
            continue
        assert curve["points"] == kept.get(curve["name"], curve["points"])
    # Training is deterministic on CPU: the resumed search is the uninterrupted one.
    assert resumed.best_schedule.points == whole.best_schedule.points
    assert resumed.best_objective == whole.best_objective
    assert resumed.member_steps == whole.member_steps
    assert whole.member_steps <= 2.5 * SMALL_S
    assert whole.strategy == "law" and math.isfinite(whole.best_objective)
    provenance = whole.best_schedule.provenance
    assert provenance["predictedFinal"] == whole.history[3]["predictedFinal"]
    law = laws.law_from_dict(provenance["law"])
    lrs = whole.best_schedule.lrs()
    assert (
        laws.final_loss(law, lrs, warmup=provenance["lawWarmup"])
        == whole.history[3]["predictedFinal"]
    )


@pytest.mark.slow
def test_the_verification_is_the_found_schedule_trained_once_from_scratch() -> None:
    """The trunk continued into the found schedule is that schedule trained from scratch (bit
    for bit on CPU), and the cost is the probes plus the budget's steps after the trunk."""
    result = _run(None)
    plan = result.history[0]["plan"]
    verification = result.history[3]["verification"]
    assert verification["from"] == plan["trunkSteps"]
    trainer = harness.Trainer(get_workload("regression"), seed=3, device="cpu")
    schedule = result.best_schedule
    trainer.train(schedule.total_steps, schedule.lr_at)
    assert float(trainer.evaluate()["val_loss"]) == result.best_objective
    assert result.member_steps == plan_cost(plan) + SMALL_S - plan["trunkSteps"]
    assert result.member_steps <= 2.5 * SMALL_S


@pytest.mark.slow
def test_an_unstable_trunk_is_abandoned_for_the_next_best_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trunk's validation loss jumps tenfold once it holds its LR past the candidates' runs:
    it is abandoned, the other candidate's run is trained again and continues as the trunk, and
    only that trunk's curves are fitted."""
    first = _run(None)
    plan = first.history[0]["plan"]
    bad_peak = first.history[1]["trunkLR"]
    evaluate = harness.Trainer.evaluate

    def sabotaged(self: harness.Trainer) -> dict[str, float]:
        metrics = evaluate(self)
        if self.current_lr == bad_peak and self.global_step > plan["candidateSteps"]:
            return {**metrics, "val_loss": 10.0 * metrics["val_loss"]}
        return metrics

    monkeypatch.setattr(harness.Trainer, "evaluate", sabotaged)
    events = _Events()
    result = _run(tmp_path, events)
    good_peak = result.history[1]["trunkLR"]
    assert good_peak != bad_peak
    assert any("abandoned" in message for _, message in events.events)
    assert any("unstable at LR" in message for _, message in events.events)
    saved = json.loads((tmp_path / law_state.STATE_FILE).read_text())
    abandoned = [c["peak"] for c in saved["candidates"] if c.get("abandoned")]
    assert abandoned == [bad_peak]
    names = [c["name"] for c in saved["curves"]]
    bad = [c["peak"] for c in saved["candidates"]].index(bad_peak)
    assert f"abandoned-{bad}-candidate-{bad}" in names
    assert all(not c.name.startswith("abandoned") for c in runner.probe_curves(saved, 20))
    # The schedule holds the other candidate's LR, and is that schedule trained from scratch:
    # the run trained again is the candidate's, bit for bit.
    assert max(result.best_schedule.lrs()) == good_peak
    monkeypatch.setattr(harness.Trainer, "evaluate", evaluate)
    trainer = harness.Trainer(get_workload("regression"), seed=3, device="cpu")
    trainer.train(SMALL_S, result.best_schedule.lr_at)
    assert float(trainer.evaluate()["val_loss"]) == result.best_objective
    # The abandoned trunk's steps and the candidate's run trained again are counted.
    assert result.member_steps > plan_cost(plan) + SMALL_S - plan["trunkSteps"]


def plan_cost(plan: dict[str, Any]) -> int:
    """``ProbePlan.cost`` from the plan as the result's history stores it."""
    each = plan["candidateSteps"] + plan["candidateBranch"]
    rest = plan["trunkSteps"] - plan["candidateSteps"]
    return int(plan["candidates"] * each + rest + sum(b["steps"] for b in plan["branches"]))


def test_resume_refuses_a_directory_of_another_search(tmp_path: Path) -> None:
    state = {"format": law_state.STATE_FORMAT, "config": {}, "workload": "charlm"}
    (tmp_path / law_state.STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ValueError, match="holds a law search with config="):
        _run(tmp_path)


def test_state_round_trips_through_its_file(tmp_path: Path) -> None:
    plan = probe.make_plan(total_steps=400, warmup=20, candidates=2, probe_cost=1.5)
    options: dict[str, Any] = {
        "workload": "regression",
        "total_steps": 400,
        "lr_bounds": (2e-4, 0.2),
        "seed": 3,
        "plan": plan,
    }
    state = law_state.fresh(SMALL, **options)
    assert not law_state.resume(tmp_path, law_state.fresh(SMALL, **options))
    state["curves"].append({"name": "candidate-0", "schedule": {}, "points": [[30, 0.5]]})
    law_state.save(tmp_path, state)
    loaded = law_state.fresh(SMALL, **options)
    assert law_state.resume(tmp_path, loaded)
    assert loaded == state
    with pytest.raises(ValueError, match="holds a law search with seed=3, not 4"):
        law_state.resume(tmp_path, law_state.fresh(SMALL, **{**options, "seed": 4}))
