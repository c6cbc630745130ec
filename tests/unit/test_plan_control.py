"""The control run on the cluster: planned once the search has its result, reported over the
report channel under the member index after the last member, kept in the state, then in the
stored schedule's provenance and the status; its failures never fail the search."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from schedsearch.api import spec as api
from schedsearch.controller import observe, plan, pods, reports
from schedsearch.controller import state as state_mod
from schedsearch.trainers import channel
from schedsearch.trainers.evaluation import CONTROL_SEED_OFFSET

from .controller_fixtures import (  # noqa: F401
    CONFIG,
    UID,
    _builtin_workloads,
    deliver,
    fresh_state,
    observed,
    pod,
    view,
)

CONTROL_ON = {"control": {"enabled": True}}
CONTROL_RESULT = {
    "seed": CONTROL_SEED_OFFSET,
    "metric": "val_loss",
    "mode": "min",
    "found": 0.0081,
    "base": 0.0112,
    "steps": 1000,
}


def of_type(p: plan.Plan, kind: type) -> list[Any]:
    return [a for a in p.actions if isinstance(a, kind)]


def events(p: plan.Plan) -> list[tuple[str, str]]:
    return [(a.type, a.reason) for a in of_type(p, plan.RecordEvent)]


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    container = manifest["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def searched(
    evaluation: dict[str, Any] | None = CONTROL_ON, **changes: Any
) -> tuple[observe.SearchView, state_mod.SearchState]:
    """A PBT search of 4 members, all finished (member 1 best): the search has its result."""
    if evaluation is not None:
        changes["evaluation"] = evaluation
    search = view("pbt", **changes)
    state = fresh_state(search)
    for member, objective in enumerate([0.5, 0.2, 0.9, 0.4]):
        report = channel.Report(
            member=member, kind="final", step=1000, objective=objective, member_steps=1000
        )
        state = deliver(state, report).state
        state.members[member].attempts = 1
    return search, state


def members_done() -> list[observe.PodView]:
    return [pod(i, "Succeeded") for i in range(4)]


def started(state: state_mod.SearchState, attempts: int = 1) -> state_mod.SearchState:
    """``state`` once the control run's pod attempts are recorded (as RecordMembers does)."""
    new = state.copy()
    new.control.attempts = attempts
    return new


def control_report(**result: Any) -> channel.Report:
    return channel.Report(
        member=4,
        kind="control",
        step=1000,
        member_steps=2000,
        result={**CONTROL_RESULT, **result},
    )


def with_status(search: observe.SearchView, p: plan.Plan) -> observe.SearchView:
    assert p.status is not None
    return dataclasses.replace(search, status=p.status)


# -- when the control run is planned ----------------------------------------------------------


def test_off_by_default_on_the_cluster() -> None:
    search, state = searched(evaluation=None)  # the cluster's default: off
    p = plan.plan(search, observed(search, *members_done(), state=state), config=CONFIG)
    assert not of_type(p, plan.CreatePod)
    (create,) = of_type(p, plan.CreateSchedule)
    assert "control" not in create.manifest["spec"]["provenance"]


def test_not_before_the_search_has_its_result() -> None:
    search = view("pbt", evaluation=CONTROL_ON)
    running = [pod(i) for i in range(4)]
    p = plan.plan(search, observed(search, *running), config=CONFIG)
    assert all(c.member < 4 for c in of_type(p, plan.CreatePod))
    assert p.status is not None and p.status.phase == "Running"


