"""Schedules as data: exact evaluation, validation messages, lossless JSON, builders."""

from __future__ import annotations

import json
import math
import random

import pytest

from schedsearch.trainers.schedules import (
    INTERPS,
    ChangePoint,
    Schedule,
    ScheduleBuilder,
    concat,
    shape_value,
)


def two_point(interp: str, start: float = 1.0, target: float = 0.25, span: int = 100) -> Schedule:
    return Schedule((ChangePoint(0, start, interp), ChangePoint(span, target)), span)


@pytest.mark.parametrize(
    ("interp", "expected_mid"),
    [
        ("constant", 1.0),
        ("linear", 0.625),
        ("cosine", 0.625),
        ("exponential", 0.5),  # geometric mean of 1 and 0.25
        ("sqrt", 0.25 + 0.75 * (1 - math.sqrt(0.5))),
        ("rex", 0.25 + 0.75 * 0.5 / 0.75),
    ],
)
def test_interp_shapes_hit_both_ends_and_the_middle(interp: str, expected_mid: float) -> None:
    schedule = two_point(interp)
    assert schedule.lr_at(0) == 1.0
    assert schedule.lr_at(50) == pytest.approx(expected_mid, rel=1e-12)
    assert schedule.lr_at(100) == 0.25
    assert schedule.lr_at(10**9) == 0.25  # the last point holds forever


def test_cosine_quarter_point() -> None:
    schedule = two_point("cosine", 1.0, 0.0)
    assert schedule.lr_at(25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)


def test_lrs_and_evaluation_are_deterministic() -> None:
    schedule = two_point("cosine")
    assert schedule.lrs() == schedule.lrs(100) == [schedule.lr_at(i) for i in range(100)]
    assert schedule.lrs(5) == schedule.lrs(5)


def test_negative_step_is_refused() -> None:
    with pytest.raises(ValueError, match="step must be >= 0"):
        two_point("linear").lr_at(-1)


def test_end_lr_makes_a_jump_and_span_holds_the_target() -> None:
    points = (
        ChangePoint(0, 1.0, "linear", end_lr=0.0, span=10),
        ChangePoint(20, 1.0, "constant"),
    )
    schedule = Schedule(points, 30)
    assert schedule.lr_at(5) == 0.5
    assert schedule.lr_at(10) == 0.0
    assert schedule.lr_at(19) == 0.0  # past its span the segment holds its target
    assert schedule.lr_at(20) == 1.0


def test_last_point_may_move_to_its_own_target() -> None:
    schedule = Schedule((ChangePoint(0, 1.0, "linear", end_lr=0.5, span=10),), 20)
    assert schedule.lr_at(5) == 0.75
    assert schedule.lr_at(15) == 0.5


