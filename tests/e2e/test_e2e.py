"""End to end on the test cluster: ``kubectl apply`` one search per strategy on the digits CNN,
the controller runs them as pods, each succeeds, and its best schedule is an LRSchedule that
replays; ``schedsearch list/get/best/export`` then read those results from the cluster.

The four searches run at once (eight trainer processes on this machine), with budgets of a
couple of hundred steps: PBT with 4 members perturbing every 25 steps (so exploits happen), HDET
with 2 replicas meeting at rank 0's DNS name, AutoLRS with two probes per stage, law with two
candidate peaks. The AutoLRS search ends with the control run (its found and base schedule
trained from a fresh seed: one pod, twice its budget). The law search's stored schedule carries
its fitted law, which ``schedsearch predict`` reads from the cluster.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from schedsearch.api.spec import LRSchedule
from schedsearch.cli.main import cli
from tests.cluster import harness
from tests.integration.controller_harness import (
    GROUP_PATH,
    ControllerProcess,
    apply,
    events_of,
    pods_of,
    search_manifest,
    state_of,
    wait_phase,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1200)]
# Two minutes on an idle 2-core machine; generous for one shared with other work.
TIMEOUT = 900.0

SEARCHES: dict[str, dict[str, Any]] = {
    "e2e-pbt": {
        "strategy": {"pbt": {"population": 4, "perturbationInterval": 25}},
        "budget": {"steps": 200},
    },
    "e2e-hdet": {
        "strategy": {"hdet": {"replicas": 2, "syncInterval": 40, "backend": "gloo"}},
        "budget": {"steps": 160},
    },
    "e2e-autolrs": {
        "strategy": {"autolrs": {"tau": 40, "tauPrime": 10, "tauMax": 80, "candidates": 2}},
        "budget": {"steps": 160},
        "evaluation": {"control": {"enabled": True}},
    },
    "e2e-law": {
        "strategy": {"law": {"peakFactors": [1, 2], "fitRestarts": 2, "optimiseRestarts": 2}},
        "budget": {"steps": 160},
    },
}
CONTROLLED = "e2e-autolrs"


def test_one_search_per_strategy_ends_with_a_stored_schedule(
    k8s_cluster: harness.Cluster, namespace: str, controller: ControllerProcess, kubelet: Any
) -> None:
    api = k8s_cluster.rest
    started = time.monotonic()
    for name, spec in SEARCHES.items():
        strategy = next(iter(spec["strategy"]))
        manifest = search_manifest(name, strategy, workload={"builtin": "digits-cnn"}, **spec)
        apply(k8s_cluster, namespace, manifest)
    finished: dict[str, float] = {}
    for name in SEARCHES:
        wait_phase(
            api,
            namespace,
            name,
            "Succeeded",
            timeout=TIMEOUT,
            controller=controller,
            kubelet=kubelet,
        )
        finished[name] = time.monotonic() - started
    print("kubectl apply -> Succeeded:", {k: f"{v:.0f}s" for k, v in finished.items()})

    listed = k8s_cluster.kubectl("get", "schedulesearches", "-n", namespace).stdout
    assert listed.count("Succeeded") == len(SEARCHES), listed
    for name, spec in SEARCHES.items():
        search = api.get(f"{GROUP_PATH}/namespaces/{namespace}/schedulesearches/{name}")
        status = search["status"]
        assert status["best"]["schedule"] == f"{name}-best"
        stored = api.get(f"{GROUP_PATH}/namespaces/{namespace}/lrschedules/{name}-best")
        schedule = LRSchedule.from_object(stored).spec.to_schedule()
        assert schedule.total_steps == spec["budget"]["steps"]
        lrs = schedule.lrs()
        assert all(0 <= lr < float("inf") for lr in lrs) and max(lrs) > 0
        assert stored["spec"]["provenance"]["strategy"] == next(iter(spec["strategy"]))
        assert status["memberSteps"] >= spec["budget"]["steps"]
        # The found schedule ends in the cooldown the members (HDET: the replicas) trained
        # (20% of the budget, linear to the base schedule's minLR, 0).
        steps = spec["budget"]["steps"]
        *_, cooldown, end = schedule.points
        assert (end.step, end.lr) == (steps, 0.0), schedule
        if "law" in spec["strategy"]:
            # law chooses its decay (at least the cooldown's 20%) and stores the fitted law.
            decay = next(p for p in schedule.points if p.interp == "linear" and p.lr > 0)
            assert decay.step <= round(0.8 * steps), schedule
            assert stored["spec"]["provenance"]["law"]["law"] in ("multiPower", "tissue")
            continue
        assert (cooldown.step, cooldown.interp) == (round(0.8 * steps), "linear"), schedule

    # PBT: members copied each other, and the stored schedule is a lineage through exploits.
    exploits = [e for e in events_of(api, namespace, "e2e-pbt") if e["reason"] == "Exploit"]
    assert exploits, "no exploit happened"
    assert len(pods_of(api, namespace, "e2e-pbt")) == 4
    assert all(m.get("finished") for m in state_of(api, namespace, "e2e-pbt")["members"].values())
    # HDET: both replicas met (rank 0 reports the syncs' base LRs) and finished.
    hdet = state_of(api, namespace, "e2e-hdet")
    assert all(m.get("finished") for m in hdet["members"].values())
    assert hdet["result"]["strategy"] == "hdet"
    print(json.dumps({n: f"{t:.0f}s" for n, t in finished.items()}))
    _control_is_reported(api, namespace)

    _cli_reads_the_cluster(k8s_cluster, namespace)


def _control_is_reported(api: Any, namespace: str) -> None:
    """The search with ``evaluation.control.enabled`` compares its found schedule with its base
    schedule in its status and its stored schedule; the others have no control run."""
    for name, spec in SEARCHES.items():
        status = api.get(f"{GROUP_PATH}/namespaces/{namespace}/schedulesearches/{name}")["status"]
        provenance = api.get(f"{GROUP_PATH}/namespaces/{namespace}/lrschedules/{name}-best")[
            "spec"
        ]["provenance"]
        if name != CONTROLLED:
            assert "control" not in status and "control" not in provenance
            continue
        steps = spec["budget"]["steps"]
        control = status["control"]
        assert control["steps"] == steps and control["metric"] == "val_loss"
        assert control["seed"] == 1_000_003  # spec.seed 0 + the offset: no member's seed
        assert re.match(
            r"found \S+ vs base \S+ val_loss on a fresh seed \(1000003\), ", control["summary"]
        )
        assert f"control: {control['summary']}" in status["message"]
        assert provenance["control"] == control
        # Its cost: the search's members and probes, and the control's two budgets.
        assert status["memberSteps"] >= steps + 2 * steps
        assert provenance["memberSteps"] == status["memberSteps"]


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _cli_reads_the_cluster(cluster: harness.Cluster, namespace: str) -> None:
    """``schedsearch list/get/best/export`` answer from the cluster what the objects hold."""
    where = ("--kubeconfig", str(cluster.kubeconfig), "-n", namespace)
    api = cluster.rest
    listed = _cli("list", *where)
    for name in SEARCHES:
        assert re.search(rf"^{name}\s+\w+\s+digits-cnn\s+Succeeded\s", listed, re.M), listed
    for name, spec in SEARCHES.items():
        stored = api.get(f"{GROUP_PATH}/namespaces/{namespace}/lrschedules/{name}-best")
        schedule = LRSchedule.from_object(stored).spec.to_schedule()
        shown = _cli("best", name, *where)
        assert f"schedule {name}-best of search {name} " in shown, shown
        as_yaml = yaml.safe_load(_cli("best", name, *where, "-o", "yaml"))
        assert as_yaml["spec"]["points"] == stored["spec"]["points"]
        csv_lines = _cli("export", name, *where, "-o", "csv").splitlines()
        assert len(csv_lines) == spec["budget"]["steps"] + 1  # header + one line per step
        lrs = [float(line.split(",")[1]) for line in csv_lines[1:]]
        assert lrs == pytest.approx(schedule.lrs(), rel=1e-12)
        got = json.loads(_cli("get", name, *where, "-o", "json"))
        status = api.get(f"{GROUP_PATH}/namespaces/{namespace}/schedulesearches/{name}")["status"]
        assert got["status"]["phase"] == "Succeeded"
        assert got["status"]["best"] == status["best"]
        assert got["status"]["members"] == status["members"]
        assert got["status"].get("control") == status.get("control")
    control = api.get(f"{GROUP_PATH}/namespaces/{namespace}/schedulesearches/{CONTROLLED}")[
        "status"
    ]["control"]
    shown = _cli("get", CONTROLLED, *where)
    assert re.search(rf"^Control\s+{re.escape(control['summary'])}$", shown, re.M), shown
    assert f"control: {control['summary']}" in _cli("best", CONTROLLED, *where)

    # The law search's fitted law predicts another schedule from the cluster's stored one.
    predicted = json.loads(
        _cli("predict", "e2e-law", *where, "-s", "family=cosine,peak=0.05", "-o", "json")
    )
    assert predicted, predicted

    # The stored schedule outlives its search, and the CLI still finds it.
    cluster.kubectl("delete", "schedulesearch", "e2e-autolrs", "-n", namespace, "--wait=true")
    assert "e2e-autolrs-best" in _cli("best", "e2e-autolrs", *where)
    missing = CliRunner().invoke(cli, ["get", "e2e-autolrs", *where])
    assert missing.exit_code == 3 and "not found" in missing.output
