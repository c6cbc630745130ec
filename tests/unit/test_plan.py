"""plan(search, observed): what the reconciler decides, for every situation a member can be in."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest

from schedsearch.api import spec as api
from schedsearch.controller import observe, plan, pods, status
from schedsearch.controller import state as state_mod
from schedsearch.trainers import channel

from .controller_fixtures import (  # noqa: F401
    CONFIG,
    NOW,
    UID,
    _builtin_workloads,
    deliver,
    fresh_state,
    observed,
    pod,
    search_object,
    view,
)


def kinds(p: plan.Plan) -> list[str]:
    return [type(a).__name__ for a in p.actions]


def of_type(p: plan.Plan, kind: type) -> list[Any]:
    return [a for a in p.actions if isinstance(a, kind)]


def events(p: plan.Plan) -> list[tuple[str, str]]:
    return [(a.type, a.reason) for a in of_type(p, plan.RecordEvent)]


def cond(p: plan.Plan, kind: str) -> api.Condition:
    assert p.status is not None
    (found,) = [c for c in p.status.conditions if c.type == kind]
    return found


def with_status(search: observe.SearchView, p: plan.Plan) -> observe.SearchView:
    """The search after the plan's status was written."""
    assert p.status is not None
    return dataclasses.replace(search, status=p.status)


def finish(state: state_mod.SearchState, member: int, objective: float, **extra: Any) -> None:
    report = channel.Report(member=member, kind="final", step=1000, objective=objective, **extra)
    new = deliver(state, report).state
    state.members, state.population, state.result = new.members, new.population, new.result


# -- setting up -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "service"), [("pbt", False), ("autolrs", False), ("hdet", True)]
)
def test_a_new_search_gets_its_objects_and_pods_in_one_plan(strategy: str, service: bool) -> None:
    search = view(strategy)
    assert search.spec is not None
    size = pods.member_count(search.spec)
    p = plan.plan(search, observed(search, setup=False), config=CONFIG)
    # What the pods need comes first: their token, the state, a replica set's Service.
    setup = ["CreateSecret", "CreateState"] + (["CreateService"] if service else [])
    assert kinds(p) == [*setup, *["CreatePod"] * size, "RecordEvent"]
    assert events(p) == [("Normal", "MembersStarted")]
    # The pods' attempts are in the state it creates (no second write of the state): a pod
    # deleted before any reconcile saw it still counts.
    (create,) = of_type(p, plan.CreateState)
    stored = state_mod.SearchState.from_configmap(create.manifest)
    assert [stored.members[m].attempts for m in range(size)] == [1] * size
    assert p.status is not None and p.status.phase == "Pending"
    assert p.status.strategy == strategy and len(p.status.members) == size
    assert p.requeue_after == CONFIG.requeue_soon_seconds
    # The same pods as a search whose state already exists gets.
    later = plan.plan(search, observed(search, state=fresh_state(search)), config=CONFIG)
    manifests = [c.manifest for c in of_type(later, plan.CreatePod)]
    assert [c.manifest for c in of_type(p, plan.CreatePod)] == manifests
    # Planned again from what it wrote, nothing is left to do.
    written = tuple(pod(m, "Pending") for m in range(size))
    again = plan.plan(
        with_status(search, p), observed(search, *written, state=stored), config=CONFIG
    )
    assert again.actions == () and again.status is None


def test_initial_state_holds_the_population_and_the_spec() -> None:
    search = view("pbt")
    p = plan.plan(search, observed(search, setup=False), config=CONFIG)
    (create,) = of_type(p, plan.CreateState)
    stored = state_mod.SearchState.from_configmap(create.manifest)
    assert stored.search_uid == UID and sorted(stored.members) == [0, 1, 2, 3]
    assert stored.population is not None and len(stored.population["population"]["members"]) == 4
    assert api.ScheduleSearchSpec.model_validate(stored.spec) == search.spec


