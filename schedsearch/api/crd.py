"""CustomResourceDefinitions generated from the spec models (``python -m schedsearch.api.crd``).

Pydantic writes JSON Schema (draft 2020-12); Kubernetes wants a *structural* OpenAPI v3 schema:
every node typed, no ``$ref``, no unions except int-or-string, boolean ``exclusiveMinimum``,
``nullable`` rather than a null branch, and bounded strings and lists so the CEL rules carried by
the models (``x-kubernetes-validations``) stay within the API server's cost budget. ``structural``
does that translation; the CRD files in ``operator/crds`` are its output and a unit test fails when
they drift from the models.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from schedsearch.api import spec as api
from schedsearch.api.fields import DNS1123_LABEL_PATTERN
from schedsearch.trainers.strategies import registry

HEADER = (
    "# Generated from schedsearch/api/spec.py by "
    "`python -m schedsearch.api.crd --out operator/crds`. Do not edit.\n"
)
DEFAULT_MAX_LENGTH = 1024
DEFAULT_MAX_ITEMS = 256
DEFAULT_MAX_PROPERTIES = 64
CATEGORY = "schedsearch"
# JSON Schema keys a structural schema cannot carry (or that we never emit on purpose).
_FORBIDDEN = ("$ref", "allOf", "oneOf", "not", "prefixItems", "patternProperties", "$defs")
_DROPPED = ("title", "readOnly")

Schema = dict[str, Any]


class SchemaError(ValueError):
    """A model cannot be expressed as a structural schema; the message names the field."""


def structural(
    model: type[BaseModel], *, nullable: bool, written_by_programs: bool = False
) -> Schema:
    """The structural schema of ``model``. With ``nullable`` an optional field accepts null
    (status writers may clear a value); without it null is pruned by the API server, which the
    models read as "absent" - the same meaning, and what ``has()`` in CEL rules expects.

    ``written_by_programs`` (the status): the schema of what the models *write*, so computed
    fields (kubectl's formatted columns) are kept by the API server instead of pruned."""
    raw = model.model_json_schema(
        by_alias=True, mode="serialization" if written_by_programs else "validation"
    )
    defs = raw.pop("$defs", {})
    return _convert(raw, defs, nullable=nullable, path=model.__name__)


def _convert(node: Schema, defs: Schema, *, nullable: bool, path: str) -> Schema:
    node = _inline(node, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        node = _without_null(node, defs, nullable=nullable, path=path)
    out: Schema = {}
    for key, value in node.items():
        _convert_key(out, key, value, defs, nullable=nullable, path=path)
    if "required" in out:
        # A computed field is always written, but never required from a writer.
        derived = _read_only(node, defs)
        out["required"] = [name for name in out["required"] if name not in derived]
        if not out["required"]:
            del out["required"]
    _bound_sizes(out)
    if "type" not in out and not _untyped_allowed(out):
        raise SchemaError(f"{path}: no type (structural schemas need one on every node)")
    return out


def _convert_key(
    out: Schema, key: str, value: Any, defs: Schema, *, nullable: bool, path: str
) -> None:
    if key in _DROPPED or (key == "default" and (value is None or isinstance(value, dict))):
        return
    if key in _FORBIDDEN:
        raise SchemaError(f"{path}: {key} is not allowed in a structural schema")
    if key in ("exclusiveMinimum", "exclusiveMaximum"):
        # Draft 2020-12 carries the bound; OpenAPI v3.0 a flag next to minimum/maximum.
        out[key.replace("exclusiveM", "m")] = value
        out[key] = True
    elif key == "const":
        out["enum"] = [value]
    elif key == "properties":
        out[key] = {
            name: _convert(sub, defs, nullable=nullable, path=f"{path}.{name}")
            for name, sub in value.items()
        }
    elif key == "items":
        out[key] = _convert(value, defs, nullable=nullable, path=f"{path}[]")
    elif key == "additionalProperties":
        if value is True:
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif isinstance(value, dict):
            out[key] = _convert(value, defs, nullable=nullable, path=f"{path}{{}}")
        # False: unknown fields are pruned by the API server (structural schemas forbid false).
    else:
        out[key] = value


def _read_only(node: Schema, defs: Schema) -> set[str]:
    properties = node.get("properties", {})
    return {name for name, sub in properties.items() if _inline(sub, defs).get("readOnly")}


def _inline(node: Schema, defs: Schema) -> Schema:
    """Replace a ``$ref`` by its definition; keys next to the ref (description, CEL rules) win
    or, for rules, are appended."""
    if "$ref" not in node:
        return node
    target = dict(defs[node["$ref"].rsplit("/", 1)[-1]])
    for key, value in node.items():
        if key == "$ref":
            continue
        if key == "x-kubernetes-validations":
            target[key] = [*target.get(key, []), *value]
        else:
            target[key] = value
    return target


def _without_null(node: Schema, defs: Schema, *, nullable: bool, path: str) -> Schema:
    branches = node["anyOf"]
    rest = [b for b in branches if b.get("type") != "null"]
    if len(rest) != 1 or len(rest) == len(branches):
        raise SchemaError(f"{path}: a union of {len(branches)} types has no structural form")
    merged = {**_inline(rest[0], defs), **{k: v for k, v in node.items() if k != "anyOf"}}
    if nullable:
        merged["nullable"] = True
    return merged


def _untyped_allowed(node: Schema) -> bool:
    return bool(
        node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    )


def _bound_sizes(node: Schema) -> None:
    """Give every string, list and map an upper bound: CEL cost estimates multiply by them."""
    kind = node.get("type")
    if kind == "string" and not {"maxLength", "enum", "format"} & node.keys():
        node["maxLength"] = DEFAULT_MAX_LENGTH
    elif kind == "array":
        node.setdefault("maxItems", DEFAULT_MAX_ITEMS)
    elif kind == "object" and "additionalProperties" in node:
        node.setdefault("maxProperties", DEFAULT_MAX_PROPERTIES)


# --- the two CRDs -------------------------------------------------------------------------------


def _root_schema(
    model: type[BaseModel], spec: Schema, status: Schema | None, metadata: Schema
) -> Schema:
    properties: Schema = {
        "apiVersion": {"type": "string", "description": f"{api.API_VERSION}"},
        "kind": {"type": "string", "description": model.__name__},
        "metadata": metadata,  # explained by the API server's ObjectMeta docs
        "spec": spec,
    }
    if status is not None:
        properties["status"] = status
    root: Schema = {
        "type": "object",
        "description": (model.__doc__ or "").strip(),
        "properties": properties,
        "required": ["spec"],
    }
    return root


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    schema: Schema,
    columns: list[dict[str, Any]],
    status_subresource: bool,
) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": api.API_VERSION_NAME,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "additionalPrinterColumns": columns,
    }
    if status_subresource:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{api.API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "schedsearch"},
        },
        "spec": {
            "group": api.API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": [CATEGORY],
            },
            "versions": [version],
        },
    }


