"""The operator's overhead on the test cluster: ``python -m tests.cluster.bench --out DIR``.

What it measures, with one controller (``python -m schedsearch.controller --all-namespaces``, the
chart's defaults otherwise) on the real API server:

* time from ``kubectl apply`` of N searches at once (N = 1, 10, 100; a PBT population of 4 each)
  to all their member pods created, p50 and p99 over searches; also from each search's creation
  (as a watch sees it) to its pods, which leaves out kubectl's own time; in each apply mode
  (``--apply-modes``: kubectl's client-side apply, and ``--server-side``);
* kubectl's own pace, side by side: the same apply of the same searches with no controller
  running (stopped before, started again after), its duration and each search's apply -> created,
  and the API server's and etcd's CPU over each apply, with and without the controller;
* what the controller sent per search while the pods were being created (by method, its
  reconciles, the Events it posted) and once it settled;
* the floor: the same pods (the controller's own pod objects, renamed) created directly through
  the API by 4 concurrent clients, from the request to the watch seeing them;
* the controller's CPU seconds per level and its peak RSS;
* the largest ScheduleSearch status and PBT state ConfigMap the run produced;
* at rest, with ``--idle`` searches present (pods Pending forever): the controller's API
  requests per minute (its own count, watches aside) and its CPU share over a window;
* restart with those searches present (SIGKILL, start again): time to the cache synced and to
  the last reconcile, and the writes it sent (none is needed: nothing changed);
* leader failover: two replicas with ``--leader-elect`` (the chart's Lease timing), the leader
  killed: time until the follower leads and until it has reconciled everything.

Pods are created, not run: no kubelet is started, so the figures are the control plane's alone.
Writes ``DIR/report.json`` and ``DIR/report.md``. Needs the test cluster's binaries
(``scripts/build-k8s-tools.sh``); takes a few minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.cluster import binaries, harness, processes, rest
from tests.integration.controller_harness import (
    GROUP_PATH,
    TEST_IMAGE,
    free_port,
    install_crds,
    search_manifest,
)

JsonObj = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
POPULATION = 4
LEVELS = ((1, 10), (10, 3), (100, 1))  # (concurrent searches, rounds)
IDLE_SEARCHES = 300
IDLE_WINDOW_SECONDS = 60.0
QUIET_SECONDS = 5.0  # no reconcile for this long: the controller is at rest
APPLY_CHUNK = 100
WRITES = ("POST", "PUT", "PATCH", "DELETE")
FLOOR_CLIENTS = 4
LABEL_SEARCH = "schedsearch.io/search"
# kubectl apply's modes: client-side (a GET, then a create or a patch, per object) and server-side
# (one PATCH per object).
APPLY_MODES: dict[str, tuple[str, ...]] = {"client": (), "server": ("--server-side",)}
SETTLE_SECONDS = 3.0  # after the pods, at least: the controller writes status, Events


class FirstSeen:
    """Monotonic time at which a watch first saw each object of a collection (by namespace/name)."""

    def __init__(self, api: rest.RestClient, path: str) -> None:
        self.api, self.path = api, path
        self.seen: dict[str, float] = {}
        self.objects: dict[str, JsonObj] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def first_seen(self, key: str) -> float | None:
        with self._lock:
            return self.seen.get(key)

    def items(self) -> list[tuple[str, JsonObj]]:
        """The objects seen so far (their latest version), by namespace/name."""
        with self._lock:
            return list(self.objects.items())

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self.api.get(self.path)["metadata"]["resourceVersion"]
                for kind, obj in self.api.watch(self.path, resource_version=version):
                    now = time.monotonic()
                    meta = obj.get("metadata") or {}
                    version = meta.get("resourceVersion", version)
                    if kind in ("ADDED", "MODIFIED"):
                        key = f"{meta.get('namespace')}/{meta.get('name')}"
                        with self._lock:
                            self.seen.setdefault(key, now)
                            self.objects[key] = obj
                    if self._stop.is_set():
                        return
            except rest.ApiError as err:
                # 410: the version expired, list again; 429/5xx: the API is (re)starting a
                # resource's storage, try again shortly.
                if err.status == 410:
                    version = ""
                elif err.status == 429 or err.status >= 500:
                    time.sleep(0.2)
                else:
                    raise


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_until(what: str, check: Any, timeout: float) -> None:
    if not processes.wait_until(check, timeout=timeout, interval=0.05):
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def manifests(prefix: str, count: int) -> list[JsonObj]:
    return [
        search_manifest(
            f"{prefix}-{i}",
            "pbt",
            workload={"builtin": "digits-cnn"},
            strategy={"pbt": {"population": POPULATION, "perturbationInterval": 50}},
            budget={"steps": 1000},
        )
        for i in range(count)
    ]


class Bench:
    def __init__(
        self, cluster: harness.Cluster, workdir: Path, controller_flags: tuple[str, ...] = ()
    ) -> None:
        self.controller_flags = controller_flags
        self.cluster = cluster
        self.api = cluster.rest
        self.workdir = workdir
        self.pods = FirstSeen(self.api, "/api/v1/pods")
        self.searches = FirstSeen(self.api, f"{GROUP_PATH}/schedulesearches")
        self.controller: processes.ManagedProcess | None = None

    def start_controller(self, *extra: str, name: str = "controller") -> Replica:
        flags = (*self.controller_flags, *extra)
        replica = Replica(self.cluster, self.workdir / f"{name}.log", flags)
        self.controller = replica.process
        return replica

    def control_plane_cpu(self) -> float:
        """CPU seconds the API server and etcd have used so far."""
        names = ("kube-apiserver", "etcd")
        return sum(cpu_seconds(self.cluster.processes[n].pid) for n in names)

    def namespace(self, name: str) -> str:
        self.api.post("/api/v1/namespaces", {"metadata": {"name": name}})
        account = f"/api/v1/namespaces/{name}/serviceaccounts/default"
        wait_until(f"namespace {name}", lambda: self.api.send("GET", account)[0] == 200, 30)
        return name

    def pods_of(self, namespace: str, search: str) -> list[str]:
        return [
            key
            for key, obj in self.pods.items()
            if key.startswith(namespace + "/")
            and (obj["metadata"].get("labels") or {}).get(LABEL_SEARCH) == search
        ]

    def kubectl_apply(self, namespace: str, items: list[JsonObj], mode: str) -> float:
        """One ``kubectl apply`` of ``items`` in ``mode``; returns when it started."""
        document = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        flags = APPLY_MODES[mode]
        started = time.monotonic()
        self.cluster.kubectl(
            "apply", "-n", namespace, *flags, "-f", "-", input=document, timeout=1800
        )
        return started

    def bare_round(self, namespace: str, prefix: str, count: int, mode: str) -> JsonObj:
        """Apply ``count`` searches with no controller running: kubectl's own pace."""
        assert self.controller is None or not self.controller.alive()
        items = manifests(prefix, count)
        cpu = self.control_plane_cpu()
        started = self.kubectl_apply(namespace, items, mode)
        applied = time.monotonic()
        keys = [f"{namespace}/{m['metadata']['name']}" for m in items]
        wait_until(f"{count} searches", lambda: all(self.searches.first_seen(k) for k in keys), 600)
        return {
            "kubectlSeconds": applied - started,
            "applyToCreated": [(self.searches.first_seen(k) or 0.0) - started for k in keys],
            "controlPlaneCpuSeconds": self.control_plane_cpu() - cpu,
        }

    def apply_round(
        self, namespace: str, prefix: str, count: int, mode: str, replica: Replica
    ) -> tuple[list[JsonObj], JsonObj]:
        """Apply ``count`` searches in one kubectl call with the controller running; per search,
        the times to its pods; and what the controller sent while the pods came and once it
        settled."""
        items = manifests(prefix, count)
        before, cpu = replica.scrape() or {}, self.control_plane_cpu()
        started = self.kubectl_apply(namespace, items, mode)
        applied = time.monotonic()
        names = [m["metadata"]["name"] for m in items]
        wait_until(
            f"{count * POPULATION} pods in {namespace}",
            lambda: all(len(self.pods_of(namespace, n)) >= POPULATION for n in names),
            timeout=1800,
        )
        burst, burst_cpu = replica.scrape() or {}, self.control_plane_cpu() - cpu
        settled = replica.settle()
        rows = []
        for name in names:
            keys = self.pods_of(namespace, name)[:POPULATION]
            last_pod = max(self.pods.first_seen(k) or 0.0 for k in keys)
            created = self.searches.first_seen(f"{namespace}/{name}") or started
            rows.append(
                {
                    "search": name,
                    "applyToPodsSeconds": last_pod - started,
                    "createdToPodsSeconds": last_pod - created,
                    "kubectlSeconds": applied - started,
                }
            )
        wanted = set(names)
        events = [
            e
            for e in self.api.get(
                f"/api/v1/namespaces/{namespace}/events",
                fieldSelector="involvedObject.kind=ScheduleSearch",
            )["items"]
            if e["involvedObject"]["name"] in wanted
        ]
        sent = {
            "burst": replica.sent_since(before, burst),
            "settled": replica.sent_since(before, settled),
            "events": len(events),
            "controlPlaneCpuSeconds": burst_cpu,
        }
        return rows, sent

    def fill(self, namespace: str, count: int) -> None:
        """``count`` searches at once (in chunks of ``APPLY_CHUNK`` per kubectl apply), and
        their pods."""
        for start in range(0, count, APPLY_CHUNK):
            items = manifests(f"idle{start}", min(APPLY_CHUNK, count - start))
            document = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            self.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=document, timeout=600)

        def all_pods() -> bool:
            prefix = namespace + "/"
            return sum(k.startswith(prefix) for k, _ in self.pods.items()) >= count * POPULATION

        wait_until(f"{count * POPULATION} pods in {namespace}", all_pods, 1800)

    def idle(self, replica: Replica, count: int, window: float) -> JsonObj:
        """Requests and CPU of the controller at rest over ``window`` seconds."""
        replica.wait_quiet()
        pid = replica.process.pid
        before, cpu_before, started = replica.scrape() or {}, cpu_seconds(pid), time.monotonic()
        time.sleep(window)
        after, cpu_after, ended = replica.scrape() or {}, cpu_seconds(pid), time.monotonic()
        minutes = (ended - started) / 60

        def rate(methods: Iterable[str] = ()) -> float:
            return (replica.requests(after, methods) - replica.requests(before, methods)) / minutes

        reconciles = after.get("schedsearch_reconcile_duration_seconds_count", 0.0) - before.get(
            "schedsearch_reconcile_duration_seconds_count", 0.0
        )
        return {
            "searches": count,
            "windowSeconds": ended - started,
            "requestsPerMinute": rate(),
            "writesPerMinute": rate(WRITES),
            "reconcilesPerMinute": reconciles / minutes,
            "cpuShareOfACore": (cpu_after - cpu_before) / (ended - started),
        }

    def restart(self, replica: Replica, count: int) -> tuple[Replica, JsonObj]:
        """SIGKILL the controller with ``count`` searches present and start it again."""
        replica.kill()
        new = self.start_controller(name="controller-restarted")
        wait_until("the restarted controller's cache", new.synced, 900)
        synced = time.monotonic() - new.started
        last = new.wait_quiet()
        metrics = new.scrape() or {}
        return new, {
            "searches": count,
            "syncedSeconds": synced,
            "lastReconcileSeconds": last - new.started,
            "requests": new.requests(metrics),
            "writes": new.requests(metrics, WRITES),
            "reconciles": metrics.get("schedsearch_reconcile_duration_seconds_count", 0.0),
            "peakRssMiB": peak_rss_mib(new.process.pid),
        }

    def failover(self, replica: Replica, count: int) -> tuple[list[Replica], JsonObj]:
        """Two replicas with leader election (default Lease timing); the leader killed."""
        replica.kill()
        flags = ("--leader-elect", "--leader-election-namespace=default")
        pair = [self.start_controller(*flags, name=f"replica-{i}") for i in (1, 2)]
        wait_until("a leader", lambda: any(r.leading() for r in pair), 120)
        leader, follower = pair if pair[0].leading() else pair[::-1]
        leader.wait_quiet()
        killed = time.monotonic()
        leader.kill()
        wait_until("the follower to lead", follower.leading, 300)
        took_over = time.monotonic() - killed
        last = follower.wait_quiet()
        return pair, {
            "searches": count,
            "leaseDurationSeconds": 15.0,
            "takeoverSeconds": took_over,
            "lastReconcileSeconds": last - killed,
        }

    def clean(self, namespace: str) -> None:
        """Delete the searches; garbage collection removes their pods."""
        self.cluster.kubectl(
            "delete", "schedulesearches", "--all", "-n", namespace, "--wait=true", timeout=600
        )

        def no_pods() -> bool:
            found = self.api.get(f"/api/v1/namespaces/{namespace}/pods", limit="1")
            return not found["items"]

        wait_until(f"the pods of {namespace} to go", no_pods, 600)

    def sizes(self) -> JsonObj:
        largest_status, largest_state = 0, 0
        for obj in self.api.get(f"{GROUP_PATH}/schedulesearches")["items"]:
            status = obj.get("status") or {}
            largest_status = max(largest_status, len(json.dumps(status, separators=(",", ":"))))
        for cm in self.api.get("/api/v1/configmaps", labelSelector=LABEL_SEARCH)["items"]:
            size = sum(len(v) for v in (cm.get("data") or {}).values())
            largest_state = max(largest_state, size)
        return {"largestStatusBytes": largest_status, "largestStateConfigMapBytes": largest_state}

    def floor(self, namespace: str, templates: list[JsonObj], count: int) -> JsonObj:
        """Create ``count`` pods like ``templates`` directly, in one burst; per pod, request to
        seen, and per group of ``POPULATION`` (what one search needs), burst start to seen."""
        bodies = []
        for i in range(count):
            pod = copy.deepcopy(templates[i % len(templates)])
            labels = dict(pod["metadata"].get("labels") or {})
            labels.pop(LABEL_SEARCH, None)
            pod["metadata"] = {"name": f"floor-{i}", "namespace": namespace, "labels": labels}
            pod.pop("status", None)
            pod["spec"].pop("nodeName", None)
            bodies.append(pod)
        sent: dict[str, float] = {}

        def create(body: JsonObj) -> None:
            sent[body["metadata"]["name"]] = time.monotonic()
            self.api.post(f"/api/v1/namespaces/{namespace}/pods", body)

        cpu = self.control_plane_cpu()
        started = time.monotonic()
        with ThreadPoolExecutor(FLOOR_CLIENTS) as pool:
            list(pool.map(create, bodies))
        keys = [f"{namespace}/{b['metadata']['name']}" for b in bodies]
        wait_until("the floor pods", lambda: all(self.pods.first_seen(k) for k in keys), 600)
        cpu = self.control_plane_cpu() - cpu
        seen = [self.pods.first_seen(k) or 0.0 for k in keys]
        per_pod = [t - sent[k.split("/", 1)[1]] for k, t in zip(keys, seen, strict=True)]
        groups = [max(seen[i : i + POPULATION]) - started for i in range(0, len(seen), POPULATION)]
        return {"perPod": per_pod, "perGroup": groups, "controlPlaneCpuSeconds": cpu}


