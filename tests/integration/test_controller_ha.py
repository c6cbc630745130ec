"""Several controllers on one cluster: two replicas with leader election (the leader is killed
mid-search and the follower finishes it, nothing lost), and a controller restricted to a shard
of the searches by a label selector, which leaves the others alone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import harness, rest
from tests.integration.controller_harness import (
    GROUP_PATH,
    ControllerProcess,
    ServiceProxy,
    apply,
    events_of,
    get_or_none,
    get_search,
    pods_of,
    search_manifest,
    state_of,
    wait_events,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]
RUN_TIMEOUT = 240.0
# Short, so that a takeover is quick on the test cluster (the defaults are 15/10/2 s).
LEASE = ("--lease-duration=4", "--renew-deadline=3", "--retry-period=1")


@pytest.fixture
def replicas(
    k8s_cluster: harness.Cluster, kubelet: Any, namespace: str, crds: None, tmp_path: Path
) -> Iterator[tuple[ControllerProcess, ControllerProcess]]:
    """Two controllers behind one report URL, as behind the chart's Service."""
    first = ControllerProcess(k8s_cluster, namespace, tmp_path, name="first")
    second = ControllerProcess(k8s_cluster, namespace, tmp_path, name="second")
    proxy = ServiceProxy([first.report_port, second.report_port])
    for process in (first, second):
        process.extra_args = (
            "--leader-elect",
            f"--leader-election-namespace={namespace}",
            f"--report-url={proxy.url}",
            *LEASE,
        )
    try:
        yield first, second
    finally:
        for process in (first, second):
            process.stop()
        proxy.close()


def test_the_leader_killed_mid_search_the_follower_finishes_it_with_nothing_lost(
    k8s_cluster: harness.Cluster,
    namespace: str,
    replicas: tuple[ControllerProcess, ControllerProcess],
) -> None:
    api = k8s_cluster.rest
    first, second = replicas
    first.start()
    wait_for("the first replica to lead", lambda: first.logged("leading"), timeout=60)
    second.start()
    wait_for("the second replica to follow", lambda: second.logged("following"), timeout=60)
    apply(k8s_cluster, namespace, search_manifest("ha", "pbt", budget={"steps": 150}))

    def reported() -> bool:
        try:
            members = state_of(api, namespace, "ha")["members"].values()
        except rest.ApiError:
            return False
        return any(m.get("step", 0) >= 30 for m in members)

    wait_for("a first report", reported, timeout=RUN_TIMEOUT, explain=first.log_tail)
    assert not second.logged("leading"), "one leader at a time"
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods_of(api, namespace, "ha")}
    killed = time.monotonic()
    first.kill()
    wait_for("the follower to take over", lambda: second.logged("leading"), timeout=60)
    print(f"leader killed -> follower leading: {time.monotonic() - killed:.1f}s")
    done = wait_phase(api, namespace, "ha", "Succeeded", timeout=RUN_TIMEOUT, controller=second)

    pods = pods_of(api, namespace, "ha")
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods} == before, (
        "no member pod was replaced: every report reached a controller"
    )
    status = done["status"]
    assert all(m["restarts"] == 0 for m in status["members"])
    assert status["memberSteps"] > 150
    state = state_of(api, namespace, "ha")
    assert all(m.get("finished") for m in state["members"].values())
    schedule = api.get(f"{GROUP_PATH}/namespaces/{namespace}/lrschedules/ha-best")
    assert schedule["metadata"]["generation"] == 1, "the result was stored once"
    events = wait_events(api, namespace, "ha", "SearchSucceeded")
    succeeded = [e for e in events if e["reason"] == "SearchSucceeded"]
    assert len(succeeded) == 1
    lease = api.get(
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/schedsearch-controller"
    )
    assert lease["spec"]["leaseTransitions"] >= 1


def test_a_controller_restricted_to_a_shard_leaves_other_searches_alone(
    k8s_cluster: harness.Cluster, kubelet: Any, namespace: str, crds: None, tmp_path: Path
) -> None:
    api = k8s_cluster.rest
    controller = ControllerProcess(
        k8s_cluster, namespace, tmp_path, extra_args=("--shard-selector=shard=a",)
    )
    theirs = search_manifest("theirs", "pbt")
    theirs["metadata"]["labels"] = {"shard": "b"}
    mine = search_manifest("mine", "pbt")
    mine["metadata"]["labels"] = {"shard": "a"}
    apply(k8s_cluster, namespace, theirs)  # first: a controller that took it would do it first
    apply(k8s_cluster, namespace, mine)
    controller.start()
    try:
        wait_for(
            "the shard's search to get its pods",
            lambda: len(pods_of(api, namespace, "mine")) == 2,
            timeout=60,
            explain=controller.log_tail,
        )
        wait_phase(api, namespace, "mine", "Running", timeout=RUN_TIMEOUT, controller=controller)
        other = get_search(api, namespace, "theirs")
        assert not other.get("status"), "no status written on another shard's search"
        assert pods_of(api, namespace, "theirs") == []
        assert events_of(api, namespace, "theirs") == []
        cm = f"/api/v1/namespaces/{namespace}/configmaps/theirs-state"
        assert get_or_none(api, cm) is None
    finally:
        controller.stop()
