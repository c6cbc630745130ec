"""The ScheduleSearch spec: every bad spec is refused with the field path and a useful message."""

from __future__ import annotations

import copy
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from schedsearch.api import (
    LRSchedule,
    LRScheduleSpec,
    Provenance,
    ScheduleSearch,
    SpecError,
    load_specs,
    parse_spec,
)
from schedsearch.api.fields import parse_quantity
from schedsearch.api.spec import Target, builtin_workload_names
from schedsearch.trainers.schedules import ChangePoint, Schedule

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
DELETE = object()


def base_spec() -> dict[str, Any]:
    """A valid PBT spec on the first built-in workload; each case changes one thing."""
    return {
        "apiVersion": "schedsearch.io/v1alpha1",
        "kind": "ScheduleSearch",
        "metadata": {"name": "case", "namespace": "ml"},
        "spec": {
            "workload": {"builtin": builtin_workload_names()[0]},
            "objective": {"metric": "val_loss", "mode": "min"},
            "budget": {"steps": 1000},
            "lrBounds": {"min": 1.0e-4, "max": 1.0},
            "baseSchedule": {"family": "cosine", "peakLR": 0.05, "warmupSteps": 50},
            "strategy": {"pbt": {"population": 4, "perturbationInterval": 100}},
            "resources": {"cpu": "1", "memory": "2Gi"},
            "checkpoints": {"persistentVolumeClaim": "ckpt"},
        },
    }


def changed(changes: dict[str, Any]) -> dict[str, Any]:
    """``base_spec()`` with dotted paths set to values (``DELETE`` removes the key)."""
    doc = base_spec()
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return doc


def problems_of(doc: dict[str, Any], target: Target = "cluster") -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(doc, target=target)
    return [str(p) for p in caught.value.problems]


AUTOLRS = {"spec.strategy": {"autolrs": {"tau": 100, "tauPrime": 20}}}
HDET = {"spec.strategy": {"hdet": {"replicas": 3, "syncInterval": 100}}}

