"""The test cluster is a real one: a real API server (version, CRD validation with CEL, RBAC),
real controllers (garbage collection, namespace deletion) and a kubelet stand-in that runs pods."""

from __future__ import annotations

import os
import re
import secrets
import time
from typing import Any

import kubernetes
import pytest

from tests.cluster import binaries, processes, rest
from tests.cluster.harness import Cluster
from tests.cluster.kubelet import Kubelet

pytestmark = pytest.mark.cluster

CRD_GROUP = "harness.schedsearch.io"
CRD = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ranges.{CRD_GROUP}
spec:
  group: {CRD_GROUP}
  scope: Namespaced
  names: {{plural: ranges, singular: range, kind: Range}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [low, high]
            properties:
              low: {{type: number, minimum: 0}}
              high: {{type: number}}
            x-kubernetes-validations:
            - rule: self.low < self.high
              message: low must be below high
              fieldPath: .low
"""


def pinned_version() -> str:
    """The Kubernetes release tools/k8s/go.mod pins (what the build script builds)."""
    gomod = (binaries.REPO / "tools" / "k8s" / "go.mod").read_text()
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes (v1\.\d+\.\d+)", gomod, re.M)
    assert match, "tools/k8s/go.mod pins no k8s.io/kubernetes release"
    return match.group(1)


def pod_manifest(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A pod whose container runs ``python -u -c script`` (arguments and volumes via ``spec``)."""
    container = {
        "name": "main",
        "image": "python:3.11-slim",
        "command": ["python", "-u", "-c", script],
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def create_pod(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.rest.post(f"/api/v1/namespaces/{namespace}/pods", manifest)


def terminated(pod: rest.JsonObj) -> rest.JsonObj:
    return dict(pod["status"]["containerStatuses"][0]["state"]["terminated"])


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def gone(cluster: Cluster, path: str) -> bool:
    return cluster.rest.send("GET", path)[0] == 404


def test_discovery_and_kubectl_report_the_pinned_release(k8s_cluster: Cluster) -> None:
    version = pinned_version()
    assert k8s_cluster.version == version
    with k8s_cluster.api_client() as client:
        assert kubernetes.client.VersionApi(client).get_code().git_version == version
    groups = {g["name"] for g in k8s_cluster.rest.get("/apis")["groups"]}
    assert {"apps", "apiextensions.k8s.io", "rbac.authorization.k8s.io"} <= groups
    out = k8s_cluster.kubectl("version", "-o", "json").stdout
    assert f'"gitVersion": "{version}"' in out  # both the client and the server


def test_crd_schema_and_cel_rule_refuse_bad_objects_naming_the_field(
    k8s_cluster: Cluster, namespace: str
) -> None:
    k8s_cluster.kubectl("apply", "-f", "-", input=CRD)
    try:
        k8s_cluster.wait_crds_established(f"ranges.{CRD_GROUP}", timeout=30)
        obj = "apiVersion: {g}/v1\nkind: Range\nmetadata: {{name: {n}}}\nspec: {s}\n"
        good = obj.format(g=CRD_GROUP, n="good", s="{low: 0.1, high: 0.5}")
        k8s_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=good)

        crossed = obj.format(g=CRD_GROUP, n="crossed", s="{low: 0.5, high: 0.1}")
        result = k8s_cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", input=crossed, check=False
        )
        assert result.returncode != 0
        assert "spec.low" in result.stderr and "low must be below high" in result.stderr

        negative = obj.format(g=CRD_GROUP, n="negative", s="{low: -1, high: 0.1}")
        result = k8s_cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", input=negative, check=False
        )
        assert result.returncode != 0 and "spec.low" in result.stderr
        assert k8s_cluster.kubectl(
            "get", "ranges", "-n", namespace, "-o", "name"
        ).stdout.split() == ["range.harness.schedsearch.io/good"]
    finally:
        k8s_cluster.kubectl("delete", "crd", f"ranges.{CRD_GROUP}", "--wait=false")


