"""The controller process: watches fill a cache, a work queue feeds reconcile workers, next to
the report channel and the metrics endpoint (``python -m schedsearch.controller --help``).

Watches (``controller.watches``) stream the searches and everything they own into
``controller.cache``; a change to any of them queues its search, and a worker reconciles it
(:meth:`Reconciler.reconcile`: read from the cache, ``plan``, apply) once however many changes
queued it. Nothing is timed while nothing changes: trainers' reports and pod changes are what
move a search on, deadlines (an image's pull grace) queue it when they fall due, and a slow
resync (``--resync``) lists everything again in case a watch missed something. With
``--leader-elect`` several replicas run and one acts; the others keep their caches warm and
take over when its Lease expires. A restarted controller loses nothing: all it needs is in the
cluster (status, state ConfigMap, pods).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from schedsearch.controller import (
    cache,
    events,
    kube,
    leader,
    names,
    observe,
    plan,
    server,
    settings,
    watches,
    workqueue,
)
from schedsearch.controller import metrics as metrics_mod

log = logging.getLogger("schedsearch.controller")
LEASE_NAME = "schedsearch-controller"
OTHER_THREADS = 8  # threads besides the reconcile workers': reports, the Lease, relists
# Either ends the process cleanly: the Lease released, the Events still waiting posted.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
    # Every search is listed and reconciled again this often, whether or not it changed.
    resync_seconds: float = 300.0
    workers: int = 8
    kube_qps: float = 500.0
    kube_burst: int = 1000
    # Label selector of the searches this controller runs (None: all of them).
    shard_selector: str | None = None
    leader_elect: bool = False
    lease_namespace: str | None = None
    lease_name: str = LEASE_NAME
    lease_timing: leader.Timing = field(default_factory=leader.Timing)
    # Events wait until the controller has written nothing for this long (0: posted at once).
    events_quiet_seconds: float = events.QUIET_SECONDS


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
    parser.add_argument("--image-pull-grace", type=_positive, default=60.0, metavar="SECONDS")
    parser.add_argument(
        "--resync",
        type=_positive,
        default=300.0,
        metavar="SECONDS",
        help="how often every search is listed and reconciled again, changed or not",
    )
    parser.add_argument(
        "--workers", type=_count, default=8, help="searches reconciled at the same time"
    )
    parser.add_argument(
        "--kube-qps", type=_positive, default=500.0, help="API requests per second, sustained"
    )
    parser.add_argument("--kube-burst", type=_count, default=1000, help="API requests in a burst")
    parser.add_argument(
        "--shard-selector",
        metavar="LABELS",
        help="run only the searches matching this label selector (e.g. shard=a)",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="of several replicas, only the holder of a Lease acts",
    )
    parser.add_argument(
        "--leader-election-namespace",
        metavar="NAMESPACE",
        help="namespace of the Lease (default: $POD_NAMESPACE)",
    )
    parser.add_argument("--leader-election-id", default=LEASE_NAME, metavar="NAME")
    parser.add_argument("--lease-duration", type=_positive, default=15.0, metavar="SECONDS")
    parser.add_argument("--renew-deadline", type=_positive, default=10.0, metavar="SECONDS")
    parser.add_argument("--retry-period", type=_positive, default=2.0, metavar="SECONDS")
    parser.add_argument(
        "--events-quiet",
        type=_non_negative,
        default=events.QUIET_SECONDS,
        metavar="SECONDS",
        help="Events are posted once the controller has written nothing for this long, or "
        f"after {events.MAX_DELAY_SECONDS:.0f} s (0: each at once, by the reconcile that "
        "records it)",
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
    )
    try:
        timing = leader.Timing(args.lease_duration, args.renew_deadline, args.retry_period)
    except ValueError as err:
        parser.error(str(err))
    lease_namespace = args.leader_election_namespace or os.environ.get("POD_NAMESPACE")
    if args.leader_elect and not lease_namespace:
        parser.error("--leader-elect: needs --leader-election-namespace or $POD_NAMESPACE")
    return Options(
        namespaces=tuple(args.namespace),
        all_namespaces=args.all_namespaces,
        health_port=args.health_port,
        report_port=args.report_port,
        metrics_port=args.metrics_port,
        log_level=args.log_level,
        settings=config,
        resync_seconds=args.resync,
        workers=args.workers,
        kube_qps=args.kube_qps,
        kube_burst=args.kube_burst,
        shard_selector=_selector(parser, args.shard_selector),
        leader_elect=args.leader_elect,
        lease_namespace=lease_namespace,
        lease_name=args.leader_election_id,
        lease_timing=timing,
        events_quiet_seconds=args.events_quiet,
    )


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _selector(parser: argparse.ArgumentParser, text: str | None) -> str | None:
    """A label selector as the API server reads it: requirements joined by commas."""
    if text is None:
        return None
    requirements = [part.strip() for part in text.split(",")]
    if not all(requirements):
        parser.error(f"--shard-selector: an empty requirement in {text!r}")
    return ",".join(requirements)


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

    def reconcile(self, namespace: str, name: str) -> float | None:
        """Read, plan, apply; returns when to look again (None: only when something changes).

        A plan that acted and asks to look again soon (a new search's objects and pods, say)
        is followed by another pass at once, up to ``MAX_PASSES``: what the API answered the
        writes with is already in the cache, so that pass sees them (and finds nothing left to
        do) without waiting for a requeue, and a plan stopped half-way (see ``Kube.apply``)
        goes on from what it found.
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
        if obj is not None and names.FORMER_FINALIZER in (obj["metadata"].get("finalizers") or ()):
            # Before deletion too: a search being deleted waits for it to go.
            self.api.drop_finalizer(obj, names.FORMER_FINALIZER)
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

    def handle(self, key: cache.SearchKey) -> float | None:
        """A work-queue item: reconcile that search; API errors that retrying cannot fix are
        :class:`workqueue.Terminal` (the next change or resync tries again)."""
        try:
            return self.reconcile(*key)
        except kube.ApiError as err:
            if err.terminal:
                raise workqueue.Terminal(str(err)) from err
            raise


def load_kube_config() -> k8s.ApiClient:
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s.ApiClient()


# Listed pods before state ConfigMaps: a pod's end is then never seen without its final report.
SYNC_ORDER = (
    cache.SEARCHES,
    cache.PODS,
    cache.SERVICES,
    cache.CONFIGMAPS,
    cache.SCHEDULES,
)
SYNC_RETRY_SECONDS = (1.0, 30.0)  # first and longest wait between attempts to list


async def sync(api: kube.Kube, options: Options) -> int:
    """List every watched kind into the cache (forgetting what is gone); retried until it
    works, except a shard selector the API server refuses. Returns the number of objects."""
    wait = SYNC_RETRY_SECONDS[0]
    while True:
        try:
            return await asyncio.to_thread(_list_all, api, options)
        except kube.ApiError as err:
            if err.status == 400 and options.shard_selector:
                raise ValueError(
                    f"--shard-selector {options.shard_selector!r}: the API server refused it: "
                    f"{err.message}"
                ) from err
            log.warning("listing the searches and their objects: %s (retry in %.0fs)", err, wait)
        except Exception as err:
            log.warning("listing the searches and their objects: %s (retry in %.0fs)", err, wait)
        await asyncio.sleep(wait)
        wait = min(wait * 2, SYNC_RETRY_SECONDS[1])


def _list_all(api: kube.Kube, options: Options) -> int:
    where: Sequence[str | None] = [None] if options.all_namespaces else options.namespaces
    return sum(
        api.relist(kind, namespace, watches.selector(kind, options.shard_selector))[0]
        for kind in SYNC_ORDER
        for namespace in where
    )


async def lead(
    options: Options,
    api: kube.Kube,
    queue: workqueue.WorkQueue[cache.SearchKey],
    reconciler: Reconciler,
    elector: leader.Elector | None,
) -> None:
    """Once this replica leads (at once without leader election): list everything, queue every
    search, and run the workers, the resync and the Lease renewal until one of them fails."""
    if elector is not None:
        await leader.acquire(elector)
    reconciler.metrics.leader.set(1)
    listed = await sync(api, options)
    searches = api.store.searches()
    log.info("cache synced: %d objects, %d searches", listed, len(searches))
    for key in searches:
        queue.add(key)
    tasks = [
        asyncio.create_task(workqueue.work(queue, reconciler.handle), name=f"worker-{index}")
        for index in range(options.workers)
    ]
    tasks.append(asyncio.create_task(_resync(options, api, queue), name="resync"))
    if elector is not None:
        tasks.append(asyncio.create_task(leader.keep(elector), name="lease"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()


async def _resync(
    options: Options, api: kube.Kube, queue: workqueue.WorkQueue[cache.SearchKey]
) -> None:
    while True:
        await asyncio.sleep(options.resync_seconds)
        await sync(api, options)
        for key in api.store.searches():
            queue.add(key)


def identity() -> str:
    """This replica's name in the Lease: its host (the pod's name) and a random suffix."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


async def serve(options: Options) -> None:
    """Run until SIGTERM or SIGINT, or until leadership is lost: the report channel, metrics,
    the health endpoint, the watches that fill the cache, and while leading the reconcile
    workers."""
    loop = asyncio.get_running_loop()
    # Each reconcile worker holds a thread for a whole pass; the report channel, the Lease and
    # the relists need threads of their own besides (the default pool is sized by CPUs only).
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(
            max_workers=options.workers + OTHER_THREADS, thread_name_prefix="schedsearch"
        )
    )
    queue: workqueue.WorkQueue[cache.SearchKey] = workqueue.WorkQueue()

    def enqueue(namespace: str, name: str) -> None:
        # Called from the event loop (watch events) and from threads (writes, reports).
        loop.call_soon_threadsafe(queue.add, (namespace, name))

    metrics = metrics_mod.ControllerMetrics(namespaces=options.namespaces)
    store = cache.Store(on_change=enqueue)
    limiter = workqueue.TokenBucket(options.kube_qps, options.kube_burst)
    rest = kube.Rest(load_kube_config(), limiter=limiter, on_request=metrics.count_api_request)
    # Events are posted by a thread of their own, once the controller's writes quieten.
    api = kube.Kube(rest, store=store, on_restart=metrics.count_member_restart)
    recorder = None
    if options.events_quiet_seconds > 0:
        recorder = events.Recorder(api.post_event, quiet=options.events_quiet_seconds)
        api.recorder = recorder
        recorder.start()
    reconciler = Reconciler(api, options.settings, metrics)
    elector = None
    if options.leader_elect:
        assert options.lease_namespace is not None  # parse_args checks
        elector = leader.Elector(
            rest,
            namespace=options.lease_namespace,
            name=options.lease_name,
            identity=identity(),
            timing=options.lease_timing,
        )
    leading: Callable[[], bool] = (lambda: True) if elector is None else (lambda: elector.leading)
    channel = server.ReportChannel(api, metrics, on_change=enqueue, leading=leading)
    runners = [await server.start(channel.app(), "0.0.0.0", options.report_port)]
    runners.append(await server.start(server.health_app(), "0.0.0.0", options.health_port))
    if options.metrics_port is not None:
        runners.append(
            await server.start(server.metrics_app(metrics), "0.0.0.0", options.metrics_port)
        )
    log.info(
        "report channel on :%d (pods use %s)",
        server.bound_port(runners[0]),
        options.settings.report_url,
    )
    stop = asyncio.Event()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    where: Sequence[str | None] = [None] if options.all_namespaces else options.namespaces
    tasks = {
        asyncio.create_task(watches.watch(api, where, options.shard_selector), name="watches"),
        asyncio.create_task(lead(options, api, queue, reconciler, elector), name="lead"),
        asyncio.create_task(stop.wait(), name="stop"),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        if stop.is_set():
            log.info("stopping")
        queue.shutdown()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if recorder is not None:
            await asyncio.to_thread(recorder.stop)
        if elector is not None:
            await asyncio.to_thread(elector.release)
        for runner in runners:
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(
        level=options.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(options))
    except KeyboardInterrupt:
        return 130
    except (leader.LeadershipLost, ValueError) as err:
        log.error("%s", err)
        return 1
    return 0