def test_once_the_result_is_known_one_control_pod_starts_before_the_schedule_is_stored() -> None:
    search, state = searched(resources={"cpu": "2", "memory": "4Gi", "gpu": 1})
    p = plan.plan(search, observed(search, *members_done(), state=state), config=CONFIG)
    (create,) = of_type(p, plan.CreatePod)
    assert (create.member, create.attempt) == (4, 1)
    assert not of_type(p, plan.CreateSchedule), "stored with the comparison, once it is there"
    # The attempt is recorded before the pod is created, as for members.
    assert p.actions.index(plan.RecordMembers(((4, 1),))) < p.actions.index(create)
    assert ("Normal", "ControlStarted") in events(p)
    manifest = create.manifest
    assert manifest["metadata"]["name"] == "s1-control"
    assert manifest["metadata"]["labels"]["schedsearch.io/role"] == "control"
    assert manifest["metadata"]["labels"]["schedsearch.io/member"] == "4"
    # The members' resources, GPUs included; a scratch volume rather than the search's claim.
    assert search.spec is not None
    member = pods.member_pod(
        pods.SearchRef("ml", "s1", UID), search.spec, 0, attempt=1, config=CONFIG
    )
    container = manifest["spec"]["containers"][0]
    assert container["resources"] == member["spec"]["containers"][0]["resources"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert manifest["spec"]["volumes"] == [{"name": "checkpoints", "emptyDir": {}}]
    env = env_of(manifest)
    assert env[channel.ENV_ROLE] == "control" and env[channel.ENV_MEMBER] == "4"
    assert env[channel.ENV_REPORT_TOKEN] == {
        "secretKeyRef": {"name": "s1-report-token", "key": "token"}
    }
    given = json.loads(env[channel.ENV_CONTROL])
    assert given["seed"] == CONTROL_SEED_OFFSET  # spec.seed 0 + the offset
    base = search.spec.base_schedule_for_budget()
    assert given["base"]["points"] == base.to_dict()["points"]
    assert given["found"]["totalSteps"] == 1000
    # The search runs on while the control trains, and says so.
    assert p.status is not None and p.status.phase == "Running"
    assert "control run" in (p.status.message or "")
    running = [c for c in p.status.conditions if c.type == "Running"]
    assert running[0].reason == "ControlRunning"


def test_a_running_control_pod_needs_nothing() -> None:
    search, state = searched()
    seen = observed(search, *members_done(), pod(4), state=started(state))
    p = plan.plan(search, seen, config=CONFIG)
    assert p.actions == ()
    assert p.status is not None and p.status.phase == "Running"
    assert p.requeue_after is None


def test_the_control_seed_can_be_set() -> None:
    search, state = searched({"control": {"enabled": True, "seed": 7}})
    p = plan.plan(search, observed(search, *members_done(), state=state), config=CONFIG)
    (create,) = of_type(p, plan.CreatePod)
    assert json.loads(env_of(create.manifest)[channel.ENV_CONTROL])["seed"] == 7


# -- the report ---------------------------------------------------------------------------------


def test_the_control_report_is_kept_in_the_state_once() -> None:
    _, state = searched()
    state = started(state)
    outcome = deliver(state, control_report())
    assert outcome.changed and outcome.answer["duplicate"] is False
    kept = outcome.state.control_result
    assert kept is not None and kept["found"] == 0.0081 and kept["base"] == 0.0112
    assert kept["summary"].startswith("found 0.0081 vs base 0.0112 val_loss on a fresh seed")
    assert outcome.state.control.finished and outcome.state.control.member_steps == 2000
    assert [n.reason for n in outcome.notes] == ["ControlFinished"]
    # A retry is answered the same and changes nothing.
    again = reports.apply(outcome.state, dataclasses.replace(control_report(), seq=1))
    assert not again.changed and again.answer["duplicate"] is True
    # Kept across a controller restart: the state's ConfigMap holds it.
    data, binary = outcome.state.to_configmap()
    restored = state_mod.SearchState.from_configmap(
        {"data": data, "binaryData": binary, "metadata": {}}
    )
    assert restored.control_result == kept
    assert restored.control == outcome.state.control


def test_a_diverged_schedule_reports_no_objective() -> None:
    _, state = searched()
    outcome = deliver(started(state), control_report(found=None))
    kept = outcome.state.control_result
    assert kept is not None and kept["found"] is None and "found nan" in kept["summary"]
    api.ControlStatus.model_validate(kept)  # no NaN for the API's JSON


@pytest.mark.parametrize(
    ("member", "kind", "started_", "message"),
    [
        (4, "control", False, r"^member: must be in 0\.\.3"),  # no control run started
        (1, "control", True, r"^kind: control reports come from the control run"),
        (4, "checkpoint", True, r"^kind: the control run"),
    ],
)
def test_control_reports_come_only_from_a_started_control_run(
    member: int, kind: str, started_: bool, message: str
) -> None:
    _, state = searched()
    state = started(state) if started_ else state
    report = channel.Report(member=member, kind=kind, seq=1, result=CONTROL_RESULT)  # type: ignore[arg-type]
    with pytest.raises(channel.ReportError, match=message):
        reports.apply(state, report)


def test_a_control_result_missing_a_field_is_refused() -> None:
    _, state = searched()
    broken = {k: v for k, v in CONTROL_RESULT.items() if k != "base"}
    report = dataclasses.replace(control_report(), result=broken, seq=1)
    with pytest.raises(channel.ReportError, match=r"^result\.base: required"):
        reports.apply(started(state), report)


# -- the result: provenance, status, cost -------------------------------------------------------


def test_the_comparison_goes_into_the_schedule_and_the_status() -> None:
    search, state = searched()
    state = deliver(started(state), control_report()).state
    done = [*members_done(), pod(4, "Succeeded")]
    storing = plan.plan(search, observed(search, *done, state=state), config=CONFIG)
    assert not of_type(storing, plan.CreatePod), "the control run is not repeated"
    (create,) = of_type(storing, plan.CreateSchedule)
    provenance = create.manifest["spec"]["provenance"]
    assert provenance["control"] == state.control_result
    # Cost: the members' 4 x 1000 steps and the control's 2 x 1000.
    assert provenance["memberSteps"] == 6000
    api.LRSchedule.from_object(create.manifest)

    stored = observed(search, *done, state=state, schedule_owner_uid=UID)
    succeeded = plan.plan(with_status(search, storing), stored, config=CONFIG)
    new = succeeded.status
    assert new is not None and new.phase == "Succeeded"
    assert new.control is not None and new.control.found == 0.0081 and new.control.base == 0.0112
    assert new.member_steps == 6000
    assert "control: found 0.0081 vs base 0.0112" in (new.message or "")
    assert events(succeeded) == [("Normal", "SearchSucceeded")]
    wire = new.to_wire()
    assert wire["control"]["summary"] == state.control_result["summary"]  # type: ignore[index]
    after = plan.plan(with_status(search, succeeded), stored, config=CONFIG)
    assert after.actions == () and after.status is None


# -- failures -----------------------------------------------------------------------------------


def test_a_failed_control_pod_is_replaced_like_a_members() -> None:
    search, state = searched()
    seen = observed(search, *members_done(), pod(4, "Failed", exit_code=1), state=started(state))
    p = plan.plan(search, seen, config=CONFIG)
    assert of_type(p, plan.DeletePod) == [plan.DeletePod("s1-x-4", "uid-4-1")]
    assert of_type(p, plan.RecordMembers) == [plan.RecordMembers((), (), ((4, 1),))]
    assert ("Warning", "ControlFailed") in events(p)
    assert not of_type(p, plan.CreateSchedule)
    replaced = started(state)
    replaced.control.failed = [1]
    again = plan.plan(search, observed(search, *members_done(), state=replaced), config=CONFIG)
    (create,) = of_type(again, plan.CreatePod)
    assert (create.member, create.attempt) == (4, 2)
    assert ("Normal", "ControlRestarted") in events(again)


def test_a_disrupted_control_pod_is_replaced_for_free() -> None:
    search, state = searched(failurePolicy={"maxMemberRestarts": 0})
    evicted = dataclasses.replace(
        pod(4, "Failed", exit_code=137), disruption="EvictionByEvictionAPI"
    )
    p = plan.plan(search, observed(search, *members_done(), evicted, state=started(state)))
    assert of_type(p, plan.DeletePod) and ("Warning", "ControlDisrupted") in events(p)
    assert not of_type(p, plan.RecordMembers), "not counted as a failure"


def test_a_control_run_that_fails_for_good_leaves_the_search_succeeding_with_a_warning() -> None:
    search, state = searched(failurePolicy={"maxMemberRestarts": 0})
    crashed = pod(4, "Failed", exit_code=1)
    seen = observed(search, *members_done(), crashed, state=started(state))
    p = plan.plan(search, seen, config=CONFIG)
    assert of_type(p, plan.RecordMembers) == [plan.RecordMembers((), (4,), ((4, 1),))]
    assert not of_type(p, plan.DeletePod), "the last pod is kept for its logs"
    (create,) = of_type(p, plan.CreateSchedule)
    assert "control" not in create.manifest["spec"]["provenance"]
    assert ("Warning", "MemberGaveUp") not in events(p)

    # Recorded (RecordMembers applied): the next passes neither restart nor forget it.
    merged = plan.merge_members(started(state), of_type(p, plan.RecordMembers)[0])
    assert merged is not None and merged.control.gave_up
    stored = observed(search, *members_done(), crashed, state=merged, schedule_owner_uid=UID)
    succeeded = plan.plan(with_status(search, p), stored, config=CONFIG)
    assert not of_type(succeeded, plan.CreatePod)
    new = succeeded.status
    assert new is not None and new.phase == "Succeeded" and new.control is None
    assert new.member_steps == 4000
    assert "the search succeeded without it" in (new.message or "")
    warnings = [a for a in of_type(succeeded, plan.RecordEvent) if a.type == "Warning"]
    assert [w.reason for w in warnings] == ["ControlFailed"]
    assert "failed 1 time(s)" in warnings[0].message


def test_a_control_run_that_cannot_run_is_not_retried() -> None:
    search, state = searched()
    unrunnable = pod(4, "Failed", exit_code=channel.EXIT_CONFIG)
    seen = observed(search, *members_done(), unrunnable, state=started(state))
    p = plan.plan(search, seen, config=CONFIG)
    assert p.status is not None and p.status.phase == "Running", "the search does not fail"
    assert not of_type(p, plan.CreatePod)
    (record,) = [r for r in of_type(p, plan.RecordMembers) if r.fatal]
    assert record.fatal[0][0] == 4 and "cannot run this spec" in record.fatal[0][1]
    assert len(of_type(p, plan.CreateSchedule)) == 1

    merged = plan.merge_members(started(state), record)
    assert merged is not None and merged.control.fatal is not None
    # Once recorded, the reason outlives the pod.
    stored = observed(search, *members_done(), state=merged, schedule_owner_uid=UID)
    succeeded = plan.plan(with_status(search, p), stored, config=CONFIG)
    assert succeeded.status is not None and succeeded.status.phase == "Succeeded"
    assert ("Warning", "ControlFailed") in events(succeeded)
    assert not of_type(succeeded, plan.CreatePod)


def test_a_fatal_report_of_the_control_run_ends_only_the_control() -> None:
    search, state = searched()
    fatal = channel.Report(member=4, kind="fatal", reason="UnknownWorkload", message="no x")
    outcome = deliver(started(state), fatal)
    assert outcome.notes[0].message.startswith("control run: UnknownWorkload")
    seen = observed(search, *members_done(), pod(4, "Failed", exit_code=78), state=outcome.state)
    p = plan.plan(search, seen, config=CONFIG)
    assert p.status is not None and p.status.phase == "Running"
    assert len(of_type(p, plan.CreateSchedule)) == 1
    stored = observed(search, *members_done(), state=outcome.state, schedule_owner_uid=UID)
    succeeded = plan.plan(with_status(search, p), stored, config=CONFIG)
    assert succeeded.status is not None and succeeded.status.phase == "Succeeded"
    (warning,) = [a for a in of_type(succeeded, plan.RecordEvent) if a.reason == "ControlFailed"]
    assert "UnknownWorkload: no x" in warning.message


def test_the_state_of_a_search_without_a_control_run_is_unchanged() -> None:
    state = fresh_state(view("pbt"))
    data, _ = state.to_configmap()
    assert "control" not in json.loads(data[state_mod.STATE_KEY])


def test_schedsearch_get_shows_the_comparison_from_the_status() -> None:
    from rich.console import Console

    from schedsearch.cli import render
    from schedsearch.controller import status
    from schedsearch.store.kube import search_record

    from .controller_fixtures import search_object

    search, state = searched()
    state = deliver(started(state), control_report()).state
    stored = observed(search, *members_done(), state=state, schedule_owner_uid=UID)
    succeeded = plan.plan(search, stored, config=CONFIG)
    assert succeeded.status is not None
    obj = search_object("pbt", evaluation=CONTROL_ON)
    obj["status"] = status.wire(succeeded.status)
    record = search_record(obj)
    assert record.control == succeeded.status.control
    # `get -o yaml` shows the status the cluster holds, comparison included...
    assert render.search_resource(record)["status"]["control"]["found"] == 0.0081
    # ... and the table a line of its own.
    console = Console(width=200, color_system=None)
    with console.capture() as captured:
        console.print(render.search_summary(record))
    (line,) = [x for x in captured.get().splitlines() if x.startswith("Control")]
    assert "found 0.0081 vs base 0.0112 val_loss on a fresh seed (1000003), -28%" in line
