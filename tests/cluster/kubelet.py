"""A test-only stand-in for the scheduler and the kubelet, running in a thread of the test process.

It registers one Ready node (with ``nvidia.com/gpu`` capacity so GPU pods fit), binds every unbound
pod to it, and runs each pod's first container (``command`` + ``args``) as a local process laid out
by ``tests.cluster.launch``. Status goes through the API like a kubelet's: Pending -> Running ->
Succeeded/Failed with the exit code; OnFailure/Always restart in place (restartCount + 1). Deleting
a pod SIGTERMs its process group, SIGKILLs it after the grace period, then removes the pod with
gracePeriodSeconds=0. The sync is level-triggered: every tick it compares each pod with its process.

A pod with a ServiceAccount token mounted gets KUBECONFIG pointing at a kubeconfig with that token,
so API clients in the pod (which fall back from in-cluster config to KUBECONFIG) act as the pod's
ServiceAccount.

Not emulated: images, resource limits, probes, init and sidecar containers (only the first
container runs), ``kubectl logs``/``exec`` (read logs with ``Kubelet.pod_log``), PVC binding.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.cluster import launch, processes, rest

JsonObj = rest.JsonObj
T = TypeVar("T")
log = logging.getLogger(__name__)

NODE_NAME = "schedsearch-test-node"
NODE_CAPACITY = {
    "cpu": "32",
    "memory": "128Gi",
    "pods": "110",
    "ephemeral-storage": "500Gi",
    "nvidia.com/gpu": "8",
}
# Variables a process needs to behave on this machine; the rest of the test process's environment
# (KUBECONFIG, pytest's own variables, ...) is not a pod's business.
INHERITED_ENV = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "PATH")
TICK = 0.1


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class _Run:
    """What this kubelet knows about one pod (by UID) beyond what the API says."""

    namespace: str
    name: str
    log_path: Path
    proc: processes.ManagedProcess | None = None
    started_at: str = ""
    first_started_at: str = ""
    restart_count: int = 0
    last_state: JsonObj | None = None
    next_start: float = 0.0
    kill_deadline: float | None = None
    reported_waiting: str = ""
    done: bool = False


class Kubelet:
    """Start with ``start()``, stop with ``stop()`` (kills every pod process)."""

    def __init__(
        self,
        api: rest.RestClient,
        root: Path,
        *,
        node_name: str = NODE_NAME,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.api = api
        self.root = root
        self.node_name = node_name
        self.resolver = launch.Resolver(api, root, node_name=node_name)
        # The test's interpreter first, so `python` and the project's console scripts resolve.
        self.path_prefix = Path(sys.executable).parent
        host, port = api.credentials.server.removeprefix("https://").rsplit(":", 1)
        self.base_env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        self.base_env.update(KUBERNETES_SERVICE_HOST=host, KUBERNETES_SERVICE_PORT=port)
        self.base_env.update(extra_env or {})
        self.errors: list[str] = []  # sync failures, newest last, for test diagnostics
        self._pods: dict[str, JsonObj] = {}
        self._runs: dict[str, _Run] = {}
        self._logs: dict[tuple[str, str], Path] = {}
        self._binding: set[str] = set()
        self._dirty: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- public API ------------------------------------------------------------------------------

    def start(self) -> None:
        """Register the node, then watch and run pods in background threads."""
        self.register_node()
        for target, name in ((self._watch_loop, "watch"), (self._sync_loop, "sync")):
            thread = threading.Thread(target=target, name=f"test-kubelet-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads and kill every pod process still running (the API is not touched)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=15)
        for run in list(self._runs.values()):
            if run.proc is not None:
                run.proc.stop(grace=2.0)

    def log_path(self, namespace: str, name: str) -> Path:
        """The file holding stdout+stderr of the latest pod ``namespace/name`` run here."""
        with self._lock:
            path = self._logs.get((namespace, name))
        if path is None:
            raise KeyError(f"no pod {namespace}/{name} has been started by the test kubelet")
        return path

    def pod_log(self, namespace: str, name: str) -> str:
        """stdout+stderr of pod ``namespace/name`` (all restarts, in order)."""
        return self.log_path(namespace, name).read_text(errors="replace")

    def pid(self, namespace: str, name: str) -> int | None:
        """The process id of the pod's running container, if any."""
        with self._lock:
            runs = [r for r in self._runs.values() if (r.namespace, r.name) == (namespace, name)]
        alive = [r.proc for r in runs if r.proc is not None and r.proc.alive()]
        return alive[0].pid if alive else None

    def volume_dir(self, namespace: str, name: str, volume: str) -> Path:
        """The folder standing in for volume ``volume`` of pod ``namespace/name``."""
        pod = self.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        for spec in pod["spec"].get("volumes") or []:
            if spec["name"] == volume:
                return self.resolver.volume_dir(pod, spec)
        raise KeyError(f"pod {namespace}/{name} has no volume {volume!r}")

    def wait_for_phase(
        self, namespace: str, name: str, *phases: str, timeout: float = 30.0
    ) -> JsonObj:
        """Wait until pod ``namespace/name`` is in one of ``phases``; return it.

        On timeout the assertion shows the pod's status, its log and this kubelet's errors.
        """
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        deadline = time.monotonic() + timeout
        pod: JsonObj = {}
        while time.monotonic() < deadline:
            pod = self.api.get(path)
            if pod.get("status", {}).get("phase") in phases:
                return pod
            time.sleep(TICK)
        try:
            output = self.pod_log(namespace, name)[-2000:]
        except KeyError:
            output = "(never started)"
        raise AssertionError(
            f"pod {namespace}/{name} not in {phases} after {timeout}s: "
            f"status={pod.get('status')} log={output!r} kubelet errors={self.errors[-5:]}"
        )

    def register_node(self) -> None:
        """Create the node (if absent) and report it Ready with its capacity."""
        labels = {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": labels},
        }
        try:
            self.api.post("/api/v1/nodes", node)
        except rest.ApiError as exc:
            if exc.status != 409:
                raise
        self.api.merge_patch(f"/api/v1/nodes/{self.node_name}/status", {"status": _node_status()})

    # -- watch -----------------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._relist()
                for kind, obj in self.api.watch(
                    "/api/v1/pods", resource_version=version, timeout_seconds=2
                ):
                    version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._observe(kind, obj)
                    if self._stopping.is_set():
                        break
            except rest.ApiError as exc:
                # 410 Gone: our resource version expired; anything else: start over as well.
                if exc.status != 410:
                    self._note(f"watch: {exc}")
                    time.sleep(0.5)
                version = None
            except Exception as exc:
                if not self._stopping.is_set():
                    self._note(f"watch: {exc!r}")
                    time.sleep(0.5)
                version = None

    def _relist(self) -> str:
        answer = self.api.get("/api/v1/pods")
        pods = {p["metadata"]["uid"]: p for p in answer.get("items") or []}
        with self._lock:
            gone = set(self._pods) - set(pods)
            self._pods = pods
        for uid in [*pods, *gone]:
            self._dirty.put(uid)
        return str(answer["metadata"]["resourceVersion"])

    def _observe(self, kind: str, pod: JsonObj) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if kind == "DELETED":
                self._pods.pop(uid, None)
            else:
                self._pods[uid] = pod
        self._dirty.put(uid)

    # -- sync ------------------------------------------------------------------------------------

    def _sync_loop(self) -> None:
        while not self._stopping.is_set():
            due = self._drain_dirty()
            due.update(self._runs)  # running processes need polling: exits, grace deadlines
            for uid in due:
                try:
                    self._sync(uid)
                except Exception as exc:
                    self._note(f"sync {uid}: {exc!r}")

    def _drain_dirty(self) -> set[str]:
        due = set()
        try:
            due.add(self._dirty.get(timeout=TICK))
            while True:
                due.add(self._dirty.get_nowait())
        except queue.Empty:
            return due

    def _sync(self, uid: str) -> None:
        with self._lock:
            pod = self._pods.get(uid)
        run = self._runs.get(uid)
        if pod is None:
            if run is not None:  # removed from the API without us (forced deletion)
                if run.proc is not None:
                    run.proc.stop(grace=0)
                with self._lock:
                    del self._runs[uid]
            return
        node = pod["spec"].get("nodeName")
        if not node:
            self._bind(pod)
        elif node == self.node_name:
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(uid, pod, run)
            else:
                self._drive(uid, pod, run)

    def _bind(self, pod: JsonObj) -> None:
        meta = pod["metadata"]
        if meta["uid"] in self._binding or meta.get("deletionTimestamp"):
            return
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            _retrying(lambda: self.api.post(_pod_path(pod) + "/binding", binding), conflicts=False)
        except rest.ApiError as exc:
            if exc.status not in (404, 409):  # gone, or bound meanwhile: nothing to do
                raise
        self._binding.add(meta["uid"])

    def _drive(self, uid: str, pod: JsonObj, run: _Run | None) -> None:
        """Bring a live pod's process in line with its spec: start, notice exits, restart."""
        if run is None:
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return  # finished before this kubelet started
            run = self._new_run(uid, pod)
        if run.done:
            return
        if run.proc is not None and not run.proc.alive():
            self._exited(pod, run, _terminated(run, run.proc.popen.returncode))
        if run.proc is None and not run.done and time.monotonic() >= run.next_start:
            self._start(pod, run)

    def _new_run(self, uid: str, pod: JsonObj) -> _Run:
        meta = pod["metadata"]
        log_path = self.root / "logs" / f"{meta['namespace']}_{meta['name']}_{uid}.log"
        run = _Run(meta["namespace"], meta["name"], log_path)
        with self._lock:
            self._runs[uid] = run
            self._logs[(run.namespace, run.name)] = log_path
        return run

    def _start(self, pod: JsonObj, run: _Run) -> None:
        try:
            plan = self.resolver.launch(pod, base_env=self.base_env, path_prefix=self.path_prefix)
        except launch.ConfigError as exc:
            self._report_waiting(pod, run, "CreateContainerConfigError", str(exc))
            run.next_start = time.monotonic() + 1.0
            return
        except launch.StartError as exc:
            run.started_at = _now()
            self._exited(pod, run, _terminated(run, 128, reason="StartError", message=str(exc)))
            return
        run.proc = processes.spawn(
            f"pod {run.namespace}/{run.name}",
            plan.argv,
            log_path=run.log_path,
            env=plan.env,
            cwd=plan.cwd,
            die_with_parent=True,
        )
        run.started_at = _now()
        run.first_started_at = run.first_started_at or run.started_at
        running = {"running": {"startedAt": run.started_at}}
        self._patch_status(pod, run, phase="Running", state=running, ready=True)

    def _exited(self, pod: JsonObj, run: _Run, terminated: JsonObj) -> None:
        """Apply the restart policy to a container that ended with ``terminated``."""
        run.proc = None
        code = terminated["exitCode"]
        policy = pod["spec"].get("restartPolicy", "Always")
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            run.restart_count += 1
            run.last_state = {"terminated": terminated}
            # Back off like a kubelet, but in fractions of a second: tests should not wait.
            run.next_start = time.monotonic() + min(0.2 * 2 ** (run.restart_count - 1), 5.0)
            return
        run.done = True
        phase = "Succeeded" if code == 0 else "Failed"
        self._patch_status(pod, run, phase=phase, state={"terminated": terminated}, ready=False)

    def _terminate(self, uid: str, pod: JsonObj, run: _Run | None) -> None:
        """Graceful deletion: SIGTERM, SIGKILL after the grace period, then remove the pod."""
        if run is not None and run.proc is not None and run.proc.alive():
            now = time.monotonic()
            if run.kill_deadline is None:
                run.proc.signal_group(signal.SIGTERM)
                grace = pod["metadata"].get("deletionGracePeriodSeconds")
                if grace is None:
                    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
                run.kill_deadline = now + float(grace)
            elif now >= run.kill_deadline:
                run.proc.signal_group(signal.SIGKILL)
            return
        if run is not None and run.proc is not None:
            # The restart policy does not apply to a pod being deleted: report how it ended.
            run.proc.signal_group(signal.SIGKILL)  # leftovers in the group
            terminated = _terminated(run, run.proc.popen.returncode)
            run.proc, run.done = None, True
            always = pod["spec"].get("restartPolicy", "Always") == "Always"
            phase = "Succeeded" if terminated["exitCode"] == 0 and not always else "Failed"
            self._patch_status(pod, run, phase=phase, state={"terminated": terminated}, ready=False)
        try:
            options = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid},
            }
            _retrying(lambda: self.api.delete(_pod_path(pod), options), conflicts=False)
        except rest.ApiError as exc:
            if exc.status not in (404, 409):  # already gone, or a newer pod took the name
                raise
        with self._lock:
            self._runs.pop(uid, None)

    # -- status ----------------------------------------------------------------------------------

    def _report_waiting(self, pod: JsonObj, run: _Run, reason: str, message: str) -> None:
        if run.reported_waiting == message:
            return
        run.reported_waiting = message
        state = {"waiting": {"reason": reason, "message": message}}
        self._patch_status(pod, run, phase="Pending", state=state, ready=False)

    def _patch_status(
        self, pod: JsonObj, run: _Run, *, phase: str, state: JsonObj, ready: bool
    ) -> None:
        container = pod["spec"]["containers"][0]
        container_status: JsonObj = {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "ready": ready,
            "started": "running" in state,
            "restartCount": run.restart_count,
            "state": state,
            "lastState": run.last_state or {},
        }
        if run.proc is not None:
            container_status["containerID"] = f"schedsearch-test://{run.proc.pid}"
        status: JsonObj = {
            "phase": phase,
            "hostIP": launch.POD_IP,
            "hostIPs": [{"ip": launch.POD_IP}],
            "podIP": launch.POD_IP,
            "podIPs": [{"ip": launch.POD_IP}],
            "startTime": run.first_started_at or _now(),
            "conditions": _conditions(ready=ready, started=bool(run.first_started_at)),
            "containerStatuses": [container_status],
        }
        try:
            _retrying(lambda: self.api.merge_patch(_pod_path(pod) + "/status", {"status": status}))
        except rest.ApiError as exc:
            if exc.status != 404:  # a pod deleted meanwhile has no status to report
                raise

    def _note(self, message: str) -> None:
        log.warning("test kubelet: %s", message)
        self.errors.append(message)