class Replica:
    """One controller process, with its health and metrics ports."""

    def __init__(self, cluster: harness.Cluster, log_path: Path, extra: tuple[str, ...]) -> None:
        self.health, self.metrics_port, self.log_path = free_port(), free_port(), log_path
        argv = [
            sys.executable, "-m", "schedsearch.controller", "--all-namespaces",
            "--report-port", str(free_port()), "--health-port", str(self.health),
            "--metrics-port", str(self.metrics_port),
            "--report-url", "http://127.0.0.1:1", "--image", TEST_IMAGE, *extra,
        ]  # fmt: skip
        self.started = time.monotonic()
        self.process = processes.spawn(
            "controller", argv, log_path=log_path, env=cluster.env(), cwd=ROOT
        )
        wait_until("the controller to serve /metrics", lambda: self.scrape() is not None, 60)

    def scrape(self) -> dict[str, float] | None:
        """The controller's metrics, summed over labels except an API request's method."""
        from prometheus_client.parser import text_string_to_metric_families

        assert self.process.alive(), f"controller exited:\n{processes.log_tail(self.log_path)}"
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = sample.name
                if sample.name == "schedsearch_api_requests_total":
                    key = f"{key}:{sample.labels['method']}"
                found[key] = found.get(key, 0.0) + sample.value
        return found

    def requests(self, metrics: dict[str, float], methods: Iterable[str] = ()) -> float:
        prefix = "schedsearch_api_requests_total:"
        wanted = set(methods)
        return sum(
            v
            for k, v in metrics.items()
            if k.startswith(prefix) and (not wanted or k[len(prefix) :] in wanted)
        )

    def reconciles(self) -> float:
        return (self.scrape() or {}).get("schedsearch_reconcile_duration_seconds_count", 0.0)

    def settle(self) -> dict[str, float]:
        """Wait ``SETTLE_SECONDS``, then until the controller has sent nothing for
        ``QUIET_SECONDS`` (Events may wait for its writes to quieten); its metrics then."""
        time.sleep(SETTLE_SECONDS)
        metrics = self.scrape() or {}
        last, sent = time.monotonic(), self.requests(metrics)
        while time.monotonic() - last < QUIET_SECONDS:
            time.sleep(0.5)
            metrics = self.scrape() or {}
            if self.requests(metrics) != sent:
                last, sent = time.monotonic(), self.requests(metrics)
        return metrics

    def sent_since(self, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """Requests by method and reconciles between two scrapes."""
        prefix = "schedsearch_api_requests_total:"
        found = {
            k[len(prefix) :]: v - before.get(k, 0.0)
            for k, v in after.items()
            if k.startswith(prefix) and v - before.get(k, 0.0)
        }
        key = "schedsearch_reconcile_duration_seconds_count"
        found["reconciles"] = after.get(key, 0.0) - before.get(key, 0.0)
        return found

    def leading(self) -> bool:
        return (self.scrape() or {}).get("schedsearch_controller_leader", 0.0) == 1.0

    def synced(self) -> bool:
        return "cache synced" in self.log_path.read_text(errors="replace")

    def wait_quiet(self, timeout: float = 900.0) -> float:
        """Wait until no reconcile ran for ``QUIET_SECONDS``; returns when the last one ran."""
        last, count = time.monotonic(), self.reconciles()
        deadline = last + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now, current = time.monotonic(), self.reconciles()
            if current != count:
                last, count = now, current
            elif now - last >= QUIET_SECONDS:
                return last
        raise TimeoutError("the controller never came to rest")

    def kill(self) -> None:
        if self.process.alive():
            self.process.signal_group(signal.SIGKILL)
            self.process.popen.wait(timeout=30)


def status_bound() -> JsonObj:
    """Size of a status with every member slot and field filled: 64 members, the conditions the
    controller writes, a best result and a message (computed from the model, not observed)."""
    from datetime import datetime, timezone

    from schedsearch.api import spec as api

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    members = [
        api.MemberSummary(
            id=i, phase="Running", step=123_456_789, lr=0.012345678901234,
            objective=0.1234567890123, restarts=3,
        )
        for i in range(api.MAX_STATUS_MEMBERS)
    ]  # fmt: skip
    conditions = [
        api.Condition(
            type=kind, status="True", reason="MembersTraining", message="x" * 200,
            last_transition_time=now, observed_generation=7,
        )
        for kind in ("Ready", "Progressing", "Degraded", "Failed", "Succeeded")
    ]  # fmt: skip
    status = api.ScheduleSearchStatus(
        phase="Running",
        message="m" * 500,
        strategy="pbt",
        conditions=conditions,
        observed_generation=7,
        members=members,
        best=api.BestResult(objective=0.1, member=3, step=5, schedule="s" * 60 + "-best"),
        member_steps=10**12,
        start_time=now,
        completion_time=now,
    )
    size = len(json.dumps(status.to_wire(), separators=(",", ":")))
    return {"members": api.MAX_STATUS_MEMBERS, "bytes": size}


def summarize(values: Iterable[float]) -> JsonObj:
    data = list(values)
    return {
        "n": len(data),
        "p50": percentile(data, 50),
        "p99": percentile(data, 99),
        "max": max(data),
        "mean": statistics.fmean(data),
    }


def mode_summary(
    rows: list[JsonObj], bare: list[JsonObj], sent: list[JsonObj], count: int
) -> JsonObj:
    """One apply mode of a level: with the controller (``rows``, ``sent``) and kubectl alone."""
    searches = count * len(sent)

    def per_search(which: str) -> dict[str, float]:
        keys = {k for each in sent for k in each[which]}
        return {k: sum(each[which].get(k, 0.0) for each in sent) / searches for k in sorted(keys)}

    return {
        "applyToPodsSeconds": summarize(x["applyToPodsSeconds"] for x in rows),
        "createdToPodsSeconds": summarize(x["createdToPodsSeconds"] for x in rows),
        "kubectlApplySeconds": summarize(x["kubectlSeconds"] for x in rows),
        "alone": {
            "kubectlApplySeconds": summarize(x["kubectlSeconds"] for x in bare),
            "applyToCreatedSeconds": summarize(t for x in bare for t in x["applyToCreated"]),
            "controlPlaneCpuSeconds": statistics.fmean(x["controlPlaneCpuSeconds"] for x in bare),
        },
        "controlPlaneCpuSeconds": statistics.fmean(x["controlPlaneCpuSeconds"] for x in sent),
        "perSearchWhilePodsCame": per_search("burst"),
        "perSearchSettled": per_search("settled"),
        "eventsPerSearch": sum(x["events"] for x in sent) / searches,
    }


def run(
    out: Path,
    levels_wanted: tuple[tuple[int, int], ...] = LEVELS,
    idle_count: int = IDLE_SEARCHES,
    window: float = IDLE_WINDOW_SECONDS,
    controller_flags: tuple[str, ...] = (),
    apply_modes: tuple[str, ...] = tuple(APPLY_MODES),
) -> JsonObj:
    found, problem = binaries.locate()
    if problem is not None:
        raise SystemExit(f"bench: {problem}")
    workdir = Path(tempfile.mkdtemp(prefix="schedsearch-opbench-"))
    cluster = harness.Cluster.start(found, workdir=workdir / "cluster")
    bench = Bench(cluster, workdir, controller_flags)
    replicas: list[Replica] = []
    try:
        install_crds(cluster)
        bench.pods.start()
        bench.searches.start()
        replica = bench.start_controller()
        replicas.append(replica)
        rss = [0.0]

        def stop(each: Replica) -> None:
            rss[0] = max(rss[0], peak_rss_mib(each.process.pid))
            each.kill()  # its searches are gone; a restart lists afresh

        levels = []
        templates: list[JsonObj] = []
        for count, rounds in levels_wanted:
            wall_before, cpu = time.monotonic(), 0.0
            modes: JsonObj = {}
            for mode in apply_modes:
                namespace = bench.namespace(f"bench-{count}-{mode}")
                bare_ns = bench.namespace(f"bare-{count}-{mode}")
                rows: list[JsonObj] = []
                bare: list[JsonObj] = []
                sent: list[JsonObj] = []
                for r in range(rounds):
                    # kubectl alone: the same apply with no controller running.
                    if replica.process.alive():
                        stop(replica)
                    bare.append(bench.bare_round(bare_ns, f"b{r}", count, mode))
                    bench.clean(bare_ns)
                    replica = bench.start_controller(name=f"controller-{count}-{mode}-{r}")
                    replicas.append(replica)
                    wait_until("the controller's cache", replica.synced, 300)
                    cpu_before = cpu_seconds(replica.process.pid)
                    found_rows, found_sent = bench.apply_round(
                        namespace, f"s{r}", count, mode, replica
                    )
                    rows += found_rows
                    sent.append(found_sent)
                    print(
                        f"bench: {count} searches, {mode}-side apply, round {r + 1}/{rounds}: "
                        f"apply -> pods p50 "
                        f"{percentile([x['applyToPodsSeconds'] for x in found_rows], 50):.2f} s, "
                        f"kubectl {found_rows[0]['kubectlSeconds']:.2f} s (alone "
                        f"{bare[-1]['kubectlSeconds']:.2f} s); sent {found_sent}",
                        file=sys.stderr,
                    )
                    if not templates:
                        seen = dict(bench.pods.items())
                        templates = [seen[k] for k in bench.pods_of(namespace, rows[0]["search"])]
                    if r == rounds - 1:
                        sizes = bench.sizes()
                    bench.clean(namespace)
                    cpu += cpu_seconds(replica.process.pid) - cpu_before
                modes[mode] = mode_summary(rows, bare, sent, count)
            floor_ns = bench.namespace(f"floor-{count}")
            floor = bench.floor(floor_ns, templates, count * POPULATION)
            levels.append(
                {
                    "concurrentSearches": count,
                    "rounds": rounds,
                    "podsPerSearch": POPULATION,
                    "modes": modes,
                    "directPodCreateSeconds": summarize(floor["perPod"]),
                    "directGroupOfPodsSeconds": summarize(floor["perGroup"]),
                    "directControlPlaneCpuSeconds": floor["controlPlaneCpuSeconds"],
                    "controllerCpuSeconds": cpu,
                    "wallSeconds": time.monotonic() - wall_before,
                    **sizes,
                }
            )
            cluster.kubectl("delete", "namespace", floor_ns, "--wait=true", timeout=1800)
        pid = replica.process.pid
        peak_rss = max(rss[0], peak_rss_mib(pid))
        at_rest: JsonObj = {}
        if idle_count:
            bench.fill(bench.namespace(f"idle-{idle_count}"), idle_count)
            at_rest["idle"] = bench.idle(replica, idle_count, window)
            at_rest["idle"]["peakRssMiB"] = peak_rss_mib(pid)
            peak_rss = max(peak_rss, at_rest["idle"]["peakRssMiB"])
            print(f"bench: at rest: {at_rest['idle']}", file=sys.stderr)
            replica, at_rest["restart"] = bench.restart(replica, idle_count)
            replicas.append(replica)
            print(f"bench: restart: {at_rest['restart']}", file=sys.stderr)
            pair, at_rest["failover"] = bench.failover(replica, idle_count)
            replicas += pair
            print(f"bench: failover: {at_rest['failover']}", file=sys.stderr)
        result = {
            "createdAt": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "kubernetes": cluster.version,
                "loadAverage": os.getloadavg(),
            },
            "clusterStartSeconds": dict(cluster.timings),
            "controllerPeakRssMiB": peak_rss,
            "statusBound": status_bound(),
            "command": "python -m tests.cluster.bench " + " ".join(sys.argv[1:]),
            "applyModes": list(apply_modes),
            "levels": levels,
            **at_rest,
        }
    finally:
        bench.pods.stop()
        bench.searches.stop()
        for each in replicas:
            if each.process.alive():
                each.process.stop(grace=10.0)
        cluster.stop()
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "report.md").write_text(markdown(result))
    return result


