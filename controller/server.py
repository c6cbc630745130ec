"""The controller's HTTP endpoints: the trainers' report channel, Prometheus metrics, and the
liveness probe.

``POST /v1/namespaces/{ns}/schedulesearches/{name}/reports`` (see ``trainers.channel``):

* 200 with ``{"decision": ..., "duplicate": bool}`` once the report is durably in the state;
* 400 ``{"error": "field: message"}`` for a body that breaks the contract (not worth a retry);
* 409 for a stale report (numbered before the member's last one: from a pod since replaced);
* 401 without the search's bearer token; 404 for a search that has no token (unknown);
* 503 with ``Retry-After`` while the state is not there yet, the API server is unreachable,
  or this replica is not the leader: the trainer retries, so a report is never lost while the
  controller restarts or another replica takes over.

Reports of one search are applied one at a time in this process (a lock per search); the
state's resourceVersion guards against any other writer. The HTTP layer holds no state of its
own, so a restarted controller answers exactly as its predecessor would have.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schedsearch.controller import kube, pods, reports
from schedsearch.controller import metrics as metrics_mod
from schedsearch.controller import state as state_mod
from schedsearch.trainers import channel

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = "1"
MAX_BODY_BYTES = 4 * 1024 * 1024
# Kinds of the report-duration histogram: decisions in flight vs. one-off events.
_METRIC_KIND = {
    "checkpoint": "progress",
    "poll": "progress",
    "restart": "event",
    "final": "event",
    "fatal": "event",
    "control": "event",
}


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class ReportChannel:
    """Authenticates reports, applies them to the search's state, answers with the decision."""

    def __init__(
        self,
        api: kube.Kube,
        metrics: metrics_mod.ControllerMetrics,
        *,
        on_change: Callable[[str, str], None] = lambda ns, name: None,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.on_change = on_change
        self.leading = leading
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        path = "/" + channel.API_VERSION + "/namespaces/{namespace}/schedulesearches/{name}/reports"
        app.router.add_post(path, self.handle)
        app.router.add_get("/healthz", _healthz)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if not self.leading():
            # Only the leader writes states; the trainer's retry finds it (through the Service).
            return _error(503, "this controller replica is not the leader", **_RETRY)
        denied = await self._authenticate(request, namespace, name)
        if denied is not None:
            return denied
        try:
            report = channel.Report.from_json(await request.json())
        except json.JSONDecodeError:
            return _error(400, "body: not JSON")
        except channel.ReportError as err:
            return _error(400, str(err))
        key = request.headers.get(channel.IDEMPOTENCY_HEADER)
        if key is not None and key != report.key():
            return _error(400, f"{channel.IDEMPOTENCY_HEADER}: must be {report.key()!r}")
        with self.metrics.time_report(_METRIC_KIND[report.kind]):
            return await self._apply(namespace, name, report)

    async def _authenticate(
        self, request: web.Request, namespace: str, name: str
    ) -> web.Response | None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return _error(401, "Authorization: a Bearer token is required", **_CHALLENGE)
        try:
            expected = await asyncio.to_thread(self.api.token, namespace, name)
            if expected is not None and not _same(given, expected):
                # The Secret may have been replaced (search re-created): read it again once.
                expected = await asyncio.to_thread(self.api.token, namespace, name, fresh=True)
        except Exception as err:
            log.warning("report channel: cannot read the token of %s/%s: %s", namespace, name, err)
            return _error(503, "controller cannot reach the API server", **_RETRY)
        if expected is None:
            return _error(404, f"no ScheduleSearch {namespace}/{name} with a report token")
        if not _same(given, expected):
            return _error(401, "Authorization: wrong token for this search", **_CHALLENGE)
        return None

    async def _apply(self, namespace: str, name: str, report: channel.Report) -> web.Response:
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            try:
                outcome = await asyncio.to_thread(self._apply_sync, namespace, name, report)
            except channel.StaleReport as err:
                return _error(409, str(err))
            except channel.ReportError as err:
                return _error(400, str(err))
            except kube.NotReady as err:
                return _error(503, str(err), **_RETRY)
            except Exception as err:
                log.warning("report channel: %s/%s: %s", namespace, name, err)
                return _error(503, f"could not store the report: {err}", **_RETRY)
        if outcome.changed:
            self._after(namespace, name, outcome)
        return web.json_response(outcome.answer)

    def _apply_sync(self, namespace: str, name: str, report: channel.Report) -> reports.Outcome:
        result: dict[str, reports.Outcome] = {}

        def change(current: state_mod.SearchState) -> state_mod.SearchState | None:
            result["outcome"] = reports.apply(current, report)
            return result["outcome"].state if result["outcome"].changed else None

        self.api.update_state(namespace, name, change)
        return result["outcome"]

    def _after(self, namespace: str, name: str, outcome: reports.Outcome) -> None:
        if outcome.exploits:
            self.metrics.count_exploit(namespace, name, outcome.exploits)
        if outcome.notes:
            ref = pods.SearchRef(namespace, name, outcome.state.search_uid)
            notes = list(outcome.notes)
            # Events are best effort and must not delay the member waiting for its answer.
            task = asyncio.get_running_loop().run_in_executor(None, _record, self.api, ref, notes)
            task.add_done_callback(lambda _: None)
        self.on_change(namespace, name)


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="schedsearch"'}
_RETRY = {"Retry-After": RETRY_AFTER_SECONDS}


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _record(api: kube.Kube, ref: pods.SearchRef, notes: list[reports.Note]) -> None:
    for note in notes:
        api.record_event(ref, note.type, note.reason, note.message)


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def health_app() -> web.Application:
    """``GET /healthz`` (the liveness probe): answers while the process serves at all."""
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    return app


def metrics_app(metrics: metrics_mod.ControllerMetrics) -> web.Application:
    """``GET /metrics`` in Prometheus' text format."""

    async def serve(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", serve)
    return app


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on ``host:port`` until the returned runner is cleaned up."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a runner listens on (useful when it was started on port 0)."""
    for site in runner.sites:
        server: Any = getattr(site, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
    raise RuntimeError("the server is not listening")
