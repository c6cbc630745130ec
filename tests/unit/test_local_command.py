"""``python -m schedsearch.trainers search``: refusals before training, and real short searches."""

from __future__ import annotations

import io
import json

import pytest

from schedsearch.trainers import local, schedules
from schedsearch.trainers.strategies import base

DIGITS = ["search", "--workload", "digits-cnn", "--steps", "100"]


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["search", "--strategy", "pbt", "--workload", "nope", "--steps", "10"], "workload"),
        ([*DIGITS, "--strategy", "pbt", "--lr-min", "0.1", "--lr-max", "0.01"], "lrBounds"),
        (["search", "--strategy", "pbt", "--workload", "digits-cnn", "--steps", "0"], "steps"),
        ([*DIGITS, "--strategy", "pbt", "--set", "population=1"], "strategy.pbt.population"),
        ([*DIGITS, "--strategy", "pbt", "--set", "popSize=4"], "strategy.pbt.popSize"),
        ([*DIGITS, "--strategy", "autolrs", "--set", "tauPrime=5000"], "strategy.autolrs"),
        ([*DIGITS, "--strategy", "autolrs", "--set", "tau"], "set"),
        ([*DIGITS, "--strategy", "autolrs", "--base", "family=cosine"], "base"),
        ([*DIGITS, "--strategy", "hdet", "--base", "family=cosin"], "base.family"),
        ([*DIGITS, "--strategy", "pbt", "--device", "tpu"], "device"),
    ],
)
def test_bad_arguments_exit_2_naming_the_field(
    argv: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert local.main(argv) == local.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}"), err


def test_unknown_field_lists_the_allowed_ones(capsys: pytest.CaptureFixture[str]) -> None:
    local.main([*DIGITS, "--strategy", "pbt", "--set", "popSize=4"])
    assert "allowed: population, perturbationInterval" in capsys.readouterr().err


def test_values_are_json_when_they_parse() -> None:
    pairs = ["a=1e-3", "b=[1.2,0.8]", "c=true", "d=cosine"]
    assert local.parse_pairs(pairs, "set") == {"a": 1e-3, "b": [1.2, 0.8], "c": True, "d": "cosine"}


def test_result_prints_as_a_table_of_change_points_then_a_summary() -> None:
    found = schedules.Schedule(
        (schedules.ChangePoint(0, 0.05), schedules.ChangePoint(60, 0.01)), 100
    )
    result = base.SearchResult("pbt", "digits-cnn", found, 0.0731, 3, 900, wall_seconds=12.3)
    lines = local.format_result(result).splitlines()
    assert lines[0].split() == ["step", "lr", "interp"]
    assert lines[1].split() == ["0", "0.05", "constant"]
    assert lines[2].split() == ["60", "0.01", "constant"]
    assert "member steps   900" in lines and "best member    3" in lines


def _search(argv: list[str]) -> dict:
    out = io.StringIO()
    assert local.main([*argv, "--json"], stdout=out) == 0
    return json.loads(out.getvalue())


@pytest.mark.slow
def test_autolrs_search_on_digits_finds_a_schedule() -> None:
    argv = ["search", "--strategy", "autolrs", "--workload", "digits-cnn", "--steps", "300"]
    argv += ["--set", "tau=100", "--set", "tauPrime=10", "--set", "tauMax=400"]
    argv += ["--set", "candidates=4", "--set", "valForecastFromStage=0", "--device", "cpu"]
    result = _search(argv)
    found = schedules.Schedule.from_dict(result["bestSchedule"])
    assert found.total_steps == 300 and len(found.points) >= 1
    # Probes are extra: 4 of 10 steps in stage 0, 4 of 20 in stage 1 (a retried stage adds more).
    assert result["memberSteps"] >= 300 + 4 * 10 + 4 * 20
    assert result["bestObjective"] < 1.0  # chance level on ten classes is 2.3


@pytest.mark.slow
def test_pbt_search_on_digits_finds_a_schedule() -> None:
    argv = ["search", "--strategy", "pbt", "--workload", "digits-cnn", "--steps", "200"]
    argv += ["--set", "population=4", "--set", "perturbationInterval=50", "--device", "cpu"]
    argv += ["--lr-min", "1e-3", "--lr-max", "0.3"]
    result = _search(argv)
    found = schedules.Schedule.from_dict(result["bestSchedule"])
    assert found.total_steps == 200
    assert result["memberSteps"] >= 4 * 200
    assert result["bestObjective"] < 1.0
