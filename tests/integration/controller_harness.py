"""The controller as a subprocess against the test cluster, and helpers to read what it did.

Integration and end-to-end tests share this: ``install_crds`` once per session, then one
:class:`ControllerProcess` per test (it can be killed and started again, as a crash would), and
specs on the built-in digits workloads with budgets small enough for a 2-core machine.
"""

from __future__ import annotations

import copy
import itertools
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import harness, processes, rest

ROOT = Path(__file__).resolve().parents[2]
GROUP_PATH = "/apis/schedsearch.io/v1alpha1"
TEST_IMAGE = "registry.example/schedsearch:test"
JsonObj = dict[str, Any]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def install_crds(cluster: harness.Cluster) -> None:
    """Apply operator/crds and wait until the API serves both kinds."""
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "operator" / "crds"))
    cluster.wait_crds_established("schedulesearches.schedsearch.io", "lrschedules.schedsearch.io")


class ControllerProcess:
    """``python -m schedsearch.controller`` watching one namespace, restartable."""

    def __init__(
        self,
        cluster: harness.Cluster,
        namespace: str,
        log_dir: Path,
        *,
        name: str = "controller",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.extra_args = extra_args
        self.log_path = log_dir / f"{name}-{namespace}.log"
        self.report_port = free_port()
        self.health_port = free_port()
        self.proc: processes.ManagedProcess | None = None
        self.starts = 0

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "schedsearch.controller",
            "--namespace", self.namespace,
            "--report-port", str(self.report_port),
            "--report-url", f"http://127.0.0.1:{self.report_port}",
            "--health-port", str(self.health_port),
            "--image", TEST_IMAGE,
            "--image-pull-grace", "5",
            *self.extra_args,
        ]  # fmt: skip
        self.proc = processes.spawn(
            "controller", argv, log_path=self.log_path, env=self.cluster.env(), cwd=ROOT
        )
        self.starts += 1
        if not processes.wait_until(self._healthy, timeout=60, interval=0.2):
            raise AssertionError(f"the controller did not become healthy:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        if self.proc is None or not self.proc.alive():
            raise AssertionError(f"the controller exited:\n{self.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", self.health_port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (nothing is flushed, nothing cleaned up)."""
        if self.proc is not None and self.proc.alive():
            self.proc.signal_group(signal.SIGKILL)
            self.proc.popen.wait(timeout=30)

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after 10 s; the exit code (None: never started)."""
        return None if self.proc is None else self.proc.stop(grace=10.0)

    def log_tail(self, lines: int = 60) -> str:
        return processes.log_tail(self.log_path, lines)

    def logged(self, text: str) -> bool:
        try:
            return text in self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return False


class ServiceProxy:
    """A stand-in for the controller's Service in front of several replicas: each connection
    goes to the next replica that accepts it, as kube-proxy spreads connections over endpoints
    (a replica that is down refuses the connection and the next one gets it)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self._next = itertools.count()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        start = next(self._next)
        for offset in range(len(self.ports)):
            port = self.ports[(start + offset) % len(self.ports)]
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue
            upstream.settimeout(None)
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
            _pipe(client, upstream)
            return
        client.close()

    def close(self) -> None:
        self._listener.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


@pytest.fixture(scope="session")
def crds(k8s_cluster: harness.Cluster) -> None:
    install_crds(k8s_cluster)


@pytest.fixture
def controller(
    k8s_cluster: harness.Cluster, kubelet: Any, namespace: str, crds: None, tmp_path: Path
) -> Iterator[ControllerProcess]:
    process = ControllerProcess(k8s_cluster, namespace, tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


# -- specs ---------------------------------------------------------------------------------------

BASE: JsonObj = {
    "apiVersion": "schedsearch.io/v1alpha1",
    "kind": "ScheduleSearch",
    "spec": {
        "workload": {"builtin": "digits-mlp"},
        "objective": {"metric": "val_loss", "mode": "min"},
        "budget": {"steps": 120},
        "lrBounds": {"min": 1e-3, "max": 1.0},
        "baseSchedule": {"family": "cosine", "peakLR": 0.1, "warmupSteps": 10},
        "resources": {"cpu": "1", "memory": "1Gi"},
        "checkpoints": {"persistentVolumeClaim": "ckpt"},
    },
}
STRATEGIES: dict[str, JsonObj] = {
    "autolrs": {"autolrs": {"tau": 40, "tauPrime": 10, "tauMax": 80, "candidates": 2}},
    "pbt": {"pbt": {"population": 2, "perturbationInterval": 30}},
    "hdet": {"hdet": {"replicas": 2, "syncInterval": 30, "backend": "gloo"}},
    "law": {"law": {"peakFactors": [1, 2], "fitRestarts": 2, "optimiseRestarts": 2}},
}


def search_manifest(name: str, kind: str, **spec_changes: Any) -> JsonObj:
    """A small search of strategy ``kind``; ``spec_changes`` replace top-level spec fields."""
    manifest = copy.deepcopy(BASE)
    manifest["metadata"] = {"name": name}
    manifest["spec"]["strategy"] = copy.deepcopy(STRATEGIES[kind])
    manifest["spec"].update(copy.deepcopy(spec_changes))
    return manifest


def apply(cluster: harness.Cluster, namespace: str, manifest: JsonObj) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


# -- reading -------------------------------------------------------------------------------------


def search_path(namespace: str, name: str) -> str:
    return f"{GROUP_PATH}/namespaces/{namespace}/schedulesearches/{name}"


def get_search(api: rest.RestClient, namespace: str, name: str) -> JsonObj:
    return api.get(search_path(namespace, name))


def get_or_none(api: rest.RestClient, path: str) -> JsonObj | None:
    try:
        return api.get(path)
    except rest.ApiError as err:
        if err.status == 404:
            return None
        raise


def pods_of(api: rest.RestClient, namespace: str, name: str) -> list[JsonObj]:
    found = api.get(
        f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"schedsearch.io/search={name}"
    )
    return sorted(found["items"], key=lambda p: p["metadata"]["name"])


def phase(api: rest.RestClient, namespace: str, name: str) -> str:
    return str((get_search(api, namespace, name).get("status") or {}).get("phase", ""))


def condition(obj: JsonObj, kind: str) -> JsonObj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return None


def wait_for(
    what: str,
    check: Callable[[], Any],
    *,
    timeout: float,
    explain: Callable[[], str] = lambda: "",
) -> Any:
    """Poll ``check`` until it returns something true; fail with ``explain()`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{explain()}")
        time.sleep(0.5)


def wait_phase(
    api: rest.RestClient,
    namespace: str,
    name: str,
    wanted: str,
    *,
    timeout: float,
    controller: ControllerProcess | None = None,
    kubelet: Any = None,
) -> JsonObj:
    def explain() -> str:
        obj = get_search(api, namespace, name)
        status = json.dumps(obj.get("status"), indent=1)[:3000]
        tail = controller.log_tail() if controller is not None else ""
        return f"status: {status}\npods:\n{pods_report(api, namespace, name, kubelet)}\n" + (
            f"controller log:\n{tail}"
        )

    def reached() -> JsonObj | None:
        obj = get_search(api, namespace, name)
        current = (obj.get("status") or {}).get("phase")
        if current in ("Succeeded", "Failed") and current != wanted:
            raise AssertionError(f"{name} ended {current}, not {wanted}\n{explain()}")
        return obj if current == wanted else None

    return wait_for(f"{name} to be {wanted}", reached, timeout=timeout, explain=explain)


def pods_report(api: rest.RestClient, namespace: str, name: str, kubelet: Any = None) -> str:
    """Each pod's phase and, with the test kubelet, the end of its log: why a search is stuck."""
    lines = []
    for pod in pods_of(api, namespace, name):
        pod_name = pod["metadata"]["name"]
        lines.append(f"- {pod_name}: {(pod.get('status') or {}).get('phase')}")
        if kubelet is not None:
            try:
                log = kubelet.pod_log(namespace, pod_name).splitlines()[-8:]
            except KeyError:
                log = []
            lines += [f"    {line[:200]}" for line in log]
    return "\n".join(lines)


def events_of(api: rest.RestClient, namespace: str, name: str) -> list[JsonObj]:
    found = api.get(
        f"/api/v1/namespaces/{namespace}/events",
        fieldSelector=f"involvedObject.name={name}",
    )
    return list(found["items"])


def wait_events(
    api: rest.RestClient,
    namespace: str,
    name: str,
    *reasons: str,
    timeout: float = 120.0,
) -> list[JsonObj]:
    """The search's Events once one of each of ``reasons`` is among them: the controller posts
    Events off its reconcile path, once its writes quieten (see ``controller.events``)."""

    def found() -> list[JsonObj] | None:
        events = events_of(api, namespace, name)
        seen = {e["reason"] for e in events}
        return events if all(r in seen for r in reasons) else None

    def explain() -> str:
        seen = [(e["reason"], e["message"][:100]) for e in events_of(api, namespace, name)]
        return f"events: {seen}"

    return list(
        wait_for(f"events {', '.join(reasons)} of {name}", found, timeout=timeout, explain=explain)
    )


def state_of(api: rest.RestClient, namespace: str, name: str) -> JsonObj:
    configmap = api.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}-state")
    return dict(json.loads(configmap["data"]["state.json"]))
