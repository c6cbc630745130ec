"""Baseline families: the formulas of the brief, exact replay, and config validation."""

from __future__ import annotations

import math
from typing import Any

import pydantic
import pytest

from schedsearch.trainers.config import FAMILIES, BaseScheduleConfig, camel_alias
from schedsearch.trainers.families import build_schedule
from schedsearch.trainers.schedules import Schedule

PEAK, MIN, TOTAL = 0.4, 0.004, 1000


def build(total: int = TOTAL, **fields: Any) -> Schedule:
    return build_schedule(BaseScheduleConfig.model_validate(fields), total)


def cosine_value(peak: float, low: float, p: float) -> float:
    return low + (peak - low) * (1 + math.cos(math.pi * p)) / 2


def test_linear_with_warmup() -> None:
    s = build(family="linear", peakLR=PEAK, minLR=MIN, warmupSteps=100)
    assert s.lr_at(0) == 0.0
    assert s.lr_at(25) == pytest.approx(PEAK * 25 / 100)
    assert s.lr_at(100) == PEAK
    assert s.lr_at(550) == pytest.approx(MIN + (PEAK - MIN) * 0.5)
    assert s.lr_at(TOTAL) == MIN


def test_cosine_without_warmup() -> None:
    s = build(family="cosine", peakLR=PEAK, minLR=MIN)
    assert s.lr_at(0) == PEAK
    for step in (100, 250, 500, 900):
        assert s.lr_at(step) == pytest.approx(cosine_value(PEAK, MIN, step / TOTAL))
    assert s.lr_at(TOTAL) == MIN


def test_rex() -> None:
    s = build(family="rex", peakLR=PEAK, minLR=MIN)
    for p in (0.1, 0.5, 0.9):
        step = round(p * TOTAL)
        assert s.lr_at(step) == pytest.approx(MIN + (PEAK - MIN) * (1 - p) / (1 - p / 2))
    assert s.lr_at(TOTAL) == MIN


def test_onecycle_follows_torch_defaults() -> None:
    s = build(family="onecycle", peakLR=PEAK)
    start = PEAK / 25
    assert s.lr_at(0) == start
    assert s.lr_at(150) == pytest.approx((start + PEAK) / 2)  # cosine midpoint of the rise
    assert s.lr_at(300) == PEAK  # 30% of the steps
    assert s.lr_at(TOTAL) == start / 1e4
    assert max(s.lrs()) == PEAK


def test_onecycle_rise_and_floor_can_be_set() -> None:
    s = build(family="onecycle", peakLR=PEAK, minLR=MIN, warmupSteps=100)
    assert s.lr_at(100) == PEAK
    assert s.lr_at(TOTAL) == MIN


@pytest.mark.parametrize(
    ("shape", "at_quarter"),
    [("linear", 0.75), ("cosine", (1 + math.cos(math.pi / 4)) / 2), ("sqrt", 0.5)],
)
def test_wsd_decays_over_the_last_steps(shape: str, at_quarter: float) -> None:
    s = build(
        family="wsd", peakLR=PEAK, minLR=MIN, warmupSteps=50, decaySteps=200, decayShape=shape
    )
    assert s.lr_at(50) == PEAK
    assert s.lr_at(799) == PEAK
    assert s.lr_at(800) == PEAK
    assert s.lr_at(850) == pytest.approx(MIN + (PEAK - MIN) * at_quarter)
    assert s.lr_at(TOTAL) == MIN


def test_wsd_default_decay_is_a_fifth_of_the_steps_after_warmup() -> None:
    s = build(family="wsd", peakLR=PEAK, warmupSteps=100)
    assert s.lr_at(820) == PEAK
    assert s.lr_at(821) < PEAK


def test_wsd_without_a_stable_phase() -> None:
    s = build(family="wsd", peakLR=PEAK, warmupSteps=200, decaySteps=800)
    assert s.lr_at(200) == PEAK
    assert s.lr_at(600) == pytest.approx(PEAK / 2)


def test_sgdr_restarts_with_growing_cycles() -> None:
    s = build(family="sgdr", peakLR=PEAK, minLR=MIN, t0=100, tMult=2)
    for restart in (0, 100, 300, 700):
        assert s.lr_at(restart) == PEAK
    assert s.lr_at(99) == pytest.approx(cosine_value(PEAK, MIN, 99 / 100))
    assert s.lr_at(500) == pytest.approx(cosine_value(PEAK, MIN, 200 / 400))
    # the 4th cycle (800 steps from 700) is cut by the budget and keeps its own shape
    assert s.lr_at(900) == pytest.approx(cosine_value(PEAK, MIN, 200 / 800))
    assert s.lr_at(TOTAL) == pytest.approx(cosine_value(PEAK, MIN, 300 / 800))
    assert s.lr_at(TOTAL + 50) == s.lr_at(TOTAL)


