"""The thin layer between the controller and the API server: read what a search owns, carry out
a plan's actions, write status, keep the state ConfigMap with optimistic concurrency.

It speaks raw JSON over the official client's authenticated connection (objects stay the API's
own camelCase dicts, exactly what ``controller.observe`` parses). Every action is idempotent: a
create that finds its object already there (409) and a delete that finds it gone (404) succeed.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client as k8s

from schedsearch.api.spec import API_GROUP, API_VERSION_NAME, best_schedule_name
from schedsearch.controller import cache, events, names, plan, pods, results, status
from schedsearch.controller import state as state_mod
from schedsearch.controller.observe import Observed, SearchView, owned_by, pod_view
from schedsearch.controller.workqueue import TokenBucket

JsonObj = dict[str, Any]
log = logging.getLogger(__name__)

SEARCHES = "schedulesearches"
SCHEDULES = "lrschedules"
COMPONENT = "schedsearch-controller"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STATE_RETRIES = 10
TIMEOUT = (5.0, 30.0)  # connect, read
AUTH_REFRESH_SECONDS = 60.0
LIST_CHUNK = 500


class ApiError(Exception):
    """A non-2xx answer of the API server: its HTTP status, Status reason and message."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason

    @property
    def terminal(self) -> bool:
        """Whether the same request would be refused again: the request itself is wrong (400,
        413, 422) or forbidden by policy (403: a missing ServiceAccount, a denied
        PodSecurity level, missing RBAC). Not terminal: a quota that pods ending will free, a
        namespace being deleted (the search goes with it), conflicts, and a busy, restarting or
        unreachable API server (429, 5xx), which the reconciler retries with backoff."""
        if self.status in (400, 413, 422):
            return True
        if self.status == 403:
            return not any(text in self.message for text in _TRANSIENT_FORBIDDEN)
        return False


# What a 403 says when waiting fixes it: ResourceQuota admission, a terminating namespace.
_TRANSIENT_FORBIDDEN = ("exceeded quota", "because it is being terminated")


class Refused(Exception):
    """The API server refused to create or update an object the search needs, for a reason
    retrying does not fix (see :attr:`ApiError.terminal`): the search fails with it."""

    def __init__(self, kind: str, name: str, err: ApiError) -> None:
        why = f"{err.status} {err.reason}".strip()
        self.reason = f"{kind}Refused"
        self.message = f"the API server refused {kind} {name} ({why}): {err.message}"
        super().__init__(self.message)


class NotReady(Exception):
    """The search's state does not exist yet (the reconciler creates it first)."""


