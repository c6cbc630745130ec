"""What counts against ``failurePolicy.maxMemberRestarts``: failures, not disruptions.

A pod that crashed uses up a restart; a pod Kubernetes disrupted (``DisruptionTarget``:
eviction, preemption, drain) or that someone deleted while it ran is replaced for free, as a
Job's pod failure policy ignores disruptions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from schedsearch.controller import observe, plan
from schedsearch.controller import state as state_mod

from .controller_fixtures import (  # noqa: F401
    CONFIG,
    _builtin_workloads,
    fresh_state,
    observed,
    pod,
    view,
)

EVICTED = "EvictionByEvictionAPI: Eviction API: evicting"


def of_type(p: plan.Plan, kind: type) -> list[Any]:
    return [a for a in p.actions if isinstance(a, kind)]


def reasons(p: plan.Plan) -> list[str]:
    return [a.reason for a in of_type(p, plan.RecordEvent)]


def applied(state: state_mod.SearchState, p: plan.Plan) -> state_mod.SearchState:
    """``state`` after the plan's RecordMembers were merged, as the thin layer does."""
    for record in of_type(p, plan.RecordMembers):
        state = plan.merge_members(state, record) or state
    return state


def test_pod_view_reads_the_disruption_condition() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "p", "uid": "u", "labels": {"schedsearch.io/member": "0"}},
        "status": {
            "phase": "Failed",
            "conditions": [
                {"type": "Ready", "status": "False"},
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": "preempted by a higher-priority pod",
                },
            ],
        },
    }
    seen = observe.pod_view(obj)
    assert seen is not None and seen.disrupted
    assert seen.disruption == "PreemptionByScheduler: preempted by a higher-priority pod"
    obj["status"]["conditions"][1]["status"] = "False"
    again = observe.pod_view(obj)
    assert again is not None and not again.disrupted


def test_a_crash_uses_up_a_restart_and_is_counted_once() -> None:
    search = view("autolrs", failurePolicy={"maxMemberRestarts": 2})
    state = fresh_state(search)
    crashed = pod(0, "Failed", exit_code=1)
    first = plan.plan(search, observed(search, crashed, state=state), config=CONFIG)
    assert of_type(first, plan.RecordMembers)[0].failed == ((0, 1),)
    state = applied(state, first)
    assert state.members[0].failed == [1]
    # Seen again before the delete went through: the same failure, not a second one.
    again = plan.plan(search, observed(search, crashed, state=state), config=CONFIG)
    assert not of_type(again, plan.RecordMembers)


def test_disrupted_pods_are_replaced_without_using_restarts() -> None:
    search = view("autolrs", failurePolicy={"maxMemberRestarts": 0})
    state = fresh_state(search)
    for attempt in range(1, 6):  # far more disruptions than the restarts allowed
        evicted = dataclasses.replace(
            pod(0, "Failed", attempt=attempt, exit_code=143), disruption=EVICTED
        )
        state.members[0].attempts = attempt
        p = plan.plan(search, observed(search, evicted, state=state), config=CONFIG)
        assert of_type(p, plan.DeletePod) == [plan.DeletePod("s1-x-0", f"uid-0-{attempt}")]
        assert "MemberDisrupted" in reasons(p) and "MemberGaveUp" not in reasons(p)
        assert p.status is not None and p.status.phase != "Failed"
        state = applied(state, p)
        gone = plan.plan(search, observed(search, state=state), config=CONFIG)
        assert [c.attempt for c in of_type(gone, plan.CreatePod)] == [attempt + 1]
        state = applied(state, gone)
    assert state.members[0].failed == [] and not state.members[0].gave_up


def test_a_pod_deleted_while_running_is_replaced_without_using_a_restart() -> None:
    search = view("pbt", failurePolicy={"maxMemberRestarts": 1})
    state = fresh_state(search)
    state.members[0].attempts, state.members[0].failed = 2, [1]  # its one restart is used
    running = [pod(i) for i in (1, 2, 3)]
    # kubectl delete pod: terminating (whatever its phase), then gone.
    for phase in ("Running", "Failed"):
        deleting = pod(0, phase, attempt=2, exit_code=143 if phase == "Failed" else None)
        deleting = dataclasses.replace(deleting, terminating=True)
        p = plan.plan(search, observed(search, deleting, *running, state=state), config=CONFIG)
        assert not any(r.failed or r.gave_up for r in of_type(p, plan.RecordMembers))
        assert not of_type(p, plan.CreatePod) and not of_type(p, plan.DeletePod)
    gone = plan.plan(search, observed(search, *running, state=state), config=CONFIG)
    assert [(c.member, c.attempt) for c in of_type(gone, plan.CreatePod)] == [(0, 3)]
    assert "MemberDisrupted" in reasons(gone) and "MemberGaveUp" not in reasons(gone)
    records = of_type(gone, plan.RecordMembers)
    assert all(not r.failed and not r.gave_up for r in records)
    # ... while a pod that crashed and was deleted by the controller was counted.
    assert state.members[0].failed == [1]


def test_a_crash_after_disruptions_still_gives_up_at_the_limit() -> None:
    search = view("autolrs", failurePolicy={"maxMemberRestarts": 1})
    state = fresh_state(search)
    state.members[0].attempts, state.members[0].failed = 4, [1]  # attempts 2 and 3 disrupted
    last = pod(0, "Failed", attempt=4, exit_code=1)
    p = plan.plan(search, observed(search, last, state=state), config=CONFIG)
    assert "MemberGaveUp" in reasons(p)
    assert p.status is not None and p.status.phase == "Failed"


def test_hdet_group_disruption_is_not_a_failure() -> None:
    search = view("hdet", failurePolicy={"maxMemberRestarts": 0})
    state = fresh_state(search)
    preempted = dataclasses.replace(pod(1, "Failed", exit_code=143), disruption=EVICTED)
    p = plan.plan(search, observed(search, pod(0), preempted, state=state), config=CONFIG)
    assert sorted(d.name for d in of_type(p, plan.DeletePod)) == ["s1-x-0", "s1-x-1"]
    assert not any(r.failed for r in of_type(p, plan.RecordMembers))
    assert p.status is not None and p.status.phase != "Failed"
    # A replica that crashes is a failure of the group: with no restart allowed, it fails.
    crashed = plan.plan(
        search, observed(search, pod(0), pod(1, "Failed", exit_code=1), state=state), config=CONFIG
    )
    assert crashed.status is not None and crashed.status.phase == "Failed"
    assert of_type(crashed, plan.RecordMembers)[0].failed == ((1, 1),)
