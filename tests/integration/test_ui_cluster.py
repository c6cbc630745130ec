"""``schedsearch ui``'s data read from the cluster (the real API server): the same views as over
the local store, from a ScheduleSearch with a status and the LRSchedule it stored."""

from __future__ import annotations

import pytest

from schedsearch.cli.export import export_schedule
from schedsearch.store.kube import ClusterBackend, ClusterTarget
from schedsearch.ui import data
from tests.cluster import harness
from tests.integration.controller_harness import GROUP_PATH
from tests.integration.test_cli_cluster import SCHEDULE, _store_results

pytestmark = [pytest.mark.cluster]


def test_the_page_data_of_a_cluster_search(
    k8s_cluster: harness.Cluster, namespace: str, crds: None
) -> None:
    _store_results(k8s_cluster, namespace, "found")
    backend = ClusterBackend(ClusterTarget(k8s_cluster.kubeconfig, None, namespace))

    [row] = data.search_rows(backend)
    assert (row["name"], row["strategy"], row["phase"]) == ("found", "pbt", "Succeeded")
    # The members as the controller wrote them: one failed at step 40, none running.
    assert (row["members"], row["running"], row["steps"]) == (3, 0, 40)
    assert (row["best"], row["bestMember"], row["cost"]) == (0.25, 2, 400)

    detail = data.search_detail(backend, "found")
    assert [m["member"] for m in detail["members"]] == [0, 1, 2]
    assert all(len(m["steps"]) == 1 for m in detail["members"])  # the latest point only
    assert detail["events"] == {"recorded": False, "exploits": [], "stages": [], "syncs": []}
    assert detail["best"]["totalSteps"] == SCHEDULE.total_steps

    [stored] = data.stored_schedules(backend)
    assert (stored["name"], stored["search"], stored["searchExists"]) == (
        "found-best",
        "found",
        True,
    )
    assert stored["base"] is not None
    download = data.download(backend, "found", "csv")
    assert download.text == export_schedule(SCHEDULE, "csv")

    # The LRSchedule outlives its search: still listed, without a base schedule.
    k8s_cluster.rest.delete(f"{GROUP_PATH}/namespaces/{namespace}/schedulesearches/found")
    [stored] = data.stored_schedules(backend)
    assert (stored["name"], stored["searchExists"], stored["base"]) == ("found-best", False, None)