def test_members_start_once_setup_exists() -> None:
    search = view("pbt")
    state = fresh_state(search)
    p = plan.plan(search, observed(search, state=state), config=CONFIG)
    created = of_type(p, plan.CreatePod)
    assert [(c.member, c.attempt) for c in created] == [(0, 1), (1, 1), (2, 1), (3, 1)]
    # One event names them all.
    assert [(e.reason, e.message) for e in of_type(p, plan.RecordEvent)] == [
        ("MembersStarted", "created 4 member pod(s): s1-pbt-0, s1-pbt-1, s1-pbt-2, s1-pbt-3")
    ]
    # Attempts are in the state before the pods exist: a pod deleted before any reconcile
    # saw it still counts as a restart.
    assert kinds(p)[0] == "RecordMembers"
    assert of_type(p, plan.RecordMembers)[0].attempts == ((0, 1), (1, 1), (2, 1), (3, 1))
    # Each PBT member starts from scratch with the LR the population drew for it.
    population = state_mod.coordinator(state).population
    for c in created:
        env = {e["name"]: e.get("value") for e in c.manifest["spec"]["containers"][0]["env"]}
        start = json.loads(env[channel.ENV_MEMBER_START])
        assert start["config"] == population.members[c.member].config
        assert (start["step"], start["checkpoint"]) == (0, None)


def test_running_members_need_nothing_and_status_is_stable() -> None:
    search = view("pbt")
    seen = observed(search, *(pod(i) for i in range(4)))
    first = plan.plan(search, seen, config=CONFIG)
    assert first.actions == ()
    assert first.status is not None and first.status.phase == "Running"
    assert cond(first, "Running").status == "True"
    assert cond(first, "Running").observed_generation == 1
    # Nothing is timed while members train: reports and pod changes wake the reconciler.
    assert first.requeue_after is None
    # Level-triggered: planning again from the written status changes nothing.
    again = plan.plan(with_status(search, first), seen, config=CONFIG)
    assert again.actions == () and again.status is None


# -- failures and restarts --------------------------------------------------------------------


def test_failed_pod_is_replaced_and_resumes() -> None:
    search = view("pbt")
    state = fresh_state(search)
    saved = channel.Report(
        member=0,
        kind="checkpoint",
        step=100,
        objective=0.4,
        checkpoint_path="/c/0/100",
        config={"lr": 0.02},
        member_steps=100,
    )
    state = deliver(state, saved).state
    failed = plan.plan(search, observed(search, pod(0, "Failed", exit_code=137), state=state))
    assert of_type(failed, plan.DeletePod) == [plan.DeletePod("s1-x-0", "uid-0-1")]
    assert ("Warning", "MemberFailed") in events(failed)
    (record,) = of_type(failed, plan.RecordMembers)
    assert (0, 1) in record.attempts
    state.members[0].attempts = 1  # RecordMembers applied
    gone = plan.plan(search, observed(search, state=state), config=CONFIG)
    created = [c for c in of_type(gone, plan.CreatePod) if c.member == 0]
    assert [(c.member, c.attempt) for c in created] == [(0, 2)]
    assert ("Normal", "MemberRestarted") in events(gone)
    # The replacement resumes from the member's last checkpoint, with its LR and its cost so far.
    env = {e["name"]: e.get("value") for e in created[0].manifest["spec"]["containers"][0]["env"]}
    start = json.loads(env[channel.ENV_MEMBER_START])
    assert start == {
        "config": {"lr": 0.02},
        "step": 100,
        "checkpoint": "/c/0/100",
        "memberSteps": 100,
    }
    # ... and numbers its reports after the last one the controller applied.
    assert env[channel.ENV_REPORT_SEQ] == "1"


def test_deleted_pod_is_recreated_with_the_next_attempt() -> None:
    search = view("autolrs")
    state = fresh_state(search)
    state.members[0].attempts = 2
    p = plan.plan(search, observed(search, state=state), config=CONFIG)
    assert [(c.member, c.attempt) for c in of_type(p, plan.CreatePod)] == [(0, 3)]
    assert p.status is not None and p.status.members[0].restarts == 1
    assert cond(p, "Degraded").status == "True"


def test_restarts_are_bounded_then_the_member_fails_for_good() -> None:
    search = view("autolrs", failurePolicy={"maxMemberRestarts": 1})
    state = fresh_state(search)
    state.members[0].attempts = 2
    state.members[0].failed = [1]  # the first pod failed; this is the one restart allowed
    last = pod(0, "Failed", attempt=2, exit_code=1)
    p = plan.plan(search, observed(search, last, state=state), config=CONFIG)
    assert not of_type(p, plan.DeletePod), "the last pod is kept for its logs"
    assert not of_type(p, plan.CreatePod)
    assert of_type(p, plan.RecordMembers) == [plan.RecordMembers((), (0,), ((0, 2),))]
    assert ("Warning", "MemberGaveUp") in events(p)
    assert p.status is not None and p.status.phase == "Failed"
    assert cond(p, "Failed").reason == "MembersFailed"


