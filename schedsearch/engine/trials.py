"""What runs inside each Tune trial: a population's member, or a whole single-trial search.

Each trial function rebuilds the search from its config (the spec travels as plain data), runs
the strategy's runner from ``schedsearch.trainers`` in a thread while its own thread pumps the
runner's reports to the driver (:func:`messages.pump`), and resumes from the checkpoints in the
run directory when there are any. A single-trial strategy attaches its ``SearchResult`` to its
last result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schedsearch.api import spec as api
from schedsearch.engine import messages, tuning
from schedsearch.engine.session import NAMESPACE
from schedsearch.trainers import schedules
from schedsearch.trainers.evaluation import search_phases
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.base import SearchResult
from schedsearch.trainers.strategies.pbt import coordinator as pbt_coordinator
from schedsearch.trainers.strategies.pbt.coordinator import StartPoint
from schedsearch.trainers.strategies.strategy import RunContext

RESULT_KEY = "searchResult"
# The members' shares always fit (session.trial_resources), so the population's trials all
# start; waiting is for their processes to come up. A member whose trial Ray has not given
# resources to (a cluster that other jobs keep busy) is waited for this long; one that has its
# resources but never comes up, at most GATHER_TIMEOUT_SECONDS.
UNPLACED_GRACE_SECONDS = 60.0
GATHER_TIMEOUT_SECONDS = 600.0
# While members wait, one of them reports who is still missing this often.
WAIT_REPORT_SECONDS = 5.0


def checkpoint_dir(run_dir: Path) -> Path:
    """Where a search's trials keep their checkpoints."""
    return run_dir / "checkpoints"


def result_from_dict(data: dict[str, Any]) -> SearchResult:
    """Inverse of ``SearchResult.to_dict``."""
    objective = data.get("bestObjective")
    return SearchResult(
        strategy=data["strategy"],
        workload=data["workload"],
        best_schedule=schedules.Schedule.from_dict(data["bestSchedule"]),
        best_objective=float("nan") if objective is None else float(objective),
        best_member=int(data["bestMember"]),
        member_steps=int(data["memberSteps"]),
        history=list(data.get("history", [])),
        wall_seconds=float(data.get("wallSeconds", 0.0)),
        evaluation_steps=int(data.get("evaluationSteps", 0)),
    )


def _search(job: dict[str, Any]) -> api.ScheduleSearch:
    return api.ScheduleSearch.model_validate(job["search"])


# -- a single trial: the whole search in one trial (a trainer, or a replica set it starts) ------


def single_trial(config: dict[str, Any]) -> None:
    """Run the whole search of a strategy that is not a population, pumping its reports to the
    driver, and attach its ``SearchResult`` to the last result. The strategy resumes from the
    state in the run directory when there is any (a replica set starts its own processes)."""
    job = tuning.trial_config(config)
    spec = _search(job).spec
    chosen = spec.strategy
    reporter = messages.TrialReporter()
    context = RunContext(
        workload=spec.workload.ref,
        total_steps=spec.budget.steps,
        lr_bounds=(spec.lr_bounds.min, spec.lr_bounds.max),
        seed=spec.seed,
        out_dir=checkpoint_dir(Path(job["runDir"])),
        reporter=reporter,
        phases=search_phases(spec),
        base=spec.base_schedule,
        metric=spec.objective.metric,
    )
    result = messages.pump(lambda: chosen.strategy.run(chosen.config, context), reporter)
    reporter.attach(RESULT_KEY, result.to_dict())
    reporter.flush()


# -- PBT -----------------------------------------------------------------------------------------


