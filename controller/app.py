"""The controller process: kopf runs one reconcile loop per ScheduleSearch, next to the report
channel and the metrics endpoint (``python -m schedsearch.controller --help``).

Kopf's only job here is to know which searches exist: for each one it keeps a daemon that calls
:meth:`Reconciler.reconcile` (read everything, ``plan``, apply) now, again when the plan asks
(``requeue_after``), and at once when a trainer's report changed the search's state. Nothing
depends on which event woke it, and a restarted controller simply starts the loops again: all
it needs is in the cluster (status, state ConfigMap, pods).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from schedsearch.api.spec import API_GROUP, API_VERSION_NAME
from schedsearch.controller import kube, observe, plan, server, settings
from schedsearch.controller import metrics as metrics_mod

log = logging.getLogger("schedsearch.controller")
IDLE_SECONDS = 300.0  # a finished search is looked at again this rarely
MAX_BACKOFF_SECONDS = 60.0
FINALIZER = f"{API_GROUP}/controller"


@dataclass(frozen=True)
class Options:
    """The command line, parsed."""

    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    health_port: int = 8080
    report_port: int = settings.DEFAULT_REPORT_PORT
    metrics_port: int | None = None
    log_level: str = "info"
    settings: settings.Settings = field(default_factory=settings.Settings)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m schedsearch.controller",
        description="The schedsearch operator: runs ScheduleSearches as trainer pods.",
    )
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--image", help="trainer image for built-in workloads")
    parser.add_argument("--report-url", help="URL at which trainer pods reach the report channel")
    parser.add_argument("--report-port", type=_port, default=settings.DEFAULT_REPORT_PORT)
    parser.add_argument("--health-port", type=_port, default=8080, help="serves /healthz")
    parser.add_argument("--metrics-port", type=_port, help="serves /metrics when set")
    parser.add_argument("--trainer-metrics-port", type=_port, help="trainer pods serve /metrics")
    parser.add_argument("--image-pull-grace", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument(
        "--resync",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how often a running search is looked at",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args(argv)
    report_url = args.report_url or f"http://127.0.0.1:{args.report_port}"
    config = settings.Settings(
        image=args.image,
        report_url=report_url.rstrip("/"),
        trainer_metrics_port=args.trainer_metrics_port,
        image_pull_grace_seconds=args.image_pull_grace,
        requeue_running_seconds=args.resync,
    )
    return Options(
        namespaces=tuple(args.namespace),
        all_namespaces=args.all_namespaces,
        health_port=args.health_port,
        report_port=args.report_port,
        metrics_port=args.metrics_port,
        log_level=args.log_level,
        settings=config,
    )


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port


# Passes of one reconcile while each acts and asks to look again soon (see Reconciler.reconcile).
MAX_PASSES = 3


class Reconciler:
    """Reconciles one search at a time: read, plan, apply. Safe to call at any moment."""

    def __init__(
        self, api: kube.Kube, config: settings.Settings, metrics: metrics_mod.ControllerMetrics
    ) -> None:
        self.api = api
        self.config = config
        self.metrics = metrics
        self._wakeups: dict[tuple[str, str], asyncio.Event] = {}

    def reconcile(self, namespace: str, name: str) -> float | None:
        """Read, plan, apply; returns when to look again (None: only when something changes).

        A plan that acted and asks to look again soon (it created the search's secret and
        state, say, and the member pods come next) is followed by another pass at once, up to
        ``MAX_PASSES``: the API server answers reads from etcd, so what was just created is
        already observed, and a new search gets its pods without waiting for a requeue.
        """
        with self.metrics.time_reconcile(namespace):
            again: float | None = None
            for _ in range(MAX_PASSES):
                decided = self._pass(namespace, name)
                if decided is None:
                    return None
                again = decided.requeue_after
                if not decided.actions or again is None or again > self.config.requeue_soon_seconds:
                    break
            return again

    def _pass(self, namespace: str, name: str) -> plan.Plan | None:
        obj = self.api.get_search(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            self.metrics.forget_search(namespace, name)
            return None
        search = observe.SearchView.from_object(obj)
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        seen = self.api.observe(search, now)
        decided = plan.plan(search, seen, config=self.config)
        try:
            self.api.apply(search, decided)
        except kube.Refused as refusal:
            # Retrying would be refused again (and use up nothing but time): fail once, saying
            # what the API server answered.
            decided = plan.refused(search, seen, refusal.reason, refusal.message)
            self.api.apply(search, decided)
        self._observe_metrics(search, decided)
        return decided

    def _observe_metrics(self, search: observe.SearchView, decided: plan.Plan) -> None:
        current = decided.status or search.status
        counts: dict[str, int] = {}
        for member in current.members:
            counts[member.phase] = counts.get(member.phase, 0) + 1
        best = current.best.objective if current.best is not None else None
        objective = search.spec.objective if search.spec is not None else None
        self.metrics.observe_search(
            search.namespace,
            search.name,
            phase=current.phase,
            members=counts,
            best_objective=best,
            metric=objective.metric if objective is not None else "",
            mode=objective.mode if objective is not None else "",
        )

    def poke(self, namespace: str, name: str) -> None:
        """Something changed (a report arrived): reconcile this search now."""
        event = self._wakeups.get((namespace, name))
        if event is not None:
            event.set()

    async def run(self, namespace: str, name: str, stopped: kopf.DaemonStopped) -> None:
        """The per-search loop kopf keeps alive while the search exists."""
        key = (namespace, name)
        wakeup = self._wakeups.setdefault(key, asyncio.Event())
        failures = 0
        try:
            while True:
                wakeup.clear()
                try:
                    delay = await asyncio.to_thread(self.reconcile, namespace, name)
                    failures = 0
                except Exception as err:
                    failures += 1
                    delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2**failures)
                    log.warning(
                        "reconcile %s/%s failed (retry in %.1fs): %s", namespace, name, delay, err
                    )
                if stopped:  # kopf also cancels the sleep below; this spares a last wait
                    return
                await _sleep(wakeup, IDLE_SECONDS if delay is None else delay)
        finally:
            self._wakeups.pop(key, None)
            # Kopf ends this loop when the search is being deleted (or the controller stops), not
            # always after a pass that saw the deletion: its series go here either way.
            self.metrics.forget_search(namespace, name)


async def _sleep(wakeup: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wakeup.wait(), timeout=seconds)


def registry_for(reconciler: Reconciler) -> kopf.OperatorRegistry:
    """Kopf's handlers: log in with the Kubernetes client, one daemon per search."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: object) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)  # type: ignore[arg-type]

    @kopf.daemon(
        API_GROUP,
        API_VERSION_NAME,
        "schedulesearches",
        registry=registry,
        id="reconcile",
        cancellation_timeout=10.0,
    )
    async def reconcile_loop(
        namespace: str | None, name: str, stopped: kopf.DaemonStopped, **_: object
    ) -> None:
        assert namespace is not None, "ScheduleSearch is namespaced"
        await reconciler.run(namespace, name, stopped)

    return registry