# (case id, changes to the valid spec, expected field path, expected words in the message)
BAD_SPECS: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "reversed LR range",
        {"spec.lrBounds": {"min": 0.1, "max": 0.001}},
        "spec.lrBounds.max",
        "must be greater than min (0.001 <= 0.1)",
    ),
    ("non-positive LR bound", {"spec.lrBounds.min": 0}, "spec.lrBounds.min", "greater than 0"),
    ("NaN LR bound", {"spec.lrBounds.max": math.nan}, "spec.lrBounds.max", "finite number"),
    ("non-positive peak LR", {"spec.baseSchedule.peakLR": -0.1}, "spec.baseSchedule.peakLR", "0"),
    (
        "peak LR outside bounds",
        {"spec.baseSchedule.peakLR": 2.0},
        "spec.baseSchedule.peakLR",
        "outside lrBounds [0.0001, 1]",
    ),
    (
        "minLR above peakLR",
        {"spec.baseSchedule.minLR": 0.1},
        "spec.baseSchedule.minLR",
        "must be below peakLR",
    ),
    (
        "warm-up as long as the budget",
        {"spec.baseSchedule.warmupSteps": 1000},
        "spec.baseSchedule.warmupSteps",
        "leaves no steps after warm-up",
    ),
    (
        "unknown family",
        {"spec.baseSchedule.family": "cosin"},
        "spec.baseSchedule.family",
        "'cosine'",
    ),
    (
        "tauPrime >= tau",
        {"spec.strategy": {"autolrs": {"tau": 100, "tauPrime": 100}}},
        "spec.strategy.autolrs.tauPrime",
        "must be smaller than tau (100 >= 100)",
    ),
    (
        "tauMax < tau",
        {"spec.strategy": {"autolrs": {"tau": 100, "tauPrime": 20, "tauMax": 50}}},
        "spec.strategy.autolrs.tauMax",
        "must be at least tau (50 < 100)",
    ),
    (
        "negative perturbation factor",
        {"spec.strategy.pbt.perturbationFactors": [1.2, -1]},
        "spec.strategy.pbt.perturbationFactors[1]",
        "greater than 0",
    ),
    (
        "population beyond the state ConfigMap's room",
        {"spec.strategy.pbt.population": 100000},
        "spec.strategy.pbt.population",
        "less than or equal to 256",
    ),
    ("LR too large to train", {"spec.lrBounds.max": 1e308}, "spec.lrBounds.max", "1000"),
    ("budget as a string", {"spec.budget.steps": "3000"}, "spec.budget.steps", "valid integer"),
    ("LR bound as a string", {"spec.lrBounds.min": "0.001"}, "spec.lrBounds.min", "valid number"),
    ("flag as a string", {"spec.strategy.pbt.synch": "true"}, "spec.strategy.pbt.synch", "bool"),
    (
        "decaySteps on a cosine family",
        {"spec.baseSchedule.decaySteps": 100},
        "spec.baseSchedule.decaySteps",
        "applies only to family wsd or infinite",
    ),
    (
        "sgdr without t0",
        {"spec.baseSchedule": {"family": "sgdr", "peakLR": 0.05}},
        "spec.baseSchedule.t0",
        "family sgdr needs",
    ),
    (
        "WSD decay longer than the budget",
        {"spec.baseSchedule": {"family": "wsd", "peakLR": 0.05, "decaySteps": 2000}},
        "spec.baseSchedule.decaySteps",
        "exceed total steps 1000",
    ),
    (
        "sgdr with more than 1000 restarts",
        {
            "spec.budget.steps": 5000,
            "spec.baseSchedule": {"family": "sgdr", "peakLR": 0.05, "t0": 1, "tMult": 2.0},
        },
        "spec.baseSchedule.t0",
        "at least 1/1000 of the steps after warm-up",
    ),
    (
        "fractional CPU as a number",
        {"spec.resources.cpu": 0.5},
        "spec.resources.cpu",
        'write 0.5 as a string ("0.5"',
    ),
    ("negative CPU", {"spec.resources.cpu": -1}, "spec.resources.cpu", "not a Kubernetes quantity"),
    ("zero memory", {"spec.resources.memory": 0}, "spec.resources.memory", "greater than zero"),
    (
        "zero emptyDir size",
        {"spec.strategy": {"autolrs": {}}, "spec.checkpoints": {"emptyDir": {"sizeLimit": 0}}},
        "spec.checkpoints.emptyDir.sizeLimit",
        "greater than zero",
    ),
    (
        "AutoLRS tau beyond the budget",
        {"spec.strategy": {"autolrs": {"tau": 2000, "tauPrime": 100}}},
        "spec.strategy.autolrs.tau",
        "must not exceed budget.steps (2000 > 1000)",
    ),
    (
        "population < 2",
        {"spec.strategy.pbt.population": 1},
        "spec.strategy.pbt.population",
        "Input should be greater than or equal to 2",
    ),
    (
        "quantile above 0.5",
        {"spec.strategy.pbt.quantileFraction": 0.75},
        "spec.strategy.pbt.quantileFraction",
        "less than or equal to 0.5",
    ),
    (
        "negative quantile",
        {"spec.strategy.pbt.quantileFraction": -0.1},
        "spec.strategy.pbt.quantileFraction",
        "greater than or equal to 0",
    ),
    (
        "perturbation interval not below the budget",
        {"spec.strategy.pbt.perturbationInterval": 1000},
        "spec.strategy.pbt.perturbationInterval",
        "must be smaller than budget.steps (1000 >= 1000)",
    ),
    (
        "PBT on an emptyDir",
        {"spec.checkpoints": {"emptyDir": {}}},
        "spec.checkpoints",
        "set checkpoints.persistentVolumeClaim",
    ),
    (
        "PBT with the default checkpoints",
        {"spec.checkpoints": DELETE},
        "spec.checkpoints",
        "PBT runs one pod per member (4)",
    ),
    (
        "more failed members allowed than members",
        {"spec.failurePolicy": {"maxFailedMembers": 4}},
        "spec.failurePolicy.maxFailedMembers",
        "smaller than strategy.pbt.population (4 >= 4)",
    ),
    (
        "replicas < 2",
        {"spec.strategy": {"hdet": {"replicas": 1}}},
        "spec.strategy.hdet.replicas",
        "greater than or equal to 2",
    ),
    (
        "HDET sync interval beyond the budget",
        {"spec.strategy": {"hdet": {"syncInterval": 5000}}},
        "spec.strategy.hdet.syncInterval",
        "must not exceed budget.steps (5000 > 1000)",
    ),
    (
        "HDET warm-up as long as the budget",
        {"spec.strategy": {"hdet": {"syncInterval": 100, "warmupSteps": 1000}}},
        "spec.strategy.hdet.warmupSteps",
        "auto-LR would never start",
    ),
    (
        "two strategies",
        {"spec.strategy": {"autolrs": {}, "hdet": {}}},
        "spec.strategy",
        "exactly one of autolrs, pbt, hdet, law (got autolrs, hdet)",
    ),
    (
        "no strategy",
        {"spec.strategy": {}},
        "spec.strategy",
        "exactly one of autolrs, pbt, hdet, law",
    ),
    (
        "unknown strategy",
        {"spec.strategy": {"sgd": {}}},
        "spec.strategy.sgd",
        "unknown field; allowed: autolrs, pbt, hdet, law",
    ),
    (
        "unknown workload",
        {"spec.workload.builtin": "imagenet-resnet50"},
        "spec.workload.builtin",
        "unknown built-in workload 'imagenet-resnet50'; allowed: "
        + ", ".join(builtin_workload_names()),
    ),
    (
        "builtin and entrypoint",
        {"spec.workload.entrypoint": "mypkg.train:workload", "spec.workload.image": "me/t:1"},
        "spec.workload",
        "exactly one of builtin",
    ),
    (
        "entrypoint without image",
        {"spec.workload": {"entrypoint": "mypkg.train:workload"}},
        "spec.workload.image",
        "required with entrypoint",
    ),
    (
        "malformed entrypoint",
        {"spec.workload": {"entrypoint": "mypkg/train.py", "image": "me/t:1"}},
        "spec.workload.entrypoint",
        "should match pattern",
    ),
    (
        "bad quantity",
        {"spec.resources.memory": "4 GB"},
        "spec.resources.memory",
        "'4 GB' is not a Kubernetes quantity",
    ),
    (
        "zero CPU",
        {"spec.resources.cpu": "0m"},
        "spec.resources.cpu",
        "must be greater than zero",
    ),
    ("negative GPU count", {"spec.resources.gpu": -1}, "spec.resources.gpu", "greater than or"),
    (
        "bad name",
        {"metadata.name": "Digits_PBT"},
        "metadata.name",
        "'Digits_PBT' is not a valid DNS-1123 label",
    ),
    ("name too long", {"metadata.name": "a" * 64}, "metadata.name", "at most 63 characters"),
    ("zero budget", {"spec.budget.steps": 0}, "spec.budget.steps", "greater than 0"),
    ("missing budget", {"spec.budget": DELETE}, "spec.budget", "required"),
    (
        "objective mode",
        {"spec.objective.mode": "median"},
        "spec.objective.mode",
        "Input should be 'min' or 'max'",
    ),
    (
        "unknown field",
        {"spec.lrBound": {"min": 1e-4, "max": 1.0}},
        "spec.lrBound",
        "unknown field; allowed: workload, objective, budget, lrBounds",
    ),
    (
        "toleration operator",
        {"spec.scheduling": {"tolerations": [{"key": "gpu", "operator": "Maybe"}]}},
        "spec.scheduling.tolerations[0].operator",
        "'Exists' or 'Equal'",
    ),
    (
        "wrong kind",
        {"kind": "LRSchedule"},
        "kind",
        "Input should be 'ScheduleSearch'",
    ),
]


