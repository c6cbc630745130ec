"""The report channel's logic: parsing, idempotency, PBT decisions, results recorded once."""

from __future__ import annotations

import dataclasses

import pytest

from schedsearch.controller import reports
from schedsearch.controller import state as state_mod
from schedsearch.trainers import channel
from schedsearch.trainers.strategies import base

from .controller_fixtures import (  # noqa: F401
    _builtin_workloads,
    checkpoint,
    deliver,
    fresh_state,
    numbered,
    view,
)

SCHEDULE = {"totalSteps": 1000, "points": [{"step": 0, "lr": 0.05}]}


def test_report_json_round_trip_and_field_errors() -> None:
    report = checkpoint(2, 300, 0.5)
    assert channel.Report.from_json(report.to_json()) == report
    with pytest.raises(channel.ReportError, match=r"^kind: must be one of"):
        channel.Report.from_json({"member": 0, "kind": "progress"})
    with pytest.raises(channel.ReportError, match=r"^member: must be an integer"):
        channel.Report.from_json({"member": -1, "kind": "final"})
    with pytest.raises(channel.ReportError, match=r"^objectiv: unknown field"):
        channel.Report.from_json({"member": 0, "kind": "final", "objectiv": 1})
    with pytest.raises(channel.ReportError, match=r"^config\.lr: must be a number"):
        channel.Report.from_json(
            {"member": 0, "seq": 1, "kind": "checkpoint", "config": {"lr": "x"}}
        )


def test_a_retried_report_is_applied_once() -> None:
    state = fresh_state(view("pbt"))
    report = numbered(state, checkpoint(0, 100, 0.5))
    first = reports.apply(state, report)
    assert first.changed and first.answer["duplicate"] is False
    again = reports.apply(first.state, report)
    assert not again.changed and again.state is first.state
    assert again.answer == {**first.answer, "duplicate": True}


def test_a_stale_report_is_refused() -> None:
    state = fresh_state(view("pbt"))
    for step in (100, 200):
        state = deliver(state, checkpoint(0, step, 0.5)).state
    old = dataclasses.replace(checkpoint(0, 100, 0.5), seq=1)
    with pytest.raises(
        channel.StaleReport, match=r"^seq: 1 comes before member 0's last report \(2\)"
    ):
        reports.apply(state, old)
    with pytest.raises(channel.ReportError, match=r"^seq: must be >= 1"):
        reports.apply(state, checkpoint(0, 300, 0.5))


def test_pbt_bottom_member_exploits_a_top_member() -> None:
    state = fresh_state(view("pbt"))  # population 4, interval 100: quantile of 1
    for member, objective in enumerate([0.1, 0.5, 0.6, 0.9]):
        last = numbered(state, checkpoint(member, 100, objective))
        outcome = reports.apply(state, last)
        state = outcome.state
    decision = base.decision_from_dict(outcome.answer["decision"])
    assert isinstance(decision, base.Exploit)
    assert (decision.src, decision.dst) == (0, 3)
    assert decision.checkpoint_path == "/ckpt/0/100"
    assert outcome.exploits == 1 and outcome.notes[0].reason == "Exploit"
    # The population in the state remembers it: a fresh load continues the same population.
    population = state_mod.coordinator(state).population
    assert population.members[3].config == decision.new_config
    # Were its pod to die now, member 3 would restart from what it was told to load.
    start = state_mod.start_point(state, 3)
    assert start is not None
    assert (start["checkpoint"], start["step"]) == ("/ckpt/0/100", 100)
    assert start["config"] == decision.new_config
    # The member lost the answer and asks again: same exploit, not a second one.
    retry = reports.apply(state, last)
    assert retry.answer["decision"] == outcome.answer["decision"] and retry.exploits == 0
    # Having copied member 0 at step 100, member 3 reaches step 200 again later: that report
    # is a new one (a new number), decided afresh, not the replay of an old answer.
    state = deliver(state, checkpoint(3, 200, 0.2)).state
    again = deliver(state, checkpoint(3, 200, 0.2))
    assert again.changed and not again.answer["duplicate"]