def test_service_account_without_permissions_is_forbidden_until_granted(
    k8s_cluster: Cluster, namespace: str
) -> None:
    kubeconfig = k8s_cluster.service_account_kubeconfig(namespace, "reader")
    result = k8s_cluster.kubectl("get", "pods", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert result.returncode != 0
    assert "Forbidden" in result.stderr
    assert f"system:serviceaccount:{namespace}:reader" in result.stderr
    with k8s_cluster.api_client(kubeconfig) as client:
        with pytest.raises(kubernetes.client.ApiException) as refused:
            kubernetes.client.CoreV1Api(client).list_namespaced_pod(namespace)
        assert refused.value.status == 403

    # The same token is accepted once RBAC allows it: the 403 came from authorization.
    k8s_cluster.kubectl(
        "create", "role", "pod-reader", "-n", namespace, "--verb=list", "--resource=pods"
    )
    k8s_cluster.kubectl(
        "create",
        "rolebinding",
        "reader",
        "-n",
        namespace,
        "--role=pod-reader",
        f"--serviceaccount={namespace}:reader",
    )
    assert processes.wait_until(
        lambda: (
            k8s_cluster.kubectl(
                "get", "pods", "-n", namespace, kubeconfig=kubeconfig, check=False
            ).returncode
            == 0
        ),
        timeout=10,
    )


def test_pod_writes_into_its_empty_dir_and_succeeds(
    k8s_cluster: Cluster, kubelet: Kubelet, namespace: str
) -> None:
    k8s_cluster.rest.post(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "greeting"}, "stringData": {"word": "hello"}},
    )
    script = (
        "import os, sys\n"
        "target = os.path.join(sys.argv[1], 'out.txt')\n"
        "open(target, 'w').write(os.environ['WORD'] + ' from ' + os.environ['POD'])\n"
        "print('wrote', target)\n"
    )
    manifest = pod_manifest(
        "writer",
        script,
        container={
            "args": ["/scratch"],
            "env": [
                {
                    "name": "WORD",
                    "valueFrom": {"secretKeyRef": {"name": "greeting", "key": "word"}},
                },
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        },
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    create_pod(k8s_cluster, namespace, manifest)
    pod = kubelet.wait_for_phase(namespace, "writer", "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["spec"]["nodeName"] == kubelet.node_name
    assert terminated(pod)["exitCode"] == 0
    folder = kubelet.volume_dir(namespace, "writer", "scratch")
    assert (folder / "out.txt").read_text() == "hello from writer"
    assert f"wrote {folder / 'out.txt'}" in kubelet.pod_log(namespace, "writer")


def test_failing_pod_reports_its_exit_code(
    k8s_cluster: Cluster, kubelet: Kubelet, namespace: str
) -> None:
    script = "import sys; print('giving up', file=sys.stderr); sys.exit(3)"
    create_pod(k8s_cluster, namespace, pod_manifest("failer", script))
    pod = kubelet.wait_for_phase(namespace, "failer", "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Failed"
    assert terminated(pod)["exitCode"] == 3 and terminated(pod)["reason"] == "Error"
    assert "giving up" in kubelet.pod_log(namespace, "failer")


def test_on_failure_restarts_in_place(
    k8s_cluster: Cluster, kubelet: Kubelet, namespace: str
) -> None:
    # The emptyDir outlives restarts of the container, as in a real pod: fail once, then succeed.
    script = (
        "import os, sys\n"
        "mark = '/state/tried'\n"
        "if not os.path.exists(mark):\n"
        "    open(mark, 'w').close(); sys.exit(1)\n"
    )
    manifest = pod_manifest(
        "retrier",
        script,
        restartPolicy="OnFailure",
        container={"volumeMounts": [{"name": "state", "mountPath": "/state"}]},
        volumes=[{"name": "state", "emptyDir": {}}],
    )
    create_pod(k8s_cluster, namespace, manifest)
    pod = kubelet.wait_for_phase(namespace, "retrier", "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Succeeded"
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1


def test_deleting_a_running_pod_terms_then_kills_its_process(
    k8s_cluster: Cluster, kubelet: Kubelet, namespace: str
) -> None:
    # The process ignores SIGTERM (after saying so), so only SIGKILL after the grace period ends it.
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: print('got SIGTERM', flush=True))\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    create_pod(
        k8s_cluster, namespace, pod_manifest("sleeper", script, terminationGracePeriodSeconds=2)
    )
    kubelet.wait_for_phase(namespace, "sleeper", "Running")
    assert processes.wait_until(lambda: "up" in kubelet.pod_log(namespace, "sleeper"), timeout=10)
    pid = kubelet.pid(namespace, "sleeper")
    assert pid is not None and process_exists(pid)

    path = f"/api/v1/namespaces/{namespace}/pods/sleeper"
    started = time.monotonic()
    k8s_cluster.rest.delete(path)
    assert processes.wait_until(lambda: gone(k8s_cluster, path), timeout=20)
    assert time.monotonic() - started >= 1.5  # the grace period was honoured before SIGKILL
    assert not process_exists(pid)
    assert "got SIGTERM" in kubelet.pod_log(namespace, "sleeper")


def test_garbage_collector_removes_dependents_of_a_deleted_owner(
    k8s_cluster: Cluster, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    owner = k8s_cluster.rest.post(base, {"metadata": {"name": "owner"}})
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    k8s_cluster.rest.post(base, {"metadata": {"name": "dependent", "ownerReferences": [reference]}})
    k8s_cluster.rest.post(base, {"metadata": {"name": "bystander"}})

    k8s_cluster.rest.delete(f"{base}/owner")
    assert processes.wait_until(lambda: gone(k8s_cluster, f"{base}/dependent"), timeout=30)
    assert not gone(k8s_cluster, f"{base}/bystander")


def test_deleting_a_namespace_removes_it_and_stops_its_pods(
    k8s_cluster: Cluster, kubelet: Kubelet
) -> None:
    name = f"doomed-{secrets.token_hex(3)}"
    k8s_cluster.rest.post("/api/v1/namespaces", {"metadata": {"name": name}})
    assert processes.wait_until(
        lambda: not gone(k8s_cluster, f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        timeout=30,
    )
    k8s_cluster.rest.post(f"/api/v1/namespaces/{name}/configmaps", {"metadata": {"name": "data"}})
    create_pod(k8s_cluster, name, pod_manifest("sleeper", "import time; time.sleep(600)"))
    kubelet.wait_for_phase(name, "sleeper", "Running")
    pid = kubelet.pid(name, "sleeper")
    assert pid is not None

    k8s_cluster.rest.delete(f"/api/v1/namespaces/{name}")
    assert processes.wait_until(lambda: gone(k8s_cluster, f"/api/v1/namespaces/{name}"), timeout=60)
    assert not process_exists(pid)


def test_log_of_an_unknown_pod_is_refused(kubelet: Kubelet) -> None:
    with pytest.raises(KeyError, match="nowhere/nobody"):
        kubelet.pod_log("nowhere", "nobody")


def test_claim_folder_outlives_the_pod_and_config_reaches_the_process(
    k8s_cluster: Cluster, kubelet: Kubelet, namespace: str
) -> None:
    api = k8s_cluster.rest
    api.post(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "settings"}, "data": {"steps": "40", "mode": "min"}},
    )
    api.post(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "creds"}, "stringData": {"key": "s3cret"}},
    )
    script = (
        "import os, pathlib, sys\n"
        "ckpt = pathlib.Path(sys.argv[1])\n"
        "ckpt.mkdir(exist_ok=True)\n"
        "previous = (ckpt / 'state').read_text() if (ckpt / 'state').exists() else 'none'\n"
        "secret = pathlib.Path('/etc/creds/key').read_text()\n"
        "(ckpt / 'state').write_text(os.environ['POD'])\n"
        "print(previous, secret, os.environ['CFG_steps'], os.environ['STEPS_TWICE'])\n"
    )

    def manifest(name: str) -> dict[str, Any]:
        return pod_manifest(
            name,
            script,
            container={
                "args": ["/ckpt/run"],
                "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
                "env": [
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "STEPS_TWICE", "value": "$(CFG_steps)x2"},
                ],
                "volumeMounts": [
                    {"name": "ckpt", "mountPath": "/ckpt"},
                    {"name": "creds", "mountPath": "/etc/creds"},
                ],
            },
            volumes=[
                {"name": "ckpt", "persistentVolumeClaim": {"claimName": "checkpoints"}},
                {"name": "creds", "secret": {"secretName": "creds"}},
            ],
        )

    for name in ("first", "second"):
        create_pod(k8s_cluster, namespace, manifest(name))
        assert (
            kubelet.wait_for_phase(namespace, name, "Succeeded", "Failed")["status"]["phase"]
            == "Succeeded"
        ), kubelet.pod_log(namespace, name)
    assert kubelet.pod_log(namespace, "first").split() == ["none", "s3cret", "40", "40x2"]
    assert kubelet.pod_log(namespace, "second").split() == ["first", "s3cret", "40", "40x2"]


def test_missing_secret_keeps_the_pod_pending_until_it_exists(
    k8s_cluster: Cluster, kubelet: Kubelet, namespace: str
) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    script = "import os; print('token', os.environ['TOKEN'])"
    create_pod(k8s_cluster, namespace, pod_manifest("waiter", script, container={"env": env}))
    path = f"/api/v1/namespaces/{namespace}/pods/waiter"

    def waiting_reason() -> str:
        statuses = k8s_cluster.rest.get(path).get("status", {}).get("containerStatuses") or []
        return str(statuses[0]["state"].get("waiting", {}).get("reason", "")) if statuses else ""

    assert processes.wait_until(
        lambda: waiting_reason() == "CreateContainerConfigError", timeout=10
    )
    assert k8s_cluster.rest.get(path)["status"]["phase"] == "Pending"
    k8s_cluster.rest.post(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "late"}, "stringData": {"token": "t0k"}},
    )
    assert (
        kubelet.wait_for_phase(namespace, "waiter", "Succeeded", "Failed")["status"]["phase"]
        == "Succeeded"
    )
    assert "token t0k" in kubelet.pod_log(namespace, "waiter")


