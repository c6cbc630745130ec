"""The chart against the real API server of the pinned Kubernetes version.

- Everything the chart renders (cluster-wide and namespaced) is accepted by
  ``kubectl apply --dry-run=server``: the real schemas, defaulting and admission, including the
  "restricted" Pod Security level the install manifest's namespace enforces.
- ``helm install`` works, and the chart's Deployment, run by the test kubelet as a local process
  whose API identity is the chart's ServiceAccount token (not the admin), completes a search:
  the chart's RBAC is sufficient. Then ``helm test`` passes against it.
- In namespaced mode the same account is refused in a namespace outside its list.

The Prometheus Operator's CRDs are not in the test cluster, so ServiceMonitor/PodMonitor are
checked by the unit tests' rendering only.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import harness, processes, rest
from tests.cluster.kubelet import Kubelet

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "schedsearch"
INSTALL = REPO / "operator" / "install.yaml"
RELEASE = "ss"
# The release's full name: the release name does not contain the chart name.
FULLNAME = f"{RELEASE}-schedsearch"
SEARCH_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def helm(k8s_cluster: harness.Cluster) -> Path:
    path = k8s_cluster.binaries.helm
    if not os.access(path, os.X_OK):
        problem = f"helm missing from {path}: build it with scripts/build-k8s-tools.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {problem}", pytrace=False)
        pytest.skip(problem)
    return path


def run_helm(
    helm: Path, cluster: harness.Cluster, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={
            **cluster.env(),
            "HELM_CACHE_HOME": str(cluster.workdir / "helm-cache"),
            "HELM_CONFIG_HOME": str(cluster.workdir / "helm-config"),
            "HELM_DATA_HOME": str(cluster.workdir / "helm-data"),
        },
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def make_namespace(cluster: harness.Cluster, *, labels: dict[str, str] | None = None) -> str:
    name = f"t-{secrets.token_hex(4)}"
    cluster.rest.post("/api/v1/namespaces", {"metadata": {"name": name, "labels": labels or {}}})
    return name


def delete_namespace(cluster: harness.Cluster, name: str) -> None:
    try:
        cluster.rest.delete(f"/api/v1/namespaces/{name}")
    except rest.ApiError as exc:
        if exc.status != 404:
            raise


# ---------------------------------------------------------------------------------------------
# Server-side validation of what the chart renders.


def validation_warnings(stderr: str) -> list[str]:
    """Warnings about what was applied (Pod Security, deprecations), without kubectl's notice that
    an object created by another test lacks the last-applied annotation: that one is about how the
    object got there, not about the manifest."""
    return [
        line
        for line in stderr.splitlines()
        if "Warning" in line and "last-applied-configuration" not in line
    ]


def test_validation_warnings_keep_what_matters() -> None:
    stderr = (
        "Warning: resource customresourcedefinitions/x is missing the "
        "kubectl.kubernetes.io/last-applied-configuration annotation ...\n"
        'Warning: would violate PodSecurity "restricted:latest": runAsNonRoot != true\n'
    )
    assert validation_warnings(stderr) == [stderr.splitlines()[1]]


def dry_run(cluster: harness.Cluster, manifests: str) -> subprocess.CompletedProcess[str]:
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=manifests, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result


def test_install_manifest_passes_server_side_dry_run(k8s_cluster: harness.Cluster) -> None:
    docs = [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]
    namespace = next(d for d in docs if d["kind"] == "Namespace")
    # The namespace must exist for the dry run of what goes in it; it carries the manifest's
    # Pod Security labels, so a pod template below "restricted" would be warned about.
    existed = k8s_cluster.rest.send("GET", f"/api/v1/namespaces/{namespace['metadata']['name']}")
    if existed[0] == 404:
        k8s_cluster.rest.post("/api/v1/namespaces", namespace)
    try:
        rest_docs = [d for d in docs if d["kind"] != "Namespace"]
        result = dry_run(k8s_cluster, yaml.safe_dump_all(rest_docs))
        assert validation_warnings(result.stderr) == [], result.stderr
        kinds = {d["kind"] for d in rest_docs}
        assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "Service"} <= kinds
    finally:
        if existed[0] == 404:
            delete_namespace(k8s_cluster, namespace["metadata"]["name"])


def test_namespaced_rendering_passes_server_side_dry_run(
    k8s_cluster: harness.Cluster, helm: Path
) -> None:
    watched = make_namespace(k8s_cluster)
    home = make_namespace(
        k8s_cluster,
        labels={
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        },
    )
    try:
        rendered = run_helm(
            helm,
            k8s_cluster,
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            home,
            "--set",
            f"rbac.namespaces={{{watched}}}",
            "--set",
            "trainers.metrics.enabled=true",
            "--kube-version",
            k8s_cluster.version,
        ).stdout
        result = dry_run(k8s_cluster, rendered)
        assert validation_warnings(result.stderr) == [], result.stderr
        assert (
            f"role.rbac.authorization.k8s.io/{FULLNAME} created (server dry run)" in result.stdout
        )
    finally:
        delete_namespace(k8s_cluster, watched)
        delete_namespace(k8s_cluster, home)


# ---------------------------------------------------------------------------------------------
# helm install; the chart's ServiceAccount runs a search; namespaced RBAC refuses elsewhere.


@dataclasses.dataclass(frozen=True)
class Release:
    """A namespaced-mode install: the release's home, the one watched namespace, another one."""

    home: str
    watched: str
    outside: str
    kubeconfig: Path  # the chart's ServiceAccount, not the admin
    ports: dict[str, int]
    notes: str  # what `helm install` printed (NOTES.txt)