def test_pbt_absorbs_member_failures_up_to_the_policy() -> None:
    search = view("pbt", failurePolicy={"maxMemberRestarts": 0, "maxFailedMembers": 1})
    state = fresh_state(search)
    one = plan.plan(
        search,
        observed(search, pod(0, "Failed", exit_code=1), *(pod(i) for i in (1, 2, 3)), state=state),
    )
    assert one.status is not None and one.status.phase == "Running"
    assert cond(one, "Degraded").reason == "MembersFailed"
    state.members[0].gave_up = True
    two = plan.plan(
        search,
        observed(
            search,
            pod(0, "Failed", exit_code=1),
            pod(1, "Failed", exit_code=1),
            pod(2),
            pod(3),
            state=state,
        ),
    )
    assert two.status is not None and two.status.phase == "Failed"
    assert "2 of 4" in (two.status.message or "")
    # Members still running are stopped: a failed search should not hold GPUs.
    assert sorted(d.name for d in of_type(two, plan.DeletePod)) == ["s1-x-2", "s1-x-3"]


def test_a_member_given_up_on_before_it_left_the_population_is_taken_out() -> None:
    search = view("pbt", failurePolicy={"maxMemberRestarts": 0})
    state = fresh_state(search)
    state.members[0].gave_up = True  # as a state written before given-up members left it
    assert state_mod.in_population(state, 0)
    p = plan.plan(search, observed(search, *(pod(i) for i in (1, 2, 3)), state=state))
    (record,) = of_type(p, plan.RecordMembers)
    assert record.gave_up == (0,)
    assert ("Warning", "MemberGaveUp") not in events(p)  # said when it was given up on


def test_config_exit_code_fails_the_search_without_retry() -> None:
    search = view("pbt")
    p = plan.plan(search, observed(search, pod(0, "Failed", exit_code=channel.EXIT_CONFIG), pod(1)))
    assert p.status is not None and p.status.phase == "Failed"
    assert cond(p, "Failed").reason == "Unrunnable"
    assert not of_type(p, plan.CreatePod)
    assert of_type(p, plan.DeletePod) == [plan.DeletePod("s1-x-1", "uid-1-1")]


def test_fatal_report_fails_the_search_with_its_message() -> None:
    search = view("autolrs")
    state = fresh_state(search)
    report = channel.Report(
        member=0, kind="fatal", reason="UnknownEntrypoint", message="no module mypkg"
    )
    state = deliver(state, report).state
    p = plan.plan(search, observed(search, pod(0, "Running"), state=state), config=CONFIG)
    assert p.status is not None and p.status.phase == "Failed"
    failed = cond(p, "Failed")
    assert failed.reason == "Unrunnable" and "no module mypkg" in failed.message
    assert ("Warning", "SearchFailed") in events(p)


@pytest.mark.parametrize(
    ("reason", "age", "fails"),
    [
        ("ErrImagePull", 5.0, False),
        ("ImagePullBackOff", 120.0, True),
        ("InvalidImageName", 1.0, True),
    ],
)
def test_unpullable_image_fails_after_grace(reason: str, age: float, fails: bool) -> None:
    search = view("autolrs")
    stuck = pod(0, "Pending", waiting=reason, age=age)
    p = plan.plan(search, observed(search, stuck), config=CONFIG)
    assert p.status is not None
    assert (p.status.phase == "Failed") is fails
    if not fails:  # looked at again when the grace runs out (now is in whole seconds: +1)
        assert p.requeue_after == CONFIG.image_pull_grace_seconds - age + 1.0
    else:
        failed = cond(p, "Failed")
        assert failed.reason == "ImagePullFailed"
        assert "registry.example/me/train:2" in failed.message and reason in failed.message


def test_invalid_spec_is_a_failed_condition_naming_the_field() -> None:
    obj = search_object("pbt")
    obj["spec"]["strategy"]["pbt"]["population"] = 1
    search = observe.SearchView.from_object(obj)
    p = plan.plan(search, observed(search, setup=False), config=CONFIG)
    assert kinds(p) == ["RecordEvent"]
    assert p.status is not None and p.status.phase == "Failed"
    failed = cond(p, "Failed")
    assert failed.reason == "InvalidSpec" and "spec.strategy.pbt.population" in failed.message


def test_builtin_workload_without_default_image_is_refused() -> None:
    search = view("pbt", workload={"builtin": "digits-cnn"})
    p = plan.plan(search, observed(search, setup=False), config=plan.settings.Settings())
    assert p.status is not None and p.status.phase == "Failed"
    assert "spec.workload.image" in cond(p, "Failed").message