def operator_settings(level: str) -> kopf.OperatorSettings:
    config = kopf.OperatorSettings()
    config.persistence.finalizer = FINALIZER
    # Kopf's own bookkeeping goes to annotations: the status schema has no room for it.
    config.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    config.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    # We post our own Events; kopf's would turn every log line into one.
    config.posting.enabled = False
    config.posting.level = logging.getLevelName(level.upper())
    return config


def load_kube_config() -> k8s.ApiClient:
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s.ApiClient()


async def serve(options: Options) -> None:
    """Run until cancelled: report channel, metrics, and kopf's reconcile loops."""
    metrics = metrics_mod.ControllerMetrics(namespaces=options.namespaces)
    api = kube.Kube(kube.Rest(load_kube_config()), on_restart=metrics.count_member_restart)
    reconciler = Reconciler(api, options.settings, metrics)
    channel = server.ReportChannel(api, metrics, on_change=reconciler.poke)
    runners = [await server.start(channel.app(), "0.0.0.0", options.report_port)]
    if options.metrics_port is not None:
        runners.append(
            await server.start(server.metrics_app(metrics), "0.0.0.0", options.metrics_port)
        )
    log.info(
        "report channel on :%d (pods use %s)",
        server.bound_port(runners[0]),
        options.settings.report_url,
    )
    try:
        await kopf.operator(
            registry=registry_for(reconciler),
            settings=operator_settings(options.log_level),
            standalone=True,
            clusterwide=options.all_namespaces,
            namespaces=options.namespaces,
            liveness_endpoint=f"http://0.0.0.0:{options.health_port}/healthz",
        )
    finally:
        for runner in runners:
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(
        level=options.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Kopf's per-object INFO lines ("Handler ... succeeded") drown ours.
    logging.getLogger("kopf").setLevel(
        max(logging.WARNING, logging.getLevelName(options.log_level.upper()))
    )
    try:
        asyncio.run(serve(options))
    except KeyboardInterrupt:
        return 130
    return 0
