"""The controller process's wiring: flags, one reconcile pass, the per-search loop, state merges."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from schedsearch.controller import app, kube, observe, plan
from schedsearch.controller import metrics as metrics_mod

from .controller_fixtures import (  # noqa: F401
    CONFIG,
    _builtin_workloads,
    fresh_state,
    search_object,
    view,
)


def test_flags() -> None:
    options = app.parse_args(
        [
            "--namespace",
            "ml",
            "--namespace",
            "research",
            "--image",
            "img:1",
            "--report-port",
            "9000",
        ]
    )
    assert options.namespaces == ("ml", "research") and not options.all_namespaces
    assert options.settings.image == "img:1"
    assert options.settings.report_url == "http://127.0.0.1:9000"
    with pytest.raises(SystemExit):
        app.parse_args(["--image", "x"])  # neither --namespace nor --all-namespaces
    with pytest.raises(SystemExit):
        app.parse_args(["--all-namespaces", "--report-port", "70000"])


class FakeKube:
    """Records what a reconcile pass asked of the API."""

    def __init__(self, obj: dict[str, Any] | None) -> None:
        self.obj = obj
        self.applied: list[plan.Plan] = []

    def get_search(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.obj

    def observe(self, search: observe.SearchView, now: datetime.datetime) -> observe.Observed:
        return observe.Observed(now=now)

    def apply(self, search: observe.SearchView, decided: plan.Plan) -> None:
        self.applied.append(decided)


def reconciler(obj: dict[str, Any] | None) -> tuple[app.Reconciler, FakeKube]:
    fake = FakeKube(obj)
    return app.Reconciler(fake, CONFIG, metrics_mod.ControllerMetrics()), fake  # type: ignore[arg-type]


def test_a_pass_reads_plans_and_applies_and_one_that_acted_is_followed_at_once() -> None:
    reconcile, fake = reconciler(search_object("pbt"))
    assert reconcile.reconcile("ml", "s1") == CONFIG.requeue_soon_seconds
    # The fake never shows what was created, so each pass creates it again, up to the cap.
    assert len(fake.applied) == app.MAX_PASSES
    for decided in fake.applied:
        assert [type(a).__name__ for a in decided.actions] == ["CreateSecret", "CreateState"]


def test_a_deleted_search_is_left_alone() -> None:
    reconcile, fake = reconciler(None)
    assert reconcile.reconcile("ml", "s1") is None and fake.applied == []
    obj = search_object("pbt")
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    reconcile, fake = reconciler(obj)
    assert reconcile.reconcile("ml", "s1") is None and fake.applied == []


def test_the_loop_wakes_up_on_a_poke_and_backs_off_on_errors() -> None:
    calls: list[str] = []
    reconcile, _ = reconciler(search_object("pbt"))

    def counting(namespace: str, name: str) -> float | None:
        calls.append(name)
        if len(calls) == 2:
            raise kube.ApiError(500, "flaky")
        return 60.0  # without a poke, the next pass would be a minute away

    reconcile.reconcile = counting  # type: ignore[method-assign]

    class Stopped:
        def __bool__(self) -> bool:
            return len(calls) >= 3

    async def scenario() -> None:
        task = asyncio.create_task(reconcile.run("ml", "s1", Stopped()))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert len(calls) == 1
        reconcile.poke("ml", "s1")  # a report arrived: reconcile now
        await asyncio.wait_for(task, timeout=5)  # the failure backs off 1s, then a last pass

    asyncio.run(scenario())
    assert len(calls) == 3


def test_state_merges_only_grow() -> None:
    state = fresh_state(view("pbt"))
    state.members[0].attempts = 3
    merged = kube._merge_members(state, plan.RecordMembers(((0, 2), (1, 1)), (2,)))
    assert merged is not None
    assert [merged.members[i].attempts for i in range(3)] == [3, 1, 0]
    assert merged.members[2].gave_up
    assert kube._merge_members(merged, plan.RecordMembers(((0, 2), (1, 1)), (2,))) is None