class Rest:
    """JSON requests on the official client's configured (authenticated, TLS) connection.

    Requests go straight to the client's connection pool: bodies are the API's own JSON
    already, so the client's serializer (a walk of every body) and its per-request auth hook
    (a kubeconfig loader's refresh, re-applying the whole configuration) are left out. The
    Authorization header is taken from the client's auth settings once every
    ``AUTH_REFRESH_SECONDS``, which still follows a rotated token (a projected ServiceAccount
    token file, an exec plugin's credential)."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        limiter: TokenBucket | None = None,
        on_request: Callable[[str, int | None], None] = lambda method, status: None,
    ) -> None:
        self.client = api_client
        self.limiter = limiter  # the client-side QPS/burst bound (None: unbounded)
        self.on_request = on_request  # (method, HTTP status or None: no answer), for metrics
        self._auth: dict[str, str] = {}
        self._auth_until = float("-inf")
        self._timeout = urllib3.Timeout(connect=TIMEOUT[0], read=TIMEOUT[1])

    def headers(self, content_type: str = "application/json") -> dict[str, str]:
        """The headers of a request: the client's defaults, JSON, and the Authorization."""
        now = time.monotonic()
        if now >= self._auth_until:
            settings = self.client.configuration.auth_settings().get("BearerToken") or {}
            value = settings.get("value")
            self._auth = {str(settings["key"]): str(value)} if value else {}
            self._auth_until = now + AUTH_REFRESH_SECONDS
        return {
            **self.client.default_headers,
            "Accept": "application/json",
            "Content-Type": content_type,
            **self._auth,
        }

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> JsonObj:
        if self.limiter is not None:
            self.limiter.acquire()
        url = self.client.configuration.host + path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else _encode(self.client, body)
        try:
            response = self.client.rest_client.pool_manager.request(
                method, url, body=data, headers=self.headers(content_type), timeout=self._timeout
            )
        except Exception:
            self.on_request(method, None)
            raise
        self.on_request(method, response.status)
        data = response.data or b""
        if response.status >= 400:
            raise ApiError(response.status, *status_message(data))
        return json.loads(data) if data else {}

    def get(self, path: str, **query: str) -> JsonObj:
        return self.request("GET", path, query=list(query.items()) or None)

    def get_or_none(self, path: str) -> JsonObj | None:
        try:
            return self.get(path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def create(self, path: str, body: JsonObj) -> JsonObj | None:
        """POST ``body``: the created object, or None when one of that name already exists."""
        try:
            return self.request("POST", path, body=body)
        except ApiError as err:
            if err.status == 409:
                return None
            raise

    def list(self, path: str, **query: str) -> tuple[list[JsonObj], str]:
        """All items of a collection, in chunks, and the resourceVersion of the list."""
        items: list[JsonObj] = []
        token = ""
        while True:
            chunk = {**query, "limit": str(LIST_CHUNK), **({"continue": token} if token else {})}
            answer = self.get(path, **chunk)
            items += answer.get("items") or []
            meta = answer.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                return items, str(meta.get("resourceVersion", ""))


def _encode(client: k8s.ApiClient, body: Any) -> bytes:
    try:
        return json.dumps(body, separators=(",", ":")).encode()
    except TypeError:  # a value JSON does not know (a datetime): the client's serializer does
        return json.dumps(client.sanitize_for_serialization(body), separators=(",", ":")).encode()


def status_message(data: bytes) -> tuple[str, str]:
    """The message and reason of a Status body (or the body itself, shortened)."""
    try:
        body = json.loads(data)
        return str(body.get("message", data[:500])), str(body.get("reason") or "")
    except (ValueError, AttributeError):
        return data[:500].decode(errors="replace"), ""


def _ns(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}"


def _custom(namespace: str, plural: str, name: str | None = None) -> str:
    base = f"/apis/{API_GROUP}/{API_VERSION_NAME}/namespaces/{quote(namespace, safe='')}/{plural}"
    return base if name is None else f"{base}/{quote(name, safe='')}"


def collection(kind: cache.Kind, namespace: str | None) -> str:
    """The API path of all objects of ``kind`` in ``namespace`` (None: every namespace)."""
    where = "" if namespace is None else f"/namespaces/{quote(namespace, safe='')}"
    if kind in (cache.SEARCHES, cache.SCHEDULES):
        return f"/apis/{API_GROUP}/{API_VERSION_NAME}{where}/{kind}"
    return f"/api/v1{where}/{kind}"


class Kube:
    """What the reconciler and the report channel ask of the API server.

    Reads come from ``store`` (fed by watches, see ``controller.cache``); every object the API
    answers a write with goes into it at once, so the next pass sees what this one did.

    Events go through ``recorder`` when there is one (posted by its thread once the writes
    quieten, see ``controller.events``), else are posted at once."""

    def __init__(
        self,
        rest: Rest,
        *,
        store: cache.Store | None = None,
        on_restart: Callable[[str, str], None] | None = None,
        recorder: events.Recorder | None = None,
    ) -> None:
        self.rest = rest
        self.store = store if store is not None else cache.Store()
        self._on_restart = on_restart
        self.recorder = recorder
        self._tokens: dict[tuple[str, str], str] = {}
        self._tokens_lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------------

    def get_search(self, namespace: str, name: str) -> JsonObj | None:
        return self.store.search(namespace, name)

    def relist(self, kind: cache.Kind, namespace: str | None, selector: str) -> tuple[int, str]:
        """List ``kind`` afresh into the store (forgetting what is gone); returns the count and
        the list's resourceVersion (where a watch of that kind takes over)."""
        items, version = self.rest.list(collection(kind, namespace), labelSelector=selector)
        self.store.replace(kind, namespace, items, version)
        return len(items), version

    def observe(self, search: SearchView, now: datetime.datetime) -> Observed:
        """Everything the search owns, from the store."""
        ns, name, store = search.namespace, search.name, self.store
        pod_list = store.owned(cache.PODS, ns, name)
        state_obj = store.get(cache.CONFIGMAPS, ns, names.state_configmap(name))
        if search.status.phase not in plan.TERMINAL and any(_ended(p) for p in pod_list):
            # Pods and the state come from two watches, in no guaranteed order. A member sends
            # its final report before its pod ends, so the state read now holds that report
            # whenever the pod's end is already known: a finished member is never mistaken
            # for one that died.
            state_obj = self.rest.get_or_none(f"{_ns(ns)}/configmaps/{names.state_configmap(name)}")
            self._file(cache.CONFIGMAPS, state_obj)
        secret = self._secret(ns, name, setup_done=state_obj is not None)
        service_list = store.owned(cache.SERVICES, ns, name)
        schedule = store.get(cache.SCHEDULES, ns, best_schedule_name(name))
        foreign: list[str] = []
        views = []
        for obj in pod_list:
            if owned_by(obj, search.uid):
                view = pod_view(obj)
                if view is not None:
                    views.append(view)
            else:
                foreign.append(f"pod {obj['metadata']['name']}")
        services = {s["metadata"]["name"] for s in service_list if owned_by(s, search.uid)}
        foreign += [
            f"service {s['metadata']['name']}" for s in service_list if not owned_by(s, search.uid)
        ]
        if secret is not None and not owned_by(secret, search.uid):
            foreign.append(f"secret {names.token_secret(name)}")
            secret = None
        state, state_bytes = None, None
        if state_obj is not None:
            if owned_by(state_obj, search.uid):
                state = state_mod.SearchState.from_configmap(state_obj)
                state_bytes = state_mod.configmap_bytes(
                    state_obj.get("data") or {}, state_obj.get("binaryData") or {}
                )
            else:
                foreign.append(f"configmap {names.state_configmap(name)}")
        return Observed(
            now=now,
            pods=tuple(views),
            services=frozenset(services),
            secret=secret is not None,
            state=state,
            state_bytes=state_bytes,
            schedule_owner_uid=None if schedule is None else results.schedule_owner_uid(schedule),
            foreign=tuple(foreign),
        )

    def _secret(self, namespace: str, search: str, *, setup_done: bool) -> JsonObj | None:
        """The search's token Secret. Secrets are never listed or watched (the controller may
        not list them): one this process did not create is read by name once, then kept. A
        search without its state is new (the Secret is created first): creating it is the read."""
        secret = self.store.get(cache.SECRETS, namespace, names.token_secret(search))
        if secret is None and setup_done:
            secret = self.rest.get_or_none(f"{_ns(namespace)}/secrets/{names.token_secret(search)}")
            self._file(cache.SECRETS, secret)
        return secret

    def _file(self, kind: cache.Kind, answer: Any) -> None:
        """Put an object the API answered with into the store (anything else is ignored),
        waking nobody: whoever wrote or read it acts on it already."""
        if isinstance(answer, dict) and answer.get("kind") != "Status":
            self.store.put(kind, answer, wake=False)

    # -- acting ----------------------------------------------------------------------------------

    def apply(self, search: SearchView, decided: plan.Plan) -> None:
        """Carry out the plan's actions in order, then write its status.

        Raises :class:`Refused` when the API server refuses an object for good (the caller
        fails the search with it); other API errors propagate to be retried with backoff, after
        an Event that says what the API server answered.

        A Secret or state the plan creates that already exists (the cache had not seen it yet)
        stops the plan before its pods and status: they were planned without that object, which
        is read into the cache for the next pass (that ``decided.requeue_after`` asks for)."""
        if self.recorder is not None and (decided.actions or decided.status is not None):
            self.recorder.wrote()
        for action in decided.actions:
            if not self._act(search, action):
                return
        if decided.status is not None:
            self.write_status(search, decided.status)

    def _act(self, search: SearchView, action: plan.Action) -> bool:
        """Carry out one action; False when the rest of the plan must wait for another pass."""
        ns = search.namespace
        match action:
            case plan.CreatePod(attempt=attempt, manifest=manifest):
                created = self._create(search, "pods", manifest)
                if created and attempt > 1 and self._on_restart is not None:
                    self._on_restart(ns, search.name)
            case plan.DeletePod(name=name, uid=uid):
                self._delete_pod(ns, name, uid)
            case plan.CreateService(manifest=manifest):
                self._create(search, "services", manifest)
            case plan.CreateSecret(ref=ref):
                secret = pods.token_secret(ref, new_token())
                created = self._create(search, "secrets", secret)
                return created or self._reread(ns, "secrets", secret)
            case plan.CreateState(manifest=manifest):
                created = self._create(search, "configmaps", manifest)
                return created or self._reread(ns, "configmaps", manifest)
            case plan.RecordMembers():
                with _refusal(self, search, "ConfigMap", names.state_configmap(search.name)):
                    self.update_state(ns, search.name, lambda s: plan.merge_members(s, action))
            case plan.CreateSchedule(manifest=manifest):
                with _refusal(self, search, "LRSchedule", manifest["metadata"]["name"]):
                    self._store_schedule(ns, search.uid, manifest)
            case plan.RecordEvent(type=kind, reason=reason, message=message):
                ref = pods.SearchRef(ns, search.name, search.uid)
                self.record_event(ref, kind, reason, message)
        return True

    def _reread(self, namespace: str, plural: str, manifest: JsonObj) -> bool:
        """Read into the cache the object ``manifest`` would have created; False (the plan
        stops)."""
        path = f"{_ns(namespace)}/{plural}/{quote(manifest['metadata']['name'], safe='')}"
        self._file(cache.Kind(plural), self.rest.get_or_none(path))
        return False

    def _create(self, search: SearchView, plural: str, manifest: JsonObj) -> bool:
        kind, name = cache.Kind(plural), manifest["metadata"]["name"]
        with self.store.writing(kind, search.namespace, name):
            with _refusal(self, search, manifest["kind"], name):
                created = self.rest.create(f"{_ns(search.namespace)}/{plural}", manifest)
            self._file(kind, created)
        return bool(created)

    def _delete_pod(self, namespace: str, name: str, uid: str) -> None:
        # The uid precondition: never delete a newer pod that took the name meanwhile.
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            answer = self.rest.request("DELETE", f"{_ns(namespace)}/pods/{name}", body=body)
        except ApiError as err:
            if err.status not in (404, 409):
                raise
            return
        if (answer.get("metadata") or {}).get("deletionTimestamp"):
            self._file(cache.PODS, answer)  # terminating: its end comes as a watch event
        else:
            gone = {"metadata": {"namespace": namespace, "name": name, "uid": uid}}
            self.store.delete(cache.PODS, answer if answer.get("kind") == "Pod" else gone)

    def _store_schedule(self, namespace: str, uid: str, manifest: JsonObj) -> None:
        path = _custom(namespace, SCHEDULES)
        created = self.rest.create(path, manifest)
        if created:
            self._file(cache.SCHEDULES, created)
            return
        existing = self.rest.get(f"{path}/{manifest['metadata']['name']}")
        if results.schedule_owner_uid(existing) == uid:
            self._file(cache.SCHEDULES, existing)
            return  # ours, stored by an earlier attempt
        replacement = dict(manifest)
        replacement["metadata"] = {
            **manifest["metadata"],
            "resourceVersion": existing["metadata"]["resourceVersion"],
        }
        name = manifest["metadata"]["name"]
        self._file(cache.SCHEDULES, self.rest.request("PUT", f"{path}/{name}", body=replacement))

    def drop_finalizer(self, obj: JsonObj, finalizer: str) -> None:
        """Take ``finalizer`` off the search ``obj``: a JSON patch removing it at its index,
        refused (and left for the search's next version, which queues it again) if the list
        changed since ``obj`` was read."""
        meta = obj["metadata"]
        index = (meta.get("finalizers") or []).index(finalizer)
        at = f"/metadata/finalizers/{index}"
        patch = [{"op": "test", "path": at, "value": finalizer}, {"op": "remove", "path": at}]
        namespace, name = meta["namespace"], meta["name"]
        with self.store.writing(cache.SEARCHES, namespace, name):
            try:
                answer = self.rest.request(
                    "PATCH", _custom(namespace, SEARCHES, name), body=patch, content_type=JSON_PATCH
                )
            except ApiError as err:
                if err.status not in (404, 409, 422):  # gone, or changed meanwhile
                    raise
                return
            self._file(cache.SEARCHES, answer)

    def write_status(self, search: SearchView, new: Any) -> None:
        body = {"status": status.wire(new)}
        path = _custom(search.namespace, SEARCHES, search.name) + "/status"
        with self.store.writing(cache.SEARCHES, search.namespace, search.name):
            try:
                answer = self.rest.request("PATCH", path, body=body, content_type=MERGE_PATCH)
            except ApiError as err:
                if err.status != 404:  # deleted meanwhile: nothing to report to
                    raise
                return
            self._file(cache.SEARCHES, answer)

    def record_event(self, search: pods.SearchRef, kind: str, reason: str, message: str) -> None:
        """A core/v1 Event on the search; best effort (an event lost is not worth a retry)."""
        event = events.Event(search.namespace, search.name, search.uid, kind, reason, message)
        if self.recorder is not None:
            self.recorder.record(event)
            return
        try:
            self.post_event(event, 1)
        except Exception as err:
            log.warning("could not record event %s on %s: %s", reason, search.name, err)

    def post_event(self, event: events.Event, count: int) -> None:
        """POST ``event`` (which happened ``count`` times)."""
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{event.name}.{secrets.token_hex(8)}",
                "namespace": event.namespace,
            },
            "involvedObject": {
                "apiVersion": f"{API_GROUP}/{API_VERSION_NAME}",
                "kind": "ScheduleSearch",
                "name": event.name,
                "namespace": event.namespace,
                "uid": event.uid,
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": count,
        }
        self.rest.create(f"{_ns(event.namespace)}/events", body)

    # -- the state ConfigMap ---------------------------------------------------------------------

    def read_state(self, namespace: str, search: str) -> state_mod.SearchState | None:
        obj = self.rest.get_or_none(f"{_ns(namespace)}/configmaps/{names.state_configmap(search)}")
        return None if obj is None else state_mod.SearchState.from_configmap(obj)

    def _cached_state(self, namespace: str, search: str) -> state_mod.SearchState | None:
        obj = self.store.get(cache.CONFIGMAPS, namespace, names.state_configmap(search))
        return None if obj is None else state_mod.SearchState.from_configmap(obj)

    def write_state(self, namespace: str, search: str, new: state_mod.SearchState) -> str:
        """Replace the ConfigMap's data if nobody wrote since ``new.resource_version`` was read
        (409 otherwise); returns the new resourceVersion."""
        if new.resource_version is None:
            raise ValueError("write_state needs the resourceVersion the state was read at")
        path = f"{_ns(namespace)}/configmaps/{names.state_configmap(search)}"
        data, binary = new.to_configmap()
        state_mod.check_size(data, binary)
        # A resourceVersion in a patch is a precondition: the API answers 409 if it moved on.
        patch = {
            "metadata": {"resourceVersion": new.resource_version},
            "data": data,
            "binaryData": binary or None,
        }
        with self.store.writing(cache.CONFIGMAPS, namespace, names.state_configmap(search)):
            answer = self.rest.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
            self._file(cache.CONFIGMAPS, answer)
        return str(answer["metadata"]["resourceVersion"])

    def update_state(
        self,
        namespace: str,
        search: str,
        change: Callable[[state_mod.SearchState], state_mod.SearchState | None],
    ) -> state_mod.SearchState:
        """Read-modify-write with optimistic concurrency; ``change`` returns None for no change.

        The first try starts from the cached state: the cache holds every write of this process,
        so it is current unless another process wrote (then the write conflicts, and the retry
        reads the API)."""
        for attempt in range(STATE_RETRIES):
            current = self._cached_state(namespace, search) if attempt == 0 else None
            current = current or self.read_state(namespace, search)
            if current is None:
                raise NotReady(f"search {namespace}/{search} has no state yet")
            new = change(current)
            if new is None:
                return current
            try:
                new.resource_version = self.write_state(namespace, search, new)
                return new
            except ApiError as err:
                if err.status != 409:
                    raise
        raise ApiError(409, f"state of {namespace}/{search}: too many concurrent writers")

    # -- the report channel's token --------------------------------------------------------------

    def token(self, namespace: str, search: str, *, fresh: bool = False) -> str | None:
        """The search's report token (cached; ``fresh`` reads the Secret again)."""
        key = (namespace, search)
        with self._tokens_lock:
            if not fresh and key in self._tokens:
                return self._tokens[key]
        secret = (
            None if fresh else self.store.get(cache.SECRETS, namespace, names.token_secret(search))
        )
        if secret is None:
            secret = self.rest.get_or_none(f"{_ns(namespace)}/secrets/{names.token_secret(search)}")
        if secret is None:
            return None
        raw = (secret.get("data") or {}).get("token")
        value = base64.b64decode(raw).decode() if raw else None
        with self._tokens_lock:
            if value is not None:
                self._tokens[key] = value
        return value


def _ended(pod: JsonObj) -> bool:
    return (pod.get("status") or {}).get("phase") in plan.TERMINAL


def new_token() -> str:
    return secrets.token_urlsafe(32)


@contextlib.contextmanager
def _refusal(api: Kube, search: SearchView, kind: str, name: str) -> Iterator[None]:
    """Writing ``kind`` ``name``: a terminal refusal becomes :class:`Refused`; any other API
    error is retried by the caller, after an Event saying what the API server answered."""
    try:
        yield
    except state_mod.StateTooLarge as err:
        raise Refused(kind, name, ApiError(413, str(err), "RequestEntityTooLarge")) from None
    except ApiError as err:
        if err.terminal:
            raise Refused(kind, name, err) from None
        message = f"writing {kind} {name}: {err}; retrying"
        ref = pods.SearchRef(search.namespace, search.name, search.uid)
        api.record_event(ref, "Warning", "WriteFailed", message)
        raise