def test_unknown_executable_fails_the_pod_with_start_error(
    k8s_cluster: Cluster, kubelet: Kubelet, namespace: str
) -> None:
    manifest = pod_manifest("typo", "", container={"command": ["no-such-program-here"]})
    create_pod(k8s_cluster, namespace, manifest)
    pod = kubelet.wait_for_phase(namespace, "typo", "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Failed"
    state = terminated(pod)
    assert state["reason"] == "StartError" and "no-such-program-here" in state["message"]


def test_pod_calls_the_api_as_its_service_account(
    k8s_cluster: Cluster, kubelet: Kubelet, namespace: str
) -> None:
    # RBAC decides what the pod may do: the default ServiceAccount may not list pods. Plain
    # urllib and yaml keep the pod quick to start (importing the API client takes seconds).
    script = (
        "import base64, json, os, ssl, urllib.error, urllib.request, yaml\n"
        "kc = yaml.safe_load(open(os.environ['KUBECONFIG']))\n"
        "cluster, user = kc['clusters'][0]['cluster'], kc['users'][0]['user']\n"
        "ca = base64.b64decode(cluster['certificate-authority-data']).decode()\n"
        "tls = ssl.create_default_context(cadata=ca)\n"
        "def call(method, path, body=None):\n"
        "    data = json.dumps(body).encode() if body else None\n"
        "    req = urllib.request.Request(cluster['server'] + path, data=data, method=method,\n"
        "        headers={'Authorization': 'Bearer ' + user['token'],\n"
        "                 'Content-Type': 'application/json'})\n"
        "    try:\n"
        "        with urllib.request.urlopen(req, context=tls) as resp:\n"
        "            return resp.status, json.load(resp)\n"
        "    except urllib.error.HTTPError as exc:\n"
        "        return exc.code, None\n"
        "review = {'apiVersion': 'authentication.k8s.io/v1', 'kind': 'SelfSubjectReview'}\n"
        "_, me = call('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', review)\n"
        "print('user', me['status']['userInfo']['username'])\n"
        "ns = os.environ['NS']\n"
        "print('list pods', call('GET', f'/api/v1/namespaces/{ns}/pods')[0])\n"
    )
    env = [{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    create_pod(k8s_cluster, namespace, pod_manifest("caller", script, container={"env": env}))
    pod = kubelet.wait_for_phase(namespace, "caller", "Succeeded", "Failed")
    output = kubelet.pod_log(namespace, "caller")
    assert pod["status"]["phase"] == "Succeeded", output
    assert f"user system:serviceaccount:{namespace}:default" in output
    assert "list pods 403" in output
