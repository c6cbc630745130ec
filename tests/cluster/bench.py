"""The operator's overhead on the test cluster: ``python -m tests.cluster.bench --out DIR``.

What it measures, with one controller (``python -m schedsearch.controller --all-namespaces``, the
chart's defaults otherwise) on the real API server:

* time from ``kubectl apply`` of N searches at once (N = 1, 10, 100; a PBT population of 4 each)
  to all their member pods created, p50 and p99 over searches; also from each search's creation
  (as a watch sees it) to its pods, which leaves out kubectl's own time;
* the floor: the same pods (the controller's own pod objects, renamed) created directly through
  the API by 4 concurrent clients, from the request to the watch seeing them;
* the controller's CPU seconds per level and its peak RSS;
* the largest ScheduleSearch status and PBT state ConfigMap the run produced.

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
import statistics
import sys
import tempfile
import threading
import time
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
FLOOR_CLIENTS = 4
LABEL_SEARCH = "schedsearch.io/search"


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
    def __init__(self, cluster: harness.Cluster, workdir: Path) -> None:
        self.cluster = cluster
        self.api = cluster.rest
        self.workdir = workdir
        self.pods = FirstSeen(self.api, "/api/v1/pods")
        self.searches = FirstSeen(self.api, f"{GROUP_PATH}/schedulesearches")
        self.controller: processes.ManagedProcess | None = None

    def start_controller(self) -> None:
        health = free_port()
        argv = [
            sys.executable, "-m", "schedsearch.controller", "--all-namespaces",
            "--report-port", str(free_port()), "--health-port", str(health),
            "--report-url", "http://127.0.0.1:1", "--image", TEST_IMAGE,
        ]  # fmt: skip
        self.controller = processes.spawn(
            "controller",
            argv,
            log_path=self.workdir / "controller.log",
            env=self.cluster.env(),
            cwd=ROOT,
        )

        def healthy() -> bool:
            import socket

            assert self.controller is not None and self.controller.alive(), "controller exited"
            try:
                with socket.create_connection(("127.0.0.1", health), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_until("the controller to serve /healthz", healthy, 60)

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

    def apply_round(self, namespace: str, prefix: str, count: int) -> list[JsonObj]:
        """Apply ``count`` searches in one kubectl call; per search, the times to its pods."""
        items = manifests(prefix, count)
        document = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        started = time.monotonic()
        self.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=document, timeout=300)
        applied = time.monotonic()
        names = [m["metadata"]["name"] for m in items]
        wait_until(
            f"{count * POPULATION} pods in {namespace}",
            lambda: all(len(self.pods_of(namespace, n)) >= POPULATION for n in names),
            timeout=600,
        )
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
        return rows

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

        started = time.monotonic()
        with ThreadPoolExecutor(FLOOR_CLIENTS) as pool:
            list(pool.map(create, bodies))
        keys = [f"{namespace}/{b['metadata']['name']}" for b in bodies]
        wait_until("the floor pods", lambda: all(self.pods.first_seen(k) for k in keys), 120)
        seen = [self.pods.first_seen(k) or 0.0 for k in keys]
        per_pod = [t - sent[k.split("/", 1)[1]] for k, t in zip(keys, seen, strict=True)]
        groups = [max(seen[i : i + POPULATION]) - started for i in range(0, len(seen), POPULATION)]
        return {"perPod": per_pod, "perGroup": groups}


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


def run(out: Path) -> JsonObj:
    found, problem = binaries.locate()
    if problem is not None:
        raise SystemExit(f"bench: {problem}")
    workdir = Path(tempfile.mkdtemp(prefix="schedsearch-opbench-"))
    cluster = harness.Cluster.start(found, workdir=workdir / "cluster")
    bench = Bench(cluster, workdir)
    try:
        install_crds(cluster)
        bench.pods.start()
        bench.searches.start()
        bench.start_controller()
        assert bench.controller is not None
        pid = bench.controller.pid
        levels = []
        templates: list[JsonObj] = []
        for count, rounds in LEVELS:
            namespace = bench.namespace(f"bench-{count}")
            rows: list[JsonObj] = []
            cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
            for r in range(rounds):
                rows += bench.apply_round(namespace, f"s{r}", count)
                print(
                    f"bench: {count} searches, round {r + 1}/{rounds}: p50 "
                    f"{percentile([x['applyToPodsSeconds'] for x in rows], 50):.2f} s",
                    file=sys.stderr,
                )
                time.sleep(3.0)  # the controller writes status after creating pods
                if not templates:
                    seen = dict(bench.pods.items())
                    templates = [seen[k] for k in bench.pods_of(namespace, rows[0]["search"])]
                if r == rounds - 1:
                    sizes = bench.sizes()
                bench.clean(namespace)
            cpu = cpu_seconds(pid) - cpu_before
            floor_ns = bench.namespace(f"floor-{count}")
            floor = bench.floor(floor_ns, templates, count * POPULATION)
            levels.append(
                {
                    "concurrentSearches": count,
                    "rounds": rounds,
                    "podsPerSearch": POPULATION,
                    "applyToPodsSeconds": summarize(x["applyToPodsSeconds"] for x in rows),
                    "createdToPodsSeconds": summarize(x["createdToPodsSeconds"] for x in rows),
                    "kubectlApplySeconds": summarize(x["kubectlSeconds"] for x in rows),
                    "directPodCreateSeconds": summarize(floor["perPod"]),
                    "directGroupOfPodsSeconds": summarize(floor["perGroup"]),
                    "controllerCpuSeconds": cpu,
                    "wallSeconds": time.monotonic() - wall_before,
                    **sizes,
                }
            )
            cluster.kubectl("delete", "namespace", floor_ns, "--wait=false")
        result = {
            "createdAt": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "kubernetes": cluster.version,
                "loadAverage": os.getloadavg(),
            },
            "clusterStartSeconds": dict(cluster.timings),
            "controllerPeakRssMiB": peak_rss_mib(pid),
            "statusBound": status_bound(),
            "levels": levels,
        }
    finally:
        bench.pods.stop()
        bench.searches.stop()
        if bench.controller is not None:
            bench.controller.stop(grace=10.0)
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
        "created, not run). Command: `python -m tests.cluster.bench --out benchmarks/operator` "
        "(`make bench-operator`).",
        "",
        f"Each search is PBT with a population of {POPULATION}: {POPULATION} member pods. "
        "*apply -> pods*: from the start of one `kubectl apply` of all N searches to the last of "
        "a search's pods seen by a watch; *created -> pods*: from the search's own creation. "
        f"*Direct*: the same pod objects POSTed in one burst by {FLOOR_CLIENTS} concurrent "
        f"clients (the floor no controller can beat): *burst -> {POPULATION} pods* from the start "
        "of the burst to each group of pods one search needs, and *per pod* from its request.",
        "",
        "| searches | rounds | apply -> pods p50 | p99 | created -> pods p50 | p99 | "
        f"direct: burst -> {POPULATION} pods p50 | p99 | per pod p50 | p99 | controller CPU | "
        "largest status | largest PBT state |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in result["levels"]:
        a, c, g, d = (
            level["applyToPodsSeconds"],
            level["createdToPodsSeconds"],
            level["directGroupOfPodsSeconds"],
            level["directPodCreateSeconds"],
        )
        lines.append(
            f"| {level['concurrentSearches']} | {level['rounds']} | {ms(a['p50'])} | "
            f"{ms(a['p99'])} | {ms(c['p50'])} | {ms(c['p99'])} | {ms(g['p50'])} | "
            f"{ms(g['p99'])} | {ms(d['p50'])} | {ms(d['p99'])} | "
            f"{level['controllerCpuSeconds']:.1f} s | "
            f"{level['largestStatusBytes']} B | {level['largestStateConfigMapBytes']} B |"
        )
    lines += [
        "",
        f"Controller peak RSS: {result['controllerPeakRssMiB']:.0f} MiB. Controller CPU is over "
        "the whole level (applies, status writes, requeues, deletion of the searches).",
        "Largest status and PBT state are what this run produced (pods never ran, so members "
        "have no steps yet). The bound: a status with all "
        f"{result['statusBound']['members']} member slots and every field filled is "
        f"{result['statusBound']['bytes']} bytes (etcd's object limit is 1.5 MiB).",
        "",
        "Test cluster start (seconds from etcd's start): "
        + ", ".join(f"{k} {v:.1f}" for k, v in result["clusterStartSeconds"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "operator")
    args = parser.parse_args(argv)
    result = run(args.out)
    print(markdown(result))


if __name__ == "__main__":
    main()
