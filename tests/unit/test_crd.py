"""The CRDs: committed files match the models, the schemas are structural and bounded, the CEL
rules point at real fields, and the schema accepts what the models accept."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from schedsearch.api import crd
from schedsearch.api.spec import builtin_workload_names

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "operator" / "crds"
EXAMPLES = REPO / "examples"
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]

Schema = dict[str, Any]


def test_committed_crds_match_the_models() -> None:
    stale = crd.stale_files(CRD_DIR)
    assert not stale, (
        f"{stale} differ from the models: run python -m schedsearch.api.crd --out operator/crds"
    )


def test_check_mode_reports_stale_files(tmp_path: Path) -> None:
    assert crd.main(["--out", str(tmp_path), "--check"]) == 1
    assert crd.main(["--out", str(tmp_path)]) == 0
    assert crd.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "lrschedules.yaml").write_text("edited by hand\n")
    assert crd.main(["--out", str(tmp_path), "--check"]) == 1


CRDS = {"schedulesearches": crd.schedulesearch_crd(), "lrschedules": crd.lrschedule_crd()}


def root_schema(name: str) -> Schema:
    return CRDS[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def walk(node: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("name", sorted(CRDS))
def test_schema_is_structural(name: str) -> None:
    for path, node in walk(root_schema(name)):
        where = path or "<root>"
        if node.get("x-kubernetes-int-or-string"):
            assert node.get("anyOf") == INT_OR_STRING, where
            assert "type" not in node, where
            continue
        assert "type" in node, f"{where}: no type"
        for key in ("$ref", "anyOf", "oneOf", "allOf", "not", "const", "title", "$defs"):
            assert key not in node, f"{where}: {key}"
        assert node.get("additionalProperties") is not False, where
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if key in node:
                assert node[key] is True, f"{where}: {key} must be a boolean (OpenAPI v3.0)"
        if "default" in node:
            assert not isinstance(node["default"], dict), f"{where}: object default"


@pytest.mark.parametrize("name", sorted(CRDS))
def test_strings_lists_and_maps_are_bounded_for_cel_costs(name: str) -> None:
    for path, node in walk(root_schema(name)):
        if path in ("", ".apiVersion", ".kind"):
            continue  # the API server bounds these itself
        kind = node.get("type")
        if kind == "string":
            assert {"maxLength", "enum", "format"} & node.keys(), f"{path}: unbounded string"
        elif kind == "array":
            assert "maxItems" in node, f"{path}: unbounded list"
        elif kind == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{path}: unbounded map"


def resolve_field_path(node: Schema, field_path: str) -> Schema | None:
    for part in field_path.lstrip(".").split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return node


@pytest.mark.parametrize("name", sorted(CRDS))
def test_cel_rules_have_messages_and_real_field_paths(name: str) -> None:
    rules = 0
    for path, node in walk(root_schema(name)):
        for rule in node.get("x-kubernetes-validations", []):
            rules += 1
            assert rule["message"] and rule["rule"], path
            if "fieldPath" in rule:
                target = resolve_field_path(node, rule["fieldPath"])
                assert target is not None, f"{path}: fieldPath {rule['fieldPath']} not in schema"
    assert rules > 0


def test_search_crd_carries_the_cross_field_rules() -> None:
    schema = root_schema("schedulesearches")
    spec = schema["properties"]["spec"]
    paths = {r.get("fieldPath") for r in spec["x-kubernetes-validations"]}
    assert {
        ".baseSchedule.peakLR",
        ".strategy.pbt.perturbationInterval",
        ".strategy.autolrs.tau",
        ".strategy.hdet.syncInterval",
        ".strategy.hdet.warmupSteps",
        ".strategy.autolrs.tauPrime",
        ".strategy.law.probeCost",
        ".checkpoints",
    } <= paths
    strategy_rules = [r["rule"] for r in spec["properties"]["strategy"]["x-kubernetes-validations"]]
    assert any("has(self.autolrs)" in r and "has(self.law)" in r for r in strategy_rules)
    workload = spec["properties"]["workload"]
    assert any(
        "has(self.builtin) != has(self.entrypoint)" in r["rule"]
        for r in workload["x-kubernetes-validations"]
    )
    assert workload["properties"]["builtin"]["enum"] == builtin_workload_names()
    bounds = spec["properties"]["lrBounds"]["x-kubernetes-validations"]
    assert bounds == [
        {
            "rule": "self.max > self.min",
            "message": "lrBounds.max must be greater than lrBounds.min",
            "fieldPath": ".max",
        }
    ]


def test_status_subresource_printer_columns_and_names() -> None:
    search = CRDS["schedulesearches"]["spec"]
    version = search["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")] == [
        "Strategy",
        "Phase",
        "Best",
        "Steps",
        "Budget",
        "Age",
    ]
    best = next(c for c in version["additionalPrinterColumns"] if c["name"] == "Best")
    assert best["type"] == "string"  # a formatted string: a number column prints every digit
    schema = root_schema("schedulesearches")
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".metadata"):
            continue
        assert resolve_field_path(schema, column["jsonPath"]) is not None, column
    assert search["names"]["shortNames"] and CRDS["lrschedules"]["spec"]["names"]["shortNames"]
    status = schema["properties"]["status"]["properties"]
    assert status["members"]["maxItems"] == 64
    assert status["best"]["nullable"] is True
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


@pytest.mark.parametrize("name", sorted(CRDS))
def test_every_field_has_a_description_for_kubectl_explain(name: str) -> None:
    undescribed = [
        f"{path}.{field}"
        for path, node in walk(root_schema(name))
        for field, sub in node.get("properties", {}).items()
        if not sub.get("description", "").strip()
        and f"{path}.{field}" != ".metadata"
        and not path.startswith(".metadata")  # kubectl explains metadata from ObjectMeta
    ]
    assert not undescribed, undescribed


def test_the_printed_columns_are_written_with_the_status() -> None:
    status = root_schema("schedulesearches")["properties"]["status"]
    assert status["properties"]["stepsDone"]["type"] == "integer"
    best = status["properties"]["best"]
    assert best["properties"]["objectiveRounded"]["type"] == "string"
    assert "objectiveRounded" not in best.get("required", [])  # computed, not asked of writers


def test_provenance_keeps_unknown_fields_and_nothing_else_does() -> None:
    preserved = [
        path
        for name in CRDS
        for path, node in walk(root_schema(name))
        if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert preserved == [".spec.provenance"]


def as_json_schema(node: Schema) -> Schema:
    """OpenAPI v3.0 -> JSON Schema draft 4 (whose exclusiveMinimum is also a boolean)."""
    out = copy.deepcopy(node)
    for _, sub in walk(out):
        if sub.pop("nullable", False) and "type" in sub:
            sub["type"] = [sub["type"], "null"]
    return out


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_crd_schema_accepts_the_examples(path: Path) -> None:
    validator = jsonschema.Draft4Validator(as_json_schema(root_schema("schedulesearches")))
    for document in yaml.safe_load_all(path.read_text()):
        errors = [e.message for e in validator.iter_errors(document)]
        assert not errors, errors


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("population", 1),
        ("quantileFraction", 0.9),
        ("perturbationInterval", 0),
    ],
)
def test_the_crd_schema_refuses_out_of_range_fields(field: str, value: Any) -> None:
    validator = jsonschema.Draft4Validator(as_json_schema(root_schema("schedulesearches")))
    document = yaml.safe_load((EXAMPLES / "digits-pbt.yaml").read_text())
    assert validator.is_valid(document)
    document["spec"]["strategy"]["pbt"][field] = value
    assert not validator.is_valid(document)


@pytest.mark.parametrize("name", ["x" * 64, "Digits", "a.b"])
def test_the_crd_schema_refuses_names_that_cannot_label_pods(name: str) -> None:
    validator = jsonschema.Draft4Validator(as_json_schema(root_schema("schedulesearches")))
    document = yaml.safe_load((EXAMPLES / "digits-pbt.yaml").read_text())
    document["metadata"]["name"] = name
    assert not validator.is_valid(document)