# -- HDET: replicas as a group ----------------------------------------------------------------


def test_hdet_replica_failure_restarts_the_group() -> None:
    search = view("hdet")
    state = fresh_state(search)
    p = plan.plan(search, observed(search, pod(0), pod(1, "Failed", exit_code=1), state=state))
    assert sorted(d.name for d in of_type(p, plan.DeletePod)) == ["s1-x-0", "s1-x-1"]
    assert ("Warning", "ReplicaFailed") in events(p)
    state.members[0].attempts = state.members[1].attempts = 1
    going = plan.plan(search, observed(search, pod(0, terminating=True), state=state))
    assert going.actions == ()
    back = plan.plan(search, observed(search, state=state), config=CONFIG)
    assert [(c.member, c.attempt) for c in of_type(back, plan.CreatePod)] == [(0, 2), (1, 2)]


def test_hdet_succeeds_from_rank_zeros_result() -> None:
    search = view("hdet")
    state = fresh_state(search)
    result = {
        "bestSchedule": _schedule(),
        "bestObjective": 0.3,
        "bestMember": 0,
        "memberSteps": 2000,
    }
    finish(state, 0, 0.3, result=result)
    p = plan.plan(search, observed(search, pod(0, "Succeeded"), pod(1), state=state), config=CONFIG)
    (create,) = of_type(p, plan.CreateSchedule)
    assert create.manifest["spec"]["provenance"]["strategy"] == "hdet"


# -- success -----------------------------------------------------------------------------------


def _schedule() -> dict[str, Any]:
    return {"totalSteps": 1000, "points": [{"step": 0, "lr": 0.05}, {"step": 500, "lr": 0.01}]}


def test_pbt_success_stores_the_best_lineage_then_succeeds() -> None:
    search = view("pbt")
    state = fresh_state(search)
    for member, objective in enumerate([0.5, 0.2, 0.9, 0.4]):
        finish(state, member, objective, member_steps=1000)
    done = [pod(i, "Succeeded") for i in range(4)]
    storing = plan.plan(search, observed(search, *done, state=state), config=CONFIG)
    (create,) = of_type(storing, plan.CreateSchedule)
    manifest = create.manifest
    assert manifest["metadata"]["name"] == "s1-best"
    assert "ownerReferences" not in manifest["metadata"], "the schedule outlives the search"
    assert manifest["metadata"]["labels"]["schedsearch.io/strategy"] == "pbt"
    assert manifest["metadata"]["labels"]["schedsearch.io/workload"] == "mypkg.train_workload"
    assert manifest["spec"]["provenance"]["member"] == 1
    assert manifest["spec"]["provenance"]["objective"] == {"metric": "val_loss", "value": 0.2}
    api.LRSchedule.from_object(manifest)  # a valid object
    assert storing.status is not None and storing.status.phase == "Running"

    stored = observed(search, *done, state=state, schedule_owner_uid=UID)
    succeeded = plan.plan(with_status(search, storing), stored, config=CONFIG)
    assert succeeded.status is not None and succeeded.status.phase == "Succeeded"
    assert succeeded.status.best is not None
    assert (succeeded.status.best.member, succeeded.status.best.objective) == (1, 0.2)
    assert succeeded.status.member_steps == 4000
    assert succeeded.status.completion_time == NOW
    assert cond(succeeded, "Succeeded").status == "True"
    assert events(succeeded) == [("Normal", "SearchSucceeded")]
    assert succeeded.requeue_after is None

    after = plan.plan(with_status(search, succeeded), stored, config=CONFIG)
    assert after.actions == () and after.status is None


def test_status_names_the_schedule_only_once_it_is_stored() -> None:
    search = view("pbt", failurePolicy={"maxMemberRestarts": 0, "maxFailedMembers": 0})
    state = fresh_state(search)
    state = deliver(
        state,
        channel.Report(
            member=1, kind="checkpoint", step=100, objective=0.3, checkpoint_path="/c/1/100"
        ),
    ).state
    running = plan.plan(search, observed(search, *(pod(i) for i in range(4)), state=state))
    assert running.status is not None and running.status.best is not None
    assert running.status.best.objective == 0.3 and running.status.best.schedule is None
    # A status written by an earlier controller named it anyway: a failure corrects that.
    named = running.status.model_copy(deep=True)
    assert named.best is not None
    named.best.schedule = "s1-best"
    crashed = pod(0, "Failed", exit_code=1)
    failed = plan.plan(
        dataclasses.replace(search, status=named),
        observed(search, crashed, *(pod(i) for i in (1, 2, 3)), state=state),
    )
    assert failed.status is not None and failed.status.phase == "Failed"
    assert failed.status.best is not None and failed.status.best.schedule is None
    assert api.ScheduleSearchStatus.model_validate(status.wire(failed.status)) == failed.status