def test_final_result_is_recorded_once() -> None:
    state = fresh_state(view("autolrs"))
    result = {"bestSchedule": SCHEDULE, "bestObjective": 0.2, "history": [{"x": 1}] * 50}
    final = channel.Report(member=0, kind="final", step=1000, objective=0.2, result=result)
    done = deliver(state, final)
    assert done.state.result is not None and "history" not in done.state.result
    assert done.state.members[0].finished
    other = channel.Report(
        member=0, kind="final", step=999, objective=0.1, result={**result, "bestObjective": 0.1}
    )
    late = deliver(done.state, other)
    assert late.state.result == done.state.result
    assert base.decision_from_dict(late.answer["decision"]) == base.Stop("finished")


def test_hdet_result_marks_every_replica_finished_whichever_final_lands_first() -> None:
    # Rank 0's final (with the result) can land before rank 1's: the state must still say that
    # both replicas trained their budget, and rank 1's late final changes nothing.
    state = fresh_state(view("hdet"))
    assert len(state.members) == 2
    result = {"bestSchedule": SCHEDULE, "bestObjective": 0.2}
    first = deliver(state, channel.Report(member=0, kind="final", step=1000, result=result))
    assert all(m.finished for m in first.state.members.values())
    late = deliver(first.state, channel.Report(member=1, kind="final", step=1000))
    assert late.state.result == first.state.result
    assert all(m.finished for m in late.state.members.values())
    # The other order: rank 1 first, then rank 0 with the result.
    ranks_first = deliver(state, channel.Report(member=1, kind="final", step=1000)).state
    assert not ranks_first.result and not ranks_first.members[0].finished
    both = deliver(ranks_first, channel.Report(member=0, kind="final", step=1000, result=result))
    assert all(m.finished for m in both.state.members.values())


def test_final_result_must_replay() -> None:
    state = fresh_state(view("autolrs"))
    bad = channel.Report(member=0, kind="final", step=1, result={"bestSchedule": {"points": []}})
    with pytest.raises(channel.ReportError, match=r"^result\.bestSchedule"):
        deliver(state, bad)


def test_unknown_member_is_refused_with_the_range() -> None:
    state = fresh_state(view("pbt"))
    with pytest.raises(channel.ReportError, match=r"member: must be in 0\.\.3, got 7"):
        reports.apply(state, dataclasses.replace(checkpoint(7, 100, 0.1), seq=1))


def test_diverged_member_is_rescued() -> None:
    state = fresh_state(view("pbt"))
    for member, objective in enumerate([0.1, 0.5, 0.6]):
        state = deliver(state, checkpoint(member, 100, objective)).state
    outcome = deliver(state, checkpoint(3, 100, None))
    decision = base.decision_from_dict(outcome.answer["decision"])
    assert isinstance(decision, base.Exploit) and decision.dst == 3
    assert outcome.state.members[3].objective is None


def test_configmap_round_trip() -> None:
    state = fresh_state(view("pbt"))
    state = deliver(state, checkpoint(1, 100, 0.25)).state
    data, binary = state.to_configmap()
    back = state_mod.SearchState.from_configmap({"data": data, "binaryData": binary})
    assert back == state


def test_a_member_given_up_on_leaves_the_population_and_is_never_copied() -> None:
    from schedsearch.controller import plan

    state = fresh_state(view("pbt"))  # population 4, interval 100: quantile of 1
    for member, objective in enumerate([0.1, 0.5, 0.6, 0.9]):
        state = deliver(state, checkpoint(member, 100, objective)).state
    # The controller gives up on member 0, the best one, whose checkpoint others could copy.
    merged = plan.merge_members(state, plan.RecordMembers((), (0,)))
    assert merged is not None and merged.members[0].gave_up
    assert not state_mod.in_population(merged, 0)
    assert plan.merge_members(merged, plan.RecordMembers((), (0,))) is None
    for step in (200, 300, 400):
        for member in (1, 2, 3):
            outcome = deliver(merged, checkpoint(member, step, 0.9 - 0.1 * member))
            merged = outcome.state
            decision = base.decision_from_dict(outcome.answer["decision"])
            if isinstance(decision, base.Exploit):
                assert decision.src != 0 and not decision.checkpoint_path.startswith("/ckpt/0/")
    # A late report of the given-up member stops it and changes nothing else.
    late = deliver(merged, checkpoint(0, 200, 0.01))
    assert late.answer["decision"]["kind"] == "Stop"
    assert not late.state.members[0].finished
