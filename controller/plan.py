"""The reconciler's brain: ``plan(search, observed) -> Plan``, one pure function.

Given the search as it is now and the objects it owns (pods, Services, Secret, state ConfigMap,
stored schedule), ``plan`` returns the actions that move the world towards the spec, the status
to write, and when to look again. No branch depends on which event woke the reconciler, and
every action is safe to repeat: names are deterministic, so a create that already happened fails
with 409, and a delete of a pod that is gone is a no-op. The thin layer that talks to the API is
``controller.kube``.

Member lifecycle: a member's pod is created (attempt 1); if it fails or disappears before the
member's final report, it is deleted and recreated (attempt k+1, resuming from the member's last
checkpoint). Only failures count against ``failurePolicy.maxMemberRestarts``: a pod that
crashed (seen ended, no disruption). A disrupted pod (a ``DisruptionTarget`` condition: eviction,
preemption, drain) or one deleted by someone else (seen terminating, or gone without having been
seen ended) is replaced for free, as a Job's pod failure policy ignores disruptions. Once more
failures than allowed are counted the member has failed for good. HDET replicas restart as a
group: a collective cannot continue with a rank missing. A spec that cannot run (unknown
workload, unpullable image, a trainer's configuration or arithmetic error, a pod the API server
refuses, a state too large for a ConfigMap) fails the search with a message instead of being
retried.

The control run (``evaluation.control.enabled``; off by default on the cluster): once the search
has its result, one more pod trains the found schedule and the base schedule from a fresh seed
and reports both objectives. Its pod follows the members' rules (restarts counted against
``failurePolicy.maxMemberRestarts``, disruptions replaced for free) and reports under the member
index after the last member (``SearchState.control_index``). Its result is kept in the state,
then in the stored LRSchedule's provenance and in ``status.control``. A control run that fails
for good costs the search nothing but the comparison: the search succeeds without it, with a
Warning event saying why.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from schedsearch.api.spec import (
    BestResult,
    ControlStatus,
    MemberSummary,
    ScheduleSearchSpec,
    ScheduleSearchStatus,
    best_schedule_name,
    finite_or_none,
)
from schedsearch.controller import names, pods, results, settings, status
from schedsearch.controller import state as state_mod
from schedsearch.controller.observe import Observed, PodView, SearchView, parse_spec
from schedsearch.trainers import channel, schedules
from schedsearch.trainers.evaluation import search_phases
from schedsearch.trainers.strategies.strategy import Shape

JsonObj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")
IMAGE_PULL_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"})
# Waiting reasons that no amount of waiting fixes.
IMAGE_INVALID = frozenset({"InvalidImageName"})
# Pods named in a MembersStarted event; more are elided (a population has up to 64).
STARTED_NAMED = 8

# -- actions (data; controller.kube carries them out) ------------------------------------------


@dataclass(frozen=True)
class CreatePod:
    member: int
    attempt: int
    manifest: JsonObj = field(compare=False)


@dataclass(frozen=True)
class DeletePod:
    name: str
    uid: str


@dataclass(frozen=True)
class CreateService:
    manifest: JsonObj = field(compare=False)


@dataclass(frozen=True)
class CreateSecret:
    """The token Secret; the token itself is drawn when the action is applied (plan is pure)."""

    ref: pods.SearchRef


@dataclass(frozen=True)
class CreateState:
    manifest: JsonObj = field(compare=False)


@dataclass(frozen=True)
class RecordMembers:
    """Merge into the state: attempts are raised to at least these, members marked given up,
    the attempts (member, attempt) of pods that failed counted against the restart limit, and
    why (member, message) a pod cannot run (kept for the control run only: a member's such
    problem fails the search at once, while the control run's ends only the control)."""

    attempts: tuple[tuple[int, int], ...] = ()
    gave_up: tuple[int, ...] = ()
    failed: tuple[tuple[int, int], ...] = ()
    fatal: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class CreateSchedule:
    """Create the LRSchedule, or replace one of that name that an earlier search left."""

    manifest: JsonObj = field(compare=False)


@dataclass(frozen=True)
class RecordEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


Action = (
    CreatePod
    | DeletePod
    | CreateService
    | CreateSecret
    | CreateState
    | RecordMembers
    | CreateSchedule
    | RecordEvent
)


@dataclass(frozen=True)
class Plan:
    """What to do now, the status to write (None: unchanged), when to look again (None: only
    when something changes)."""

    actions: tuple[Action, ...] = ()
    status: ScheduleSearchStatus | None = None
    requeue_after: float | None = None


# -- the planning function ---------------------------------------------------------------------


def plan(
    search: SearchView, observed: Observed, *, config: settings.Settings | None = None
) -> Plan:
    """Compare the search with what exists and decide; never raises for a bad spec."""
    config = config or settings.Settings()
    if search.status.phase in TERMINAL:
        return _after_end(search, observed)
    spec, problems = _effective_spec(search, observed)
    if spec is None:
        return _fail(search, observed, "InvalidSpec", "; ".join(problems) or "invalid spec")
    ctx = _Context(search, spec, observed, config)
    if observed.foreign:
        return _waiting_for_foreign(ctx)
    if pods.trainer_image(spec, config) is None:
        message = (
            "spec.workload.image: required, since the controller has no default trainer image "
            "(--image)"
        )
        return _fail(search, observed, "NoTrainerImage", message)
    state = observed.state or _initial_state(ctx)
    outcomes, records, actions = _members(ctx, state)
    created_state = None
    if observed.state is None:
        state, records = _born_with(state, records)
        created_state = pods.state_configmap(ctx.ref, state)
    too_large = _state_size_problem(ctx, state, created_state)
    if too_large is not None:
        return _fail(search, observed, "StateTooLarge", too_large, state=observed.state)
    setup = _setup(ctx, created_state)
    return _decide(ctx, state, outcomes, [*setup, *records], actions)


def _effective_spec(
    search: SearchView, observed: Observed
) -> tuple[ScheduleSearchSpec | None, tuple[str, ...]]:
    # Once started, a search runs the spec it started with (kept in its state).
    state = observed.state
    if state is not None and state.search_uid == search.uid and state.spec:
        return parse_spec(state.spec, search_uid=search.uid)
    return search.spec, search.problems


@dataclass(frozen=True)
class _Context:
    search: SearchView
    spec: ScheduleSearchSpec
    observed: Observed
    config: settings.Settings

    @property
    def ref(self) -> pods.SearchRef:
        return pods.SearchRef(self.search.namespace, self.search.name, self.search.uid)

    @property
    def role(self) -> str:
        return pods.role_of(self.spec)

    @property
    def shape(self) -> Shape:
        return pods.shape_of(self.spec)

    @property
    def size(self) -> int:
        return pods.member_count(self.spec)

    @property
    def max_restarts(self) -> int:
        return self.spec.failure_policy.max_member_restarts

    @property
    def now(self) -> datetime.datetime:
        return self.observed.now

    @property
    def control_wanted(self) -> bool:
        return self.spec.evaluation.control_enabled(local=False)

    def is_control(self, member: int) -> bool:
        return member == self.size

    def who(self, member: int) -> str:
        """How messages name a pod's owner: ``member 3``, or ``control run``."""
        return "control run" if self.is_control(member) else f"member {member}"

    def reason(self, member: int, what: str) -> str:
        """An event reason: ``MemberFailed``, or ``ControlFailed`` for the control run."""
        return ("Control" if self.is_control(member) else "Member") + what


def _setup(ctx: _Context, created_state: JsonObj | None) -> list[Action]:
    """The objects members need, created before their pods in the same plan: token Secret,
    state (``created_state``, the ConfigMap of a new search), a replica set's Service.

    A new search gets all of them and its pods in one pass: each object created is one less
    request, and the API server's answers are in the cache before the pass that follows."""
    actions: list[Action] = []
    if not ctx.observed.secret:
        actions.append(CreateSecret(ctx.ref))
    if created_state is not None:
        actions.append(CreateState(created_state))
    service = names.replica_service(ctx.search.name, ctx.role)
    if ctx.shape == "replicas" and service not in ctx.observed.services:
        actions.append(CreateService(pods.replica_service(ctx.ref, ctx.role)))
    return actions


def _born_with(
    state: state_mod.SearchState, records: list[Action]
) -> tuple[state_mod.SearchState, list[Action]]:
    """A new state holds what its first plan records (the attempts of the pods it creates):
    written with the state, not by a second write after it."""
    kept: list[Action] = []
    for action in records:
        if isinstance(action, RecordMembers):
            state = merge_members(state, action) or state
        else:
            kept.append(action)
    return state, kept


def _state_size_problem(
    ctx: _Context, state: state_mod.SearchState, created_state: JsonObj | None
) -> str | None:
    """Why this search's state cannot be kept (it would outgrow its ConfigMap), or None.

    Measured on what is sent or stored, never by encoding the state once more: a new state as
    ``created_state`` (the ConfigMap about to be created) holds it, a running one as stored."""
    if created_state is not None:
        data, binary = created_state["data"], created_state.get("binaryData") or {}
        size = state_mod.configmap_bytes(data, binary)
    elif ctx.observed.state_bytes is not None:
        size = ctx.observed.state_bytes
    else:
        size = state_mod.configmap_bytes(*state.to_configmap())
    problem = state_mod.size_problem(size, len(state.members), new=created_state is not None)
    if problem is None:
        return None
    field = ctx.spec.strategy.strategy.members_field
    if field is not None:
        problem += f": spec.strategy.{ctx.role}.{field} ({ctx.size}) is too large for one search"
    return problem


def _initial_state(ctx: _Context) -> state_mod.SearchState:
    spec = ctx.spec
    # A population's members report to the coordinator kept in the state (PBT's).
    population = ctx.shape == "population"
    return state_mod.initial(
        search_uid=ctx.search.uid,
        strategy=spec.strategy.name,
        members=ctx.size,
        spec=spec.to_wire(),
        generation=ctx.search.generation,
        pbt=spec.strategy.config if population else None,
        lr_min=spec.lr_bounds.min,
        lr_max=spec.lr_bounds.max,
        total_steps=spec.budget.steps,
        mode=spec.objective.mode,
        phases=search_phases(spec) if population else None,
    )


# -- members -----------------------------------------------------------------------------------


@dataclass
class _Outcome:
    """Where one member stands after this plan."""

    phase: str
    restarts: int
    problem: tuple[str, str] | None = None  # (reason, message) that fails the whole search
    gave_up: bool = False
    failed: int | None = None  # the attempt whose pod failed, now seen (counts as a failure)


def _members(
    ctx: _Context, state: state_mod.SearchState
) -> tuple[dict[int, _Outcome], list[Action], list[Action]]:
    """Each member's outcome, what to record in the state, and what to do to pods."""
    if ctx.shape == "replicas":
        outcomes, actions = _gang(ctx, state)
    else:
        outcomes, actions = {}, []
        for member in range(ctx.size):
            outcomes[member], more = _member(ctx, state, member)
            actions.extend(more)
    records = _record_members(ctx, state, outcomes, _created(actions))
    return outcomes, records, [*actions, *_members_started(ctx, actions)]


def _members_started(ctx: _Context, actions: list[Action]) -> list[Action]:
    """One event for the members whose first pods this plan creates (all of a new search's):
    an event per pod would cost a request per member on the way to a search's pods, and say
    less than one line naming them all. Restarts have an event each (each has its story)."""
    first = [
        a.manifest["metadata"]["name"]
        for a in actions
        if isinstance(a, CreatePod) and a.attempt == 1 and not ctx.is_control(a.member)
    ]
    if not first:
        return []
    shown = (
        first if len(first) <= STARTED_NAMED else [*first[: STARTED_NAMED - 1], "...", first[-1]]
    )
    message = f"created {len(first)} member pod(s): {', '.join(shown)}"
    return [RecordEvent("Normal", "MembersStarted", message)]


def _record_members(
    ctx: _Context,
    state: state_mod.SearchState,
    outcomes: dict[int, _Outcome],
    created: dict[int, int],
) -> list[Action]:
    """Keep in the state what pods alone cannot tell after they are gone.

    A pod's attempt is recorded before the pod is created (these actions run first): a pod
    deleted before any reconcile saw it still counts against the member's restarts."""
    attempts = []
    for member in sorted(outcomes):
        pod = ctx.observed.pod(member)
        seen = max(pod.attempt if pod is not None else 0, created.get(member, 0))
        if seen > state.record(member).attempts:
            attempts.append((member, seen))
    gave_up = [m for m, o in sorted(outcomes.items()) if o.gave_up and not _given_up(state, m)]
    failed = [
        (m, o.failed)
        for m, o in sorted(outcomes.items())
        if o.failed is not None and o.failed not in state.record(m).failed
    ]
    if not attempts and not gave_up and not failed:
        return []
    # The control run's end is told once, when the search succeeds without it.
    events = [
        _gave_up_event(ctx, m)
        for m in gave_up
        if not state.record(m).gave_up and not ctx.is_control(m)
    ]
    return [RecordMembers(tuple(attempts), tuple(gave_up), tuple(failed)), *events]


def merge_members(
    current: state_mod.SearchState, action: RecordMembers
) -> state_mod.SearchState | None:
    """``current`` with ``action`` merged in (None: nothing changes). Attempts only grow,
    given-up stays given up (and out of the PBT population) and the first fatal reason stays,
    so merging twice changes nothing."""
    new = current.copy()
    changed = False
    for member, attempts in action.attempts:
        record = new.record(member)
        if attempts > record.attempts:
            record.attempts, changed = attempts, True
    for member, attempt in action.failed:
        record = new.record(member)
        if attempt not in record.failed:
            record.failed, changed = sorted({*record.failed, attempt}), True
    for member in action.gave_up:
        changed = state_mod.give_up(new, member) or changed
    for member, why in action.fatal:
        record = new.record(member)
        if record.fatal is None:  # the first reason stays (a fatal report may have come first)
            record.fatal, changed = why, True
    return new if changed else None


def _given_up(state: state_mod.SearchState, member: int) -> bool:
    # A state written before given-up members left the PBT population is repaired too.
    return state.record(member).gave_up and not state_mod.in_population(state, member)


def _gave_up_event(ctx: _Context, member: int) -> RecordEvent:
    message = (
        f"member {member} failed after {ctx.max_restarts} restart(s) "
        "(failurePolicy.maxMemberRestarts); it is not restarted again"
    )
    return RecordEvent("Warning", "MemberGaveUp", message)


def _attempts(state: state_mod.SearchState, member: int, pod: PodView | None) -> int:
    return max(state.record(member).attempts, pod.attempt if pod is not None else 0)


def _member(
    ctx: _Context, state: state_mod.SearchState, member: int
) -> tuple[_Outcome, list[Action]]:
    """Where a member (or the control run) stands, and what its pod needs."""
    record = state.record(member)
    who = ctx.who(member)
    pod = ctx.observed.pod(member)
    attempts = _attempts(state, member, pod)
    restarts = max(attempts - 1, 0)
    if record.finished:
        return _Outcome("Succeeded", restarts), []
    if record.fatal is not None:
        return _Outcome("Failed", restarts, ("Unrunnable", f"{who}: {record.fatal}")), []
    if record.gave_up:
        return _Outcome("Failed", restarts, gave_up=True), []
    if pod is None:
        if len(record.failed) > ctx.max_restarts:
            return _Outcome("Failed", restarts, gave_up=True), []
        actions = _start(ctx, state, member, attempts + 1)
        if attempts and attempts not in record.failed:
            # Gone without having been seen ended: deleted by someone else (or its create
            # failed, and was retried), not a failure of the member.
            message = (
                f"{who}: the pod of attempt {attempts} is gone without having ended "
                "(deleted, or never created); replacing it (not counted against "
                "failurePolicy.maxMemberRestarts)"
            )
            actions.insert(0, RecordEvent("Warning", ctx.reason(member, "Disrupted"), message))
        return _Outcome("Pending" if attempts == 0 else "Restarting", restarts), actions
    if pod.terminating:
        return _Outcome("Restarting", restarts), []
    if pod.phase in TERMINAL:
        return _ended(ctx, record, pod, restarts)
    problem = _pull_problem(ctx, who, pod)
    phase = pod.phase if pod.phase in ("Pending", "Running") else "Pending"
    return _Outcome(phase, restarts, problem), []


def _start(ctx: _Context, state: state_mod.SearchState, member: int, attempt: int) -> list[Action]:
    if ctx.is_control(member):
        manifest = _control_pod(ctx, state, attempt)
        resumes = "training both schedules from the start"
    else:
        manifest = pods.member_pod(
            ctx.ref,
            ctx.spec,
            member,
            attempt=attempt,
            config=ctx.config,
            member_start=state_mod.start_point(state, member),
            report_seq=state.members[member].last_seq,
        )
        resumes = "resuming from its last checkpoint"
    name, who = manifest["metadata"]["name"], ctx.who(member)
    if attempt == 1:
        if not ctx.is_control(member):
            return [CreatePod(member, attempt, manifest)]  # told by _members_started
        event = RecordEvent("Normal", "ControlStarted", f"{who}: created pod {name}")
    else:
        failures = len(state.record(member).failed)
        message = (
            f"{who}: created pod {name} (attempt {attempt}; {failures} of "
            f"{ctx.max_restarts} allowed failure(s) used), {resumes}"
        )
        event = RecordEvent("Normal", ctx.reason(member, "Restarted"), message)
    return [CreatePod(member, attempt, manifest), event]


def _ended(
    ctx: _Context, record: state_mod.MemberRecord, pod: PodView, restarts: int
) -> tuple[_Outcome, list[Action]]:
    """A member's (or the control run's) pod ended without its final report."""
    member, how, who = pod.member, _how_it_ended(pod), ctx.who(pod.member)
    if pod.exit_code == channel.EXIT_CONFIG:
        message = f"{who}: pod {pod.name} {how}: the trainer cannot run this spec"
        return _Outcome("Failed", restarts, ("Unrunnable", message)), []
    replace = DeletePod(pod.name, pod.uid)
    if pod.disrupted:
        message = (
            f"{who}: pod {pod.name} was disrupted ({pod.disruption}); replacing it "
            "(not counted against failurePolicy.maxMemberRestarts)"
        )
        return _Outcome("Restarting", restarts), [
            replace,
            RecordEvent("Warning", ctx.reason(member, "Disrupted"), message),
        ]
    failures = len({*record.failed, pod.attempt})
    if failures > ctx.max_restarts:
        # Keep the last pod (and its logs) for whoever investigates.
        return _Outcome("Failed", restarts, gave_up=True, failed=pod.attempt), []
    message = (
        f"{who}: pod {pod.name} {how}; replacing it (failure {failures}, "
        f"failurePolicy.maxMemberRestarts {ctx.max_restarts})"
    )
    return _Outcome("Restarting", restarts, failed=pod.attempt), [
        replace,
        RecordEvent("Warning", ctx.reason(member, "Failed"), message),
    ]


def _how_it_ended(pod: PodView) -> str:
    if pod.phase == "Succeeded":
        return "exited without its final report"
    reason = f", {pod.terminated_reason}" if pod.terminated_reason else ""
    return f"failed (exit code {pod.exit_code}{reason})"


def _pull_problem(ctx: _Context, who: str, pod: PodView) -> tuple[str, str] | None:
    reason = pod.waiting_reason
    if reason not in IMAGE_PULL_ERRORS and reason not in IMAGE_INVALID:
        return None
    age = (ctx.now - pod.created).total_seconds() if pod.created is not None else 0.0
    if reason in IMAGE_PULL_ERRORS and age < ctx.config.image_pull_grace_seconds:
        return None
    image = pods.trainer_image(ctx.spec, ctx.config)
    detail = f": {pod.waiting_message}" if pod.waiting_message else ""
    return "ImagePullFailed", f"{who}: image {image} cannot be pulled ({reason}){detail}"


def _next_deadline(ctx: _Context) -> float | None:
    """Seconds until the first image-pull grace runs out (None: no deadline pending).

    Nothing else about a running search changes with time alone: reports and pod changes are
    events, so without a deadline the search is looked at again only when something happens."""
    waits = [
        ctx.config.image_pull_grace_seconds - (ctx.now - pod.created).total_seconds()
        for pod in ctx.observed.pods
        if pod.waiting_reason in IMAGE_PULL_ERRORS and pod.created is not None
    ]
    pending = [wait for wait in waits if wait >= 0]
    # ``now`` is in whole seconds: one more makes sure the grace is over when looked at.
    return min(pending) + 1.0 if pending else None


def _gang(ctx: _Context, state: state_mod.SearchState) -> tuple[dict[int, _Outcome], list[Action]]:
    """HDET replicas: all run, or all are replaced together."""
    members = range(ctx.size)
    found = {m: ctx.observed.pod(m) for m in members}
    attempts = max(_attempts(state, m, found[m]) for m in members)
    restarts = max(attempts - 1, 0)
    if state.result is not None:
        return {m: _Outcome("Succeeded", restarts) for m in members}, []
    problem = _gang_problem(ctx, state, found)
    live = [p for p in found.values() if p is not None and not p.terminating]
    broken = [m for m in members if _replica_broken(state, found[m])]
    # A group attempt in which any replica failed is one failure of the group.
    crashed = {m: p.attempt for m, p in found.items() if p is not None and _crashed(state, p)}
    failures = {a for r in state.members.values() for a in r.failed} | set(crashed.values())
    exhausted = len(failures) > ctx.max_restarts or any(r.gave_up for r in state.members.values())
    if problem is not None or (broken and exhausted):
        outcomes = {
            m: _Outcome("Failed", restarts, problem, problem is None, crashed.get(m))
            for m in members
        }
        return outcomes, [DeletePod(p.name, p.uid) for p in live if p.phase not in TERMINAL]
    if all(p is None for p in found.values()):
        phase = "Pending" if attempts == 0 else "Restarting"
        actions = [a for m in members for a in _start(ctx, state, m, attempts + 1)]
        return {m: _Outcome(phase, restarts) for m in members}, actions
    if broken:
        outcomes = {m: _Outcome("Restarting", restarts, failed=crashed.get(m)) for m in members}
        if not live:  # the group is still going away
            return outcomes, []
        counted = "" if crashed else " (a disruption: not counted as a failure)"
        message = (
            f"replica(s) {', '.join(map(str, broken))} ended{counted}; restarting all "
            f"{ctx.size} replicas from the last checkpoint"
        )
        restart: list[Action] = [DeletePod(p.name, p.uid) for p in live]
        restart.append(RecordEvent("Warning", "ReplicaFailed", message))
        return outcomes, restart
    outcomes = {m: _replica_outcome(state, found[m], restarts) for m in members}
    return outcomes, []


def _crashed(state: state_mod.SearchState, pod: PodView) -> bool:
    """Whether ``pod`` ended by a failure of its own (not a disruption, not a deletion)."""
    if pod.terminating or pod.disrupted or pod.phase not in TERMINAL:
        return False
    return pod.phase == "Failed" or not state.members[pod.member].finished


def _replica_broken(state: state_mod.SearchState, pod: PodView | None) -> bool:
    if pod is None:
        return True
    if pod.terminating:
        return True
    finished = state.members[pod.member].finished
    return pod.phase == "Failed" or (pod.phase == "Succeeded" and not finished)


def _replica_outcome(state: state_mod.SearchState, pod: PodView | None, restarts: int) -> _Outcome:
    if pod is None:
        return _Outcome("Pending", restarts)
    if state.members[pod.member].finished:
        return _Outcome("Succeeded", restarts)
    return _Outcome(pod.phase if pod.phase in ("Pending", "Running") else "Pending", restarts)


def _gang_problem(
    ctx: _Context, state: state_mod.SearchState, found: dict[int, PodView | None]
) -> tuple[str, str] | None:
    for member, record in sorted(state.members.items()):
        if record.fatal is not None:
            return "Unrunnable", f"replica {member}: {record.fatal}"
    for member, pod in sorted(found.items()):
        if pod is None:
            continue
        if pod.exit_code == channel.EXIT_CONFIG:
            return "Unrunnable", f"replica {member}: pod {pod.name} {_how_it_ended(pod)}"
        problem = _pull_problem(ctx, ctx.who(member), pod)
        if problem is not None:
            return problem
    return None


# -- the verdict -------------------------------------------------------------------------------


def _decide(
    ctx: _Context,
    state: state_mod.SearchState,
    outcomes: dict[int, _Outcome],
    records: list[Action],
    pod_actions: list[Action],
) -> Plan:

    def fail(reason: str, message: str) -> Plan:
        return _fail(
            ctx.search,
            ctx.observed,
            reason,
            message,
            state=state,
            outcomes=outcomes,
            records=tuple(records),
        )

    problems = [o.problem for _, o in sorted(outcomes.items()) if o.problem is not None]
    if problems:
        return fail(*problems[0])
    gave_up = sum(o.gave_up for o in outcomes.values())
    if gave_up > _allowed_failures(ctx):
        message = (
            f"{gave_up} of {ctx.size} member(s) failed for good (allowed: "
            f"{_allowed_failures(ctx)}, failurePolicy.maxFailedMembers)"
        )
        return fail("MembersFailed", message)
    actions = [*records, *pod_actions]
    if _all_done(ctx, state, outcomes):
        return _conclude(ctx, state, outcomes, actions)
    requeue = ctx.config.requeue_soon_seconds if actions else _next_deadline(ctx)
    return _running(ctx, tuple(actions), requeue=requeue, state=state, outcomes=outcomes)


def _allowed_failures(ctx: _Context) -> int:
    # A population goes on while a member lives; a trainer or a replica set is the search.
    if ctx.shape != "population":
        return 0
    allowed = ctx.spec.failure_policy.max_failed_members
    return ctx.size - 1 if allowed is None else allowed


def _all_done(ctx: _Context, state: state_mod.SearchState, outcomes: dict[int, _Outcome]) -> bool:
    if state.result is not None:
        return True
    if ctx.shape != "population":
        return False
    return all(o.phase in TERMINAL for o in outcomes.values())


def _conclude(
    ctx: _Context,
    state: state_mod.SearchState,
    outcomes: dict[int, _Outcome],
    actions: list[Action],
) -> Plan:
    found = results.compute(state, ctx.spec)
    if found is None:
        message = "no member finished with a finite objective (all diverged or failed)"
        return _fail(ctx.search, ctx.observed, "NoResult", message, state=state, outcomes=outcomes)
    control = _control(ctx, state)
    actions = [*actions, *control.actions]
    soon = ctx.config.requeue_soon_seconds
    if not control.done:
        requeue = soon if actions else _next_deadline(ctx)
        return _running(
            ctx,
            tuple(actions),
            requeue=requeue,
            state=state,
            outcomes=outcomes,
            doing=("ControlRunning", _control_doing(ctx)),
        )
    if ctx.observed.schedule_owner_uid != ctx.search.uid:
        manifest = results.schedule_object(
            namespace=ctx.search.namespace,
            search=ctx.search.name,
            search_uid=ctx.search.uid,
            spec=ctx.spec,
            result=found,
            created_at=ctx.now,
            control=state.control_result,
        )
        more = (*actions, CreateSchedule(manifest))
        return _running(ctx, more, requeue=soon, state=state, outcomes=outcomes)
    return _succeed(ctx, state, outcomes, found, tuple(actions), control)


# -- the control run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ControlStep:
    """Where the control run stands: ``done`` once it reported or failed for good, or when
    none is wanted; ``failure`` says why a wanted control run has no result."""

    done: bool
    actions: tuple[Action, ...] = ()
    failure: str | None = None


def _control(ctx: _Context, state: state_mod.SearchState) -> _ControlStep:
    """Run the control run's pod until it reports, replacing it as a member's would be; its
    failures end the control, never the search."""
    if not ctx.control_wanted or state.control_result is not None:
        return _ControlStep(done=True)
    record, index = state.control, state.control_index
    if record.fatal is not None:
        return _ControlStep(done=True, failure=record.fatal)
    if record.gave_up:
        return _ControlStep(done=True, failure=_control_gave_up(ctx, len(record.failed)))
    outcome, actions = _member(ctx, state, index)
    actions = [*_record_members(ctx, state, {index: outcome}, _created(actions)), *actions]
    pod = ctx.observed.pod(index)
    stop = [DeletePod(pod.name, pod.uid)] if pod is not None and _alive(pod) else []
    if outcome.problem is not None:
        why = outcome.problem[1].removeprefix(f"{ctx.who(index)}: ")
        return _ControlStep(True, (*actions, RecordMembers(fatal=((index, why),)), *stop), why)
    if outcome.gave_up:
        failures = len({*record.failed, *([outcome.failed] if outcome.failed else [])})
        return _ControlStep(True, (*actions, *stop), _control_gave_up(ctx, failures))
    return _ControlStep(False, tuple(actions))


def _created(actions: list[Action]) -> dict[int, int]:
    return {a.member: a.attempt for a in actions if isinstance(a, CreatePod)}


def _control_gave_up(ctx: _Context, failures: int) -> str:
    return (
        f"its pod failed {failures} time(s), more than "
        f"failurePolicy.maxMemberRestarts ({ctx.max_restarts}) allows"
    )


def _control_seed(ctx: _Context) -> int:
    return ctx.spec.evaluation.control_seed(ctx.spec.seed)


def _control_doing(ctx: _Context) -> str:
    return (
        "training the control run: the found schedule and the base schedule from seed "
        f"{_control_seed(ctx)}, which no member used"
    )


def _control_pod(ctx: _Context, state: state_mod.SearchState, attempt: int) -> JsonObj:
    found = results.compute(state, ctx.spec)
    assert found is not None  # the control run starts once the search has its result
    base = ctx.spec.base_schedule_for_budget()
    control = {
        # Points only: the found schedule's provenance is the stored schedule's business.
        "found": schedules.Schedule(found.schedule.points, found.schedule.total_steps).to_dict(),
        "base": schedules.Schedule(base.points, base.total_steps).to_dict(),
        "seed": _control_seed(ctx),
    }
    return pods.control_pod(
        ctx.ref,
        ctx.spec,
        state.control_index,
        attempt=attempt,
        config=ctx.config,
        control=control,
        report_seq=state.control.last_seq,
    )


# -- status ------------------------------------------------------------------------------------


def _summaries(state: state_mod.SearchState, outcomes: dict[int, _Outcome]) -> list[MemberSummary]:
    out = []
    for member, outcome in sorted(outcomes.items()):
        record = state.members[member]
        out.append(
            MemberSummary(
                id=member,
                phase=outcome.phase,  # type: ignore[arg-type]
                step=record.step,
                lr=finite_or_none(record.lr),
                objective=finite_or_none(record.objective),
                restarts=outcome.restarts,
            )
        )
    return out


def _best_so_far(ctx: _Context, state: state_mod.SearchState | None) -> BestResult | None:
    if state is None:
        return None
    best = results.best_so_far(state, ctx.spec.objective.mode)
    if best is None:
        return None
    return BestResult(
        objective=best.objective,
        member=best.member,
        step=best.step,
        schedule=_stored_schedule(ctx.search, ctx.observed),
    )


def _stored_schedule(search: SearchView, observed: Observed) -> str | None:
    """The name of this search's LRSchedule if it is written, else None: the status never
    names an object that does not exist (a running or failed search has none)."""
    stored = observed.schedule_owner_uid == search.uid
    return best_schedule_name(search.name) if stored else None


def _naming_only_what_exists(
    search: SearchView, observed: Observed, best: BestResult | None
) -> BestResult | None:
    schedule = _stored_schedule(search, observed)
    if best is None or best.schedule == schedule:
        return best
    return best.model_copy(update={"schedule": schedule})


def _base_status(search: SearchView, now: datetime.datetime) -> ScheduleSearchStatus:
    old = search.status
    update = {
        "strategy": search.spec.strategy.name if search.spec is not None else old.strategy,
        "observed_generation": search.generation,
        "start_time": old.start_time or now,
    }
    return old.model_copy(deep=True, update=update)


def _with_conditions(
    search: SearchView, new: ScheduleSearchStatus, wanted: list[status.Cond], now: datetime.datetime
) -> ScheduleSearchStatus:
    new.conditions = status.conditions(
        wanted, search.status.conditions, now=now, generation=search.generation
    )
    return new


def _if_changed(search: SearchView, new: ScheduleSearchStatus) -> ScheduleSearchStatus | None:
    return None if status.same(search.status, new) else new


def _degraded(outcomes: dict[int, _Outcome]) -> status.Cond:
    restarts = sum(o.restarts for o in outcomes.values())
    failed = sum(o.gave_up for o in outcomes.values())
    if failed:
        return status.Cond(
            "Degraded", "True", "MembersFailed", f"{failed} member(s) failed for good"
        )
    if restarts:
        return status.Cond("Degraded", "True", "MemberRestarts", f"{restarts} member restart(s)")
    return status.Cond("Degraded", "False", "AllMembersHealthy")


def _running(
    ctx: _Context,
    actions: tuple[Action, ...],
    *,
    requeue: float | None,
    state: state_mod.SearchState | None = None,
    outcomes: dict[int, _Outcome] | None = None,
    doing: tuple[str, str] | None = None,
) -> Plan:
    """A search still under way; ``doing`` (reason, message) says what it does once its
    members are done (the control run), instead of counting running members."""
    outcomes = outcomes or {}
    summaries = _summaries(state, outcomes) if state is not None else []
    new = _base_status(ctx.search, ctx.now)
    started = any(s.phase in ("Running", "Succeeded") or s.step > 0 for s in summaries)
    new.phase = "Running" if started else "Pending"
    new.strategy = ctx.spec.strategy.name
    if summaries:
        new.members = status.capped_members(summaries, ctx.spec.objective.mode)
    new.best = _best_so_far(ctx, state) or _naming_only_what_exists(
        ctx.search, ctx.observed, new.best
    )
    if state is not None:
        new.member_steps = results.member_steps(state)
    active = sum(s.phase == "Running" for s in summaries)
    new.message = f"{active}/{ctx.size} member(s) running" if summaries else "setting up"
    if doing is not None:
        new.message = doing[1]
    if state is not None and state.generation and state.generation != ctx.search.generation:
        new.message += (
            f"; spec edited after start: members keep running generation {state.generation}"
        )
    reason = "MembersRunning" if started else "MembersStarting"
    if doing is not None:
        reason = doing[0]
    wanted = [
        status.Cond("Running", "True" if started else "False", reason, new.message),
        _degraded(outcomes),
    ]
    new = _with_conditions(ctx.search, new, wanted, ctx.now)
    return Plan(actions, _if_changed(ctx.search, new), requeue)


def _succeed(
    ctx: _Context,
    state: state_mod.SearchState,
    outcomes: dict[int, _Outcome],
    found: results.Result,
    actions: tuple[Action, ...],
    control: _ControlStep,
) -> Plan:
    new = _base_status(ctx.search, ctx.now)
    new.phase = "Succeeded"
    new.members = status.capped_members(_summaries(state, outcomes), ctx.spec.objective.mode)
    new.member_steps = found.member_steps
    schedule = best_schedule_name(ctx.search.name)
    objective = finite_or_none(found.objective)
    new.best = None
    if objective is not None:
        new.best = BestResult(
            objective=objective, member=found.member, step=found.step, schedule=schedule
        )
    new.completion_time = ctx.search.status.completion_time or ctx.now
    message = f"best schedule stored as LRSchedule {schedule}"
    new.control = None
    events = []
    if state.control_result is not None:
        new.control = ControlStatus.model_validate(state.control_result)
        message += f"; control: {new.control.summary}"
    elif control.failure is not None:
        failed = f"the control run failed ({control.failure}); the search succeeded without it"
        message += f"; {failed}"
        events.append(RecordEvent("Warning", "ControlFailed", failed))
    new.message = message[:4096]
    wanted = [
        status.Cond("Running", "False", "Succeeded", message),
        _degraded(outcomes),
        status.Cond("Succeeded", "True", "ScheduleStored", message),
    ]
    new = _with_conditions(ctx.search, new, wanted, ctx.now)
    events.append(RecordEvent("Normal", "SearchSucceeded", message))
    return Plan((*actions, *events), _if_changed(ctx.search, new), None)


def _fail(
    search: SearchView,
    observed: Observed,
    reason: str,
    message: str,
    *,
    state: state_mod.SearchState | None = None,
    outcomes: dict[int, _Outcome] | None = None,
    records: tuple[Action, ...] = (),
) -> Plan:
    """Fail the search; ``records`` (state updates, their events) still happen."""
    now = observed.now
    new = _base_status(search, now)
    new.phase = "Failed"
    new.best = _naming_only_what_exists(search, observed, new.best)
    new.completion_time = search.status.completion_time or now
    new.message = message[:4096]
    if state is not None and outcomes is not None:
        mode = search.spec.objective.mode if search.spec is not None else "min"
        new.members = status.capped_members(_summaries(state, outcomes), mode)
        new.member_steps = results.member_steps(state)
    wanted = [
        status.Cond("Running", "False", reason, message),
        status.Cond("Failed", "True", reason, message),
    ]
    new = _with_conditions(search, new, wanted, now)
    live = [DeletePod(p.name, p.uid) for p in observed.pods if _alive(p)]
    event = RecordEvent("Warning", "SearchFailed", message)
    return Plan((*records, *live, event), new, None)


def refused(search: SearchView, observed: Observed, reason: str, message: str) -> Plan:
    """The search fails: the API server refused, for good, an object it needs (a member pod
    with a missing ServiceAccount or an invalid toleration, say); its answer is the message."""
    return _fail(search, observed, reason, message, state=observed.state)


def _alive(pod: PodView) -> bool:
    return not pod.terminating and pod.phase not in TERMINAL


def _after_end(search: SearchView, observed: Observed) -> Plan:
    """A finished search stays finished; its leftover running pods are stopped after failure."""
    actions: list[Action] = []
    if search.status.phase == "Failed":
        actions = [DeletePod(p.name, p.uid) for p in observed.pods if _alive(p)]
    new = search.status.model_copy(update={"observed_generation": search.generation})
    return Plan(tuple(actions), _if_changed(search, new), None)


def _waiting_for_foreign(ctx: _Context) -> Plan:
    message = (
        f"waiting for {', '.join(ctx.observed.foreign)} of an earlier search named "
        f"{ctx.search.name} to be deleted"
    )
    new = _base_status(ctx.search, ctx.now)
    new.phase, new.message = "Pending", message
    wanted = [status.Cond("Running", "False", "WaitingForCleanup", message)]
    new = _with_conditions(ctx.search, new, wanted, ctx.now)
    # Their deletion is a watch event on the search's objects: that wakes the reconciler.
    return Plan((), _if_changed(ctx.search, new), None)
