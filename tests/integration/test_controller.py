"""The controller against a real API server: admission, pods, crashes, deletions, bad specs.

The controller runs as a subprocess (so a test can SIGKILL it) watching the test's namespace;
the test kubelet runs the member pods as local processes on the built-in digits workloads, with
budgets of a hundred-odd steps so each search takes seconds of training.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from tests.cluster import harness, rest
from tests.integration.controller_harness import (
    GROUP_PATH,
    TEST_IMAGE,
    ControllerProcess,
    apply,
    condition,
    events_of,
    get_or_none,
    get_search,
    pods_of,
    search_manifest,
    search_path,
    state_of,
    wait_events,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]
RUN_TIMEOUT = 240.0
FORMER_FINALIZER = "schedsearch.io/controller"


def attempts(pods: list[dict[str, Any]]) -> dict[str, str]:
    return {
        p["metadata"]["name"]: p["metadata"]["annotations"]["schedsearch.io/attempt"] for p in pods
    }


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    container = pod["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# -- admission ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"strategy": {"pbt": {"population": 1}}}, "spec.strategy.pbt.population"),
        ({"lrBounds": {"min": 0.5, "max": 0.1}}, "lrBounds.max"),
        ({"checkpoints": {"emptyDir": {}}}, "checkpoints.persistentVolumeClaim"),
        ({"workload": {"builtin": "no-such-workload"}}, "spec.workload.builtin"),
    ],
)
def test_admission_refuses_bad_specs_naming_the_field(
    k8s_cluster: harness.Cluster, namespace: str, crds: None, change: dict[str, Any], field: str
) -> None:
    manifest = search_manifest("bad", "pbt", **change)
    result = k8s_cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False
    )
    assert result.returncode != 0
    assert field in result.stderr, result.stderr


# -- what a search runs on ------------------------------------------------------------------------


def test_search_pods_are_owned_sized_and_wired(
    k8s_cluster: harness.Cluster, namespace: str, controller: ControllerProcess
) -> None:
    api = k8s_cluster.rest
    gpu = search_manifest("gpu", "pbt", resources={"cpu": "500m", "memory": "1Gi", "gpu": 1})
    apply(k8s_cluster, namespace, gpu)
    hdet = search_manifest("ring", "hdet")
    apply(k8s_cluster, namespace, hdet)
    uid = get_search(api, namespace, "gpu")["metadata"]["uid"]

    started = time.monotonic()
    pods = wait_for(
        "2 PBT member pods",
        lambda: len(pods_of(api, namespace, "gpu")) == 2 and pods_of(api, namespace, "gpu"),
        timeout=60,
    )
    print(f"kubectl apply -> 2 member pods created: {time.monotonic() - started:.1f}s")
    for index, pod in enumerate(pods):
        assert pod["metadata"]["name"] == f"gpu-pbt-{index}"
        (owner,) = pod["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("ScheduleSearch", uid, True)
        container = pod["spec"]["containers"][0]
        assert container["image"] == TEST_IMAGE
        assert container["resources"]["limits"] == {
            "cpu": "500m",
            "memory": "1Gi",
            "nvidia.com/gpu": "1",
        }
        # The API server defaults an extended resource's request to its limit.
        assert container["resources"]["requests"] == container["resources"]["limits"]
        assert pod["spec"]["restartPolicy"] == "Never"
        assert pod["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": "ckpt"}
        env = env_of(pod)
        assert env["SCHEDSEARCH_MEMBER"] == str(index)
        assert env["SCHEDSEARCH_REPORT_TOKEN"] == {
            "secretKeyRef": {"name": "gpu-report-token", "key": "token"}
        }
    reasons = {e["reason"] for e in wait_events(api, namespace, "gpu", "MembersStarted")}
    assert "MembersStarted" in reasons
    search = get_search(api, namespace, "gpu")
    # The controller only watches searches and writes their status: no finalizer (deleting a
    # search never waits for the controller) and no bookkeeping of its own in annotations.
    assert not search["metadata"].get("finalizers")
    annotations = sorted(search["metadata"].get("annotations") or {})
    assert annotations == ["kubectl.kubernetes.io/last-applied-configuration"], annotations

    ring = wait_for(
        "2 HDET replica pods",
        lambda: len(pods_of(api, namespace, "ring")) == 2 and pods_of(api, namespace, "ring"),
        timeout=60,
    )
    service = api.get(f"/api/v1/namespaces/{namespace}/services/ring-hdet")
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["name"] == "ring"
    envs = [env_of(p) for p in ring]
    assert [e["RANK"] for e in envs] == ["0", "1"]
    assert {e["MASTER_ADDR"] for e in envs} == {f"ring-hdet-0.ring-hdet.{namespace}.svc"}
    assert {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert [p["spec"]["hostname"] for p in ring] == ["ring-hdet-0", "ring-hdet-1"]


# -- crashes and deletions ------------------------------------------------------------------------


def test_controller_killed_mid_search_continues_without_restarting_members(
    k8s_cluster: harness.Cluster, namespace: str, controller: ControllerProcess
) -> None:
    api = k8s_cluster.rest
    apply(k8s_cluster, namespace, search_manifest("crash", "pbt", budget={"steps": 150}))

    def reported() -> bool:
        try:
            members = state_of(api, namespace, "crash")["members"].values()
        except rest.ApiError:
            return False
        return any(m.get("step", 0) >= 30 for m in members)

    wait_for("a first report", reported, timeout=RUN_TIMEOUT, explain=controller.log_tail)
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods_of(api, namespace, "crash")}
    controller.kill()
    time.sleep(4)  # members keep training; their reports wait for the controller
    controller.start()
    done = wait_phase(
        api, namespace, "crash", "Succeeded", timeout=RUN_TIMEOUT, controller=controller
    )

    pods = pods_of(api, namespace, "crash")
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}
    assert after == before, "no member pod was replaced"
    assert set(attempts(pods).values()) == {"1"}
    status = done["status"]
    assert all(m["restarts"] == 0 for m in status["members"])
    assert status["best"]["schedule"] == "crash-best"
    schedule = api.get(f"{GROUP_PATH}/namespaces/{namespace}/lrschedules/crash-best")
    assert schedule["metadata"]["generation"] == 1, "the result was stored once"
    assert schedule["metadata"]["labels"]["schedsearch.io/strategy"] == "pbt"
    assert schedule["spec"]["provenance"]["search"] == "crash"
    state = state_of(api, namespace, "crash")
    assert all(m.get("finished") for m in state["members"].values())
    # Both members trained (pods unchanged above: none restarted). The sum can be below 2 x 150:
    # an exploit may move a member forward to its source's later checkpoint.
    assert status["memberSteps"] > 150
    events = wait_events(api, namespace, "crash", "SearchSucceeded")
    succeeded = [e for e in events if e["reason"] == "SearchSucceeded"]
    assert len(succeeded) == 1


def test_deleted_member_pod_is_recreated_and_resumes_from_its_checkpoint(
    k8s_cluster: harness.Cluster,
    namespace: str,
    controller: ControllerProcess,
    kubelet: Any,
) -> None:
    api = k8s_cluster.rest
    # Long enough that member 0 is still training when its pod is deleted at step 60: the MLP
    # trains some 400 steps a second, and seeing step 60 then deleting the pod takes a second or
    # two (600 steps were once all done by then).
    apply(k8s_cluster, namespace, search_manifest("phoenix", "pbt", budget={"steps": 3000}))

    def member_zero_step() -> int:
        try:
            return int(state_of(api, namespace, "phoenix")["members"]["0"].get("step", 0))
        except rest.ApiError:
            return 0

    wait_for("member 0 at step 60", lambda: member_zero_step() >= 60, timeout=RUN_TIMEOUT)
    old = next(
        p for p in pods_of(api, namespace, "phoenix") if p["metadata"]["name"] == "phoenix-pbt-0"
    )
    k8s_cluster.kubectl("delete", "pod", "-n", namespace, "phoenix-pbt-0", "--wait=false")
    member = state_of(api, namespace, "phoenix")["members"]["0"]
    assert not member.get("finished"), f"member 0 finished before its pod was deleted: {member}"

    def replaced() -> dict[str, Any] | None:
        for pod in pods_of(api, namespace, "phoenix"):
            meta = pod["metadata"]
            if meta["name"] == "phoenix-pbt-0" and meta["uid"] != old["metadata"]["uid"]:
                return pod
        return None

    new = wait_for("a replacement pod", replaced, timeout=60, explain=controller.log_tail)
    assert new["metadata"]["annotations"]["schedsearch.io/attempt"] == "2"
    # Its last checkpoint, or the one it was last told to exploit: not step 0.
    start = json.loads(env_of(new)["SCHEDSEARCH_MEMBER_START"])
    assert start["step"] >= 30 and start["checkpoint"], start
    done = wait_phase(
        api, namespace, "phoenix", "Succeeded", timeout=RUN_TIMEOUT, controller=controller
    )
    assert "resumes at step" in kubelet.pod_log(namespace, "phoenix-pbt-0")
    member = next(m for m in done["status"]["members"] if m["id"] == 0)
    assert member["restarts"] == 1
    degraded = condition(done, "Degraded")
    assert degraded is not None and degraded["status"] == "True"
    reasons = [e["reason"] for e in wait_events(api, namespace, "phoenix", "MemberRestarted")]
    assert "MemberRestarted" in reasons


def test_member_failures_are_bounded_then_the_search_fails_and_deletions_are_free(
    k8s_cluster: harness.Cluster, namespace: str, controller: ControllerProcess, kubelet: Any
) -> None:
    api = k8s_cluster.rest
    manifest = search_manifest(
        "fragile", "autolrs", budget={"steps": 5000}, failurePolicy={"maxMemberRestarts": 1}
    )
    apply(k8s_cluster, namespace, manifest)
    # Attempt 1 is deleted (not a failure), attempts 2 and 3 crash (the second is one too many).
    for attempt, how in (("1", "delete"), ("2", "crash"), ("3", "crash")):

        def current(attempt: str = attempt) -> bool:
            found = pods_of(api, namespace, "fragile")
            running = kubelet.pid(namespace, "fragile-autolrs-0") is not None
            return running and attempts(found).get("fragile-autolrs-0") == attempt

        # Generous: a replacement waits for the old process to end and a reconcile to notice.
        wait_for(f"attempt {attempt}", current, timeout=RUN_TIMEOUT, explain=controller.log_tail)
        if how == "delete":
            k8s_cluster.kubectl(
                "delete", "pod", "-n", namespace, "fragile-autolrs-0", "--wait=false"
            )
        else:
            os.kill(kubelet.pid(namespace, "fragile-autolrs-0"), signal.SIGKILL)
    failed = wait_phase(
        api, namespace, "fragile", "Failed", timeout=RUN_TIMEOUT, controller=controller
    )
    reason = condition(failed, "Failed")
    assert reason is not None and reason["reason"] == "MembersFailed"
    time.sleep(3)
    assert all(a != "4" for a in attempts(pods_of(api, namespace, "fragile")).values())
    events = wait_events(api, namespace, "fragile", "MemberDisrupted", "MemberFailed")
    reasons = [e["reason"] for e in events]
    assert "MemberDisrupted" in reasons and "MemberFailed" in reasons
    assert "MemberGaveUp" in reasons and "SearchFailed" in reasons


def test_a_pod_the_api_server_refuses_fails_the_search_once_with_its_reason(
    k8s_cluster: harness.Cluster, namespace: str, controller: ControllerProcess
) -> None:
    api = k8s_cluster.rest
    scheduling = {"serviceAccountName": "no-such-account"}
    apply(k8s_cluster, namespace, search_manifest("orphan", "pbt", scheduling=scheduling))
    failed = wait_phase(api, namespace, "orphan", "Failed", timeout=120, controller=controller)
    reason = condition(failed, "Failed")
    assert reason is not None and reason["reason"] == "PodRefused", reason
    assert "no-such-account" in reason["message"] and "403" in reason["message"]
    time.sleep(3)  # a refused create is not retried
    assert pods_of(api, namespace, "orphan") == []
    members = failed["status"].get("members") or []
    assert all(m.get("restarts", 0) == 0 for m in members), members
    messages = wait_for(
        "an event naming the missing account",
        lambda: (
            [e["message"] for e in events_of(api, namespace, "orphan")]
            if any("no-such-account" in e["message"] for e in events_of(api, namespace, "orphan"))
            else None
        ),
        timeout=120,
    )
    assert any("no-such-account" in m for m in messages), messages


def test_deleting_a_search_collects_its_objects_but_keeps_the_schedule(
    k8s_cluster: harness.Cluster, namespace: str, controller: ControllerProcess
) -> None:
    api = k8s_cluster.rest
    apply(k8s_cluster, namespace, search_manifest("short", "autolrs"))
    wait_phase(api, namespace, "short", "Succeeded", timeout=RUN_TIMEOUT, controller=controller)
    schedule_path = f"{GROUP_PATH}/namespaces/{namespace}/lrschedules/short-best"
    schedule = api.get(schedule_path)
    assert "ownerReferences" not in schedule["metadata"]
    assert schedule["metadata"]["labels"]["schedsearch.io/workload"] == "digits-mlp"

    k8s_cluster.kubectl("delete", "schedulesearch", "-n", namespace, "short", "--timeout=60s")
    ns = f"/api/v1/namespaces/{namespace}"

    def collected() -> bool:
        leftovers = [
            pods_of(api, namespace, "short"),
            get_or_none(api, f"{ns}/secrets/short-report-token"),
            get_or_none(api, f"{ns}/configmaps/short-state"),
        ]
        return not any(leftovers)

    wait_for("garbage collection", collected, timeout=60)
    assert api.get(schedule_path)["metadata"]["uid"] == schedule["metadata"]["uid"]


def test_the_finalizer_of_earlier_controllers_is_taken_off(
    k8s_cluster: harness.Cluster, namespace: str, controller: ControllerProcess
) -> None:
    """Controllers before the watch cache put ``schedsearch.io/controller`` on searches; one
    still carrying it is freed, live (and runs) or being deleted (and goes)."""
    api = k8s_cluster.rest
    legacy = search_manifest("legacy", "pbt")
    legacy["metadata"]["finalizers"] = [FORMER_FINALIZER, "example.com/keep"]
    apply(k8s_cluster, namespace, legacy)
    wait_for(
        "the former finalizer off a live search",
        lambda: (
            get_search(api, namespace, "legacy")["metadata"].get("finalizers")
            == ["example.com/keep"]
        ),
        timeout=60,
        explain=controller.log_tail,
    )
    wait_for("its member pods", lambda: len(pods_of(api, namespace, "legacy")) == 2, timeout=60)
    # Another's finalizer stays: this test's own goes, so the namespace can go after it.
    api.merge_patch(search_path(namespace, "legacy"), {"metadata": {"finalizers": None}})

    # Deleted while no controller ran: the deletion waits on the finalizer until one starts.
    assert controller.stop() == 0, controller.log_tail()  # SIGTERM: a clean stop
    assert controller.logged("stopping")
    held = search_manifest("held", "pbt")
    held["metadata"]["finalizers"] = [FORMER_FINALIZER]
    apply(k8s_cluster, namespace, held)
    k8s_cluster.kubectl("delete", "schedulesearch", "-n", namespace, "held", "--wait=false")
    assert get_search(api, namespace, "held")["metadata"].get("deletionTimestamp")
    controller.start()
    wait_for(
        "the search being deleted to go",
        lambda: get_or_none(api, search_path(namespace, "held")) is None,
        timeout=60,
        explain=controller.log_tail,
    )


def test_unknown_entrypoint_becomes_a_failed_condition(
    k8s_cluster: harness.Cluster, namespace: str, controller: ControllerProcess
) -> None:
    api = k8s_cluster.rest
    workload = {"entrypoint": "no_such_pkg.train:make", "image": "registry.example/me:1"}
    apply(k8s_cluster, namespace, search_manifest("lost", "autolrs", workload=workload))
    failed = wait_phase(api, namespace, "lost", "Failed", timeout=120, controller=controller)
    reason = condition(failed, "Failed")
    assert reason is not None and reason["reason"] == "Unrunnable"
    assert "no_such_pkg" in reason["message"]
    assert reason["observedGeneration"] == failed["metadata"]["generation"]
    reasons = [e["reason"] for e in wait_events(api, namespace, "lost", "MembersStarted")]
    assert reasons.count("MembersStarted") == 1 and "MemberRestarted" not in reasons, reasons


# -- the control run ------------------------------------------------------------------------------


def test_control_run_survives_a_controller_restart_and_is_stored_with_the_schedule(
    k8s_cluster: harness.Cluster, namespace: str, controller: ControllerProcess, kubelet: Any
) -> None:
    api = k8s_cluster.rest
    control = {"control": {"enabled": True}}
    apply(k8s_cluster, namespace, search_manifest("checked", "autolrs", evaluation=control))
    wait_for(
        "the control run's pod",
        lambda: get_or_none(api, f"/api/v1/namespaces/{namespace}/pods/checked-control"),
        timeout=RUN_TIMEOUT,
        explain=controller.log_tail,
    )
    # Down while the control trains: its report waits for the controller, and nothing is redone.
    controller.kill()

    def trained() -> bool:
        try:
            return "control run: found " in kubelet.pod_log(namespace, "checked-control")
        except KeyError:  # not started yet
            return False

    wait_for("the control run to train both schedules", trained, timeout=RUN_TIMEOUT)
    controller.start()
    done = wait_phase(
        api, namespace, "checked", "Succeeded", timeout=RUN_TIMEOUT, controller=controller
    )
    status = done["status"]
    compared = status["control"]
    assert compared["steps"] == 120 and compared["seed"] == 1_000_003
    assert compared["summary"].startswith("found ") and "vs base" in compared["summary"]
    assert compared["summary"] in status["message"]
    schedule = api.get(f"{GROUP_PATH}/namespaces/{namespace}/lrschedules/checked-best")
    assert schedule["spec"]["provenance"]["control"] == compared
    assert status["memberSteps"] == schedule["spec"]["provenance"]["memberSteps"]
    assert status["memberSteps"] >= 120 + 2 * 120
    control_pods = [
        p for p in pods_of(api, namespace, "checked") if "control" in p["metadata"]["name"]
    ]
    assert attempts(control_pods) == {"checked-control": "1"}
    assert state_of(api, namespace, "checked")["control"]["result"] == compared
    # Events wait in the controller for its writes to quieten: those of a controller killed
    # meanwhile are lost (best effort), so ControlStarted may be missing; never there twice (the
    # attempts above say the control run was not started again).
    reasons = [e["reason"] for e in wait_events(api, namespace, "checked", "ControlFinished")]
    assert reasons.count("ControlStarted") <= 1 and "ControlFinished" in reasons


def test_a_control_run_that_fails_for_good_leaves_the_search_succeeding(
    k8s_cluster: harness.Cluster, namespace: str, controller: ControllerProcess, kubelet: Any
) -> None:
    api = k8s_cluster.rest
    manifest = search_manifest(
        "unchecked",
        "autolrs",
        evaluation={"control": {"enabled": True}},
        failurePolicy={"maxMemberRestarts": 0},
    )
    apply(k8s_cluster, namespace, manifest)
    # Killed as soon as its process exists (still importing torch): a crash, and no restart
    # is allowed.
    deadline = time.monotonic() + RUN_TIMEOUT
    while (pid := kubelet.pid(namespace, "unchecked-control")) is None:
        assert time.monotonic() < deadline, f"no control run started\n{controller.log_tail()}"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    done = wait_phase(
        api, namespace, "unchecked", "Succeeded", timeout=RUN_TIMEOUT, controller=controller
    )
    status = done["status"]
    assert status.get("control") is None
    assert "the control run failed" in status["message"]
    schedule = api.get(f"{GROUP_PATH}/namespaces/{namespace}/lrschedules/unchecked-best")
    assert "control" not in schedule["spec"]["provenance"]
    events = wait_events(api, namespace, "unchecked", "ControlFailed")
    warnings = [e for e in events if e["type"] == "Warning"]
    failed = [e["message"] for e in warnings if e["reason"] == "ControlFailed"]
    assert any("failed 1 time(s)" in m for m in failed), warnings
    assert attempts(pods_of(api, namespace, "unchecked"))["unchecked-control"] == "1"