def _pod_path(pod: JsonObj) -> str:
    meta = pod["metadata"]
    return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"


def _conditions(*, ready: bool, started: bool) -> list[JsonObj]:
    now = _now()

    def condition(kind: str, value: bool) -> JsonObj:
        return {"type": kind, "status": "True" if value else "False", "lastTransitionTime": now}

    return [
        condition("PodScheduled", True),
        condition("Initialized", True),
        condition("PodReadyToStartContainers", started),
        condition("ContainersReady", ready),
        condition("Ready", ready),
    ]


def _node_status() -> JsonObj:
    now = _now()
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "test kubelet is posting ready status",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    info = {
        "machineID": "schedsearch-test",
        "systemUUID": "schedsearch-test",
        "bootID": "schedsearch-test",
        "kernelVersion": os.uname().release,
        "osImage": "schedsearch test kubelet",
        "containerRuntimeVersion": "local://0",
        "kubeletVersion": "v0.0.0-test",
        "kubeProxyVersion": "",
        "operatingSystem": "linux",
        "architecture": "amd64",
    }
    return {
        "capacity": NODE_CAPACITY,
        "allocatable": NODE_CAPACITY,
        "conditions": [ready],
        "addresses": [
            {"type": "InternalIP", "address": launch.POD_IP},
            {"type": "Hostname", "address": NODE_NAME},
        ],
        "nodeInfo": info,
    }


def _terminated(run: _Run, returncode: int, *, reason: str = "", message: str = "") -> JsonObj:
    """A container's terminated state; a process killed by signal N reports 128 + N."""
    code = 128 - returncode if returncode < 0 else returncode
    state: JsonObj = {
        "exitCode": code,
        "reason": reason or ("Completed" if code == 0 else "Error"),
        "startedAt": run.started_at,
        "finishedAt": _now(),
    }
    if message:
        state["message"] = message
    return state


def _retrying(call: Callable[[], T], *, conflicts: bool = True, attempts: int = 5) -> T:
    """Retry throttling and server errors, which a busy test API server can return, and (with
    ``conflicts``) 409s; callers for whom a 409 is an answer ("already bound") pass False."""
    retried = {429, 500, 503} | ({409} if conflicts else set())
    for attempt in range(attempts):
        try:
            return call()
        except rest.ApiError as exc:
            if exc.status not in retried or attempt == attempts - 1:
                raise
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")