def _column(name: str, kind: str, path: str, description: str, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": name,
        "type": kind,
        "jsonPath": path,
        "description": description,
    }
    if priority:
        column["priority"] = priority
    return column


_AGE = _column("Age", "date", ".metadata.creationTimestamp", "Time since creation.")


def schedulesearch_crd() -> dict[str, Any]:
    """The CRD of ``ScheduleSearch`` (with the status subresource)."""
    # Structural schemas may restrict metadata.name (and nothing else in metadata). The name
    # labels the search's pods, so it must fit a label value.
    metadata = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL_PATTERN}
        },
    }
    schema = _root_schema(
        api.ScheduleSearch,
        structural(api.ScheduleSearchSpec, nullable=False),
        structural(api.ScheduleSearchStatus, nullable=True, written_by_programs=True),
        metadata,
    )
    columns = [
        _column("Strategy", "string", ".status.strategy", ", ".join(registry.NAMES) + "."),
        _column("Workload", "string", ".spec.workload.builtin", "Built-in workload.", 1),
        _column("Phase", "string", ".status.phase", "Pending, Running, Succeeded or Failed."),
        _column(
            "Best",
            "string",
            ".status.best.objectiveRounded",
            f"Best objective so far ({api.OBJECTIVE_DIGITS} significant digits).",
        ),
        _column("Steps", "integer", ".status.stepsDone", "Steps done by the slowest member."),
        _column("Budget", "integer", ".spec.budget.steps", "Steps each member trains."),
        _column("Cost", "integer", ".status.memberSteps", "Member-steps spent.", 1),
        _AGE,
    ]
    return _crd(
        kind=api.SEARCH_KIND,
        plural="schedulesearches",
        short_names=["ss", "ssearch"],
        schema=schema,
        columns=columns,
        status_subresource=True,
    )


def lrschedule_crd() -> dict[str, Any]:
    """The CRD of ``LRSchedule`` (a stored schedule; no status)."""
    schema = _root_schema(
        api.LRSchedule,
        structural(api.LRScheduleSpec, nullable=False),
        None,
        {"type": "object"},
    )
    columns = [
        _column("Search", "string", ".spec.provenance.search", "The search that found it."),
        _column("Strategy", "string", ".spec.provenance.strategy", ", ".join(registry.NAMES) + "."),
        _column("Objective", "number", ".spec.provenance.objective.value", "Its objective."),
        _column("Steps", "integer", ".spec.totalSteps", "Training steps it spans."),
        _AGE,
    ]
    return _crd(
        kind=api.SCHEDULE_KIND,
        plural="lrschedules",
        short_names=["lrs"],
        schema=schema,
        columns=columns,
        status_subresource=False,
    )


# libyaml's emitter writes the same text as the pure-Python one, several times faster.
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def render(crd: dict[str, Any]) -> str:
    """A CRD as the YAML text committed under ``operator/crds``."""
    return HEADER + yaml.dump(crd, Dumper=_Dumper, sort_keys=True, width=100, allow_unicode=True)


def generate() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    return dict(_generated())


@functools.cache
def _generated() -> tuple[tuple[str, str], ...]:
    # The models do not change within a process; tests and --check ask more than once.
    return (
        ("schedulesearches.yaml", render(schedulesearch_crd())),
        ("lrschedules.yaml", render(lrschedule_crd())),
    )


def stale_files(out: Path) -> list[str]:
    """Names of the CRD files under ``out`` that are missing or differ from the models."""
    stale = []
    for name, text in generate().items():
        path = out / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schedsearch.api.crd",
        description="Write the CRDs generated from the models.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory, e.g. operator/crds")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files are stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"{args.out / name} is stale: run python -m schedsearch.api.crd --out {args.out}")
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in generate().items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