@pytest.fixture(scope="module")
def release(k8s_cluster: harness.Cluster, helm: Path) -> Iterator[Release]:
    home, watched, outside = (make_namespace(k8s_cluster) for _ in range(3))
    # The test kubelet runs the controller pod on this machine: free ports, not the defaults.
    ports = {"health": harness.free_port(), "metrics": harness.free_port()}
    ports["report"] = harness.free_port()
    installed = run_helm(
        helm,
        k8s_cluster,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        home,
        # The CRDs may already be in the shared test cluster (other tests apply operator/crds).
        "--take-ownership",
        "--set",
        f"rbac.namespaces={{{watched}}}",
        "--set",
        f"controller.healthPort={ports['health']}",
        "--set",
        f"metrics.port={ports['metrics']}",
        "--set",
        f"reportChannel.port={ports['report']}",
    )
    kubeconfig = k8s_cluster.service_account_kubeconfig(home, FULLNAME, create=False)
    try:
        yield Release(home, watched, outside, kubeconfig, ports, installed.stdout)
    finally:
        run_helm(helm, k8s_cluster, "uninstall", RELEASE, "--namespace", home, check=False)
        for name in (home, watched, outside):
            delete_namespace(k8s_cluster, name)


def can_i(cluster: harness.Cluster, kubeconfig: Path, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    return result.stdout.strip() == "yes"


SEARCHES = "schedulesearches.schedsearch.io"
NEEDED = [("create", "pods"), ("watch", SEARCHES), ("patch", f"{SEARCHES}/status")]


def test_namespaced_service_account_is_confined(
    k8s_cluster: harness.Cluster, release: Release
) -> None:
    sa = release.kubeconfig
    for verb, resource in NEEDED:
        assert can_i(k8s_cluster, sa, verb, resource, "-n", release.watched), (verb, resource)
    for verb, resource in [*NEEDED, ("list", SEARCHES), ("get", "secrets")]:
        assert not can_i(k8s_cluster, sa, verb, resource, "-n", release.outside), (verb, resource)
    assert not can_i(k8s_cluster, sa, "list", "pods", "--all-namespaces")
    # The API server itself refuses, not only the authorizer's answer to a question.
    refused = k8s_cluster.kubectl(
        "get", "schedulesearches", "-n", release.outside, kubeconfig=sa, check=False
    )
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()


def test_install_notes_tell_the_next_step(k8s_cluster: harness.Cluster, release: Release) -> None:
    assert f"rollout status deployment/{FULLNAME}" in release.notes
    # A spec to paste, not a path into a repository the chart user does not have; the API
    # server accepts it in the watched namespace.
    command = f"kubectl apply -n {release.watched} -f - <<'EOF'"
    assert command in release.notes and "examples/" not in release.notes
    pasted = release.notes.split(command + "\n", 1)[1].split("\nEOF\n", 1)[0]
    k8s_cluster.kubectl("apply", "--dry-run=server", "-n", release.watched, "-f", "-", input=pasted)
    assert f"lrschedule digits-autolrs-best -n {release.watched} -o yaml" in release.notes
    assert f"watches ScheduleSearches in: {release.watched}" in release.notes


def test_crds_belong_to_the_release_and_are_kept(
    k8s_cluster: harness.Cluster, release: Release
) -> None:
    crd = k8s_cluster.rest.get(
        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{SEARCHES}"
    )
    annotations = crd["metadata"]["annotations"]
    assert annotations["helm.sh/resource-policy"] == "keep"
    assert annotations["meta.helm.sh/release-name"] == RELEASE


def test_cluster_wide_service_account_acts_everywhere(
    k8s_cluster: harness.Cluster, helm: Path
) -> None:
    home, anywhere = make_namespace(k8s_cluster), make_namespace(k8s_cluster)
    name = "cw"
    try:
        run_helm(
            helm,
            k8s_cluster,
            "install",
            name,
            str(CHART),
            "--namespace",
            home,
            "--set",
            "crds.enabled=false",  # owned by the other release; one owner per object
            "--set",
            "controller.replicas=0",
        )
        sa = k8s_cluster.service_account_kubeconfig(home, f"{name}-schedsearch", create=False)
        for verb, resource in NEEDED:
            assert can_i(k8s_cluster, sa, verb, resource, "-n", anywhere), (verb, resource)
        assert can_i(k8s_cluster, sa, "list", "pods", "--all-namespaces")
        assert not can_i(k8s_cluster, sa, "create", "clusterroles")  # no escalation
    finally:
        run_helm(helm, k8s_cluster, "uninstall", name, "--namespace", home, check=False)
        delete_namespace(k8s_cluster, home)
        delete_namespace(k8s_cluster, anywhere)
    assert (
        k8s_cluster.rest.send(
            "GET", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}-schedsearch"
        )[0]
        == 404
    )


