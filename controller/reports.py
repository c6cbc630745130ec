"""Applying one trainer report to a search's durable state: the report channel's logic, pure.

The HTTP layer (``controller.server``) authenticates a request, parses its body into a
:class:`~schedsearch.trainers.channel.Report`, and calls :func:`apply` on a fresh copy of the
stored state; it then writes the new state back with optimistic concurrency and answers with
``Outcome.answer``. Applying is idempotent per member: a report whose key equals the member's
last key gets the stored answer back and changes nothing, so a retried POST (the pod never saw
the answer) is applied once. PBT members get the population's decision in the answer; the
population lives in the state, so whichever controller process answers continues the same one.
The control run's pod reports under the member index after the last member (its ``control``
report carries the comparison), once the controller has started it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from schedsearch.controller import state as state_mod
from schedsearch.trainers import channel, evaluation, schedules
from schedsearch.trainers.strategies import base

Answer = dict[str, Any]


@dataclass(frozen=True)
class Note:
    """Something worth a Kubernetes Event on the search."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    """The result of applying one report."""

    state: state_mod.SearchState
    answer: Answer
    changed: bool
    notes: tuple[Note, ...] = field(default=())
    exploits: int = 0


def apply(current: state_mod.SearchState, report: channel.Report) -> Outcome:
    """Apply ``report`` to a copy of ``current``; raises ``ReportError`` for a bad report."""
    _check_sender(current, report)
    if report.seq < 1:
        raise channel.ReportError(
            f"seq: must be >= 1 (the member's report number), got {report.seq}"
        )
    record = current.record(report.member)
    last = record.last_answer
    if record.last_key == report.key() and last is not None and not _is_wait(last):
        return Outcome(current, {**last, "duplicate": True}, changed=False)
    if report.seq < record.last_seq:
        raise channel.StaleReport(
            f"seq: {report.seq} comes before member {report.member}'s last report "
            f"({record.last_seq}): a newer pod of this member reports now"
        )
    new = current.copy()
    outcome = _HANDLERS[report.kind](new, report)
    answer = outcome.answer
    if new.population is not None and report.member in new.members:
        # A PBT member rotates its checkpoints away as it saves new ones: it keeps these.
        answer = {**answer, "keep": state_mod.named_checkpoints(new, report.member)}
    member = new.record(report.member)
    member.last_seq, member.last_key, member.last_answer = report.seq, report.key(), answer
    return Outcome(new, answer, True, outcome.notes, outcome.exploits)


# What the control run's pod may send: its result, or that it cannot run.
CONTROL_KINDS = frozenset({"control", "fatal"})


def _check_sender(state: state_mod.SearchState, report: channel.Report) -> None:
    """A member sends member reports; the control run (once started) its own kinds."""
    control = report.member == state.control_index and state.control.attempts > 0
    if report.member not in state.members and not control:
        raise channel.ReportError(
            f"member: must be in 0..{len(state.members) - 1}, got {report.member}"
        )
    if control and report.kind not in CONTROL_KINDS:
        raise channel.ReportError(
            f"kind: the control run (member {report.member}) sends control or fatal reports, "
            f"got {report.kind}"
        )
    if not control and report.kind == "control":
        raise channel.ReportError(
            f"kind: control reports come from the control run (member {state.control_index}), "
            f"not member {report.member}"
        )


@dataclass(frozen=True)
class _Applied:
    answer: Answer
    notes: tuple[Note, ...] = ()
    exploits: int = 0


def _answer(decision: object | None) -> Answer:
    data = None if decision is None else base.decision_to_dict(decision)
    return {"decision": data, "duplicate": False}


def _is_wait(answer: Answer) -> bool:
    # A Wait is a "not yet", never an answer to replay: the same poll must be asked again.
    decision = answer.get("decision") or {}
    return decision.get("kind") == "Wait"


def _stopped_answer(state: state_mod.SearchState, member: int) -> Answer | None:
    record = state.members[member]
    if state.result is not None or record.finished:
        return _answer(base.Stop("the search has its result" if state.result else "finished"))
    if record.fatal is not None:
        return _answer(base.Stop(record.fatal))
    if record.gave_up:  # a pod of a member the controller gave up on: it must not train on
        return _answer(base.Stop("the controller gave up on this member"))
    return None


def _record_progress(record: state_mod.MemberRecord, report: channel.Report) -> None:
    record.step = report.step
    if report.kind == "checkpoint":
        record.objective = None if report.diverged() else report.objective
    elif report.objective is not None:  # a final report may repeat the last objective or not
        record.objective = report.objective
    if report.config and "lr" in report.config:
        record.lr = report.config["lr"]
    if report.checkpoint_path is not None:
        record.checkpoint = report.checkpoint_path
    if report.member_steps is not None:
        record.member_steps = max(record.member_steps, report.member_steps)


def _on_checkpoint(state: state_mod.SearchState, report: channel.Report) -> _Applied:
    stopped = _stopped_answer(state, report.member)
    if stopped is not None:
        return _Applied(stopped)
    record = state.members[report.member]
    _record_progress(record, report)
    if state.population is None:
        return _Applied(_answer(base.Continue()))
    coordinator = state_mod.coordinator(state)
    objective = math.nan if report.diverged() else float(report.objective or 0.0)
    decision = coordinator.report(
        report.member, report.step, objective, report.checkpoint_path, report.config
    )
    state.population = coordinator.state_dict()
    return _after_decision(state, report.member, decision)


def _on_poll(state: state_mod.SearchState, report: channel.Report) -> _Applied:
    stopped = _stopped_answer(state, report.member)
    if stopped is not None:
        return _Applied(stopped)
    if state.population is None:
        return _Applied(_answer(base.Continue()))
    coordinator = state_mod.coordinator(state)
    decision = coordinator.poll(report.member)
    state.population = coordinator.state_dict()
    return _after_decision(state, report.member, decision)


def _on_restart(state: state_mod.SearchState, report: channel.Report) -> _Applied:
    """The file the member's start point names is gone: the coordinator's restart point (the
    member's lineage re-recorded to what it loads instead) goes back in the answer."""
    stopped = _stopped_answer(state, report.member)
    if stopped is not None:
        return _Applied(stopped)
    if state.population is None:
        raise channel.ReportError(
            f"kind: restart reports come from PBT members; this search is {state.strategy}"
        )
    coordinator = state_mod.coordinator(state)
    lost = coordinator.start_point(report.member).checkpoint_path
    start = coordinator.restart_point(report.member)
    state.population = coordinator.state_dict()
    record = state.members[report.member]
    record.step, record.lr = start.step, start.config.get("lr", record.lr)
    message = (
        f"member {report.member}: checkpoint {lost} is gone; it resumes at step {start.step} "
        f"from {start.checkpoint_path or 'scratch'}"
    )
    answer = {**_answer(None), "start": start.to_dict()}
    return _Applied(answer, (Note("Warning", "CheckpointMissing", message),))


def _after_decision(state: state_mod.SearchState, member: int, decision: object) -> _Applied:
    record = state.members[member]
    if isinstance(decision, base.Exploit):
        # A pod that dies now restarts from what it was told to load, not its own file (the
        # coordinator's start point); the source keeps that file until this member saves its
        # own (see named_checkpoints).
        record.lr = decision.new_config.get("lr", record.lr)
        message = (
            f"member {decision.dst} copies member {decision.src} (step {decision.src_step}), "
            f"lr {decision.new_config.get('lr', math.nan):.4g}"
        )
        return _Applied(_answer(decision), (Note("Normal", "Exploit", message),), exploits=1)
    if isinstance(decision, base.Stop):
        # A stopped member is done: its pod exits and must not be restarted.
        record.finished = True
        note = Note("Warning", "MemberStopped", f"member {member} stopped: {decision.reason}")
        return _Applied(_answer(decision), (note,))
    return _Applied(_answer(decision))


def _on_final(state: state_mod.SearchState, report: channel.Report) -> _Applied:
    record = state.members[report.member]
    if record.finished or state.result is not None:
        return _Applied(_answer(base.Stop("finished")))
    _record_progress(record, report)
    record.finished = True
    notes = [Note("Normal", "MemberFinished", f"member {report.member} trained its budget")]
    if state.population is not None:
        coordinator = state_mod.coordinator(state)
        coordinator.finish(report.member, report.step, report.objective)
        state.population = coordinator.state_dict()
    if report.result is not None:
        state.result = checked_result(report.result)
        if state.population is None:
            # Without a population the result is the whole search's: for HDET rank 0 reports it
            # after the last parameter average, which every replica has reached, so every
            # replica has trained its budget whether or not its own final report came first.
            for other in state.members.values():
                other.finished = True
    return _Applied(_answer(None), tuple(notes))


def _on_fatal(state: state_mod.SearchState, report: channel.Report) -> _Applied:
    record = state.record(report.member)
    reason = report.reason or "Unrunnable"
    record.fatal = f"{reason}: {report.message or 'the member cannot run this spec'}"
    who = "control run" if report.member == state.control_index else f"member {report.member}"
    note = Note("Warning", reason, f"{who}: {record.fatal}")
    return _Applied(_answer(base.Stop(record.fatal)), (note,))


def _on_control(state: state_mod.SearchState, report: channel.Report) -> _Applied:
    """The control run's result: kept in the state (a restarted controller neither loses nor
    repeats it) with its cost; the reconciler stores it with the schedule."""
    if state.control_result is not None:
        return _Applied(_answer(base.Stop("the control run has its result")))
    if report.result is None:
        raise channel.ReportError("result: required in a control report")
    state.control_result = checked_control(report.result)
    record = state.control
    record.finished, record.step = True, report.step
    record.member_steps = max(record.member_steps, report.member_steps or 0)
    note = Note("Normal", "ControlFinished", f"control run: {state.control_result['summary']}")
    return _Applied(_answer(None), (note,))


_HANDLERS = {
    "checkpoint": _on_checkpoint,
    "poll": _on_poll,
    "restart": _on_restart,
    "final": _on_final,
    "fatal": _on_fatal,
    "control": _on_control,
}


def checked_control(result: dict[str, Any]) -> dict[str, Any]:
    """A control run's result (``ControlResult.to_dict()``), checked, with its summary written
    here from the numbers and non-finite objectives as None (a diverged schedule has none; the
    API's JSON has no NaN)."""
    try:
        control = evaluation.ControlResult.from_dict(
            {**result, "found": _objective(result, "found"), "base": _objective(result, "base")}
        )
    except KeyError as err:
        raise channel.ReportError(f"result.{err.args[0]}: required") from None
    if not _count(control.seed) or not _count(control.steps):
        raise channel.ReportError("result.seed, result.steps: must be integers >= 0")
    if control.mode not in ("min", "max") or not isinstance(control.metric, str):
        raise channel.ReportError("result.mode: must be min or max; result.metric: a name")
    data = control.to_dict()
    for key in ("found", "base"):
        data[key] = data[key] if math.isfinite(data[key]) else None
    return data


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _objective(result: dict[str, Any], key: str) -> float:
    if key not in result:
        raise channel.ReportError(f"result.{key}: required (null when it diverged)")
    value = result[key]
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise channel.ReportError(f"result.{key}: must be a number or null")
    return float(value)


def checked_result(result: dict[str, Any]) -> dict[str, Any]:
    """A member's final result, checked (its schedule replays) and without its history, which
    can be long and is not needed to store the schedule."""
    if "bestSchedule" not in result:
        raise channel.ReportError("result.bestSchedule: required")
    try:
        schedules.Schedule.from_dict(result["bestSchedule"])
    except (TypeError, ValueError, KeyError) as err:
        raise channel.ReportError(f"result.bestSchedule: {err}") from None
    objective = result.get("bestObjective")
    if objective is not None and not isinstance(objective, int | float):
        raise channel.ReportError("result.bestObjective: must be a number or null")
    return {k: v for k, v in result.items() if k != "history"}