@pytest.mark.parametrize(
    ("changes", "path", "words"),
    [case[1:] for case in BAD_SPECS],
    ids=[case[0] for case in BAD_SPECS],
)
def test_bad_spec_is_refused_naming_the_field(
    changes: dict[str, Any], path: str, words: str
) -> None:
    problems = problems_of(changed(changes))
    matching = [p for p in problems if p.startswith(f"{path}: ")]
    assert matching, f"no problem at {path}; got {problems}"
    assert any(words in p for p in matching), problems


def test_the_valid_base_spec_of_the_table_passes() -> None:
    # Otherwise every case above would fail for the same unrelated reason.
    search = parse_spec(base_spec())
    assert search.spec.strategy_name == "pbt"
    assert parse_spec(changed(AUTOLRS | {"spec.checkpoints": DELETE})).spec.strategy_name == (
        "autolrs"
    )
    assert parse_spec(changed(HDET)).spec.strategy_name == "hdet"


def test_message_line_format_is_path_colon_message() -> None:
    problems = problems_of(changed({"spec.strategy.pbt.population": 1}))
    assert problems == ["spec.strategy.pbt.population: Input should be greater than or equal to 2"]


def test_every_problem_is_reported_not_only_the_first() -> None:
    problems = problems_of(
        changed(
            {
                "metadata.name": "Bad_Name",
                "spec.resources.cpu": "lots",
                "spec.strategy.pbt.population": 0,
            }
        )
    )
    paths = sorted(p.split(": ")[0] for p in problems)
    assert paths == ["metadata.name", "spec.resources.cpu", "spec.strategy.pbt.population"]


def test_several_cross_field_problems_are_reported_together() -> None:
    problems = problems_of(
        changed(
            {
                "spec.strategy.pbt.perturbationInterval": 2000,
                "spec.checkpoints": {"emptyDir": {}},
            }
        )
    )
    paths = sorted(p.split(": ")[0] for p in problems)
    assert paths == ["spec.checkpoints", "spec.strategy.pbt.perturbationInterval"]


def test_cross_field_problems_are_reported_with_field_problems() -> None:
    # A field error used to hide every cross-field problem until it was fixed.
    problems = problems_of(
        changed(
            {
                "spec.resources.cpu": "0",
                "spec.baseSchedule.warmupSteps": 5000,
                "spec.checkpoints": {"emptyDir": {}},
                "spec.workload": {"entrypoint": "mypkg.train:workload"},
            }
        )
    )
    paths = sorted(p.split(": ")[0] for p in problems)
    assert paths == [
        "spec.baseSchedule.warmupSteps",
        "spec.checkpoints",
        "spec.resources.cpu",
        "spec.workload.image",
    ]