# ---------------------------------------------------------------------------------------------
# The chart's ServiceAccount runs a search to the end.

TINY_SEARCH = """
apiVersion: schedsearch.io/v1alpha1
kind: ScheduleSearch
metadata: {name: helm-rbac}
spec:
  workload: {builtin: regression}
  objective: {metric: val_loss, mode: min}
  budget: {steps: 250}
  lrBounds: {min: 1.0e-4, max: 0.5}
  baseSchedule: {family: cosine, peakLR: 0.02, warmupSteps: 20}
  strategy:
    pbt: {population: 2, perturbationInterval: 100}
  resources: {cpu: "1", memory: 1Gi}
  checkpoints: {persistentVolumeClaim: helm-rbac-ckpt}
"""


def controller_pod(cluster: harness.Cluster, release: Release) -> dict[str, Any] | None:
    """The running pod of the chart's Deployment, if there is one yet."""
    pods = cluster.rest.get(
        f"/api/v1/namespaces/{release.home}/pods",
        labelSelector=f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=controller",
    )["items"]
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    return running[0] if running else None


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.slow
def test_the_charts_deployment_completes_a_search(
    k8s_cluster: harness.Cluster, kubelet: Kubelet, release: Release, helm: Path
) -> None:
    # The test kubelet runs the Deployment's pod as a local process whose API identity is the
    # pod's ServiceAccount token (the chart's account, not the admin), with the chart's command
    # and flags; trainer pods reach its report channel through the Service's DNS name.
    assert processes.wait_until(lambda: controller_pod(k8s_cluster, release), timeout=90)
    pod = controller_pod(k8s_cluster, release)
    assert pod is not None and pod["spec"]["serviceAccountName"] == FULLNAME
    name = pod["metadata"]["name"]

    def log(lines: int = 60) -> str:
        return "\n".join(kubelet.pod_log(release.home, name).splitlines()[-lines:])

    health = f"http://127.0.0.1:{release.ports['health']}/healthz"
    assert processes.wait_until(lambda: answers(health), timeout=90), log()
    k8s_cluster.kubectl("apply", "-n", release.watched, "-f", "-", input=TINY_SEARCH)
    api = f"/apis/schedsearch.io/v1alpha1/namespaces/{release.watched}"

    def finished() -> dict[str, Any] | None:
        status = k8s_cluster.rest.get(f"{api}/schedulesearches/helm-rbac").get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    done = processes.wait_until(finished, timeout=SEARCH_TIMEOUT, interval=1.0)
    status = finished()
    assert done and status is not None, f"not finished in {SEARCH_TIMEOUT}s\n{log()}"
    assert status["phase"] == "Succeeded", (status, log())
    k8s_cluster.rest.get(f"{api}/lrschedules/{status['best']['schedule']}")
    refused = [line for line in log(10**6).splitlines() if "forbidden" in line]
    # Anything refused would mean the chart's rules are short (the controller asks for nothing
    # at the cluster scope, namespaced: no scan of namespaces or CRDs).
    assert not refused, refused
    check_helm_test(helm, k8s_cluster, kubelet, release)


def check_helm_test(
    helm: Path, cluster: harness.Cluster, kubelet: Kubelet, release: Release
) -> None:
    """`helm test`: its pod (run by the test kubelet, which resolves the Service's DNS name in
    its environment) checks the controller's health and metrics endpoints."""
    result = run_helm(
        helm, cluster, "test", RELEASE, "--namespace", release.home, "--timeout", "2m", check=False
    )
    pod = f"{FULLNAME}-test-health"
    log = kubelet.pod_log(release.home, pod)
    assert result.returncode == 0, result.stdout + result.stderr + log
    assert log.count(": ok") == 2, log  # health and metrics