def test_sgdr_with_equal_cycles_ends_at_the_floor() -> None:
    s = build(family="sgdr", peakLR=PEAK, minLR=MIN, t0=250)
    assert [s.lr_at(k * 250) for k in range(4)] == [PEAK] * 4
    assert s.lr_at(TOTAL) == MIN


def test_constant() -> None:
    s = build(family="constant", peakLR=PEAK, warmupSteps=10)
    assert s.lr_at(5) == pytest.approx(PEAK / 2)
    assert set(s.lrs()[10:]) == {PEAK}


def test_infinite_has_cooldown_constant_and_anneal() -> None:
    s = build(
        family="infinite",
        peakLR=PEAK,
        minLR=MIN,
        warmupSteps=100,
        cooldownSteps=200,
        constantLR=0.1,
        decaySteps=100,
    )
    assert s.lr_at(100) == PEAK
    assert s.lr_at(200) == pytest.approx(cosine_value(PEAK, 0.1, 0.5))
    assert set(s.lrs()[300:901]) == {0.1}
    assert s.lr_at(950) == pytest.approx((0.1 + MIN) / 2)
    assert s.lr_at(TOTAL) == MIN


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_replays_exactly_from_json(family: str) -> None:
    fields: dict[str, Any] = {"family": family, "peakLR": PEAK, "warmupSteps": 40}
    if family != "constant":
        fields["minLR"] = MIN
    if family == "sgdr":
        fields.update(t0=90, tMult=1.5)
    s = build(**fields)
    again = Schedule.from_json(s.to_json())
    assert again == s
    assert again.lrs(TOTAL + 5) == s.lrs(TOTAL + 5)
    assert s.provenance["family"] == family
    assert s.provenance["config"]["peakLR"] == PEAK
    assert all(0 <= lr <= PEAK for lr in s.lrs())
    assert len(s.points) <= (12 if family == "sgdr" else 5)  # exact kinds, no dense sampling


def test_aliases_and_python_names_are_both_accepted() -> None:
    by_alias = BaseScheduleConfig.model_validate({"family": "cosine", "peakLR": 0.1, "minLR": 0.01})
    by_name = BaseScheduleConfig(family="cosine", peak_lr=0.1, min_lr=0.01)
    assert by_alias == by_name
    assert by_name.model_dump(by_alias=True, exclude_none=True) == {
        "family": "cosine",
        "peakLR": 0.1,
        "minLR": 0.01,
        "warmupSteps": 0,
    }
    assert camel_alias("cooldown_steps") == "cooldownSteps"
    assert camel_alias("t_mult") == "tMult"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"family": "cosine", "peakLR": 0}, "peakLR"),
        ({"family": "cosine", "peakLR": float("nan")}, "peakLR"),
        ({"family": "cosine", "peakLR": 0.1, "warmup": 5}, "warmup"),
        ({"family": "triangle", "peakLR": 0.1}, "family"),
        ({"family": "cosine", "peakLR": 0.1, "minLR": 0.1}, "minLR: must be below peakLR"),
        ({"family": "cosine", "peakLR": 0.1, "decaySteps": 10}, "decaySteps: applies only to"),
        ({"family": "wsd", "peakLR": 0.1, "decayShape": "exp"}, "decayShape"),
        ({"family": "wsd", "peakLR": 0.1, "t0": 10}, "t0: applies only to family sgdr"),
        ({"family": "sgdr", "peakLR": 0.1}, "t0: family sgdr needs"),
        ({"family": "sgdr", "peakLR": 0.1, "t0": 5, "tMult": 0.5}, "tMult"),
        ({"family": "constant", "peakLR": 0.1, "minLR": 0.01}, "minLR: does not apply"),
        ({"family": "infinite", "peakLR": 0.1, "constantLR": 0.5}, "constantLR: must lie"),
        ({"family": "cosine", "peakLR": 0.1, "warmupSteps": -1}, "warmupSteps"),
    ],
)
def test_bad_config_names_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        BaseScheduleConfig.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "total", "message"),
    [
        ({"family": "cosine", "peakLR": 0.1, "warmupSteps": 100}, 100, "warmupSteps"),
        ({"family": "onecycle", "peakLR": 0.1, "warmupSteps": 100}, 100, "warmupSteps"),
        ({"family": "wsd", "peakLR": 0.1, "warmupSteps": 50, "decaySteps": 60}, 100, "decaySteps"),
        ({"family": "infinite", "peakLR": 0.1, "cooldownSteps": 90}, 100, "cooldownSteps"),
        ({"family": "sgdr", "peakLR": 0.1, "t0": 1}, 5000, "t0: more than 1000 restarts"),
        ({"family": "cosine", "peakLR": 0.1}, 0, "totalSteps"),
    ],
)
def test_budget_errors_name_the_field(fields: dict[str, Any], total: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(total, **fields)
