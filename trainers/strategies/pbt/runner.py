"""Runs PBT members: each trains, checkpoints, reports to a Coordinator and does what it says.

The member loop only knows the :class:`Coordinator` protocol, so the same loop runs against the
in-process :class:`~schedsearch.trainers.strategies.pbt.population.Population` (which satisfies
it), the local engine's coordinator actor, or the cluster's report endpoint. A member saves its
checkpoint to ``<dir>/member-<i>/step-<n>.pt`` *before* reporting it, so a decision never names a
file that is not there; on :class:`Exploit` it loads the source's file and continues with the new
config from the source's step.

With :class:`~schedsearch.trainers.evaluation.Phases` a member warms up, trains its searched LR,
and cools down at the end of the budget; it reports at the warm-up's end and at the cooldown's
start too, and at every report where a decision can follow it ranks itself by the *annealed*
objective: the loss after a cooldown branch of ``phases.anneal_steps`` steps, from which the
trainer is then restored exactly (the raw objective is what it reports as progress).

:func:`run_pbt` trains the whole population round-robin in this process: the trainer-side
command, with no Ray and no cluster. It keeps the search's coordinator (``coordinator.py``) in
``<dir>/pbt-state.json``, written after every round, so a call with the same directory resumes
an interrupted search where its last round ended and takes the same decisions.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Protocol

from schedsearch.trainers import harness
from schedsearch.trainers.evaluation import Phases
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.pbt import coordinator as coordination
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.pbt.population import Mode
from schedsearch.trainers.workloads import Workload, get_workload

# A member keeps its last two checkpoints: the newest is what a decision may name, the one
# before it covers a decision handed out (synchronous poll) just before the newest was saved.
KEEP_CHECKPOINTS = 2
# The in-process search's saved state, and what a resumed search must share with it.
STATE_FILE = "pbt-state.json"
STATE_FORMAT = "schedsearch.io/pbt-run-v1"


class Coordinator(Protocol):
    """Where members report; implemented in process, by the engine and by the controller."""

    def report(
        self,
        member: int,
        step: int,
        objective: float,
        checkpoint_path: str | None,
        config: dict[str, float] | None = None,
    ) -> base.PBTDecision:
        """``member`` reached ``step`` with ``objective`` and saved ``checkpoint_path``."""
        ...

    def poll(self, member: int) -> base.PBTDecision:
        """The decision of a member that was told to :class:`~base.Wait`."""
        ...

    def finish(self, member: int, step: int) -> None:
        """``member`` trained its whole budget."""
        ...


class MemberLoop:
    """One member's life: train an interval, checkpoint, evaluate, report, apply the decision."""

    def __init__(
        self,
        member: int,
        trainer: harness.Trainer,
        config: dict[str, float],
        coordinator: Coordinator,
        *,
        total_steps: int,
        interval: int,
        checkpoint_dir: Path,
        metric: str = "val_loss",
        reporter: base.Reporter | None = None,
        phases: Phases | None = None,
    ) -> None:
        self.member = member
        self.trainer = trainer
        self.config = dict(config)
        self.coordinator = coordinator
        self.total_steps = total_steps
        self.interval = interval
        self.directory = checkpoint_dir / f"member-{member}"
        self.metric = metric
        self.reporter = reporter or base.NullReporter()
        self.phases = phases
        self.step = 0
        # Every step this member trained, annealed-evaluation branches included (search cost).
        self.trained_steps = 0
        self.objective = math.nan
        self.waiting = False
        self.done = False
        self.halt_requested = False
        self._saved: list[Path] = []

    def request_halt(self) -> None:
        """Cut the current interval short: save, evaluate and report at the next step boundary
        (an interrupted run then resumes from this member's own newest checkpoint). Safe to call
        from another thread."""
        self.halt_requested = True

    def start_from(self, step: int, checkpoint_path: str | None, config: dict[str, float]) -> None:
        """Resume at ``step`` from a checkpoint (own or exploited) with ``config``."""
        if checkpoint_path is not None:
            self.trainer.load(Path(checkpoint_path))
        self.step = step
        self.config = dict(config)

    def advance(self) -> bool:
        """One interval (or one poll while waiting); False once the member is done."""
        if self.done:
            return False
        if self.waiting:
            self._apply(self.coordinator.poll(self.member))
        else:
            self._apply(self._train_and_report())
        return not self.done

    def lr_at(self, step: int) -> float:
        """The LR of training step ``step``: the member's LR, through its phases if any."""
        member_lr = self.config["lr"]
        return member_lr if self.phases is None else self.phases.lr(member_lr, step)

    def next_report(self) -> int:
        """The step of the next report: an interval on, but never inside the warm-up and never
        past the cooldown's start (both are reported) or the end of the budget."""
        target = self.step + self.interval
        if self.phases is not None:
            if self.step < self.phases.warmup_steps:
                target = max(target, self.phases.warmup_steps)
            if self.step < self.phases.search_end:
                target = min(target, self.phases.search_end)
        return min(target, self.total_steps)

    def _train_and_report(self) -> base.PBTDecision:
        lr = self.lr_at(self.step)
        diverged, loss = False, math.nan
        for _ in range(self.next_report() - self.step):
            if self.halt_requested:
                break
            lr = self.lr_at(self.step)
            result = self.trainer.step(lr)
            self.step += 1
            self.trained_steps += 1
            loss = result.loss
            self.reporter.on_progress(self.member, self.step, loss, lr)
            if result.diverged or not math.isfinite(loss):
                diverged = True
                break
        if diverged:
            # A diverged model is not worth a checkpoint: nobody should ever copy it.
            self.objective = math.nan
            self.reporter.on_event(
                "diverged", f"member {self.member} diverged at step {self.step}", lr=lr
            )
            return self.coordinator.report(self.member, self.step, math.nan, None, self.config)
        path = self._save()
        raw = float(self.trainer.evaluate()[self.metric])
        self.reporter.on_progress(self.member, self.step, loss, lr, val_loss=raw)
        self.objective = raw
        if self.phases is not None and self.phases.branches_at(self.step):
            self.objective = self._annealed()
        return self.coordinator.report(
            self.member, self.step, self.objective, str(path), self.config
        )

    def _annealed(self) -> float:
        """The objective after a cooldown branch from here (the trainer is restored after it)."""
        assert self.phases is not None
        metrics, trained = self.trainer.annealed_evaluate(
            self.phases.anneal_steps,
            floor=self.phases.floor,
            shape=self.phases.anneal_shape,
            start_lr=self.config["lr"],
        )
        self.trained_steps += trained
        return float(metrics.get(self.metric, math.nan))

    def _apply(self, decision: base.PBTDecision) -> None:
        self.waiting = isinstance(decision, base.Wait)
        if isinstance(decision, base.Exploit):
            self.trainer.load(Path(decision.checkpoint_path))
            self.step = decision.src_step
            self.config = dict(decision.new_config)
            self.reporter.on_event(
                "exploit",
                f"member {decision.dst} <- member {decision.src} at step {decision.src_step}, "
                f"lr={decision.new_config['lr']:.3g}",
                src=decision.src,
                dst=decision.dst,
                step=decision.src_step,
                lr=decision.new_config["lr"],
            )
        elif isinstance(decision, base.Stop):
            self.done = True
            self.reporter.on_event("stopped", f"member {self.member} stopped: {decision.reason}")
            return
        if not self.waiting and self.step >= self.total_steps:
            self.done = True
            self.coordinator.finish(self.member, self.step)

    # Checkpoints of this member that the rotation keeps however old, because a start point
    # still names them (another member told to copy one may restart from it). Whoever hears of
    # start points fills it: a cluster pod, from its coordinator's answers.
    pinned: Collection[str] = frozenset()

    def _save(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"step-{self.step}.pt"
        self.trainer.save(path)
        if path in self._saved:  # saved again at the same step (a halt right after a report)
            self._saved.remove(path)
        self._saved.append(path)
        # A pinned file stays in the list, so it goes at a later save once nothing names it.
        for old in self._saved[:-KEEP_CHECKPOINTS]:
            if str(old) not in self.pinned:
                self._saved.remove(old)
                old.unlink(missing_ok=True)
        return path


def run_member(
    loop: MemberLoop, *, poll_seconds: float = 1.0, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Drive one member to its end, as a pod or a Tune trial does: sleep between polls."""
    while loop.advance():
        if loop.waiting:
            sleep(poll_seconds)


def run_pbt(
    config: PBTConfig,
    workload: Workload | str,
    *,
    total_steps: int,
    lr_bounds: tuple[float, float],
    seed: int = 0,
    out_dir: Path | str | None = None,
    reporter: base.Reporter | None = None,
    device: str = "auto",
    metric: str = "val_loss",
    mode: Mode = "min",
    phases: Phases | None = None,
) -> base.SearchResult:
    """Search a schedule of ``total_steps`` steps with PBT, all members round-robin in this process.

    Member ``i`` initialises its model with seed ``seed + i``; the population's draws use
    ``config.seed``. Checkpoints and the saved state go under ``out_dir`` (a temporary
    directory if not given); a search saved there resumes (see the module's docstring).
    ``phases``: warm-up, cooldown and annealed evaluation (none when not given).
    """
    started = time.monotonic()
    work = get_workload(workload) if isinstance(workload, str) else workload
    reporter = reporter or base.NullReporter()
    coordinator = coordination.Coordinator(
        config,
        lr_min=lr_bounds[0],
        lr_max=lr_bounds[1],
        total_steps=total_steps,
        mode=mode,
        phases=phases,
    )
    scratch = None if out_dir is not None else Path(tempfile.mkdtemp(prefix="schedsearch-pbt-"))
    directory = Path(out_dir) if out_dir is not None else scratch
    assert directory is not None
    identity = _identity(coordinator, work.name, seed, metric)
    try:
        resumed = scratch is None and _resume(directory, coordinator, identity)
        loops = [
            MemberLoop(
                member,
                harness.Trainer(work, seed=seed + member, device=device),
                state.config,
                coordinator,
                total_steps=total_steps,
                interval=config.perturbation_interval,
                checkpoint_dir=directory,
                metric=metric,
                reporter=reporter,
                phases=phases,
            )
            for member, state in coordinator.population.members.items()
        ]
        if resumed:
            for loop in loops:
                _restart(loop, coordinator)
            steps = ", ".join(str(loop.step) for loop in loops)
            reporter.on_event("start", f"pbt: resumed, members at steps {steps}")
        else:
            reporter.on_event(
                "start",
                f"pbt: {len(loops)} members, initial lrs "
                + ", ".join(f"{loop.config['lr']:.3g}" for loop in loops),
            )

        def save() -> None:
            if scratch is None:
                state = {
                    "format": STATE_FORMAT,
                    "identity": identity,
                    "coordinator": coordinator.state_dict(),
                }
                base.write_state(directory / STATE_FILE, state)

        _round_robin(loops, coordinator, after_round=save)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    population = coordinator.population
    found = population.result(
        workload=work.name,
        member_steps=coordinator.member_steps + population.anneal_steps,
        wall_seconds=time.monotonic() - started,
    )
    result = dataclasses.replace(
        found, best_schedule=found.best_schedule.with_provenance(workload=work.name, seed=seed)
    )
    best = result.best_member
    reporter.on_event(
        "finished",
        f"pbt done: best member {best}, {metric}={result.best_objective:.4f}, "
        f"{result.member_steps} member-steps",
    )
    return result


def _resume(
    directory: Path, coordinator: coordination.Coordinator, identity: base.JSONDict
) -> bool:
    """Load the coordinator saved in ``directory`` (False: nothing saved there). A saved search
    that is not this one is refused, naming what differs."""
    saved = base.read_state(directory / STATE_FILE, STATE_FORMAT, "a PBT search")
    if saved is None:
        return False
    base.check_same_search(saved["identity"], identity, directory, "a PBT search")
    coordinator.load_state_dict(saved["coordinator"])
    return True


def _identity(
    coordinator: coordination.Coordinator, workload: str, seed: int, metric: str
) -> base.JSONDict:
    """What a resumed search must share with the saved one."""
    population = coordinator.population.state_dict()
    keys = ("config", "lrMin", "lrMax", "totalSteps", "mode", "phases")
    return {"workload": workload, "seed": seed, "metric": metric} | {k: population[k] for k in keys}


def _restart(loop: MemberLoop, coordinator: coordination.Coordinator) -> None:
    """Put a resumed member where the saved coordinator says it (re)starts."""
    member = loop.member
    if coordinator.is_finished(member):
        loop.done = True
        return
    start = coordination.resume(
        coordinator.resume(member), lambda: coordinator.restart_point(member)
    )
    loop.start_from(start.step, start.checkpoint_path, start.config)
    loop.waiting = coordinator.population.members[member].waiting


def _round_robin(
    loops: list[MemberLoop],
    coordinator: coordination.Coordinator,
    *,
    after_round: Callable[[], None],
) -> None:
    """Advance every live member by one interval in turn until all are done; ``after_round``
    runs after each round (every live member advanced once), the point a resume starts from."""
    while True:
        live = [loop for loop in loops if not loop.done]
        if not live:
            return
        progressed = False
        for loop in live:
            # A file another member was told to copy stays until that member saved its own:
            # a resume may have to load it.
            loop.pinned = frozenset(coordinator.named_checkpoints(loop.member))
            was_waiting, step = loop.waiting, loop.step
            loop.advance()
            progressed |= loop.done or loop.step != step or was_waiting != loop.waiting
        after_round()
        if not progressed:
            raise RuntimeError("pbt: every live member is waiting and no round can close")