@pytest.mark.parametrize(
    ("points", "total", "message"),
    [
        ((), 10, "points: a schedule needs"),
        ((ChangePoint(1, 0.1),), 10, r"points\[0\]\.step: the first point must be at step 0"),
        (
            (ChangePoint(0, 0.1), ChangePoint(5, 0.1), ChangePoint(5, 0.2)),
            10,
            r"points\[2\]\.step: steps must be strictly increasing",
        ),
        ((ChangePoint(0, 0.1), ChangePoint(3, -0.1)), 10, r"points\[1\]\.lr: must be finite"),
        ((ChangePoint(0, math.nan),), 10, r"points\[0\]\.lr: must be finite"),
        ((ChangePoint(0, math.inf),), 10, r"points\[0\]\.lr: must be finite"),
        ((ChangePoint(0, 0.1, "step"),), 10, r"points\[0\]\.interp: 'step' is not one of constant"),
        (
            (ChangePoint(0, 0.1), ChangePoint(20, 0.1)),
            10,
            r"points\[1\]\.step: 20 is past totalSteps",
        ),
        ((ChangePoint(0, 0.1),), 0, "totalSteps: must be an integer >= 1"),
        (
            (ChangePoint(0, 0.0, "exponential"), ChangePoint(5, 0.1)),
            10,
            r"points\[0\]: an exponential segment needs start and target LR > 0",
        ),
        ((ChangePoint(0, 0.1, "constant", end_lr=0.2),), 10, r"points\[0\]: endLR/span have no"),
        (
            (ChangePoint(0, 0.1, "linear", span=0), ChangePoint(5, 0.2)),
            10,
            r"points\[0\]\.span: must be an integer >= 1",
        ),
        (
            (ChangePoint(0, 0.1, "linear", end_lr=0.2),),
            10,
            r"points\[0\]: the last point needs both",
        ),
        ((ChangePoint(0.5, 0.1),), 10, r"points\[0\]\.step: must be an integer"),  # type: ignore[arg-type]
    ],
)
def test_validation_names_the_bad_field(
    points: tuple[ChangePoint, ...], total: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule(points, total)


def awkward_floats(rng: random.Random, n: int) -> list[float]:
    specials = [0.0, 5e-324, 1e-300, 0.1 + 0.2, 1 / 3, 2.0**-30, 1.7976931348623157e308 / 1e10]
    return specials + [10 ** rng.uniform(-8, 1) for _ in range(n)]


def test_json_round_trip_is_exact_for_awkward_floats() -> None:
    rng = random.Random(7)
    lrs = awkward_floats(rng, 40)
    interps = ["constant", "linear", "cosine", "sqrt", "rex"]
    points = tuple(ChangePoint(10 * i, lr, interps[i % len(interps)]) for i, lr in enumerate(lrs))
    schedule = Schedule(points, 10 * len(lrs), {"strategy": "pbt", "member": 3, "note": "ü"})
    text = schedule.to_json()
    again = Schedule.from_json(text)
    assert again == schedule
    assert [p.lr for p in again.points] == lrs
    assert again.lrs() == schedule.lrs()
    assert Schedule.from_dict(json.loads(json.dumps(schedule.to_dict()))) == schedule
    assert again.to_json() == text


def test_json_round_trip_keeps_targets_and_spans() -> None:
    schedule = Schedule(
        (ChangePoint(0, 0.5, "cosine", end_lr=1e-5, span=7), ChangePoint(9, 0.5)), 9
    )
    data = schedule.to_dict()
    assert data["points"][0] == {"step": 0, "lr": 0.5, "interp": "cosine", "endLR": 1e-5, "span": 7}
    assert Schedule.from_json(schedule.to_json()) == schedule


def test_from_dict_names_unknown_and_missing_fields() -> None:
    with pytest.raises(ValueError, match=r"points\[1\]: unknown field\(s\) \['learningRate'\]"):
        Schedule.from_dict(
            {"totalSteps": 5, "points": [{"step": 0, "lr": 0.1}, {"step": 2, "learningRate": 1}]}
        )
    with pytest.raises(ValueError, match=r"points\[0\]\.lr: missing"):
        Schedule.from_dict({"totalSteps": 5, "points": [{"step": 0}]})
    with pytest.raises(ValueError, match="format: 'other/v9' is not supported"):
        Schedule.from_dict({"format": "other/v9", "totalSteps": 5, "points": []})
    with pytest.raises(ValueError, match=r"schedule: unknown field\(s\) \['steps'\]"):
        Schedule.from_dict({"totalSteps": 5, "points": [], "steps": 3})


def test_to_json_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        Schedule.constant(0.1, 5, {"callback": object()}).to_json()


def test_provenance_is_copied_not_shared() -> None:
    meta = {"strategy": "autolrs"}
    schedule = Schedule.constant(0.1, 5, meta)
    meta["strategy"] = "changed"
    assert schedule.provenance == {"strategy": "autolrs"}
    assert schedule.with_provenance(stage=2).provenance == {"strategy": "autolrs", "stage": 2}


def test_scaled_multiplies_every_lr() -> None:
    schedule = two_point("cosine", 1.0, 0.5).scaled(0.5)
    assert schedule.lr_at(0) == 0.5
    assert schedule.lr_at(100) == 0.25


def test_sample_covers_the_range_and_shows_jumps() -> None:
    schedule = Schedule((ChangePoint(0, 1.0), ChangePoint(37, 0.1)), 100)
    samples = schedule.sample(5)
    steps = [s for s, _ in samples]
    assert steps[0] == 0 and steps[-1] == 99
    assert (36, 1.0) in samples and (37, 0.1) in samples
    assert steps == sorted(set(steps))
    assert [s for s, _ in schedule.sample(5, include_change_points=False)] == [0, 25, 50, 74, 99]


def test_builder_compresses_equal_runs() -> None:
    builder = ScheduleBuilder()
    for step in range(0, 1000, 100):
        builder.set_lr(step, 0.1 if step < 500 else 0.01)
    schedule = builder.build(1000, {"strategy": "autolrs"})
    assert schedule.points == (ChangePoint(0, 0.1), ChangePoint(500, 0.01))
    assert schedule.provenance == {"strategy": "autolrs"}


def test_builder_last_call_at_a_step_wins_and_order_is_enforced() -> None:
    builder = ScheduleBuilder().set_lr(0, 0.1).set_lr(10, 0.2).set_lr(10, 0.3)
    assert builder.points == (ChangePoint(0, 0.1), ChangePoint(10, 0.3))
    with pytest.raises(ValueError, match="step: 5 is before the last recorded step 10"):
        builder.set_lr(5, 0.4)
    with pytest.raises(ValueError, match="lr: must be finite"):
        builder.set_lr(20, math.nan)


def test_builder_truncate_rewinds_a_lineage() -> None:
    source = ScheduleBuilder().set_lr(0, 0.1).set_lr(100, 0.2).set_lr(200, 0.3)
    inherited = source.copy().truncate(150).set_lr(150, 0.05)
    assert inherited.points == (ChangePoint(0, 0.1), ChangePoint(100, 0.2), ChangePoint(150, 0.05))
    assert source.last_step == 200  # the copy did not touch the source


def test_appending_a_shape_cut_short_replays_it_exactly() -> None:
    cosine = Schedule((ChangePoint(0, 1.0, "cosine"), ChangePoint(1000, 0.0)), 1000)
    builder = ScheduleBuilder().set_lr(0, 0.3).append_segment(50, cosine).set_lr(450, 0.2)
    schedule = builder.build(600)
    assert schedule.lrs(50) == [0.3] * 50
    assert schedule.lrs(450)[50:] == cosine.lrs(400)
    assert schedule.lrs(600)[450:] == [0.2] * 150


def test_append_segment_copies_only_points_before_n_steps() -> None:
    two_stage = Schedule((ChangePoint(0, 0.5), ChangePoint(10, 0.1)), 20)
    schedule = ScheduleBuilder().append_segment(0, two_stage, n_steps=10).build(20)
    assert schedule.points == (ChangePoint(0, 0.5),)


def test_concat_follows_each_schedule_for_its_length() -> None:
    warm = Schedule((ChangePoint(0, 0.0, "linear"), ChangePoint(10, 1.0)), 10)
    decay = Schedule((ChangePoint(0, 1.0, "rex"), ChangePoint(90, 0.0)), 90)
    restart = Schedule((ChangePoint(0, 1.0, "cosine"), ChangePoint(50, 0.01)), 50)
    joined = concat([warm, decay, restart], {"family": "custom"})
    assert joined.total_steps == 150
    assert joined.lrs() == warm.lrs() + decay.lrs() + restart.lrs()
    assert joined.lr_at(150) == 0.01
    # only the jump from decay to restart needs an explicit target; the rest is canonical
    explicit = [p for p in joined.points if p.end_lr is not None or p.span is not None]
    assert explicit == [ChangePoint(10, 1.0, "rex", end_lr=0.0, span=90)]
    assert Schedule.from_json(joined.to_json()).lrs() == joined.lrs()


def test_every_interp_kind_is_covered_by_shape_value() -> None:
    for interp in INTERPS:
        assert shape_value(interp, 0.5, 0.25, 0.0) == 0.5
        expected_end = 0.5 if interp == "constant" else 0.25
        assert shape_value(interp, 0.5, 0.25, 1.0) == expected_end
    with pytest.raises(ValueError, match="unknown interp"):
        shape_value("staircase", 1.0, 0.0, 0.5)
