"""The cluster as a results backend: ScheduleSearch objects and the LRSchedules they stored.

``ClusterBackend`` reads one namespace through the official Kubernetes client, configured from a
kubeconfig (``--kubeconfig``/``--context``, else ``$KUBECONFIG`` or ``~/.kube/config``) or from
the pod's service account when it runs inside the cluster. It reads, and deletes what a user asks
to delete; everything else is written by the controller.

What the cluster keeps is coarser than the local store: a search's status holds each member's
latest step, LR and best objective (at most ``MAX_STATUS_MEMBERS`` of them), not every evaluation,
so ``history`` has one point per member. A stored schedule outlives its search: ``best NAME``
still finds ``NAME-best`` after the search is deleted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schedsearch.api import spec as api
from schedsearch.store.base import (
    HistoryPoint,
    NotFoundError,
    SearchRecord,
    StoredSchedule,
    StoreError,
)

SEARCHES = "schedulesearches"
SCHEDULES = "lrschedules"
TIMEOUT = (5.0, 30.0)  # connect, read (seconds)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class ClusterTarget:
    """Which cluster and namespace to read; ``None`` fields fall back to the kubeconfig's."""

    kubeconfig: Path | None = None
    context: str | None = None
    namespace: str | None = None

    @property
    def explicit(self) -> bool:
        """Whether the user named a cluster or namespace on the command line."""
        return any(v is not None for v in (self.kubeconfig, self.context, self.namespace))


def config_file(kubeconfig: Path | None = None) -> str:
    """The kubeconfig to read, as kubectl picks it: the flag, ``$KUBECONFIG`` (a list of files
    joined by ``:``), else ``~/.kube/config``. Read now, not when the client was imported."""
    if kubeconfig is not None:
        return str(kubeconfig)
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def current_context_set(kubeconfig: Path | None = None) -> bool:
    """Whether a kubeconfig with a current context is there (what ``kubectl`` would use)."""
    from kubernetes import config as kube_config

    try:
        _, active = kube_config.list_kube_config_contexts(config_file=config_file(kubeconfig))
    except Exception:  # no file, unreadable, no current-context: all mean "not set"
        return False
    return bool(active)