def test_defaults_and_camel_case_round_trip() -> None:
    search = parse_spec(changed({"spec.resources": {"cpu": 2, "memory": 1.0}}))
    assert search.spec.resources.cpu == "2"
    assert search.spec.resources.memory == "1"
    assert search.spec.failure_policy.max_member_restarts == 3
    wire = search.to_wire()
    assert "lrBounds" in wire["spec"] and "lr_bounds" not in wire["spec"]
    assert parse_spec(wire) == search


def test_from_object_ignores_server_managed_metadata() -> None:
    obj = base_spec()
    obj["metadata"].update(
        uid="0b1c", resourceVersion="7", generation=2, managedFields=[], creationTimestamp="x"
    )
    search = ScheduleSearch.from_object(obj)
    assert search.metadata.generation == 2
    with pytest.raises(SpecError):
        parse_spec(obj)  # a spec file may not carry them (typos there must not pass silently)


def test_image_and_claim_are_required_on_the_cluster_only() -> None:
    doc = changed(
        {"spec.workload": {"entrypoint": "mypkg.train:workload"}, "spec.checkpoints": DELETE}
    )
    assert sorted(p.split(": ")[0] for p in problems_of(doc)) == [
        "spec.checkpoints",
        "spec.workload.image",
    ]
    assert parse_spec(doc, target="local").spec.workload.image is None
    assert parse_spec(doc).spec.strategy_name == "pbt"  # the local engine's default


def test_base_schedule_problems_are_reported_together() -> None:
    problems = problems_of(
        changed({"spec.baseSchedule": {"family": "cosine", "peakLR": 0.05, "minLR": 0.1, "t0": 5}})
    )
    paths = sorted(p.split(": ")[0] for p in problems)
    assert paths == ["spec.baseSchedule.minLR", "spec.baseSchedule.t0"]


def test_status_carries_the_formatted_best_and_the_steps_done() -> None:
    search = parse_spec(base_spec())
    status = {
        "phase": "Running",
        "members": [{"id": 0, "step": 300}, {"id": 1, "step": 250}],
        "best": {"objective": 0.029723016545176506, "member": 0, "step": 250, "schedule": "x"},
    }
    wire = ScheduleSearch.model_validate({**search.to_wire(), "status": status}).to_wire()
    assert wire["status"]["best"]["objectiveRounded"] == "0.02972"
    assert wire["status"]["stepsDone"] == 250
    assert ScheduleSearch.model_validate(wire).to_wire() == wire  # read back as written


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Decimal("0.5")), ("2", Decimal(2)), ("4Gi", Decimal(4 * 2**30)), ("1e3", 1000)],
)
def test_quantities_parse_like_kubernetes(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_multi_document_files_report_the_document(tmp_path: Path) -> None:
    good = yaml.safe_dump(base_spec())
    bad = yaml.safe_dump(changed({"metadata.name": "other", "spec.budget.steps": -5}))
    path = tmp_path / "two.yaml"
    path.write_text(good + "---\n" + bad, encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_specs(path)
    assert caught.value.lines() == [
        f"{path}: document 2: spec.budget.steps: Input should be greater than 0"
    ]


def test_duplicate_names_in_one_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(base_spec()) + "---\n" + yaml.safe_dump(base_spec()))
    with pytest.raises(SpecError, match="duplicate name 'case'"):
        load_specs(path)


def test_unreadable_and_invalid_yaml_are_problems_not_crashes(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_specs(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_specs(broken)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    for search in load_specs(path):
        assert search.name == path.stem
        search.spec.base_schedule_for_budget()


def test_lrschedule_wraps_a_schedule_exactly() -> None:
    schedule = Schedule(
        (ChangePoint(0, 0.0, "linear"), ChangePoint(10, 0.1, "cosine"), ChangePoint(100, 0.001)),
        120,
        {"family": "cosine"},
    )
    provenance = Provenance(search="s", strategy="pbt", member=3)
    spec = LRScheduleSpec.from_schedule(schedule, provenance)
    replayed = LRSchedule.model_validate(
        {"metadata": {"name": "s-best"}, "spec": spec.to_wire()}
    ).spec.to_schedule()
    assert replayed.points == schedule.points
    assert [replayed.lr_at(s) for s in range(130)] == [schedule.lr_at(s) for s in range(130)]
    assert replayed.provenance["family"] == "cosine"  # extra provenance keys are kept
    assert replayed.provenance["member"] == 3


def test_lrschedule_refuses_unordered_points() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        LRScheduleSpec.model_validate(
            {"totalSteps": 10, "points": [{"step": 0, "lr": 0.1}, {"step": 0, "lr": 0.2}]}
        )