class ActorCoordinator:
    """The runner's ``Coordinator`` protocol over the engine's coordinator actor.

    ``call(method, *args)`` runs a ``PBTCoordinator`` method where the coordinator lives (the
    actor, or an object in this process for tests).
    """

    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call

    @classmethod
    def for_actor(cls, actor: Any) -> ActorCoordinator:
        import ray

        return cls(lambda method, *args: ray.get(getattr(actor, method).remote(*args)))

    def report(
        self,
        member: int,
        step: int,
        objective: float,
        checkpoint_path: str | None,
        config: dict[str, float] | None = None,
    ) -> base.PBTDecision:
        decision = self._call("report", member, step, objective, checkpoint_path, config)
        return pbt_coordinator.loadable(decision, self.restart_point)

    def poll(self, member: int) -> base.PBTDecision:
        return pbt_coordinator.loadable(self._call("poll", member), self.restart_point)

    def restart_point(self, member: int) -> StartPoint:
        """Where ``member`` resumes now that the file its start point names is gone."""
        start: StartPoint = self._call("restart_point", member)
        return start

    def finish(self, member: int, step: int) -> None:
        self._call("finish", member, step)

    def gather(
        self,
        member: int,
        *,
        timeout: float,
        poll: float = 0.5,
        on_wait: Callable[[list[int], float], None] = lambda missing, waited: None,
        report_every: float = WAIT_REPORT_SECONDS,
        unplaced_grace: float = UNPLACED_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> list[int]:
        """Announce ``member`` and wait for the rest of the population; the members still
        missing when it stops waiting (empty: all are up).

        It cannot wait forever: members that Ray has given resources to come up or fail (and
        leave the population), so they are waited for up to ``timeout`` s; when only members
        without resources are missing, it stops after ``unplaced_grace`` s.

        ``on_wait(missing, seconds waited)`` is called every ``report_every`` s on the member
        that speaks for the waiting ones, so the person at the terminal sees who is awaited.
        """
        self._call("arrive", member)
        started = clock()
        next_report = started + report_every  # a quick start says nothing
        while missing := list(self._call("missing")):
            now = clock()
            if now - started >= timeout or self.is_halted():
                return missing
            if now - started >= unplaced_grace and set(missing) <= set(self._call("unplaced")):
                return missing
            if now >= next_report:
                next_report = now + report_every
                if self._call("speaks_for_waiting", member):
                    on_wait(missing, now - started)
            time.sleep(poll)
        return []

    def is_halted(self) -> bool:
        """Whether the run is being interrupted."""
        return bool(self._call("is_halted"))

    def start_point(self, member: int) -> StartPoint:
        """Where to start (``coordinator.resume``: a missing file is replaced by the one the
        coordinator turns to, and the member's lineage follows)."""
        start: StartPoint = self._call("resume", member)
        return pbt_coordinator.resume(start, lambda: self.restart_point(member))


def _names(members: list[int]) -> str:
    return ", ".join(str(m) for m in members)


def pbt_member(config: dict[str, Any]) -> None:
    """One PBT member: starts where the coordinator says (scratch, its last checkpoint, or the
    checkpoint it was told to exploit), then trains, reports and follows decisions to the end."""
    import ray

    from schedsearch.trainers import harness
    from schedsearch.trainers.strategies.pbt.runner import MemberLoop, run_member
    from schedsearch.trainers.workloads import get_workload

    job = tuning.trial_config(config)
    spec = _search(job).spec
    assert spec.strategy.pbt is not None
    member = int(job["member"])
    coordinator = ActorCoordinator.for_actor(ray.get_actor(job["coordinator"], namespace=NAMESPACE))
    start = coordinator.start_point(member)
    trainer = harness.Trainer(get_workload(spec.workload.ref), seed=spec.seed + member)
    loop = MemberLoop(
        member,
        trainer,
        start.config,
        coordinator,
        total_steps=spec.budget.steps,
        interval=spec.strategy.pbt.perturbation_interval,
        checkpoint_dir=checkpoint_dir(Path(job["runDir"])),
        metric=spec.objective.metric,
        reporter=(reporter := messages.TrialReporter()),
        phases=search_phases(spec),
    )
    loop.start_from(start.step, start.checkpoint_path, start.config)

    def on_wait(missing: list[int], waited: float) -> None:
        reporter.on_event(
            "waiting",
            f"waiting for member(s) {_names(missing)} to start ({waited:.0f}s)",
            member=member,
            missing=missing,
        )
        reporter.flush()

    late = coordinator.gather(member, timeout=GATHER_TIMEOUT_SECONDS, on_wait=on_wait)
    if late and not coordinator.is_halted():
        reporter.on_event(
            "start",
            f"member {member} trains without member(s) {_names(late)}, which are not up yet "
            "(no free CPU for them: is the cluster busy with other work?); they join when "
            "they are",
            member=member,
        )
    if start.checkpoint_path is not None:
        reporter.on_event("start", f"member {member} resumes at step {start.step}", member=member)

    def tick() -> None:
        if not loop.halt_requested and coordinator.is_halted():
            loop.request_halt()  # Ctrl-C: save and report now, then hear Stop

    messages.pump(lambda: run_member(loop), reporter, tick=tick)
    if loop.step >= spec.budget.steps:
        reporter.on_event("finished", f"member {member} done at step {loop.step}", member=member)
    else:
        reporter.on_event("stopped", f"member {member} stopped at step {loop.step}", member=member)
    reporter.flush()
