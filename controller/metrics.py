"""The controller's Prometheus metrics: searches, members, best objectives, reconcile health.

State-like series (searches by phase, members by state, best objective) are computed at scrape
time from the last snapshot the reconciler recorded for each search. Event-like series (exploits,
member restarts, reconcile errors) are counters; durations are histograms in seconds. A deleted
search disappears from every series at once, its counters included, so the label sets do not
grow with every search ever seen. Counters expose no ``_created`` series (one per counter,
doubling the series for no dashboard's use), and the reconcile error counter of a namespace
exists at 0 from its first reconcile, so ``rate()`` of it is 0 rather than "no data".

The ``namespace`` label is the search's namespace, not the controller's: the chart's
ServiceMonitor honours the target's labels so Prometheus keeps it as it is.

Each :class:`ControllerMetrics` owns its own ``CollectorRegistry`` (never the process-global
one), so tests and embedded uses can create as many as they like.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "schedsearch_"
# Zero-filled so dashboards show a flat 0 rather than "no data" before the first search.
DEFAULT_PHASES = ("Pending", "Running", "Succeeded", "Failed")
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REPORT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REPORT_KINDS = ("progress", "event")


@dataclass(frozen=True)
class SearchSnapshot:
    """What the reconciler last saw of one search."""

    phase: str
    members: Mapping[str, int] = field(default_factory=dict)  # state -> count
    best_objective: float | None = None
    # What the objective is: a best of 0.08 means nothing without "val_loss, min".
    metric: str = ""
    mode: str = ""


class _SearchCollector(Collector):
    """Builds the state-like gauges from the snapshots at scrape time."""

    def __init__(self, phases: Sequence[str]) -> None:
        self._phases = tuple(phases)
        self._lock = threading.Lock()
        self._searches: dict[tuple[str, str], SearchSnapshot] = {}

    def put(self, namespace: str, name: str, snapshot: SearchSnapshot) -> None:
        with self._lock:
            self._searches[(namespace, name)] = snapshot

    def drop(self, namespace: str, name: str) -> None:
        with self._lock:
            self._searches.pop((namespace, name), None)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            searches = dict(self._searches)
        yield _searches_by_phase(searches, self._phases)
        yield _members_by_state(searches)
        yield _best_objective(searches)

    def describe(self) -> Iterable[Metric]:
        # Describing by collecting an empty state lets the registry check for name clashes.
        yield _searches_by_phase({}, ())
        yield _members_by_state({})
        yield _best_objective({})


def _searches_by_phase(
    searches: Mapping[tuple[str, str], SearchSnapshot], phases: Sequence[str]
) -> Metric:
    family = GaugeMetricFamily(
        PREFIX + "searches",
        "ScheduleSearches by namespace and phase.",
        labels=["namespace", "phase"],
    )
    counts = Tally((ns, snap.phase) for (ns, _), snap in searches.items())
    for namespace in sorted({ns for ns, _ in searches}):
        for phase in phases:
            counts.setdefault((namespace, phase), 0)
    for (namespace, phase), count in sorted(counts.items()):
        family.add_metric([namespace, phase], count)
    return family


def _members_by_state(searches: Mapping[tuple[str, str], SearchSnapshot]) -> Metric:
    family = GaugeMetricFamily(
        PREFIX + "search_members",
        "Members (trainer pods, candidates or replicas) of a search by state.",
        labels=["namespace", "search", "state"],
    )
    for (namespace, name), snap in sorted(searches.items()):
        for state, count in sorted(snap.members.items()):
            family.add_metric([namespace, name, state], count)
    return family


def _best_objective(searches: Mapping[tuple[str, str], SearchSnapshot]) -> Metric:
    family = GaugeMetricFamily(
        PREFIX + "search_best_objective",
        "Best objective value a search has found so far (metric and mode say what it is).",
        labels=["namespace", "search", "metric", "mode"],
    )
    for (namespace, name), snap in sorted(searches.items()):
        if snap.best_objective is not None:
            family.add_metric([namespace, name, snap.metric, snap.mode], snap.best_objective)
    return family


class ControllerMetrics:
    """All controller series in one private registry.

    The reconciler calls :meth:`observe_search` with what it read each time it reconciles a
    search and :meth:`forget_search` when the search is gone; it wraps each reconcile in
    :meth:`time_reconcile`, and counts exploits/restarts it carries out. The report channel
    wraps each request in :meth:`time_report`.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        phases: Sequence[str] = DEFAULT_PHASES,
        namespaces: Sequence[str] = (),
    ) -> None:
        # Process-wide in prometheus_client; every registry of ours wants it off.
        disable_created_metrics()
        self.registry = registry if registry is not None else CollectorRegistry()
        self._searches = _SearchCollector(phases)
        self.registry.register(self._searches)
        self.exploits = Counter(
            PREFIX + "exploits",
            "PBT exploits carried out (a member copied a better one).",
            ["namespace", "search"],
            registry=self.registry,
        )
        self.member_restarts = Counter(
            PREFIX + "member_restarts",
            "Trainer pods recreated after they died, resuming from their last checkpoint.",
            ["namespace", "search"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            PREFIX + "reconcile_duration_seconds",
            "Time to reconcile one ScheduleSearch.",
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            PREFIX + "reconcile_errors",
            "Reconciles that raised (they are retried with backoff).",
            ["namespace"],
            registry=self.registry,
        )
        self.report_duration = Histogram(
            PREFIX + "report_duration_seconds",
            "Time the controller took to handle one trainer report on the report channel.",
            ["kind"],
            buckets=REPORT_BUCKETS,
            registry=self.registry,
        )
        self.api_requests = Counter(
            PREFIX + "api_requests",
            "Requests the controller sent to the API server (watches aside), by method and "
            "answer's status class (2xx, 4xx, 5xx, or error: no answer).",
            ["method", "code"],
            registry=self.registry,
        )
        self.leader = Gauge(
            PREFIX + "controller_leader",
            "1 while this controller replica acts (holds the Lease, or runs without leader "
            "election), 0 while it waits to take over.",
            registry=self.registry,
        )
        for namespace in namespaces:  # the watched namespaces: known before any reconcile
            self.reconcile_errors.labels(namespace=namespace)

    def observe_search(
        self,
        namespace: str,
        name: str,
        *,
        phase: str,
        members: Mapping[str, int] | None = None,
        best_objective: float | None = None,
        metric: str = "",
        mode: str = "",
    ) -> None:
        """Record the state of one search as the reconciler just read it."""
        snapshot = SearchSnapshot(phase, dict(members or {}), best_objective, metric, mode)
        self._searches.put(namespace, name, snapshot)

    def forget_search(self, namespace: str, name: str) -> None:
        """The search was deleted: drop every series of it, counters included."""
        self._searches.drop(namespace, name)
        self.exploits.remove(namespace, name)
        self.member_restarts.remove(namespace, name)

    def count_api_request(self, method: str, status: int | None) -> None:
        """One request to the API server, answered with ``status`` (None: no answer)."""
        code = "error" if status is None else f"{status // 100}xx"
        self.api_requests.labels(method=method, code=code).inc()

    def count_exploit(self, namespace: str, search: str, n: int = 1) -> None:
        self.exploits.labels(namespace=namespace, search=search).inc(n)

    def count_member_restart(self, namespace: str, search: str, n: int = 1) -> None:
        self.member_restarts.labels(namespace=namespace, search=search).inc(n)

    @contextlib.contextmanager
    def time_reconcile(self, namespace: str) -> Iterator[None]:
        """Observe the duration of the enclosed reconcile; count it as an error if it raises."""
        errors = self.reconcile_errors.labels(namespace=namespace)  # exists at 0 from now on
        start = time.perf_counter()
        try:
            yield
        except Exception:
            errors.inc()
            raise
        finally:
            self.reconcile_duration.observe(time.perf_counter() - start)

    @contextlib.contextmanager
    def time_report(self, kind: str) -> Iterator[None]:
        """Observe how long the enclosed handling of one trainer report took."""
        if kind not in REPORT_KINDS:
            raise ValueError(f"report kind must be one of {REPORT_KINDS}, got {kind!r}")
        with self.report_duration.labels(kind=kind).time():
            yield
