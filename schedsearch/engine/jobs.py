"""What the engine runs for each strategy, seen from the driver.

A job says which trials to start (trainable and configs), what goes into the engine state for
``--resume``, and how the trials' work becomes a ``SearchResult``:

* PBT: one trial per member still training; decisions come from a ``PBTCoordinator`` Ray actor
  whose state is the engine state.
* AutoLRS and HDET: one trial (HDET's replicas are worker processes of that trial); it resumes
  from its own checkpoint directory and sends its ``SearchResult`` in its last Tune result.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from schedsearch.api import spec as api
from schedsearch.engine import trials
from schedsearch.engine.pbt import PBTCoordinator
from schedsearch.engine.session import NAMESPACE
from schedsearch.trainers import schedules
from schedsearch.trainers.evaluation import search_phases
from schedsearch.trainers.strategies.base import SearchResult

Trainable = Callable[[dict[str, Any]], None]
# After Ctrl-C, how long PBT members get to save and report before Tune stops them: a member
# cuts its interval short within about a second (its trial checks once per result), then saves
# and evaluates once.
HALT_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class BestSoFar:
    """The best member of an unfinished search: its objective, where, and what it followed."""

    objective: float
    member: int
    step: int
    schedule: schedules.Schedule


@dataclass(frozen=True)
class ProgressSoFar:
    """What an unfinished search has cost (member-steps) and its best so far (None: unknown)."""

    member_steps: int | None = None
    best: BestSoFar | None = None


class Job(Protocol):
    """One search's trials and their bookkeeping on the driver."""

    strategy: str
    members: int

    def start(self) -> None:
        """Create what the trials talk to (inside the Ray session)."""
        ...

    def stop(self) -> None:
        """Take a last look at what :meth:`start` created, then let it go (before Ray ends)."""
        ...

    def trainable(self) -> Trainable: ...

    def trial_configs(self) -> list[dict[str, Any]]:
        """One config per trial still to run (none when everything already finished)."""
        ...

    def on_result(self, result: dict[str, Any]) -> None:
        """Every raw Tune result, on the driver."""
        ...

    def on_trial_error(self, index: int, error: str) -> None:
        """Trial ``index`` of :meth:`trial_configs` failed for good."""
        ...

    def on_trial_start(self, index: int) -> None:
        """Ray gave trial ``index`` of :meth:`trial_configs` its resources."""
        ...

    def halt(self) -> float:
        """Ctrl-C: bring the trials' work to a point the engine state can resume from; the
        seconds to let the trials end on their own before Tune stops them (0: stop now)."""
        ...

    def engine_state(self) -> dict[str, Any]:
        """The strategy's state for ``--resume`` (plain JSON)."""
        ...

    def result(self) -> SearchResult | None:
        """The search's result once the trials are done (None if there is none)."""
        ...

    def summary_rows(self) -> list[dict[str, Any]]:
        """Per-member figures for the final table."""
        ...

    def progress(self) -> ProgressSoFar:
        """Cost and best so far, for a search that stops before its end."""
        ...


def make_job(search: api.ScheduleSearch, run_dir: Path, state: dict[str, Any] | None) -> Job:
    """The job for ``search``'s strategy, continuing ``state`` when resuming."""
    if search.spec.strategy.strategy.shape == "population":
        return PBTJob(search, run_dir, state)
    return SingleTrialJob(search, run_dir, state)


def _common_config(search: api.ScheduleSearch, run_dir: Path) -> dict[str, Any]:
    return {"search": search.to_wire(), "runDir": str(run_dir)}


