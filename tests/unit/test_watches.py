"""The watch streams that fill the controller's cache, against a scripted API server in this
process: events filed, a dropped stream resumed from its last version, a 410 answered by a new
list, bookmarks, ERROR events, and backoff on failures in a row."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from kubernetes import client as k8s

from schedsearch.controller import cache, kube, names, watches

PODS = "/api/v1/namespaces/ml/pods"
TARGET = watches.Target(cache.PODS, "ml", names.LABEL_SEARCH)
LIMIT = 10.0  # seconds any awaited condition may take; nothing waits this long when it works


def pod(name: str, version: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ml", "uid": f"u-{name}", "resourceVersion": version}
    return {"kind": "Pod", "metadata": {**meta, "labels": {names.LABEL_SEARCH: "s1"}}}


def event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def bookmark(version: str) -> bytes:
    return event("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": version}})


def expired() -> bytes:
    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    return event("ERROR", status)


@dataclass
class Reply:
    """One answer to a watch request: a status, the lines of its body, and then either the end
    of the stream (the server's timeout), a cut connection, or (``hold``) nothing more."""

    lines: list[bytes] = field(default_factory=list)
    status: int = 200
    ending: str = "end"  # "end", "drop" or "hold"


class FakeApi:
    """Answers watch requests of pods with the scripted replies, in order; records each request."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.requests: list[dict[str, str]] = []
        self.arrived = asyncio.Condition()

    async def watch(self, request: web.Request) -> web.StreamResponse:
        async with self.arrived:
            self.requests.append({**request.query, "auth": request.headers["Authorization"]})
            self.arrived.notify_all()
        reply = self.replies.pop(0) if self.replies else Reply(ending="hold")
        if reply.status != 200:
            body = {"kind": "Status", "code": reply.status, "message": f"answer {reply.status}"}
            return web.json_response(body, status=reply.status)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for line in reply.lines:
            # An event cut in two: the stream's chunks need not end at lines.
            await response.write(line[:7])
            await response.write(line[7:])
        if reply.ending == "drop":
            assert request.transport is not None
            request.transport.close()
        elif reply.ending == "hold":
            await asyncio.Event().wait()
        return response

    async def requested(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.requests) >= count), LIMIT
            )


class Lister:
    """Stands for ``Kube.relist``: files ``listed`` and answers with the next version."""

    def __init__(self, store: cache.Store, versions: Iterator[str]) -> None:
        self.store, self.versions, self.calls = store, versions, 0
        self.listed: list[dict[str, Any]] = []

    async def __call__(self, target: watches.Target) -> str:
        self.calls += 1
        version = next(self.versions)
        self.store.replace(target.kind, target.namespace, self.listed, version)
        return version


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, letting the watch run between looks."""

    async def looking() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(looking(), LIMIT)


class Recording(watches.Watch):
    """A watch that records each wait it chose after a failure."""

    delays: list[float]

    def _delay(self) -> float:
        delay = super()._delay()
        self.delays.append(delay)
        return delay


Scenario = Callable[[FakeApi, Recording, Lister, cache.Store], Awaitable[None]]


def run(replies: list[Reply], scenario: Scenario, versions: Iterator[str]) -> None:
    async def main() -> None:
        api = FakeApi(replies)
        app = web.Application()
        app.router.add_get(PODS, api.watch)
        # Held streams end with their client (the watch cancelled), not at the server's leisure.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        config = k8s.Configuration(host=f"http://127.0.0.1:{port}")
        config.api_key = {"authorization": "secret"}
        config.api_key_prefix = {"authorization": "Bearer"}
        rest = kube.Rest(k8s.ApiClient(config))
        session = watches.Streams.session_for(config)
        store = cache.Store()
        lister = Lister(store, versions)
        watch = Recording(
            TARGET,
            store=store,
            streams=watches.Streams(rest, session),
            lister=lister,
            backoff=(0.001, 0.004),
        )
        watch.delays = []
        task = asyncio.create_task(watch.run())
        try:
            await scenario(api, watch, lister, store)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await session.close()
            await runner.cleanup()

    asyncio.run(main())


@pytest.fixture(autouse=True)
def _no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    # The longest wait of each step, so the test can name them.
    monkeypatch.setattr(watches.random, "uniform", lambda low, high: high)


def test_events_are_filed_from_the_lists_version_with_the_labels_and_token() -> None:
    replies = [
        Reply(
            [
                event("ADDED", pod("a", "11")),
                event("ADDED", pod("b", "12")),
                event("MODIFIED", {**pod("a", "13"), "status": {"phase": "Running"}}),
                event("DELETED", pod("b", "14")),
            ],
            ending="hold",
        )
    ]

    async def scenario(api: FakeApi, watch: Recording, lister: Lister, store: cache.Store) -> None:
        await until(lambda: watch.version == "14")
        assert [p["metadata"]["name"] for p in store.owned(cache.PODS, "ml", "s1")] == ["a"]
        assert store.get(cache.PODS, "ml", "a")["status"] == {"phase": "Running"}  # type: ignore[index]
        (request,) = api.requests
        assert request["resourceVersion"] == "10"  # the list's
        assert request["watch"] == "1" and request["allowWatchBookmarks"] == "true"
        assert request["labelSelector"] == names.LABEL_SEARCH
        assert request["auth"] == "Bearer secret"
        timeout = int(request["timeoutSeconds"])
        assert watches.WATCH_SECONDS <= timeout < 2 * watches.WATCH_SECONDS
        assert lister.calls == 1 and watch.delays == []

    run(replies, scenario, iter(["10"]))


def test_a_dropped_stream_and_a_timed_out_one_resume_from_the_last_version() -> None:
    replies = [
        Reply([event("ADDED", pod("a", "11")), event("ADDED", pod("b", "12"))], ending="drop"),
        Reply([event("MODIFIED", pod("a", "15"))], ending="end"),  # the server's timeout
        Reply([event("ADDED", pod("c", "16"))], ending="hold"),
    ]

    async def scenario(api: FakeApi, watch: Recording, lister: Lister, store: cache.Store) -> None:
        await api.requested(3)
        await until(lambda: store.get(cache.PODS, "ml", "c") is not None)
        assert [r["resourceVersion"] for r in api.requests] == ["10", "12", "15"]
        assert lister.calls == 1  # no events lost: no list needed
        assert len(watch.delays) == 1  # the drop waited (briefly); the timeout did not

    run(replies, scenario, iter(["10"]))


def test_bookmarks_move_the_version_on_and_file_nothing() -> None:
    replies = [Reply([bookmark("40")], ending="end"), Reply(ending="hold")]

    async def scenario(api: FakeApi, watch: Recording, lister: Lister, store: cache.Store) -> None:
        await api.requested(2)
        assert [r["resourceVersion"] for r in api.requests] == ["10", "40"]
        assert len(store) == 0

    run(replies, scenario, iter(["10"]))


@pytest.mark.parametrize(
    "gone",
    [Reply(status=410), Reply([event("ADDED", pod("a", "11")), expired()], ending="hold")],
    ids=["410 answer", "ERROR event"],
)
def test_an_expired_version_lists_the_kind_again_and_watches_from_there(gone: Reply) -> None:
    async def scenario(api: FakeApi, watch: Recording, lister: Lister, store: cache.Store) -> None:
        lister.listed = [pod("z", "90")]  # what the new list finds: a deleted meanwhile
        await api.requested(2)
        assert lister.calls == 2
        assert [r["resourceVersion"] for r in api.requests] == ["10", "90"]
        assert [p["metadata"]["name"] for p in store.owned(cache.PODS, "ml", "s1")] == ["z"]
        assert watch.delays == []  # nothing failed: the list is the remedy

    run([gone, Reply(ending="hold")], scenario, iter(["10", "90"]))


def test_failures_in_a_row_back_off_up_to_the_cap_and_success_starts_over() -> None:
    error = event("ERROR", {"kind": "Status", "code": 500, "message": "etcd is away"})
    replies = [
        Reply(status=500),
        Reply(status=503),
        Reply([error], ending="hold"),
        Reply(status=429),
        Reply([event("ADDED", pod("a", "11"))], ending="drop"),
        Reply(ending="hold"),
    ]

    async def scenario(api: FakeApi, watch: Recording, lister: Lister, store: cache.Store) -> None:
        await api.requested(6)
        assert watch.delays == [0.001, 0.002, 0.004, 0.004, 0.001]
        assert [r["resourceVersion"] for r in api.requests] == ["10"] * 5 + ["11"]
        assert lister.calls == 1

    run(replies, scenario, iter(["10"]))


def test_streams_that_end_with_nothing_and_lists_refused_at_once_wait_in_between() -> None:
    """A stream the server ends at once with no event, or a new list's version refused at once,
    is a server or proxy misbehaving: the next try waits like a failure, not in a tight loop."""
    replies = [
        Reply(status=410),  # an expired version: listed again at once
        Reply(status=410),  # the new list's version too: the next list waits
        Reply(ending="end"),
        Reply(ending="end"),
        Reply([event("ADDED", pod("a", "31"))], ending="end"),  # works: at once again
        Reply(ending="hold"),
    ]

    async def scenario(api: FakeApi, watch: Recording, lister: Lister, store: cache.Store) -> None:
        await api.requested(6)
        assert lister.calls == 3
        assert watch.delays == [0.001, 0.002, 0.004]
        assert [r["resourceVersion"] for r in api.requests] == ["10", "20", "30", "30", "30", "31"]

    run(replies, scenario, iter(["10", "20", "30"]))


def test_targets_cover_every_kind_and_namespace_with_its_selector() -> None:
    found = watches.targets(["a", "b"], "shard=x")
    assert len(found) == 2 * len(watches.WATCHED)
    by_kind = {(t.kind, t.namespace): t.labels for t in found}
    assert by_kind[(cache.SEARCHES, "a")] == "shard=x"
    assert by_kind[(cache.CONFIGMAPS, "b")] == names.LABEL_SEARCH
    assert {t.namespace for t in watches.targets([None], None)} == {None}
    assert cache.SECRETS not in {t.kind for t in found}  # read by name only
