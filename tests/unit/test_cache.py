"""The controller's cache and what it wakes: a change to an owned object queues its search, a
pass reads from the cache (no requests when nothing changed) and a search with nothing changing
is not looked at again before the resync."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from typing import Any

from schedsearch.controller import app, cache, kube, names, pods, workqueue
from schedsearch.controller import metrics as metrics_mod

from .controller_fixtures import (  # noqa: F401
    CONFIG,
    UID,
    _builtin_workloads,
    fresh_state,
    search_object,
    view,
)

JsonObj = dict[str, Any]


def labelled(kind: str, name: str, search: str | None, version: int, **extra: Any) -> JsonObj:
    labels = {} if search is None else {names.LABEL_SEARCH: search}
    meta = {"name": name, "namespace": "ml", "uid": f"uid-{name}", "labels": labels}
    return {"kind": kind, "metadata": {**meta, "resourceVersion": str(version)}, **extra}


def test_a_change_to_an_owned_pod_queues_its_search() -> None:
    queued: list[tuple[str, str]] = []
    store = cache.Store(on_change=lambda ns, name: queued.append((ns, name)))
    store.put(cache.SEARCHES, labelled("ScheduleSearch", "s1", None, 9), wake=False)
    pod = labelled("Pod", "s1-pbt-0", "s1", 10, status={"phase": "Pending"})
    store.apply_event(cache.PODS, "ADDED", pod)
    assert queued == [("ml", "s1")]
    running = copy.deepcopy(pod)
    running["metadata"]["resourceVersion"] = "11"
    running["status"]["phase"] = "Running"
    store.apply_event(cache.PODS, "MODIFIED", running)
    assert queued == [("ml", "s1")] * 2
    assert store.owned(cache.PODS, "ml", "s1") == [running]
    # The same version again (our own write, then its watch event) wakes nobody.
    store.apply_event(cache.PODS, "MODIFIED", copy.deepcopy(running))
    store.apply_event(cache.PODS, None, copy.deepcopy(running))  # a relisting watch
    assert len(queued) == 2
    store.apply_event(cache.PODS, "DELETED", running)
    assert queued == [("ml", "s1")] * 3 and store.owned(cache.PODS, "ml", "s1") == []
    # A search's own change queues it; an object of no search queues nothing.
    store.apply_event(cache.SEARCHES, "MODIFIED", labelled("ScheduleSearch", "s2", None, 12))
    store.apply_event(cache.PODS, "ADDED", labelled("Pod", "other", None, 13))
    assert queued[-1] == ("ml", "s2") and len(queued) == 4


def test_objects_of_a_search_the_store_does_not_hold_queue_nothing() -> None:
    queued: list[tuple[str, str]] = []
    store = cache.Store(on_change=lambda ns, name: queued.append((ns, name)))
    search = labelled("ScheduleSearch", "s1", None, 9)
    # Its pods are filed before the search arrives (watches keep no order between kinds)...
    early = labelled("Pod", "s1-pbt-0", "s1", 10)
    store.apply_event(cache.PODS, "ADDED", early)
    assert queued == [] and store.owned(cache.PODS, "ml", "s1") == [early]
    # ... and its arrival queues it.
    store.apply_event(cache.SEARCHES, "ADDED", search)
    assert queued == [("ml", "s1")]
    # Deleted, it is queued once; the deletions of what it owned that follow queue nothing.
    store.apply_event(cache.SEARCHES, "DELETED", search)
    store.apply_event(cache.PODS, "DELETED", early)
    store.apply_event(cache.CONFIGMAPS, "DELETED", labelled("ConfigMap", "s1-state", "s1", 11))
    assert queued == [("ml", "s1")] * 2


def test_an_older_version_never_replaces_a_newer_one() -> None:
    store = cache.Store()
    new = labelled("ConfigMap", "s1-state", "s1", 20, data={"v": "new"})
    store.put(cache.CONFIGMAPS, new)  # what our own write was answered with
    store.apply_event(cache.CONFIGMAPS, "MODIFIED", labelled("ConfigMap", "s1-state", "s1", 19))
    assert store.get(cache.CONFIGMAPS, "ml", "s1-state") == new
    # A deletion of an earlier object of that name leaves the newer one.
    earlier = labelled("ConfigMap", "s1-state", "s1", 5)
    earlier["metadata"]["uid"] = "an-earlier-search"
    store.delete(cache.CONFIGMAPS, earlier)
    assert store.get(cache.CONFIGMAPS, "ml", "s1-state") == new


def test_the_answer_to_a_delete_arriving_after_its_watch_event_does_not_bring_it_back() -> None:
    store = cache.Store()
    pod = labelled("Pod", "s1-pbt-0", "s1", 10, status={"phase": "Failed"})
    store.put(cache.PODS, pod)
    # A failed pod is deleted at once: the watch's DELETED event can beat the DELETE's answer.
    store.apply_event(cache.PODS, "DELETED", labelled("Pod", "s1-pbt-0", "s1", 11))
    answer = labelled("Pod", "s1-pbt-0", "s1", 10, status={"phase": "Failed"})
    answer["metadata"]["deletionTimestamp"] = "2026-01-02T03:04:05Z"
    store.put(cache.PODS, answer)
    assert store.owned(cache.PODS, "ml", "s1") == []


def test_a_full_list_forgets_what_a_watch_missed_but_not_what_changed_since() -> None:
    store = cache.Store()
    ghost = labelled("Pod", "s1-pbt-0", "s1", 10)  # deleted while the watch reconnected
    newer = labelled("Pod", "s1-pbt-2", "s1", 40)  # created after the list was taken
    listed = labelled("Pod", "s1-pbt-1", "s1", 15)
    deleted = labelled("Pod", "s1-pbt-3", "s1", 16)
    for obj in (ghost, newer):
        store.put(cache.PODS, obj)
    store.apply_event(cache.PODS, "DELETED", {**deleted, "metadata": {**deleted["metadata"]}})
    store.replace(cache.PODS, "ml", [listed, deleted], version="30")
    names_left = [p["metadata"]["name"] for p in store.owned(cache.PODS, "ml", "s1")]
    assert names_left == ["s1-pbt-1", "s1-pbt-2"]


class FakeApiServer:
    """Enough of the API for a reconcile pass: creates, merge patches (status, ConfigMaps) and
    deletes, each answered with the object as stored, every request recorded."""

    def __init__(self) -> None:
        self.objects: dict[str, JsonObj] = {}
        self.versions = itertools.count(100)
        self.requests: list[str] = []

    def _stamp(self, obj: JsonObj) -> JsonObj:
        obj["metadata"]["resourceVersion"] = str(next(self.versions))
        return copy.deepcopy(obj)

    def create(self, path: str, body: JsonObj) -> JsonObj | None:
        key = f"{path}/{body['metadata']['name']}"
        self.requests.append(f"POST {key}")
        if key in self.objects:
            return None
        obj = copy.deepcopy(body)
        obj["metadata"].setdefault("uid", f"uid-{body['metadata']['name']}")
        self.objects[key] = obj
        return self._stamp(obj)

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> JsonObj:
        self.requests.append(f"{method} {path}")
        if method == "PATCH" and path.endswith("/status"):
            obj = self.objects[path.removesuffix("/status")]
            obj["status"] = body["status"]
            return self._stamp(obj)
        if method == "PATCH":
            obj = self.objects[path]
            expected = (body.get("metadata") or {}).get("resourceVersion")
            if expected is not None and expected != obj["metadata"]["resourceVersion"]:
                raise kube.ApiError(409, "the object has been modified", "Conflict")
            obj["data"] = body.get("data") or {}
            return self._stamp(obj)
        raise AssertionError(f"unexpected {method} {path}")

    def get_or_none(self, path: str) -> JsonObj | None:
        self.requests.append(f"GET {path}")
        found = self.objects.get(path)
        return None if found is None else copy.deepcopy(found)

    def get(self, path: str, **_: str) -> JsonObj:
        found = self.get_or_none(path)
        assert found is not None, path
        return found


def started(
    server: FakeApiServer | None = None,
) -> tuple[FakeApiServer, cache.Store, app.Reconciler, list[tuple[str, str]]]:
    """A new PBT search, reconciled once: token, state and four member pods created."""
    server = server or FakeApiServer()
    queued: list[tuple[str, str]] = []
    store = cache.Store(on_change=lambda ns, name: queued.append((ns, name)))
    search = search_object("pbt")
    search["metadata"]["resourceVersion"] = "1"
    server.objects[kube._custom("ml", kube.SEARCHES, "s1")] = copy.deepcopy(search)
    store.put(cache.SEARCHES, search)
    api = kube.Kube(server, store=store)  # type: ignore[arg-type]
    reconciler = app.Reconciler(api, CONFIG, metrics_mod.ControllerMetrics())
    reconciler.reconcile("ml", "s1")
    return server, store, reconciler, queued


def test_a_pass_reads_the_cache_and_sees_its_own_writes() -> None:
    server, store, _, _ = started()
    creates = [r for r in server.requests if r.startswith("POST") and not r.endswith("/events")]
    # Each object created once: the next pass saw it in the cache, not a second 409.
    assert sorted(creates) == sorted(set(creates))
    assert len(store.owned(cache.PODS, "ml", "s1")) == 4
    # A new search costs no read: everything it needs is what this process just wrote (the
    # state's read-modify-write starts from the cached state too).
    assert [r for r in server.requests if r.startswith("GET")] == []


def test_a_new_search_costs_one_write_of_each_object_and_one_event() -> None:
    server, _, _, queued = started()
    # Queued once, by its arrival: its own writes queue no other reconcile (the one that wrote
    # looked again already).
    assert queued == [("ml", "s1")]
    ns = "/api/v1/namespaces/ml"
    # The state is created with the pods' attempts in it (no patch of it after), and the
    # status is written once, with the members.
    assert server.requests == [
        f"POST {ns}/secrets/s1-report-token",
        f"POST {ns}/configmaps/{names.state_configmap('s1')}",
        *[f"POST {ns}/pods/s1-pbt-{m}" for m in range(4)],
        *[r for r in server.requests if r.startswith(f"POST {ns}/events/")],
        f"PATCH {kube._custom('ml', kube.SEARCHES, 's1')}/status",
    ]
    assert len([r for r in server.requests if "/events/" in r]) == 1
    stored = server.objects[f"{ns}/configmaps/{names.state_configmap('s1')}"]
    members = json.loads(stored["data"]["state.json"])["members"]
    assert [members[str(m)].get("attempts") for m in range(4)] == [1] * 4


def test_a_state_the_cache_has_not_seen_stops_the_plan_before_the_pods() -> None:
    # The replica that led before created the state and member 0's pod, which was deleted
    # since; the state's watch event has not arrived here yet.
    server = FakeApiServer()
    ref = pods.SearchRef("ml", "s1", UID)
    state = fresh_state(view("pbt"))
    state.members[0].attempts = 1
    manifest = pods.state_configmap(ref, state)
    server.create("/api/v1/namespaces/ml/configmaps", manifest)
    server.requests.clear()
    server, store, _, _ = started(server)
    created = [r for r in server.requests if r.startswith("POST") and "/pods/" in r]
    state_path = f"/api/v1/namespaces/ml/configmaps/{names.state_configmap('s1')}"
    # The create found it there: it was read, and the pods planned from it.
    assert server.requests.index(f"GET {state_path}") < server.requests.index(created[0])
    assert sorted(created) == [f"POST /api/v1/namespaces/ml/pods/s1-pbt-{m}" for m in range(4)]
    # Member 0's pod is its second attempt: the first, never seen here, is not forgotten.
    found = store.owned(cache.PODS, "ml", "s1")
    attempts = [p["metadata"]["annotations"][names.ANNOTATION_ATTEMPT] for p in found]
    assert attempts == ["2", "1", "1", "1"]


def test_a_search_with_nothing_changing_costs_no_requests_and_is_not_looked_at_again() -> None:
    server, store, reconciler, queued = started()
    queued.clear()
    for pod in store.owned(cache.PODS, "ml", "s1"):  # the kubelet starts them: watch events
        running = copy.deepcopy(pod)
        running["status"] = {"phase": "Running"}
        running["metadata"]["resourceVersion"] = str(next(server.versions))
        store.apply_event(cache.PODS, "MODIFIED", running)
    assert set(queued) == {("ml", "s1")}
    reconciler.reconcile("ml", "s1")  # writes the Running status
    phase = (store.search("ml", "s1") or {}).get("status", {}).get("phase")
    assert phase == "Running"
    server.requests.clear()

    async def scenario() -> workqueue.WorkQueue[tuple[str, str]]:
        queue: workqueue.WorkQueue[tuple[str, str]] = workqueue.WorkQueue()
        queue.add(("ml", "s1"))  # say, the watch of our own status write
        worker = asyncio.create_task(workqueue.work(queue, reconciler.handle))
        while len(queue) or queue._processing:
            await asyncio.sleep(0.01)
        pending = queue.pending_timer(("ml", "s1"))
        queue.shutdown()
        await asyncio.wait_for(worker, timeout=10)
        assert pending is None, f"looked at again in {pending:.1f}s with nothing changed"
        return queue

    asyncio.run(scenario())
    assert server.requests == []


def test_a_pod_that_ended_is_judged_with_the_state_as_the_api_has_it() -> None:
    server, store, reconciler, _ = started()
    state_path = f"/api/v1/namespaces/ml/configmaps/{names.state_configmap('s1')}"
    # Another replica stored member 0's final report; its watch event has not arrived yet.
    stored = server.objects[state_path]
    state = json.loads(stored["data"]["state.json"])
    state["members"]["0"]["finished"] = True
    stored["data"] = {**stored["data"], "state.json": json.dumps(state)}
    stored["metadata"]["resourceVersion"] = str(next(server.versions))
    pod = store.get(cache.PODS, "ml", "s1-pbt-0")
    assert pod is not None
    ended = copy.deepcopy(pod)
    ended["status"] = {"phase": "Succeeded"}
    ended["metadata"]["resourceVersion"] = str(next(server.versions))
    store.apply_event(cache.PODS, "MODIFIED", ended)
    server.requests.clear()
    reconciler.reconcile("ml", "s1")
    assert f"GET {state_path}" in server.requests
    # A finished member's pod is not replaced as if it had died.
    replaced = ("DELETE", "POST /api/v1/namespaces/ml/pods")
    assert not [r for r in server.requests if r.startswith(replaced)]
    assert UID in json.dumps(store.get(cache.CONFIGMAPS, "ml", names.state_configmap("s1")))


def test_a_state_change_starts_from_the_cache_and_rereads_when_another_process_wrote() -> None:
    server, _, reconciler, _ = started()
    api = reconciler.api
    state_path = f"/api/v1/namespaces/ml/configmaps/{names.state_configmap('s1')}"
    server.requests.clear()
    api.update_state("ml", "s1", lambda s: _with_step(s, 0, 10))
    assert server.requests == [f"PATCH {state_path}"]  # no read: the cache had it
    # Another process (an old leader) writes; its watch event has not arrived.
    stored = server.objects[state_path]
    doc = json.loads(stored["data"]["state.json"])
    doc["members"]["1"]["step"] = 99
    stored["data"] = {**stored["data"], "state.json": json.dumps(doc)}
    stored["metadata"]["resourceVersion"] = str(next(server.versions))
    server.requests.clear()
    new = api.update_state("ml", "s1", lambda s: _with_step(s, 0, 20))
    assert server.requests == [f"PATCH {state_path}", f"GET {state_path}", f"PATCH {state_path}"]
    assert (new.members[0].step, new.members[1].step) == (20, 99), "nobody's write is lost"


def _with_step(state: Any, member: int, step: int) -> Any:
    new = state.copy()
    new.members[member].step = step
    return new
