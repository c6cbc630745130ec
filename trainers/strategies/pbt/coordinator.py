"""The PBT coordinator every member reports to, as a pure object with plain-data state.

The :class:`~schedsearch.trainers.strategies.pbt.population.Population` decides (Continue,
Exploit, Stop, Wait); the coordinator keeps, beside it, what a search needs to run members that
stop and start again:

* each member's *start point*: its own last checkpoint, or the checkpoint it was last told to
  copy, with its config; a member (re)starts there;
* the *restart point* when the file of a start point is gone: the source's latest checkpoint,
  with the member's lineage re-recorded at that step, so that the found schedule is still the
  schedule its weights were trained with (:func:`resume`, :func:`loadable` apply it);
* the search's cost in member-steps (steps trained, redone ones included);
* whether this run is being interrupted (every member then hears Stop; not kept in the
  state, since a resumed run starts anew);
* the one rule for the best member and the search's result.

The local engine holds one in a Ray actor; the cluster controller holds one in the search's
stored state and applies the members' reports to it. Both make the same decisions from the same
report sequence. Nothing here touches a file: callers say when a named file is missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schedsearch.trainers.evaluation import Phases
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.pbt.population import Mode, Population

STATE_FORMAT = "schedsearch.io/pbt-coordinator-v1"
# The engine's stored state before the coordinator moved here: the same fields.
ENGINE_FORMAT_V1 = "schedsearch.io/engine-pbt-v1"


@dataclass(frozen=True)
class StartPoint:
    """Where a member (re)starts: from scratch, or from a checkpoint with a config; ``source``
    is the member whose checkpoint it is when the member was told to copy it."""

    config: dict[str, float]
    step: int = 0
    checkpoint_path: str | None = None
    source: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "config": dict(self.config),
            "step": self.step,
            "checkpoint": self.checkpoint_path,
        }
        if self.source is not None:
            data["source"] = self.source
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StartPoint:
        """Inverse of :meth:`to_dict`; a ValueError names the bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"start: expected an object, got {type(data).__name__}")
        try:
            config = {str(k): float(v) for k, v in dict(data["config"]).items()}
            step = int(data.get("step") or 0)
        except KeyError:
            raise ValueError("start.config: required") from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"start.config, start.step: must be numbers ({err})") from None
        checkpoint = data.get("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise ValueError(f"start.checkpoint: must be a path or null, got {checkpoint!r}")
        source = data.get("source")
        return cls(config, step, checkpoint, None if source is None else int(source))


class Coordinator:
    """Members' reports in, decisions out, plus start points, restart points and cost.

    Calls are expected one at a time (a Ray actor runs them so; the controller applies one
    report per state write), so there is no locking.
    """

    def __init__(
        self,
        config: PBTConfig,
        *,
        lr_min: float,
        lr_max: float,
        total_steps: int,
        mode: Mode = "min",
        phases: Phases | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.population = Population(config, lr_min, lr_max, total_steps, mode, phases)
        self.starts = {m: StartPoint(dict(s.config)) for m, s in self.population.members.items()}
        # Where each member stands in its own training, to count the steps it trains.
        self.positions = dict.fromkeys(self.population.members, 0)
        self.member_steps = 0
        # Not state: a halt ends one run; the run that resumes it starts anew.
        self.halted = False
        if state is not None:
            self.load_state_dict(state)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Coordinator:
        """The coordinator a :meth:`state_dict` describes (its population carries the config)."""
        try:
            population = state["population"]
            config = PBTConfig.model_validate(population["config"])
            lr_min, lr_max = float(population["lrMin"]), float(population["lrMax"])
            total_steps, mode = int(population["totalSteps"]), population["mode"]
        except KeyError as err:
            raise ValueError(f"coordinator state: {err.args[0]} required") from None
        return cls(
            config, lr_min=lr_min, lr_max=lr_max, total_steps=total_steps, mode=mode, state=state
        )

    @classmethod
    def around(cls, population: Population) -> Coordinator:
        """A coordinator over an existing population (its members start where they stand)."""
        coordinator = cls(
            population.config,
            lr_min=population.lr_min,
            lr_max=population.lr_max,
            total_steps=population.total_steps,
            mode=population.mode,
            phases=population.phases,
        )
        coordinator.population = population
        coordinator.starts = {
            m: StartPoint(dict(s.config), s.step, s.checkpoint)
            for m, s in population.members.items()
        }
        coordinator.positions = {m: s.step for m, s in population.members.items()}
        return coordinator

    # -- reports --------------------------------------------------------------------------------

    def report(
        self,
        member: int,
        step: int,
        objective: float,
        checkpoint_path: str | None,
        config: dict[str, float] | None = None,
    ) -> base.PBTDecision:
        """``member`` saved ``checkpoint_path`` at ``step``; its decision."""
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

    def finish(self, member: int, step: int, objective: float | None = None) -> None:
        """``member`` trained its whole budget (``step`` = its last step); ``objective``, when
        given, is the one it ended with (its last checkpoint report normally carried it)."""
        self._advance(member, step)
        self.population.finish(member)
        if objective is not None and math.isfinite(objective):
            self.population.members[member].objective = float(objective)

    def fail(self, member: int) -> None:
        """``member`` failed for good: it leaves the population and cannot be the best."""
        self.population.fail(member)

    def halt(self) -> None:
        """The run is being interrupted: from now on every member is told to stop.

        A member still training cuts its interval short, saves, reports and hears Stop, and
        that report makes its start point its own newest checkpoint (which it keeps), even when
        its last decision named another member's file.
        """
        self.halted = True

    def is_halted(self) -> bool:
        """Whether the run is being interrupted (members poll it to cut an interval short)."""
        return self.halted

    def is_finished(self, member: int) -> bool:
        """Whether ``member`` trains no more (finished, stopped or failed)."""
        return not self.population.members[member].active

    def _stop_here(self, member: int, step: int, checkpoint_path: str | None) -> base.Stop:
        if checkpoint_path is not None:
            # No decision is made on it: the member resumes from this very checkpoint.
            config = dict(self.population.members[member].config)
            self.starts[member] = StartPoint(config, step, checkpoint_path)
        return base.Stop("interrupted")

    # -- where members start --------------------------------------------------------------------

    def start_point(self, member: int) -> StartPoint:
        """Where ``member`` (re)starts: its last checkpoint, or the one it was told to copy."""
        self._member(member)
        return self.starts[member]

    def resume(self, member: int) -> StartPoint:
        """``member`` starts again at its start point: the steps it trains from there count."""
        start = self.start_point(member)
        self.positions[member] = start.step
        return start

    def restart_point(self, member: int) -> StartPoint:
        """``member``'s start point names a file that is gone: where it resumes instead.

        A member keeps only its latest checkpoints, so the source a member was told to copy
        may have deleted that file meanwhile. The member then copies the source's latest
        checkpoint (the source's own start point), and its lineage is re-recorded at that step,
        so the found schedule replays what the member really trained. With no source to turn to
        (its own latest file is gone) it starts over from scratch with its current config.
        """
        start = self.start_point(member)
        source = self._last_source(member)
        if source is not None and self.starts[source].checkpoint_path is not None:
            src = self.starts[source]
            self.population.lineage.exploit(member, source, src.step, start.config["lr"])
            restarted = StartPoint(dict(start.config), src.step, src.checkpoint_path, source)
        else:
            self.population.lineage.start(member, start.config["lr"])
            restarted = StartPoint(dict(start.config))
        self.population.members[member].step = restarted.step
        self.population.history.append(
            {
                "event": "restart",
                "member": member,
                "step": restarted.step,
                "lost": start.checkpoint_path,
                "from": restarted.checkpoint_path,
            }
        )
        self.starts[member] = restarted
        self.positions[member] = restarted.step
        return restarted

    def named_checkpoints(self, source: int, *, skip: frozenset[int] = frozenset()) -> list[str]:
        """The checkpoints of ``source`` that another active member's start point names (that
        member was told to copy one and has not saved its own since): ``source`` must keep
        them, however old. Members in ``skip`` are left out (the caller knows they are done)."""
        named = {
            start.checkpoint_path
            for member, start in self.starts.items()
            if member != source
            and member not in skip
            and start.source == source
            and start.checkpoint_path is not None
            and not self.is_finished(member)
        }
        return sorted(str(path) for path in named)

    def _last_source(self, member: int) -> int | None:
        start = self.starts[member]
        if start.source is not None:
            return start.source
        for event in reversed(self.population.history):
            if event.get("event") == "exploit" and event.get("dst") == member:
                return int(event["src"])
        return None

    # -- the result -----------------------------------------------------------------------------

    def finished_members(self) -> list[int]:
        """The members that trained their whole budget."""
        return [m for m, s in self.population.members.items() if s.finished]

    def best_member(self, *, finished_only: bool = True) -> int | None:
        """The best member with a finite objective, None if there is none: the search's
        rule (``Population.best_member``) among the members that finished, or among all of
        them for a search still running (``finished_only=False``)."""
        among = self.finished_members() if finished_only else list(self.population.members)
        best = self.population.best_member(among)
        objective = self.population.members[best].objective
        if best not in among or objective is None or not math.isfinite(objective):
            return None
        return best

    def result(self, workload: str, *, finished_only: bool = True) -> base.SearchResult:
        """The search's result (``Population.result`` over :meth:`best_member`'s members);
        annealed-evaluation branches are search cost too (the population counts them; the
        members report their other steps). Its objective is NaN when no member qualifies."""
        among = self.finished_members() if finished_only else None
        return self.population.result(
            workload=workload,
            member_steps=self.member_steps + self.population.anneal_steps,
            among=among,
        )

    def outcome(self, *, finished_only: bool = False) -> dict[str, Any]:
        """The search's result as plain data: best member, its lineage, objective, cost."""
        result = self.result("", finished_only=finished_only)
        objective = result.best_objective
        return {
            "bestMember": result.best_member,
            "bestObjective": objective if math.isfinite(objective) else None,
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
        failed = {e["member"] for e in self.population.history if e.get("event") == "failed"}
        rows = []
        for member, state in sorted(self.population.members.items()):
            status = "finished" if state.finished else "stopped" if state.stopped else "running"
            rows.append(
                {
                    "member": member,
                    "step": state.step,
                    "objective": state.objective,
                    "lr": state.config.get("lr"),
                    "exploits": exploited.get(member, 0),
                    "status": "failed" if member in failed else status,
                }
            )
        return rows

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "population": self.population.state_dict(),
            "starts": {str(m): s.to_dict() for m, s in self.starts.items()},
            "positions": {str(m): p for m, p in self.positions.items()},
            "memberSteps": self.member_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") not in (STATE_FORMAT, ENGINE_FORMAT_V1):
            raise ValueError(
                f"format: PBT coordinator state {state.get('format')!r} is not "
                f"{STATE_FORMAT!r}: it was written by another strategy or version"
            )
        self.population.load_state_dict(state["population"])
        self.starts = {int(m): StartPoint.from_dict(s) for m, s in state["starts"].items()}
        self.positions = {int(m): int(p) for m, p in state["positions"].items()}
        self.member_steps = int(state["memberSteps"])

    # -- internals ------------------------------------------------------------------------------

    def _member(self, member: int) -> None:
        if member not in self.starts:
            raise ValueError(f"member: must be in 0..{len(self.starts) - 1}, got {member}")

    def _advance(self, member: int, step: int) -> None:
        # A member only moves forward between its start points; anything else is a re-report.
        trained = step - self.positions.get(member, 0)
        if trained > 0:
            self.member_steps += trained
        self.positions[member] = max(step, self.positions.get(member, 0))

    def _follow(self, decision: base.PBTDecision) -> None:
        if isinstance(decision, base.Exploit):
            self.starts[decision.dst] = StartPoint(
                dict(decision.new_config),
                decision.src_step,
                decision.checkpoint_path,
                decision.src,
            )
            self.positions[decision.dst] = decision.src_step


# -- a member's side: what it loads --------------------------------------------------------------


def resume(
    start: StartPoint,
    restart_point: Callable[[], StartPoint],
    *,
    exists: Callable[[str], bool] = lambda path: Path(path).exists(),
) -> StartPoint:
    """Where a member resumes: ``start``, or, when the file it names is gone,
    ``restart_point()`` (the coordinator's :meth:`Coordinator.restart_point`, which re-records
    the member's lineage to what it loads instead)."""
    if start.checkpoint_path is None or exists(start.checkpoint_path):
        return start
    return restart_point()


def loadable(
    decision: base.PBTDecision,
    restart_point: Callable[[int], StartPoint],
    *,
    exists: Callable[[str], bool] = lambda path: Path(path).exists(),
) -> base.PBTDecision:
    """``decision``, or, for an Exploit whose file the source deleted before it could be
    loaded, an Exploit of the checkpoint :meth:`Coordinator.restart_point` turns to."""
    if not isinstance(decision, base.Exploit) or exists(decision.checkpoint_path):
        return decision
    start = restart_point(decision.dst)
    if start.checkpoint_path is None:
        raise FileNotFoundError(
            f"member {decision.dst}: checkpoint {decision.checkpoint_path} is gone and no other "
            "is known; the member restarts from its start point"
        )
    return base.Exploit(
        src=decision.src if start.source is None else start.source,
        dst=decision.dst,
        new_config=dict(start.config),
        src_step=start.step,
        checkpoint_path=start.checkpoint_path,
    )
