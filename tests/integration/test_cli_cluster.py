"""The CLI reading results from the cluster: ``list/get/best/export/delete`` against the real API
server.

The objects are written here directly (a ScheduleSearch with a status, the LRSchedule it stored),
as the controller would write them, so these tests need no trainer pods; the end-to-end test
reads what a real controller stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from schedsearch.api import spec as api
from schedsearch.cli.main import cli
from schedsearch.trainers.schedules import Schedule
from tests.cluster import harness
from tests.integration.controller_harness import GROUP_PATH, apply, search_manifest

pytestmark = [pytest.mark.cluster]

SCHEDULE = Schedule.from_dict(
    {
        "totalSteps": 120,
        "points": [
            {"step": 0, "lr": 0.01, "interp": "linear"},
            {"step": 20, "lr": 0.2, "interp": "cosine", "endLR": 0.002, "span": 100},
        ],
    }
)


def _invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def _ok(*args: str, env: dict[str, str] | None = None) -> str:
    result = _invoke(*args, env=env)
    assert result.exit_code == 0, result.output
    return str(result.output)


def _store_results(cluster: harness.Cluster, namespace: str, name: str) -> dict[str, Any]:
    """A PBT search that Succeeded with a stored best schedule, written as the controller does."""
    rest = cluster.rest
    apply(cluster, namespace, search_manifest(name, "pbt"))
    status = {
        "phase": "Succeeded",
        "strategy": "pbt",
        "message": "4 members finished",
        "members": [
            {"id": 2, "phase": "Succeeded", "step": 120, "lr": 0.002, "objective": 0.25},
            {"id": 0, "phase": "Succeeded", "step": 120, "lr": 0.003, "objective": 0.31},
            {"id": 1, "phase": "Failed", "step": 40, "lr": 0.1, "objective": 0.9, "restarts": 3},
        ],
        "best": {"objective": 0.25, "member": 2, "step": 120, "schedule": f"{name}-best"},
        "memberSteps": 400,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Succeeded",
                "message": "done",
                "lastTransitionTime": "2026-11-30T10:00:00Z",
            }
        ],
    }
    path = f"{GROUP_PATH}/namespaces/{namespace}/schedulesearches/{name}"
    rest.merge_patch(f"{path}/status", {"status": status})
    provenance = api.Provenance(
        search=name,
        namespace=namespace,
        strategy="pbt",
        workload="digits-mlp",
        objective=api.ObjectiveValue(metric="val_loss", value=0.25),
        member=2,
    )
    body = api.LRSchedule(
        metadata=api.ScheduleMeta(name=f"{name}-best", namespace=namespace),
        spec=api.LRScheduleSpec.from_schedule(SCHEDULE, provenance),
    ).to_wire()
    rest.post(f"{GROUP_PATH}/namespaces/{namespace}/lrschedules", body)
    return rest.get(path)


@pytest.fixture
def where(k8s_cluster: harness.Cluster, namespace: str, crds: None) -> tuple[str, ...]:
    return ("--kubeconfig", str(k8s_cluster.kubeconfig), "-n", namespace)


def test_list_get_best_export_show_the_cluster_objects(
    k8s_cluster: harness.Cluster, namespace: str, where: tuple[str, ...]
) -> None:
    obj = _store_results(k8s_cluster, namespace, "found")

    listed = _ok("list", *where).splitlines()
    assert listed[0].split() == ["NAME", "STRATEGY", "WORKLOAD", "PHASE", "BEST", "COST", "AGE"]
    assert listed[1].split()[:6] == ["found", "pbt", "digits-mlp", "Succeeded", "0.25", "400"]
    items = json.loads(_ok("list", *where, "-o", "json"))["items"]
    assert [item["metadata"]["name"] for item in items] == ["found"]

    got = yaml.safe_load(_ok("get", "found", *where, "-o", "yaml"))
    assert got["spec"] == obj["spec"]
    # The members as the controller wrote them, each with its own phase; conditions too.
    assert got["status"]["members"] == obj["status"]["members"]
    assert got["status"]["conditions"] == obj["status"]["conditions"]
    table = _ok("get", "found", *where)
    assert "Failed" in table and "Succeeded" in table

    best = _ok("best", "found", *where)
    assert best.startswith("schedule found-best of search found (120 steps)")
    assert "val_loss 0.25, member 2" in best
    exported = Schedule.from_json(_ok("export", "found", *where, "-o", "json"))
    assert exported.lrs() == SCHEDULE.lrs()
    resource = json.loads(_ok("best", "found", *where, "-o", "json"))
    assert resource["kind"] == "LRSchedule" and resource["metadata"]["namespace"] == namespace


def test_delete_removes_the_search_and_keeps_its_schedule_unless_asked(
    k8s_cluster: harness.Cluster, namespace: str, where: tuple[str, ...]
) -> None:
    _store_results(k8s_cluster, namespace, "gone")
    said = _ok("delete", "gone", *where)
    assert f"deleted ScheduleSearch 'gone' from namespace {namespace!r}" in said
    assert "kept its best schedule 'gone-best'" in said
    assert _invoke("get", "gone", *where).exit_code == 3
    assert "schedule gone-best of search gone" in _ok("best", "gone", *where)
    said = _ok("delete", "gone", "--with-schedule", *where)
    assert "deleted its kept best schedule 'gone-best'" in said
    assert _invoke("best", "gone", *where).exit_code == 3
    assert _invoke("delete", "gone", *where).exit_code == 3


def test_the_current_context_is_used_when_no_local_store_exists(
    k8s_cluster: harness.Cluster, namespace: str, crds: None, tmp_path: Path
) -> None:
    _store_results(k8s_cluster, namespace, "ctx")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(k8s_cluster.kubeconfig.read_text())
    set_namespace = ("config", "set-context", "--current", f"--namespace={namespace}")
    k8s_cluster.kubectl(*set_namespace, kubeconfig=kubeconfig)
    env = {"KUBECONFIG": str(kubeconfig), "XDG_DATA_HOME": str(tmp_path / "data")}
    assert _ok("list", env=env).splitlines()[1].startswith("ctx ")
    assert "schedule ctx-best" in _ok("best", "ctx", env=env)
    # A local store, once there, is what plain commands read; -n still reads the cluster.
    store = tmp_path / "data" / "schedsearch" / "results.db"
    store.parent.mkdir(parents=True)
    from schedsearch.store.sqlite import SQLiteStore

    SQLiteStore(store)
    assert _ok("list", env=env).startswith("No searches in")
    assert _ok("list", "-n", namespace, env=env).splitlines()[1].startswith("ctx ")


def test_missing_names_and_forbidden_reads_are_clear_errors(
    k8s_cluster: harness.Cluster, namespace: str, where: tuple[str, ...]
) -> None:
    missing = _invoke("best", "nothing", *where)
    assert missing.exit_code == 3
    assert f"search 'nothing' not found: not in namespace {namespace!r}" in missing.output

    # A search that has not stored a schedule yet.
    apply(k8s_cluster, namespace, search_manifest("young", "pbt"))
    young = _invoke("best", "young", *where)
    assert young.exit_code == 3 and "no LRSchedule 'young-best'" in young.output

    # An account without RBAC for the kinds is refused by the API server: exit 1, named.
    account = k8s_cluster.service_account_kubeconfig(namespace, "reader")
    denied = _invoke("list", "--kubeconfig", str(account))
    assert denied.exit_code == 1
    assert f"not allowed to read schedulesearches in namespace {namespace!r}" in denied.output

    both = _invoke("list", "--store", "x.db", *where)
    assert both.exit_code == 2 and "give one" in both.output


def test_an_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
                "current-context": "gone",
            }
        )
    )
    result = _invoke("list", "--kubeconfig", str(kubeconfig))
    assert result.exit_code == 1 and "cannot reach the cluster" in result.output
    bad = _invoke("list", "--kubeconfig", str(kubeconfig), "--context", "nope")
    assert bad.exit_code == 1 and "cannot load the kubeconfig" in bad.output