def test_schedule_left_by_an_earlier_search_of_that_name_is_replaced() -> None:
    search = view("autolrs")
    state = fresh_state(search)
    finish(state, 0, 0.3, result={"bestSchedule": _schedule(), "bestObjective": 0.3})
    p = plan.plan(search, observed(search, state=state, schedule_owner_uid="older"), config=CONFIG)
    assert len(of_type(p, plan.CreateSchedule)) == 1


def test_every_member_diverged_is_a_failure_not_a_schedule() -> None:
    search = view("pbt")
    state = fresh_state(search)
    for member in range(4):
        finish(state, member, math.nan)
    p = plan.plan(search, observed(search, state=state), config=CONFIG)
    assert p.status is not None and p.status.phase == "Failed"
    assert cond(p, "Failed").reason == "NoResult"


def test_failed_search_stops_leftover_pods_and_stays_failed() -> None:
    search = view("pbt", status={"phase": "Failed", "message": "x"})
    p = plan.plan(search, observed(search, pod(0), pod(1, "Succeeded")), config=CONFIG)
    assert of_type(p, plan.DeletePod) == [plan.DeletePod("s1-x-0", "uid-0-1")]
    assert p.requeue_after is None


# -- bounded status ----------------------------------------------------------------------------


def test_status_stays_small_for_a_large_long_running_population() -> None:
    """More members than the status lists, reporting round after round (days of training
    compressed): the status keeps a bounded size, far below etcd's 1.5 MiB object limit."""
    population, rounds = 80, 60
    strategy = {"pbt": {"population": population, "perturbationInterval": 10}}
    search = view("pbt", strategy=strategy, budget={"steps": 10_000_000})
    state = fresh_state(search)
    sizes = []
    for round_ in range(1, rounds + 1):
        for member, record in state.members.items():
            # What the report channel records for each member at each ready point.
            record.step, record.member_steps = 1000 * round_, 1000 * round_
            record.objective, record.lr = 1.0 / (round_ + member), 0.01 * (1 + member % 7)
            record.checkpoint = f"/ckpt/member-{member}/step-{record.step}.pt"
            record.attempts = 1 + round_ // 10
        pods = [pod(i, attempt=state.members[i].attempts) for i in range(population)]
        p = plan.plan(search, observed(search, *pods, state=state), config=CONFIG)
        assert p.status is not None
        sizes.append(len(json.dumps(status.wire(p.status))))
        search = with_status(search, p)
    assert len(search.status.members) == api.MAX_STATUS_MEMBERS
    assert search.status.members[0].restarts == rounds // 10
    # Bounded: the last rounds are no bigger than the early ones...
    assert sizes[-1] <= sizes[10] * 1.05
    # ... and the whole object is a small fraction of the limit.
    whole = json.dumps({"spec": search_object("pbt")["spec"], "status": status.wire(search.status)})
    assert len(whole) < 32 * 1024 < 1.5 * 1024 * 1024


def test_a_started_search_keeps_the_spec_it_started_with() -> None:
    started = view("pbt")
    state = fresh_state(started)  # population 4, generation 1
    edited = view(
        "pbt", generation=2, strategy={"pbt": {"population": 6, "perturbationInterval": 100}}
    )
    p = plan.plan(edited, observed(edited, *(pod(i) for i in range(4)), state=state), config=CONFIG)
    assert not of_type(p, plan.CreatePod), (
        "no member 4 or 5 for a spec the search did not start with"
    )
    assert p.status is not None and "generation 1" in (p.status.message or "")
    assert p.status.observed_generation == 2


def test_objects_of_an_earlier_search_of_that_name_are_waited_for() -> None:
    search = view("pbt")
    seen = dataclasses.replace(observed(search, setup=False), foreign=("secret s1-report-token",))
    p = plan.plan(search, seen, config=CONFIG)
    assert p.actions == ()
    assert p.status is not None and "s1-report-token" in (p.status.message or "")
    assert p.requeue_after is None  # their deletion is a watch event on the search's objects