class PBTJob:
    """Members as Tune trials, decisions from our Population in a Ray actor."""

    strategy = "pbt"

    def __init__(
        self, search: api.ScheduleSearch, run_dir: Path, state: dict[str, Any] | None
    ) -> None:
        config = search.spec.strategy.pbt
        assert config is not None
        self.search = search
        self.run_dir = run_dir
        self.members = config.population
        # Unique per run: the actor of an interrupted run may take a moment to go away.
        self.actor_name = f"pbt-coordinator-{search.name}-{uuid.uuid4().hex[:8]}"
        # The coordinator is built here too, so a bad state is refused before Ray starts.
        self._local = PBTCoordinator(
            config,
            lr_min=search.spec.lr_bounds.min,
            lr_max=search.spec.lr_bounds.max,
            total_steps=search.spec.budget.steps,
            mode=search.spec.objective.mode,
            state=state,
            phases=search_phases(search.spec),
        )
        self._actor: Any = None
        self._configs: list[dict[str, Any]] = []

    def start(self) -> None:
        import ray

        remote = ray.remote(PBTCoordinator).options(  # type: ignore[attr-defined]
            name=self.actor_name, namespace=NAMESPACE, num_cpus=0, max_concurrency=1
        )
        self._actor = remote.remote(
            self._local.population.config,
            lr_min=self._local.population.lr_min,
            lr_max=self._local.population.lr_max,
            total_steps=self._local.population.total_steps,
            mode=self._local.population.mode,
            state=self._local.state_dict(),
            phases=self._local.population.phases,
        )

    def stop(self) -> None:
        self._sync()
        if self._actor is not None:
            import ray

            # On a Ray that outlives this run (--ray-address), the actor would linger.
            ray.kill(self._actor)
            self._actor = None

    def trainable(self) -> Trainable:
        return trials.pbt_member

    def trial_configs(self) -> list[dict[str, Any]]:
        common = _common_config(self.search, self.run_dir)
        self._configs = [
            {**common, "member": m, "coordinator": self.actor_name}
            for m in range(self.members)
            if not self._local.is_finished(m)
        ]
        return self._configs

    def on_result(self, result: dict[str, Any]) -> None:
        pass

    def halt(self) -> float:
        """Members hear Stop at their next report, and each one still training cuts its interval
        short to save and report at once (see ``trials.pbt_member``): so every member's start
        point names its own newest checkpoint. Tune stops whoever has not ended by the grace."""
        if self._actor is None:
            return 0.0
        import ray

        ray.get(self._actor.halt.remote())
        return HALT_GRACE_SECONDS

    def on_trial_error(self, index: int, error: str) -> None:
        if self._actor is not None:
            import ray

            ray.get(self._actor.fail.remote(int(self._configs[index]["member"])))

    def on_trial_start(self, index: int) -> None:
        """The members waiting at the start wait for this one (see ``trials.gather``)."""
        if self._actor is not None:
            import ray

            ray.get(self._actor.place.remote(int(self._configs[index]["member"])))

    def engine_state(self) -> dict[str, Any]:
        self._sync()
        return self._local.state_dict()

    def result(self) -> SearchResult | None:
        self._sync()
        result = self._local.result(self.search.spec.workload.ref)
        if not math.isfinite(result.best_objective):
            return None
        schedule = result.best_schedule.with_provenance(search=self.search.name)
        return dataclasses.replace(result, best_schedule=schedule)

    def summary_rows(self) -> list[dict[str, Any]]:
        self._sync()
        return self._local.member_rows()

    def progress(self) -> ProgressSoFar:
        self._sync()
        outcome = self._local.outcome()
        objective, member = outcome["bestObjective"], int(outcome["bestMember"])
        best = None
        if objective is not None and math.isfinite(objective):
            schedule = schedules.Schedule.from_dict(outcome["schedule"])
            best = BestSoFar(
                objective=float(objective),
                member=member,
                step=self._local.population.members[member].step,
                schedule=schedule.with_provenance(search=self.search.name),
            )
        return ProgressSoFar(member_steps=int(outcome["memberSteps"]), best=best)

    def _sync(self) -> None:
        """Copy the actor's state into the local twin (no-op if the actor is gone)."""
        if self._actor is None:
            return
        import ray

        try:
            state = ray.get(self._actor.state_dict.remote(), timeout=30)
        except (ray.exceptions.RayError, TimeoutError):
            # The state saved last (after each exploit and periodically) stays valid.
            return
        self._local.load_state_dict(state)


class SingleTrialJob:
    """AutoLRS or HDET: one trial that checkpoints into the run directory."""

    def __init__(
        self, search: api.ScheduleSearch, run_dir: Path, state: dict[str, Any] | None
    ) -> None:
        self.search = search
        self.run_dir = run_dir
        self.strategy: str = search.spec.strategy_name
        # A replica set's rank 0 reports for the group: one row, like a single trainer.
        self.members = 1
        self._state = dict(state or {})
        self._result: SearchResult | None = None
        self._rows: dict[int, dict[str, Any]] = {}
        # The step each reporting member was last seen at (this run only); a fresh run's
        # members start at step 0, a resumed one's where their checkpoints were.
        self._seen: dict[int, int] = {}
        self._fresh = not state
        # A replica set's rank 0 reports for the group: every replica trains each of its steps.
        chosen = search.spec.strategy
        self._processes = chosen.strategy.processes(chosen.config)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def trainable(self) -> Trainable:
        return trials.single_trial

    def trial_configs(self) -> list[dict[str, Any]]:
        if self._state.get("finished"):
            return []
        return [_common_config(self.search, self.run_dir)]

    def on_trial_error(self, index: int, error: str) -> None:
        pass

    def on_trial_start(self, index: int) -> None:
        pass

    def halt(self) -> float:
        # The single trial saves only at stage boundaries or syncs, each complete on disk.
        return 0.0

    def on_result(self, result: dict[str, Any]) -> None:
        for member, step, _loss, lr, val_loss in result.get("progress", ()):
            self._count(int(member), int(step))
            row = self._rows.setdefault(int(member), {"member": int(member), "status": "running"})
            row.update(step=int(step), lr=lr)
            if val_loss is not None:
                row["objective"] = float(val_loss)
        if trials.RESULT_KEY in result:
            self._result = trials.result_from_dict(result[trials.RESULT_KEY])
            for row in self._rows.values():
                row["status"] = "finished"
            self._state["finished"] = True
            self._state["result"] = result[trials.RESULT_KEY]

    def engine_state(self) -> dict[str, Any]:
        return {"checkpointDir": str(trials.checkpoint_dir(self.run_dir)), **self._state}

    def result(self) -> SearchResult | None:
        if self._result is None and "result" in self._state:
            self._result = trials.result_from_dict(self._state["result"])
        return self._result

    def summary_rows(self) -> list[dict[str, Any]]:
        return [self._rows[m] for m in sorted(self._rows)]

    def progress(self) -> ProgressSoFar:
        # The trial's own result carries the exact cost; until then, the steps seen trained.
        trained = self._state.get("trainedSteps")
        return ProgressSoFar(member_steps=None if trained is None else int(trained))

    def _count(self, member: int, step: int) -> None:
        """Count the steps trained since the last report (an AutoLRS probe restores its stage
        start, so steps go back and forward again; both ways forward are trained)."""
        last = self._seen.get(member, 0 if self._fresh else None)
        self._seen[member] = step
        if last is not None and step > last:
            trained = (step - last) * self._processes
            self._state["trainedSteps"] = int(self._state.get("trainedSteps", 0)) + trained