def markdown(result: JsonObj) -> str:
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    lines = [
        "# Operator overhead",
        "",
        f"Measured {result['createdAt']} on {result['machine']['cpus']} CPUs, Kubernetes "
        f"{result['machine']['kubernetes']} (test cluster: real API server, no kubelet; pods are "
        "created, not run), load average "
        + ", ".join(f"{x:.1f}" for x in result["machine"]["loadAverage"])
        + f" at the end. Command: `{result.get('command', 'make bench-operator')}`.",
        "",
        f"Each search is PBT with a population of {POPULATION}: {POPULATION} member pods. "
        "*apply -> pods*: from the start of one `kubectl apply` of all N searches to the last of "
        "a search's pods seen by a watch; *created -> pods*: from the search's own creation; "
        "*kubectl*: the apply command itself, which creates the searches one by one (a search's "
        "apply -> pods holds kubectl's time up to that search); *alone*: the same apply of the "
        "same searches with no controller running (stopped before it, started again after: "
        "each round alternates the two), and *apply -> created* each search's creation from "
        "the start of that apply. "
        f"*Direct*: the same pod objects POSTed in one burst by {FLOOR_CLIENTS} concurrent "
        f"clients (the floor no controller can beat): *burst -> {POPULATION} pods* from the start "
        "of the burst to each group of pods one search needs, and *per pod* from its request. "
        "*Ratio*: apply -> pods p50 over the direct burst p50 (the target is 2x at most).",
        "",
        "| searches | apply | rounds | apply -> pods p50 | p99 | created -> pods p50 | p99 | "
        "kubectl | kubectl alone | alone: apply -> created p50 | "
        f"direct: burst -> {POPULATION} pods p50 | p99 | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in result["levels"]:
        g = level["directGroupOfPodsSeconds"]
        for mode, m in level["modes"].items():
            a, c, alone = m["applyToPodsSeconds"], m["createdToPodsSeconds"], m["alone"]
            lines.append(
                f"| {level['concurrentSearches']} | {mode}-side | {level['rounds']} | "
                f"{ms(a['p50'])} | {ms(a['p99'])} | {ms(c['p50'])} | {ms(c['p99'])} | "
                f"{ms(m['kubectlApplySeconds']['p50'])} | "
                f"{ms(alone['kubectlApplySeconds']['p50'])} | "
                f"{ms(alone['applyToCreatedSeconds']['p50'])} | {ms(g['p50'])} | "
                f"{ms(g['p99'])} | {a['p50'] / g['p50']:.1f}x |"
            )
    lines += [
        "",
        "What the controller sent per search while the pods came (from the apply's start to the "
        f"last pod seen) and once settled (at least {SETTLE_SECONDS:.0f} s later, and "
        f"{QUIET_SECONDS:.0f} s without a request), its own count by method; the Events it "
        "posted on the searches; the API server's and etcd's CPU over the "
        "apply (with the controller: until the last pod; alone: until the last search).",
        "",
        "| searches | apply | while pods came: requests (by method) | reconciles | "
        "settled: requests | Events | API server + etcd CPU | alone | controller CPU (level) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for level in result["levels"]:
        for mode, m in level["modes"].items():
            burst, settled = m["perSearchWhilePodsCame"], m["perSearchSettled"]
            lines.append(
                f"| {level['concurrentSearches']} | {mode}-side | {_by_method(burst)} | "
                f"{burst.get('reconciles', 0.0):.2f} | {_by_method(settled)} | "
                f"{m['eventsPerSearch']:.2f} | {m['controlPlaneCpuSeconds']:.1f} s | "
                f"{m['alone']['controlPlaneCpuSeconds']:.1f} s | "
                f"{level['controllerCpuSeconds']:.1f} s |"
            )
    lines += [
        "",
        "| searches | direct: per pod p50 | p99 | direct: API server + etcd CPU | "
        "largest status | largest PBT state |",
        "|---|---|---|---|---|---|",
    ]
    for level in result["levels"]:
        d = level["directPodCreateSeconds"]
        lines.append(
            f"| {level['concurrentSearches']} | {ms(d['p50'])} | {ms(d['p99'])} | "
            f"{level.get('directControlPlaneCpuSeconds', float('nan')):.1f} s | "
            f"{level['largestStatusBytes']} B | {level['largestStateConfigMapBytes']} B |"
        )
    lines += [
        "",
        f"Controller peak RSS: {result['controllerPeakRssMiB']:.0f} MiB. Controller CPU is over "
        "the level's rounds with the controller, both apply modes (from each apply to the "
        "deletion of its searches; each controller's start aside).",
        "Largest status and PBT state are what this run produced (pods never ran, so members "
        "have no steps yet). The bound: a status with all "
        f"{result['statusBound']['members']} member slots and every field filled is "
        f"{result['statusBound']['bytes']} bytes (etcd's object limit is 1.5 MiB).",
        "",
        *_at_rest_lines(result),
        "Test cluster start (seconds from etcd's start): "
        + ", ".join(f"{k} {v:.1f}" for k, v in result["clusterStartSeconds"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def _by_method(sent: dict[str, float]) -> str:
    methods = {k: v for k, v in sent.items() if k != "reconciles"}
    total = sum(methods.values())
    return f"{total:.2f} (" + ", ".join(f"{k} {v:.2f}" for k, v in methods.items()) + ")"


def _at_rest_lines(result: JsonObj) -> list[str]:
    if "idle" not in result:
        return []
    idle, restart, failover = result["idle"], result["restart"], result["failover"]
    return [
        f"## {idle['searches']} searches present ({idle['searches'] * POPULATION} pods, Pending "
        "forever: no kubelet)",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| at rest: controller API requests per minute (watches aside; "
        f"{idle['windowSeconds']:.0f} s window) | {idle['requestsPerMinute']:.1f} |",
        f"| at rest: writes per minute | {idle['writesPerMinute']:.1f} |",
        f"| at rest: reconciles per minute | {idle['reconcilesPerMinute']:.1f} |",
        f"| at rest: controller CPU | {idle['cpuShareOfACore'] * 100:.2f}% of a core |",
        f"| controller peak RSS | {idle['peakRssMiB']:.0f} MiB |",
        f"| restart (SIGKILL, start again): cache synced | {restart['syncedSeconds']:.1f} s |",
        f"| restart: last reconcile | {restart['lastReconcileSeconds']:.1f} s after start |",
        f"| restart: requests / writes sent | {restart['requests']:.0f} / "
        f"{restart['writes']:.0f} |",
        f"| restart: peak RSS | {restart['peakRssMiB']:.0f} MiB |",
        f"| failover (Lease {failover['leaseDurationSeconds']:.0f} s): leader killed -> "
        f"follower leads | {failover['takeoverSeconds']:.1f} s |",
        f"| failover: leader killed -> follower's last reconcile | "
        f"{failover['lastReconcileSeconds']:.1f} s |",
        "",
        *_resync_note(idle),
        "Reports lost in a failover are counted by "
        "`tests/integration/test_controller_ha.py` (trainers running; it asserts none): the bench "
        "runs no trainers.",
        "",
    ]


def _resync_note(idle: JsonObj) -> list[str]:
    """Nothing but the resync (every 300 s by default) reconciles a search at rest: reconciles in
    the window mean one fell in it, and its cost is in the window's figures."""
    if not idle["reconcilesPerMinute"]:
        return ["No reconcile and no request in the window: nothing changed, nothing was sent.", ""]
    return [
        f"{idle['reconcilesPerMinute'] * idle['windowSeconds'] / 60:.0f} reconciles in the window: "
        "the resync (`--resync`, every 300 s) fell in it, and its cost is in the figures above "
        "(a list of each watched kind, every search reconciled once from the cache, no write). "
        "Outside a resync no reconcile runs at rest (their count here is exactly the searches'), "
        "so nothing is sent.",
        "",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "operator")
    parser.add_argument(
        "--levels",
        default=",".join(f"{n}x{r}" for n, r in LEVELS),
        help="concurrent searches x rounds, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--idle",
        type=int,
        default=IDLE_SEARCHES,
        help="searches present for the at-rest, restart and failover figures (0: skip them)",
    )
    parser.add_argument("--window", type=float, default=IDLE_WINDOW_SECONDS, metavar="SECONDS")
    parser.add_argument(
        "--controller-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="a flag for every controller the bench starts, e.g. --controller-flag=--resync=3600",
    )
    parser.add_argument(
        "--apply-modes",
        default=",".join(APPLY_MODES),
        help="kubectl apply modes, comma-separated, of: %(default)s",
    )
    args = parser.parse_args(argv)
    modes = tuple(m for m in args.apply_modes.split(",") if m)
    if not modes or any(m not in APPLY_MODES for m in modes):
        parser.error(f"--apply-modes: expected some of {','.join(APPLY_MODES)}")
    try:
        levels = tuple(
            (int(n), int(r)) for n, r in (part.split("x") for part in args.levels.split(","))
        )
    except ValueError:
        parser.error(f"--levels: expected e.g. 1x10,10x3,100x1, got {args.levels!r}")
    result = run(args.out, levels, args.idle, args.window, tuple(args.controller_flag), modes)
    print(markdown(result))


if __name__ == "__main__":
    main()
