"""Admission parity: ``schedsearch validate`` and the API server accept and refuse the same specs.

Every example (good and bad) and a generated corpus of specs (the classic mistakes, every number
of a valid spec replaced by a wrong value, every schedule family with every optional field, the
budget's edges) go through both paths: the models with the cluster's checks, and
``kubectl apply --dry-run=server`` of all of them in one batch on the test cluster. A spec one
path accepts and the other refuses is a disagreement; there must be none.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from schedsearch.api import SpecError, parse_spec
from schedsearch.trainers.config import FAMILIES
from tests.cluster import harness

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JsonObj = dict[str, Any]

BASES: dict[str, JsonObj] = {
    "pbt": {
        "workload": {"builtin": "digits-mlp"},
        "budget": {"steps": 1000},
        "lrBounds": {"min": 1e-4, "max": 1.0},
        "baseSchedule": {"family": "cosine", "peakLR": 0.05, "warmupSteps": 50},
        "strategy": {"pbt": {"population": 4, "perturbationInterval": 100}},
        "resources": {"cpu": "1", "memory": "1Gi", "gpu": 0},
        "checkpoints": {"persistentVolumeClaim": "ckpt"},
        "failurePolicy": {"maxMemberRestarts": 3, "maxFailedMembers": 1},
    },
    "autolrs": {
        "workload": {"builtin": "digits-mlp"},
        "budget": {"steps": 1000},
        "lrBounds": {"min": 1e-4, "max": 1.0},
        "baseSchedule": {"family": "wsd", "peakLR": 0.05, "decaySteps": 200},
        "strategy": {"autolrs": {"tau": 200, "tauPrime": 20, "tauMax": 400, "candidates": 3}},
        "checkpoints": {"emptyDir": {"sizeLimit": "1Gi"}},
        "seed": 7,
    },
    "hdet": {
        "workload": {"entrypoint": "mypkg.train:workload", "image": "me/trainer:1"},
        "budget": {"steps": 1000},
        "lrBounds": {"min": 1e-4, "max": 1.0},
        "baseSchedule": {"family": "sgdr", "peakLR": 0.05, "t0": 100, "tMult": 2.0},
        "strategy": {"hdet": {"replicas": 2, "syncInterval": 100, "alpha": 0.1, "lambda": 0.5}},
    },
}

# The mistakes that reached the controller before the CRD carried every check, and their kin.
CLASSIC: list[tuple[str, dict[str, Any]]] = [
    ("pbt", {"strategy.pbt.perturbationFactors": [-1]}),
    ("pbt", {"strategy.pbt.perturbationFactors": [0, -1]}),
    ("pbt", {"strategy.pbt.perturbationFactors": [1.2, 11]}),
    ("pbt", {"resources.cpu": "0"}),
    ("pbt", {"resources.cpu": -1}),
    ("pbt", {"resources.cpu": "-1"}),
    ("pbt", {"resources.cpu": 0.5}),
    ("pbt", {"resources.cpu": "0.5"}),
    ("pbt", {"resources.cpu": "500m"}),
    ("pbt", {"resources.cpu": "0m"}),
    ("pbt", {"resources.memory": 0}),
    ("pbt", {"resources.memory": "4 GB"}),
    ("pbt", {"baseSchedule.minLR": 0.1}),
    ("pbt", {"baseSchedule.decaySteps": 100}),
    ("pbt", {"baseSchedule": {"family": "sgdr", "peakLR": 0.05}}),
    ("pbt", {"baseSchedule": {"family": "wsd", "peakLR": 0.05, "decaySteps": 2000}}),
    ("autolrs", {"checkpoints.emptyDir.sizeLimit": 0}),
    ("autolrs", {"checkpoints.emptyDir.sizeLimit": "0"}),
    ("pbt", {"budget.steps": "3000"}),
    ("pbt", {"lrBounds.min": "0.001"}),
    ("pbt", {"strategy.pbt.population": 100000}),
    ("pbt", {"strategy.pbt.population": 256}),
    ("pbt", {"lrBounds.max": 1e308}),
    ("pbt", {"lrBounds.max": 1000}),
    ("pbt", {"strategy.pbt.synch": "true"}),
    ("pbt", {"checkpoints": {"emptyDir": {}}}),
    ("hdet", {"workload": {"entrypoint": "mypkg.train:workload"}}),
    ("hdet", {"strategy.hdet.replicas": 1000}),
    ("autolrs", {"strategy.autolrs.tauPrime": 200}),
    ("autolrs", {"strategy.autolrs.tauMax": 100}),
    ("hdet", {"baseSchedule.t0": 1}),
    ("hdet", {"baseSchedule.tMult": 1e6}),
]

OPTIONAL_SCHEDULE_FIELDS: dict[str, Any] = {
    "decaySteps": 100,
    "decayShape": "sqrt",
    "t0": 100,
    "tMult": 2.0,
    "cooldownSteps": 100,
    "constantLR": 0.01,
}
WRONG_NUMBERS: list[Any] = [-1, 0, "7", 10**12, 1e308, 2.5, True]


def with_changes(base: JsonObj, changes: dict[str, Any]) -> JsonObj:
    spec = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = copy.deepcopy(value)
    return spec


def numeric_leaves(node: Any, path: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from numeric_leaves(value, f"{path}.{key}" if path else key)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path


def schedule_cases() -> Iterator[JsonObj]:
    """Every family with each optional field, minLR and warm-up around their limits, and
    budgets around the default phase lengths."""
    base = BASES["autolrs"]
    for family in FAMILIES:
        schedule = {"family": family, "peakLR": 0.05, **({"t0": 100} if family == "sgdr" else {})}
        for field, value in OPTIONAL_SCHEDULE_FIELDS.items():
            yield with_changes(base, {"baseSchedule": {**schedule, field: value}})
        for min_lr in (0, 0.01, 0.05, 0.1):
            yield with_changes(base, {"baseSchedule": {**schedule, "minLR": min_lr}})
        for warmup in (999, 1000, 5000):
            yield with_changes(base, {"baseSchedule": {**schedule, "warmupSteps": warmup}})
        for steps in (1, 2, 3, 6):
            changes = {"baseSchedule": schedule, "budget.steps": steps}
            yield with_changes(base, {**changes, "strategy": {"hdet": {"syncInterval": 1}}})
    for decay, cooldown, warmup in [(999, 1, 0), (500, 500, 0), (500, 500, 1), (1, 1, 998)]:
        infinite = {"family": "infinite", "peakLR": 0.05, "warmupSteps": warmup}
        yield with_changes(base, {"baseSchedule": {**infinite, "decaySteps": decay}})
        yield with_changes(
            base, {"baseSchedule": {**infinite, "decaySteps": decay, "cooldownSteps": cooldown}}
        )
    for t0, steps in [(1, 1000), (1, 1001), (2, 5000), (5, 5000)]:
        sgdr = {"family": "sgdr", "peakLR": 0.05, "t0": t0, "tMult": 1.5}
        yield with_changes(base, {"baseSchedule": sgdr, "budget.steps": steps})


def example_specs() -> Iterator[JsonObj]:
    for path in sorted(EXAMPLES.glob("*.yaml")) + sorted((EXAMPLES / "bad").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and isinstance(document.get("spec"), dict):
                yield document["spec"]


def corpus() -> list[JsonObj]:
    specs = list(example_specs())
    specs += [with_changes(BASES[kind], changes) for kind, changes in CLASSIC]
    for base in BASES.values():
        specs.append(copy.deepcopy(base))
        for leaf in numeric_leaves(base):
            specs += [with_changes(base, {leaf: value}) for value in WRONG_NUMBERS]
    specs += list(schedule_cases())
    return specs


def manifests() -> list[JsonObj]:
    return [
        {
            "apiVersion": "schedsearch.io/v1alpha1",
            "kind": "ScheduleSearch",
            "metadata": {"name": f"case-{index:04d}"},
            "spec": spec,
        }
        for index, spec in enumerate(corpus())
    ]


def accepted_by_the_models(manifest: JsonObj) -> bool:
    try:
        parse_spec(manifest, target="cluster")
    except SpecError:
        return False
    return True


def accepted_by_the_api_server(
    cluster: harness.Cluster, namespace: str, items: list[JsonObj]
) -> set[str]:
    """Names of the objects a server-side dry run accepts. A stream of documents, not a List:
    kubectl validates a List on the client and refuses all of it for one bad item."""
    stream = "\n---\n".join(json.dumps(item) for item in items)
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-o", "name", "-f", "-",
        input=stream, check=False, timeout=300,
    )  # fmt: skip
    assert "Error from server" in result.stderr, result.stderr  # the server judged them
    return {line.rsplit("/", 1)[-1] for line in result.stdout.split()}


def test_the_corpus_has_both_kinds_of_spec() -> None:
    # The parity test below means something only if the corpus holds many of each.
    verdicts = [accepted_by_the_models(m) for m in manifests()]
    assert len(verdicts) > 300
    assert sum(verdicts) > 40 and verdicts.count(False) > 200


def test_validate_and_the_api_server_agree_on_every_spec(
    k8s_cluster: harness.Cluster, namespace: str, crds: None
) -> None:
    items = manifests()
    by_api = accepted_by_the_api_server(k8s_cluster, namespace, items)
    disagreements = []
    for item in items:
        name = item["metadata"]["name"]
        models, api = accepted_by_the_models(item), name in by_api
        if models != api:
            verdict = (
                "validate accepts, the API server refuses"
                if models
                else ("validate refuses, the API server accepts")
            )
            disagreements.append(f"{name}: {verdict}: {json.dumps(item['spec'])}")
    assert not disagreements, "\n".join(disagreements)
