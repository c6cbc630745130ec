"""What the reconciler sees, as plain data: the search and the objects it owns.

``controller.kube`` reads the API and builds these views with the parsers below; ``plan`` reads
only the views. The parsers are pure, so tests feed them hand-written API objects.
"""

from __future__ import annotations

import collections
import datetime
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from schedsearch.api import loading
from schedsearch.api.spec import ScheduleSearchSpec, ScheduleSearchStatus
from schedsearch.controller import names
from schedsearch.controller import state as state_mod

JsonObj = dict[str, Any]
# The pod condition Kubernetes sets on a pod it is about to remove for reasons of its own.
DISRUPTION_TARGET = "DisruptionTarget"


@dataclass(frozen=True)
class SearchView:
    """A ScheduleSearch as read from the API: its spec parsed (or why it cannot be)."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: ScheduleSearchSpec | None
    problems: tuple[str, ...] = ()
    status: ScheduleSearchStatus = field(default_factory=lambda: empty_status())
    raw_spec: JsonObj = field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> SearchView:
        meta = obj.get("metadata") or {}
        raw_spec = dict(obj.get("spec") or {})
        uid = str(meta.get("uid", ""))
        spec, problems = parse_spec(raw_spec, search_uid=uid)
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta["name"]),
            uid=uid,
            generation=int(meta.get("generation") or 0),
            spec=spec,
            problems=problems,
            status=parse_status(obj.get("status")),
            raw_spec=raw_spec,
        )


ParsedSpec = tuple[ScheduleSearchSpec | None, tuple[str, ...]]
# Specs parsed lately, each under its search's uid and its own text: every reconcile pass parses
# its search's spec (and a started search's kept spec) again, and validating it was most of a
# pass's cost, while a spec seldom changes. Another text is another entry, so an edit is parsed
# afresh; the least recently used entries go beyond SPECS_KEPT.
SPECS_KEPT = 1024
_parsed: collections.OrderedDict[tuple[str, str], ParsedSpec] = collections.OrderedDict()
_parsed_lock = threading.Lock()


def parse_spec(raw: Mapping[str, Any], *, search_uid: str) -> ParsedSpec:
    """The spec of the search with ``search_uid``, or the problems that make it unrunnable
    (``spec.field: message``). The parsed spec is shared by every pass that parses that same
    spec again: it is never changed."""
    key = (search_uid, json.dumps(raw, sort_keys=True, separators=(",", ":"), default=repr))
    with _parsed_lock:
        found = _parsed.get(key)
        if found is not None:
            _parsed.move_to_end(key)
            return found
    found = _validate_spec(raw)
    with _parsed_lock:
        _parsed[key] = found
        while len(_parsed) > SPECS_KEPT:
            _parsed.popitem(last=False)
    return found


def _validate_spec(raw: Mapping[str, Any]) -> ParsedSpec:
    try:
        return ScheduleSearchSpec.model_validate(raw), ()
    except ValidationError as err:
        problems = loading.validation_problems(err, ScheduleSearchSpec)
        return None, tuple(f"spec.{p}" if p.path else f"spec: {p.message}" for p in problems)


def parse_status(raw: Any) -> ScheduleSearchStatus:
    """The status the controller wrote last; unreadable (another version's) counts as empty."""
    if not isinstance(raw, Mapping):
        return empty_status()
    known = {k: v for k, v in raw.items() if k in _STATUS_FIELDS}
    try:
        return ScheduleSearchStatus.model_validate(known)
    except ValidationError:
        return empty_status()


def empty_status() -> ScheduleSearchStatus:
    """The status of a search nobody has looked at yet (phase Pending)."""
    return ScheduleSearchStatus.model_validate({})


_STATUS_FIELDS = frozenset(
    info.alias or name for name, info in ScheduleSearchStatus.model_fields.items()
)


@dataclass(frozen=True)
class PodView:
    """One member pod, reduced to what decisions depend on."""

    name: str
    uid: str
    member: int
    attempt: int
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    terminating: bool = False
    waiting_reason: str | None = None
    waiting_message: str | None = None
    exit_code: int | None = None
    terminated_reason: str | None = None
    created: datetime.datetime | None = None
    # Why Kubernetes disrupted the pod (its DisruptionTarget condition: eviction, preemption,
    # node drain or loss); None for a pod that was not disrupted.
    disruption: str | None = None

    @property
    def disrupted(self) -> bool:
        return self.disruption is not None


def pod_view(pod: Mapping[str, Any]) -> PodView | None:
    """The view of a member pod, or None when it is not one (no member label)."""
    meta = pod.get("metadata") or {}
    member = (meta.get("labels") or {}).get(names.LABEL_MEMBER)
    if member is None or not str(member).isdigit():
        return None
    status = pod.get("status") or {}
    waiting, terminated = _container_state(status)
    attempt = (meta.get("annotations") or {}).get(names.ANNOTATION_ATTEMPT, "1")
    return PodView(
        name=str(meta["name"]),
        uid=str(meta.get("uid", "")),
        member=int(member),
        attempt=int(attempt) if str(attempt).isdigit() else 1,
        phase=str(status.get("phase") or "Pending"),
        terminating=meta.get("deletionTimestamp") is not None,
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message"),
        exit_code=terminated.get("exitCode"),
        terminated_reason=terminated.get("reason"),
        created=_timestamp(meta.get("creationTimestamp")),
        disruption=_disruption(status),
    )


def _disruption(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == DISRUPTION_TARGET and condition.get("status") == "True":
            reason, message = condition.get("reason") or "", condition.get("message") or ""
            return ": ".join(part for part in (reason, message) if part) or DISRUPTION_TARGET
    return None


def _container_state(status: Mapping[str, Any]) -> tuple[JsonObj, JsonObj]:
    containers = status.get("containerStatuses") or []
    if not containers:
        return {}, {}
    state = containers[0].get("state") or {}
    return dict(state.get("waiting") or {}), dict(state.get("terminated") or {})


def _timestamp(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj`` belongs to the search with ``uid`` (not to an earlier one of that name)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


@dataclass(frozen=True)
class Observed:
    """Everything ``plan`` looks at besides the search itself."""

    now: datetime.datetime
    pods: tuple[PodView, ...] = ()
    services: frozenset[str] = frozenset()
    secret: bool = False
    state: state_mod.SearchState | None = None
    # The size of the state ConfigMap as stored (what the API server counts against its
    # limit); None: not known, measured by encoding ``state``.
    state_bytes: int | None = None
    # The uid of the search the existing LRSchedule came from ("" if it exists without one);
    # None when there is no LRSchedule of that name.
    schedule_owner_uid: str | None = None
    # Objects with our names that belong to an earlier search of the same name, not yet
    # garbage-collected: creating ours must wait for them to go.
    foreign: tuple[str, ...] = ()

    def pod(self, member: int) -> PodView | None:
        found = [p for p in self.pods if p.member == member]
        return max(found, key=lambda p: p.attempt) if found else None