class ClusterBackend:
    """Search results as the cluster holds them, in one namespace."""

    def __init__(self, target: ClusterTarget) -> None:
        from kubernetes import client as kube_client
        from kubernetes import config as kube_config

        path = config_file(target.kubeconfig)
        in_cluster = (
            target.kubeconfig is None
            and target.context is None
            and not os.environ.get("KUBECONFIG")
            and not Path(path).is_file()
            and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        )
        try:
            if in_cluster:
                kube_config.load_incluster_config()
                api_client = kube_client.ApiClient()
                namespace = target.namespace or _service_account_namespace()
                self.where = f"namespace {namespace!r} (in-cluster)"
            else:
                api_client = kube_config.new_client_from_config(
                    config_file=path, context=target.context
                )
                namespace = target.namespace or _context_namespace(path, target.context)
                self.where = f"namespace {namespace!r} of {api_client.configuration.host}"
        except Exception as err:  # the client raises ConfigException, OSError, ValueError, ...
            source = "the in-cluster service account" if in_cluster else f"the kubeconfig {path}"
            raise StoreError(f"cannot load {source}: {err}") from None
        self.namespace = namespace
        self._api = kube_client.CustomObjectsApi(api_client)

    # --- ResultsBackend -------------------------------------------------------------------------

    def list_searches(self) -> list[SearchRecord]:
        answer = self._call(
            self._api.list_namespaced_custom_object,
            api.API_GROUP,
            api.API_VERSION_NAME,
            self.namespace,
            SEARCHES,
            missing=None,
        )
        items = answer.get("items") or []
        return sorted((search_record(item) for item in items), key=lambda r: r.name)

    def get_search(self, name: str) -> SearchRecord:
        return search_record(self._search_object(name))

    def best_schedule(self, name: str) -> StoredSchedule:
        schedule_name = api.best_schedule_name(name)
        search: dict[str, Any] | None = None
        try:
            search = self._search_object(name)
        except NotFoundError:
            pass  # the search may be gone; its stored schedule outlives it
        else:
            best = (search.get("status") or {}).get("best") or {}
            schedule_name = str(best.get("schedule") or schedule_name)
        try:
            obj = self._call(
                self._api.get_namespaced_custom_object,
                api.API_GROUP,
                api.API_VERSION_NAME,
                self.namespace,
                SCHEDULES,
                schedule_name,
                missing=("schedule", schedule_name),
            )
        except NotFoundError:
            if search is None:
                raise NotFoundError("search", name, f"not in {self.where}") from None
            raise NotFoundError(
                "best schedule of search",
                name,
                f"no LRSchedule {schedule_name!r} in {self.where} yet",
            ) from None
        return stored_schedule(obj)

    def list_schedules(self) -> list[StoredSchedule]:
        answer = self._call(
            self._api.list_namespaced_custom_object,
            api.API_GROUP,
            api.API_VERSION_NAME,
            self.namespace,
            SCHEDULES,
            missing=None,
        )
        items = answer.get("items") or []
        return sorted((stored_schedule(item) for item in items), key=lambda s: s.name)

    def history(self, name: str) -> list[HistoryPoint]:
        record = self.get_search(name)
        return [
            HistoryPoint(
                member=m.id,
                step=m.step,
                lr=m.lr if m.lr is not None else float("nan"),
                loss=m.objective if record.objective_metric != "val_loss" else None,
                val_loss=m.objective if record.objective_metric == "val_loss" else None,
            )
            for m in sorted(record.members or (), key=lambda m: m.id)
        ]

    # --- deletes --------------------------------------------------------------------------------

    def delete_search(self, name: str) -> None:
        """Delete the ScheduleSearch; the controller then stops its pods and removes its state.
        Its LRSchedule is owned by no one and stays."""
        self._call(
            self._api.delete_namespaced_custom_object,
            api.API_GROUP,
            api.API_VERSION_NAME,
            self.namespace,
            SEARCHES,
            name,
            missing=("search", name),
            verb="delete",
        )

    def delete_schedule(self, name: str) -> bool:
        """Delete the LRSchedule ``name``; False if there was none."""
        try:
            self._call(
                self._api.delete_namespaced_custom_object,
                api.API_GROUP,
                api.API_VERSION_NAME,
                self.namespace,
                SCHEDULES,
                name,
                missing=("schedule", name),
                verb="delete",
            )
        except NotFoundError:
            return False
        return True

    # --- requests -------------------------------------------------------------------------------

    def _search_object(self, name: str) -> dict[str, Any]:
        return self._call(
            self._api.get_namespaced_custom_object,
            api.API_GROUP,
            api.API_VERSION_NAME,
            self.namespace,
            SEARCHES,
            name,
            missing=("search", name),
        )

    def _call(
        self, method: Any, *args: Any, missing: tuple[str, str] | None, verb: str = "read"
    ) -> dict[str, Any]:
        """One request; a 404 becomes ``NotFoundError`` for ``missing`` (kind, name), any other
        failure a ``StoreError`` that says where and why."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            answer = method(*args, _request_timeout=TIMEOUT)
        except ApiException as err:
            if err.status == 404 and missing is not None:
                raise NotFoundError(missing[0], missing[1], f"not in {self.where}") from None
            if err.status == 404:
                raise StoreError(
                    f"the cluster has no {SEARCHES}.{api.API_GROUP} resource: "
                    "is the schedsearch operator (its CRDs) installed?"
                ) from None
            if err.status in (401, 403):
                raise StoreError(
                    f"not allowed to {verb} {SEARCHES if missing is None else missing[0]} in "
                    f"{self.where}: {err.status} {err.reason}"
                ) from None
            raise StoreError(f"the API server answered {err.status} {err.reason}") from None
        except HTTPError as err:
            raise StoreError(f"cannot reach the cluster ({self.where}): {err}") from None
        if not isinstance(answer, dict):
            raise StoreError(f"unexpected answer from the API server: {type(answer).__name__}")
        return answer


def search_record(obj: Mapping[str, Any]) -> SearchRecord:
    """A ScheduleSearch object read from the cluster, as the CLI's record of a search."""
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name", ""))
    try:
        search = api.ScheduleSearch.from_object(obj)
    except ValidationError as err:
        problem = err.errors()[0]["msg"]
        raise StoreError(f"ScheduleSearch {name!r} does not parse: {problem}") from None
    status = search.status or api.ScheduleSearchStatus()
    created = _time(metadata.get("creationTimestamp")) or _EPOCH
    times = [created, status.start_time, status.completion_time]
    times += [c.last_transition_time for c in status.conditions]
    best = status.best
    # The spec as the cluster holds it (not re-serialised: no defaults added), with the metadata
    # a user wrote (server-managed fields such as uid and managedFields left out).
    wire = {
        "apiVersion": obj.get("apiVersion", api.API_VERSION),
        "kind": obj.get("kind", api.SEARCH_KIND),
        "metadata": search.to_wire()["metadata"],
        "spec": obj.get("spec") or {},
    }
    return SearchRecord(
        name=search.name,
        spec=wire,
        phase=status.phase,
        strategy=search.spec.strategy_name,
        workload=search.spec.workload.ref,
        created_at=created,
        updated_at=max(t for t in times if t is not None),
        best_objective=best.objective if best is not None else None,
        best_member=best.member if best is not None else None,
        best_step=best.step if best is not None else None,
        member_steps=status.member_steps,
        message=status.message,
        started_at=status.start_time,
        completed_at=status.completion_time,
        members=tuple(status.members),
        conditions=tuple(status.conditions),
        observed_generation=status.observed_generation,
        control=status.control,
    )


def stored_schedule(obj: Mapping[str, Any]) -> StoredSchedule:
    """An LRSchedule object read from the cluster, as a stored schedule."""
    name = str((obj.get("metadata") or {}).get("name", ""))
    try:
        resource = api.LRSchedule.from_object(obj)
    except ValidationError as err:
        raise StoreError(f"LRSchedule {name!r} does not parse: {err.errors()[0]['msg']}") from None
    provenance = resource.spec.provenance
    if provenance.namespace is None:
        provenance = provenance.model_copy(update={"namespace": resource.metadata.namespace})
    return StoredSchedule(
        name=resource.metadata.name,
        search=provenance.search or name,
        schedule=resource.spec.to_schedule(),
        provenance=provenance,
    )


def _context_namespace(path: str, context: str | None) -> str:
    """The namespace the chosen kubeconfig context names, else ``default`` (as kubectl does)."""
    from kubernetes import config as kube_config

    contexts, active = kube_config.list_kube_config_contexts(config_file=path)
    chosen = active
    if context is not None:
        chosen = next((c for c in contexts if c.get("name") == context), None)
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


def _service_account_namespace() -> str:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip() or "default"
    except OSError:
        return "default"


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
