"""Hand-made searches, pods and observations for the controller's unit tests (no API server)."""

from __future__ import annotations

import copy
import dataclasses
import datetime
from typing import Any

import pytest

from schedsearch.api import spec as api
from schedsearch.controller import observe, pods, settings
from schedsearch.controller import state as state_mod
from schedsearch.trainers import channel

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
UID = "0b9a6c1e-1111-2222-3333-444455556666"
CONFIG = settings.Settings(image="registry.example/schedsearch:1", report_url="http://ctl:8081")

BASE_SPEC: dict[str, Any] = {
    "workload": {"entrypoint": "mypkg.train:workload", "image": "registry.example/me/train:2"},
    "objective": {"metric": "val_loss", "mode": "min"},
    "budget": {"steps": 1000},
    "lrBounds": {"min": 1e-4, "max": 1.0},
    "baseSchedule": {"family": "cosine", "peakLR": 0.05, "warmupSteps": 10},
    "resources": {"cpu": "2", "memory": "4Gi"},
    "checkpoints": {"persistentVolumeClaim": "ckpt"},
}
STRATEGIES: dict[str, dict[str, Any]] = {
    "pbt": {"pbt": {"population": 4, "perturbationInterval": 100}},
    "autolrs": {"autolrs": {"tau": 200, "tauPrime": 20}},
    "hdet": {"hdet": {"replicas": 2, "syncInterval": 100}},
    "law": {"law": {}},
}


@pytest.fixture(autouse=True)
def _builtin_workloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Specs naming a built-in workload validate even where the workload registry is absent."""
    try:
        import schedsearch.trainers.workloads  # noqa: F401
    except ImportError:
        monkeypatch.setattr(api, "builtin_workload_names", lambda: ["digits-cnn"])


def raw_spec(kind: str = "pbt", **changes: Any) -> dict[str, Any]:
    """A valid spec of strategy ``kind``; ``changes`` replace top-level spec fields."""
    spec = copy.deepcopy(BASE_SPEC)
    spec["strategy"] = copy.deepcopy(STRATEGIES[kind])
    spec.update(changes)
    return spec


def search_object(
    kind: str = "pbt",
    *,
    name: str = "s1",
    generation: int = 1,
    status: dict[str, Any] | None = None,
    **changes: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": api.API_VERSION,
        "kind": api.SEARCH_KIND,
        "metadata": {"name": name, "namespace": "ml", "uid": UID, "generation": generation},
        "spec": raw_spec(kind, **changes),
    }
    if status is not None:
        obj["status"] = status
    return obj


def view(kind: str = "pbt", **kwargs: Any) -> observe.SearchView:
    return observe.SearchView.from_object(search_object(kind, **kwargs))


def ref(search: observe.SearchView) -> pods.SearchRef:
    return pods.SearchRef(search.namespace, search.name, search.uid)


def parsed(kind: str = "pbt", **changes: Any) -> api.ScheduleSearchSpec:
    return api.ScheduleSearchSpec.model_validate(raw_spec(kind, **changes))


def fresh_state(search: observe.SearchView) -> state_mod.SearchState:
    spec = search.spec
    assert spec is not None
    return state_mod.initial(
        search_uid=search.uid,
        strategy=spec.strategy.name,
        members=pods.member_count(spec),
        spec=spec.to_wire(),
        generation=search.generation,
        pbt=spec.strategy.pbt,
        lr_min=spec.lr_bounds.min,
        lr_max=spec.lr_bounds.max,
        total_steps=spec.budget.steps,
        mode=spec.objective.mode,
    )


def numbered(state: state_mod.SearchState, report: Any) -> Any:
    """``report`` numbered as its member's next one, as the trainers' client does."""
    if report.seq:
        return report
    return dataclasses.replace(report, seq=state.record(report.member).last_seq + 1)


def deliver(state: state_mod.SearchState, report: Any) -> Any:
    """Apply a new report (numbered) to ``state``; the ``reports.Outcome``."""
    from schedsearch.controller import reports

    return reports.apply(state, numbered(state, report))


def pod(
    member: int,
    phase: str = "Running",
    *,
    attempt: int = 1,
    exit_code: int | None = None,
    waiting: str | None = None,
    age: float = 5.0,
    terminating: bool = False,
) -> observe.PodView:
    return observe.PodView(
        name=f"s1-x-{member}",
        uid=f"uid-{member}-{attempt}",
        member=member,
        attempt=attempt,
        phase=phase,
        terminating=terminating,
        waiting_reason=waiting,
        waiting_message="pull access denied" if waiting else None,
        exit_code=exit_code,
        terminated_reason="Error" if exit_code else None,
        created=NOW - datetime.timedelta(seconds=age),
    )


def observed(
    search: observe.SearchView,
    *pod_views: observe.PodView,
    state: state_mod.SearchState | None = None,
    schedule_owner_uid: str | None = None,
    setup: bool = True,
) -> observe.Observed:
    """What a reconciler would see; ``setup`` means Secret, state and Service already exist."""
    if setup and state is None:
        # As after earlier reconciles: every pod's attempt is already recorded.
        state = fresh_state(search)
        for view_ in pod_views:
            record = state.members[view_.member]
            record.attempts = max(record.attempts, view_.attempt)
    services = frozenset({"s1-hdet"}) if setup else frozenset()
    return observe.Observed(
        now=NOW,
        pods=tuple(pod_views),
        services=services,
        secret=setup,
        state=state,
        schedule_owner_uid=schedule_owner_uid,
    )


def checkpoint(member: int, step: int, objective: float | None) -> channel.Report:
    """A member's checkpoint report at ``step`` with ``objective``, as a pod sends it."""
    return channel.Report(
        member=member,
        kind="checkpoint",
        step=step,
        objective=objective,
        checkpoint_path=f"/ckpt/{member}/{step}",
        config={"lr": 0.01},
        member_steps=step,
    )
