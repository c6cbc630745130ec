"""When the API server refuses what a search needs: fail once with its answer, or retry.

A deterministic refusal (422 invalid, 403 missing ServiceAccount, 413 too large) fails the search
with the API server's message in the Failed condition and an Event, instead of using up member
restarts on creates that can never succeed; a busy API server or an exhausted quota is retried.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from schedsearch.controller import app, kube, observe, plan
from schedsearch.controller import metrics as metrics_mod
from schedsearch.controller import state as state_mod

from .controller_fixtures import (  # noqa: F401
    CONFIG,
    NOW,
    _builtin_workloads,
    fresh_state,
    observed,
    search_object,
    view,
)

NO_SA = (
    'pods "s1-pbt-0" is forbidden: error looking up service account ml/trainer: '
    'serviceaccount "trainer" not found'
)
QUOTA = 'pods "s1-pbt-0" is forbidden: exceeded quota: compute, requested: cpu=2, used: cpu=8'


@pytest.mark.parametrize(
    ("status", "message", "terminal"),
    [
        (422, 'Pod "x" is invalid: spec.tolerations[0].operator: Unsupported value', True),
        (403, NO_SA, True),
        (400, "bad request", True),
        (413, "Request entity too large", True),
        (403, QUOTA, False),
        (403, 'pods "x" is forbidden: unable to create new content in namespace ml because '
              "it is being terminated", False),
        (409, "already exists", False),
        (429, "too many requests", False),
        (500, "etcd timeout", False),
        (503, "unavailable", False),
    ],
)  # fmt: skip
def test_terminal_or_transient(status: int, message: str, terminal: bool) -> None:
    assert kube.ApiError(status, message).terminal is terminal


class FakeRest:
    """Answers POSTs with a given error; records everything else it is asked."""

    def __init__(self, error: kube.ApiError | None) -> None:
        self.error = error
        self.posted: list[tuple[str, dict[str, Any]]] = []

    def create(self, path: str, body: dict[str, Any]) -> bool:
        self.posted.append((path, body))
        if path.endswith("/pods") and self.error is not None:
            raise self.error
        return True


def create_pod_plan() -> tuple[observe.SearchView, plan.Plan]:
    search = view("pbt")
    decided = plan.plan(search, observed(search, state=fresh_state(search)), config=CONFIG)
    pod_actions = [a for a in decided.actions if isinstance(a, plan.CreatePod)]
    return search, plan.Plan((pod_actions[0],))


def events(fake: FakeRest) -> list[dict[str, Any]]:
    return [body for path, body in fake.posted if path.endswith("/events")]


def test_a_terminal_refusal_is_raised_with_the_api_servers_reason() -> None:
    fake = FakeRest(kube.ApiError(403, NO_SA, "Forbidden"))
    search, decided = create_pod_plan()
    with pytest.raises(kube.Refused) as caught:
        kube.Kube(fake).apply(search, decided)  # type: ignore[arg-type]
    assert caught.value.reason == "PodRefused"
    assert "403 Forbidden" in caught.value.message and NO_SA in caught.value.message
    assert events(fake) == []  # the failed search records it


def test_a_transient_refusal_is_retried_after_an_event() -> None:
    fake = FakeRest(kube.ApiError(403, QUOTA, "Forbidden"))
    search, decided = create_pod_plan()
    with pytest.raises(kube.ApiError):
        kube.Kube(fake).apply(search, decided)  # type: ignore[arg-type]
    (event,) = events(fake)
    assert event["reason"] == "WriteFailed" and "exceeded quota" in event["message"]


class RefusingKube:
    """Refuses the first plan's member pods; records every plan applied."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.applied: list[plan.Plan] = []

    def get_search(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.obj

    def observe(self, search: observe.SearchView, now: datetime.datetime) -> observe.Observed:
        return observed(search)

    def apply(self, search: observe.SearchView, decided: plan.Plan) -> None:
        self.applied.append(decided)
        if any(isinstance(a, plan.CreatePod) for a in decided.actions):
            raise kube.Refused("Pod", "s1-pbt-0", kube.ApiError(403, NO_SA, "Forbidden"))


def test_the_reconciler_fails_the_search_once_with_the_refusal() -> None:
    fake = RefusingKube(search_object("pbt"))
    reconciler = app.Reconciler(fake, CONFIG, metrics_mod.ControllerMetrics())  # type: ignore[arg-type]
    assert reconciler.reconcile("ml", "s1") is None
    first, failed = fake.applied
    assert any(isinstance(a, plan.CreatePod) for a in first.actions)
    assert failed.status is not None and failed.status.phase == "Failed"
    (condition,) = [c for c in failed.status.conditions if c.type == "Failed"]
    assert condition.reason == "PodRefused" and NO_SA in condition.message
    (event,) = [a for a in failed.actions if isinstance(a, plan.RecordEvent)]
    assert event.reason == "SearchFailed" and NO_SA in event.message
    assert not any(isinstance(a, plan.CreatePod) for a in failed.actions)


def test_a_state_too_large_for_a_configmap_fails_before_it_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Admission bounds the population well below what 1 MiB holds; a smaller limit shows the
    # check that stands behind that bound (a ConfigMap the API server would refuse is not sent).
    monkeypatch.setattr(state_mod, "CONFIGMAP_LIMIT_BYTES", 60_000)
    search = view("pbt", strategy={"pbt": {"population": 200, "perturbationInterval": 100}})
    assert search.spec is not None, search.problems
    p = plan.plan(search, observed(search, setup=False), config=CONFIG)
    assert not [a for a in p.actions if isinstance(a, plan.CreateState)]
    assert p.status is not None and p.status.phase == "Failed"
    (condition,) = [c for c in p.status.conditions if c.type == "Failed"]
    assert condition.reason == "StateTooLarge"
    assert "spec.strategy.pbt.population (200)" in condition.message
    # A population that fits starts as usual...
    small = view("pbt")
    started = plan.plan(small, observed(small, setup=False), config=CONFIG)
    assert [type(a).__name__ for a in started.actions][:2] == ["CreateSecret", "CreateState"]
    # ... and fails if its state grows past the limit while it runs.
    grown = fresh_state(small)
    grown.members[0].checkpoint = "/c/" + "x" * 60_000
    late = plan.plan(small, observed(small, state=grown), config=CONFIG)
    assert late.status is not None and late.status.phase == "Failed"
    assert "has grown to" in late.status.message


def test_a_state_write_over_the_limit_is_never_sent() -> None:
    state = fresh_state(view("pbt"))
    state.spec = {"padding": "x" * state_mod.CONFIGMAP_LIMIT_BYTES}
    with pytest.raises(state_mod.StateTooLarge, match="over the 1048576 bytes"):
        state_mod.check_size(*state.to_configmap())
    assert json.loads(state.to_configmap()[0][state_mod.STATE_KEY])["spec"]["padding"]
