"""PBT on Ray Tune: our Population decides, a Ray actor holds it, members are Tune trials.

Why our core and not Ray Tune's ``PopulationBasedTraining`` as the decision-maker:

* Resume. The engine must stop on Ctrl-C and continue later from the store, with no member
  restarting from scratch. Our ``Population.state_dict()`` is plain JSON (members, scores, RNG,
  lineage) that goes into the store's engine-state blob next to the member checkpoints. Ray's
  scheduler state lives in private objects (``_trial_state`` keyed by ``Trial``, Python's global
  ``random``) and comes back only through Tune's own experiment restore, outside the store.
* Lineage. The found schedule is the best member's lineage; our Population records it as data
  at each exploit. Ray keeps none (its replay needs policy log files written per trial).
* One implementation. The cluster controller runs PBT without Ray; with our core there is one
  PBT whose decisions are tested once, and a local search and a cluster search with the same
  seed and the same report order decide the same thing.
* The engine boundary. Ray's PBT carries out its decisions inside Tune (pausing trials,
  scheduling saves, rewriting the trial's checkpoint manager), which its own code calls an
  anti-pattern; an exploit there restarts the trial's function. Here a decision is a returned
  value (``Exploit(src, dst, new_config, ...)``) and the member loop, still running, loads the
  source checkpoint itself: no trial restarts, no process churn on a 2-core machine.

What we give up: Ray's ``choose_trial_to_run``, which pauses and resumes trials so that a
population larger than the cluster takes turns. Here the whole population always runs at once:
``session.trial_resources`` gives each member a share that fits (a fraction of a CPU when the
population is larger than the CPUs), and the operating system time-shares the cores.

Where the two differ in decisions (the source must have a checkpoint; a NaN member is
rescued at once; the explored LR is clipped to lrBounds; an exploited member takes its
source's score until its next ready point, where Ray keeps the member's stale score) is
documented in ``population.py`` and checked against Ray in
``tests/unit/test_engine_pbt_agreement.py``.

The coordinator also keeps what the engine needs beyond decisions: where each member resumes
(its own last checkpoint, or the one it was told to exploit) and the search's cost in
member-steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schedsearch.trainers.evaluation import Phases
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.pbt.population import Mode, Population

STATE_FORMAT = "schedsearch.io/engine-pbt-v1"


@dataclass(frozen=True)
class StartPoint:
    """Where a member (re)starts: from scratch, or from a checkpoint with a config."""

    config: dict[str, float]
    step: int = 0
    checkpoint_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"config": dict(self.config), "step": self.step, "checkpoint": self.checkpoint_path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StartPoint:
        config = {k: float(v) for k, v in data["config"].items()}
        return cls(config, int(data["step"]), data.get("checkpoint"))


class PBTCoordinator:
    """The Coordinator the members report to: decisions from the Population, plus bookkeeping.

    Plain Python (tested without Ray); the engine runs it as a Ray actor so every member trial
    talks to the one instance. Ray runs an actor's calls one at a time, so no locking here.
    """

    def __init__(
        self,
        config: PBTConfig,
        *,
        lr_min: float,
        lr_max: float,
        total_steps: int,
        mode: Mode = "min",
        state: dict[str, Any] | None = None,
        phases: Phases | None = None,
    ) -> None:
        self.population = Population(config, lr_min, lr_max, total_steps, mode, phases)
        self.starts = {m: StartPoint(dict(s.config)) for m, s in self.population.members.items()}
        # Where each member stands in its own training, to count the steps it trains.
        self.positions = dict.fromkeys(self.population.members, 0)
        self.member_steps = 0
        # Members present in this run (not state: every run gathers its members again).
        self.arrived: set[int] = set()
        # Members whose trials Ray has given resources to (their processes are starting).
        self.placed: set[int] = set()
        self.halted = False
        if state is not None:
            self.load_state_dict(state)

    # -- the Coordinator protocol ---------------------------------------------------------------

    def report(
        self,
        member: int,
        step: int,
        objective: float,
        checkpoint_path: str | None,
        config: dict[str, float] | None = None,
    ) -> base.PBTDecision:
        """A member saved ``checkpoint_path`` at ``step``; its decision."""
        self._advance(member, step)
        if self.halted:
            return self._stop_here(member, step, checkpoint_path)
        decision = self.population.report(member, step, objective, checkpoint_path, config)
        if checkpoint_path is not None:
            current = dict(config) if config else dict(self.population.members[member].config)
            self.starts[member] = StartPoint(current, step, checkpoint_path)
        self._follow(decision)
        return decision

    def poll(self, member: int) -> base.PBTDecision:
        """Synchronous mode: the decision of a member told to Wait."""
        if self.halted:
            return base.Stop("interrupted")
        decision = self.population.poll(member)
        self._follow(decision)
        return decision

    def finish(self, member: int, step: int) -> None:
        """``member`` trained its whole budget (``step`` = its last step)."""
        self._advance(member, step)
        self.population.finish(member)

    def halt(self) -> None:
        """The run is being interrupted: from now on every member is told to stop.

        Members delete their older checkpoints as they save new ones; once halted, a member
        still training cuts its interval short, saves, reports and hears Stop, and that report
        makes its start point its own newest checkpoint (which it keeps), even when its last
        decision named another member's file.
        """
        self.halted = True

    def is_halted(self) -> bool:
        """Whether the run is being interrupted (members poll it to cut an interval short)."""
        return self.halted

    def _stop_here(self, member: int, step: int, checkpoint_path: str | None) -> base.Stop:
        if checkpoint_path is not None:
            # No decision is made on it: the member resumes from this very checkpoint.
            config = dict(self.population.members[member].config)
            self.starts[member] = StartPoint(config, step, checkpoint_path)
        return base.Stop("interrupted")

    def fail(self, member: int) -> None:
        """``member``'s trial failed for good: it leaves the population, and since it never
        reached the end of the budget its last objective cannot make it the best member."""
        self.population.fail(member)

    # -- engine bookkeeping ---------------------------------------------------------------------

    def start_point(self, member: int) -> StartPoint:
        """Where ``member`` (re)starts: its last checkpoint, or the one it was told to exploit."""
        start = self.starts[member]
        self.positions[member] = start.step
        return start

    def restart_point(self, member: int) -> StartPoint:
        """A start point for ``member`` when the file of :meth:`start_point` is gone.

        Members keep only their latest checkpoints, so a member told to exploit a source just
        before an interruption may find, on resume, that the source has moved on and deleted
        that file. It then copies the source's latest checkpoint instead, and its lineage is
        re-recorded at that step so the found schedule still replays what it followed. With no
        source to turn to (never expected: a member's own latest file is kept) it starts over.
        """
        start = self.starts[member]
        source = self._last_source(member)
        if source is not None and self.starts[source].checkpoint_path is not None:
            src = self.starts[source]
            self.population.lineage.exploit(member, source, src.step, start.config["lr"])
            restarted = StartPoint(dict(start.config), src.step, src.checkpoint_path)
        else:
            self.population.lineage.start(member, start.config["lr"])
            restarted = StartPoint(dict(start.config))
        self.population.members[member].step = restarted.step
        self.starts[member] = restarted
        self.positions[member] = restarted.step
        return restarted

    def _last_source(self, member: int) -> int | None:
        for event in reversed(self.population.history):
            if event.get("event") == "exploit" and event.get("dst") == member:
                return int(event["src"])
        return None

    def arrive(self, member: int) -> None:
        """``member``'s trial is up and about to train."""
        self.arrived.add(member)

    def all_arrived(self) -> bool:
        """Every member still to train is up: they start together, so that the first ones to
        get a CPU do not race ahead of a population that is still starting."""
        return not self.missing()

    def missing(self) -> list[int]:
        """The members still to train whose trials are not up yet."""
        return [
            m for m in self.population.members if not self.is_finished(m) and m not in self.arrived
        ]

    def place(self, member: int) -> None:
        """``member``'s trial got its resources from Ray: it will be up in a moment (or fail,
        and then it leaves the population), so it is worth waiting for."""
        self.placed.add(member)

    def unplaced(self) -> list[int]:
        """The missing members that Ray has not found resources for yet."""
        return [m for m in self.missing() if m not in self.placed]

    def speaks_for_waiting(self, member: int) -> bool:
        """Whether ``member`` is the one that reports the wait (the lowest waiting member), so
        that a waiting population prints one line, not one per member."""
        waiting = [m for m in self.arrived if not self.is_finished(m)]
        return bool(waiting) and member == min(waiting)

    def is_finished(self, member: int) -> bool:
        state = self.population.members[member]
        return not state.active

    def result(self, workload: str) -> base.SearchResult:
        """The search's result (``Population.result``); annealed-evaluation branches are search
        cost too (the population counts them; the members report their other steps)."""
        return self.population.result(
            workload=workload, member_steps=self.member_steps + self.population.anneal_steps
        )

    def outcome(self) -> dict[str, Any]:
        """The search's result as plain data: best member, its lineage, objective, cost."""
        result = self.result("")
        return {
            "bestMember": result.best_member,
            "bestObjective": result.best_objective,
            "schedule": result.best_schedule.to_dict(),
            "memberSteps": result.member_steps,
            "evaluationSteps": result.evaluation_steps,
            "history": result.history,
            "members": self.member_rows(),
        }

    def member_rows(self) -> list[dict[str, Any]]:
        """Each member's last known step, objective, LR and exploits, for the summary table."""
        exploited: dict[int, int] = {}
        for event in self.population.history:
            if event.get("event") == "exploit":
                exploited[event["dst"]] = exploited.get(event["dst"], 0) + 1
        rows = []
        failed = {e["member"] for e in self.population.history if e.get("event") == "failed"}
        for member, state in sorted(self.population.members.items()):
            status = "finished" if state.finished else "stopped" if state.stopped else "running"
            if member in failed:
                status = "failed"
            rows.append(
                {
                    "member": member,
                    "step": state.step,
                    "objective": state.objective,
                    "lr": state.config.get("lr"),
                    "exploits": exploited.get(member, 0),
                    "status": status,
                }
            )
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "population": self.population.state_dict(),
            "starts": {str(m): s.to_dict() for m, s in self.starts.items()},
            "positions": {str(m): p for m, p in self.positions.items()},
            "memberSteps": self.member_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"engine state format {state.get('format')!r} is not {STATE_FORMAT!r}: "
                "it was written by another strategy or version"
            )
        self.population.load_state_dict(state["population"])
        self.starts = {int(m): StartPoint.from_dict(s) for m, s in state["starts"].items()}
        self.positions = {int(m): int(p) for m, p in state["positions"].items()}
        self.member_steps = int(state["memberSteps"])

    # -- internals ------------------------------------------------------------------------------

    def _advance(self, member: int, step: int) -> None:
        # A member only moves forward between its start points; anything else is a re-report.
        trained = step - self.positions.get(member, 0)
        if trained > 0:
            self.member_steps += trained
        self.positions[member] = max(step, self.positions.get(member, 0))

    def _follow(self, decision: base.PBTDecision) -> None:
        if isinstance(decision, base.Exploit):
            self.starts[decision.dst] = StartPoint(
                dict(decision.new_config), decision.src_step, decision.checkpoint_path
            )
            self.positions[decision.dst] = decision.src_step
