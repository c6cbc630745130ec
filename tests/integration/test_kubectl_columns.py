"""What kubectl shows of a search: the printed columns (BEST rounded, STEPS of the BUDGET) from a
status written as the controller writes it, and a description for every field in explain."""

from __future__ import annotations

import pytest

from schedsearch.api.spec import BestResult, MemberSummary, ScheduleSearchStatus
from tests.cluster import harness
from tests.integration.controller_harness import apply, search_manifest, search_path

pytestmark = pytest.mark.cluster


def test_get_prints_the_best_rounded_and_the_steps_of_the_budget(
    k8s_cluster: harness.Cluster, namespace: str, crds: None
) -> None:
    apply(k8s_cluster, namespace, search_manifest("columns", "pbt"))
    status = ScheduleSearchStatus(
        phase="Running",
        strategy="pbt",
        members=[MemberSummary(id=0, step=90), MemberSummary(id=1, step=60)],
        best=BestResult(objective=0.029723016545176506, member=0, step=60, schedule="columns-best"),
    )
    # The controller writes the status as the model dumps it (controller/status.py: wire).
    body = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=False)}
    k8s_cluster.rest.merge_patch(search_path(namespace, "columns") + "/status", body)
    table = k8s_cluster.kubectl("get", "schedulesearches", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "STRATEGY", "PHASE", "BEST", "STEPS", "BUDGET", "AGE"]
    assert table[1].split()[:6] == ["columns", "pbt", "Running", "0.02972", "60", "120"]


@pytest.mark.parametrize(
    "field",
    [
        "spec.seed",
        "spec.resources.cpu",
        "spec.strategy.pbt.population",
        "status.conditions.reason",
        "status.conditions.lastTransitionTime",
        "status.best.objectiveRounded",
    ],
)
def test_explain_describes_every_field(
    k8s_cluster: harness.Cluster, crds: None, field: str
) -> None:
    text = k8s_cluster.kubectl("explain", f"schedulesearches.{field}").stdout
    assert "DESCRIPTION:" in text and "<no description>" not in text, text
