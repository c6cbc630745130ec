"""Runs AutoLRS on one trainer: the search decides, this module trains.

Per stage: snapshot the trainer (model, optimizer, data position); for each candidate restore the
snapshot and train tau' steps at its LR; then restore once more and train tau steps at the chosen
LR. The harness takes the LR with every ``step(lr)``, so the chosen LR is in force from the very
first step after the restore (the reference implementation applied it one step late).

Cost accounting: the budget (``steps``) is the number of training steps of the final schedule;
probe steps are extra, and ``member_steps`` in the result counts both.

With :class:`~schedsearch.trainers.evaluation.Phases` (the default of every spec) two things
change, both against short-horizon bias (see ``trainers.evaluation``):

* stages cover the budget up to the cooldown's start; the last part of the budget is a cooldown
  from the last committed LR to the floor, which the trainer really trains and the found
  schedule ends with;
* each candidate is judged by its *annealed* loss: after its tau' steps at the candidate LR the
  trainer runs a cooldown branch of ``anneal.fraction * tau'`` steps to the floor and is
  evaluated; that value, not the exponential forecast of the constant-LR loss tau steps ahead, is
  what the Bayesian optimiser is told and what the stage commits by. Why: the forecast extends
  the probe's own constant-LR curve, so it inherits the bias that makes small LRs look best over
  a short horizon; the annealed loss ranks LRs by what they are worth once decayed, which is how
  the schedule will end.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from schedsearch.trainers import harness, schedules
from schedsearch.trainers.evaluation import Phases
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.autolrs.config import AutoLRSConfig
from schedsearch.trainers.strategies.autolrs.search import AutoLRSSearch
from schedsearch.trainers.workloads import Workload, get_workload

# A committed stage fails when it diverges, or when it ends no better than the first stage
# started (by at least this fraction): an LR that looked best over a short probe killed the network
# later, leaving the loss at its initial plateau. It is then retried from its start. A later stage
# is not required to beat its own start: a stage at a higher LR than the one before measures a
# higher raw loss at its end even when it is the better choice once annealed (short-horizon bias;
# measured on digits-cnn: 5 of the 9 commits of the full benchmark's search "failed" that way,
# pushing the LR from 0.14 down to 0.0027 and the search cost to 3.5 budgets).
MIN_STAGE_IMPROVEMENT = 1e-3
FIRST_STAGE_LOSS_KEY = "firstStageLoss"
STATE_FILE = "autolrs-state.json"
TRAINER_FILE = "autolrs-trainer.pt"  # read only: what older versions wrote
# The trainer is saved at each committed stage under its step; the state names the file.
TRAINER_PATTERN = "autolrs-trainer-{step}.pt"
TRAINER_KEY = "trainerFile"


def run_autolrs(
    config: AutoLRSConfig,
    workload: Workload | str,
    *,
    total_steps: int,
    lr_bounds: tuple[float, float],
    seed: int = 0,
    out_dir: Path | str | None = None,
    reporter: base.Reporter | None = None,
    device: str = "auto",
    phases: Phases | None = None,
) -> base.SearchResult:
    """Search a schedule of ``total_steps`` training steps with AutoLRS, training in this process.

    With ``out_dir``, the search state and the trainer are saved at every stage boundary, and a
    later call with the same directory resumes from the last completed stage. ``phases``: the
    cooldown and annealed evaluation (none when not given).
    """
    started = time.monotonic()
    work = get_workload(workload) if isinstance(workload, str) else workload
    reporter = reporter or base.NullReporter()
    if phases is not None and phases.total_steps != total_steps:
        raise ValueError(f"phases: laid out for {phases.total_steps} steps, not {total_steps}")
    warmup = phases.warmup_steps if phases is not None else 0
    search = AutoLRSSearch(
        config,
        # Stages start after the warm-up and end where the cooldown starts.
        total_steps=(total_steps if phases is None else phases.search_end) - warmup,
        lr_min=lr_bounds[0],
        lr_max=lr_bounds[1],
        seed=seed,
    )
    trainer = harness.Trainer(work, seed=seed, device=device)
    out = Path(out_dir) if out_dir is not None else None
    driver = _StageDriver(search, trainer, reporter, phases)
    if out is not None and _resume(out, search, trainer, driver):
        reporter.on_event("start", f"resumed at stage {search.stage}", stage=search.stage)
    peak = _warmup_peak(phases, lr_bounds) if warmup else 0.0
    if trainer.global_step < warmup:  # a fresh search (a resumed one is past its warm-up)
        driver.warm_up(warmup, peak)
    driver.run(out)
    found = search.schedule(total_steps - warmup)
    if warmup:
        found = _after_warmup(found, warmup, peak, total_steps)
    if phases is not None:
        found = phases.with_cooldown(found)
        driver.cool_down(found)
    final = trainer.evaluate()
    objective = float(final.get("val_loss", math.nan))
    found = found.with_provenance(workload=work.name, seed=seed)
    reporter.on_event(
        "finished",
        f"autolrs done: val_loss={objective:.4f}, {search.trained_steps} training steps "
        f"+ {search.search_steps} probe steps",
        val_loss=objective,
    )
    return base.SearchResult(
        strategy="autolrs",
        workload=work.name,
        best_schedule=found,
        best_objective=objective,
        best_member=0,
        member_steps=trainer.global_step + search.search_steps,
        evaluation_steps=search.anneal_steps,
        history=[*search.history, {"final": final}],
        wall_seconds=time.monotonic() - started,
    )


def _warmup_peak(phases: Phases | None, lr_bounds: tuple[float, float]) -> float:
    """The LR the warm-up rises to: the base schedule's peak, within the bounds."""
    low, high = lr_bounds
    peak = phases.peak_lr if phases is not None else None
    return math.sqrt(low * high) if peak is None else min(max(peak, low), high)


def _after_warmup(
    stages: schedules.Schedule, warmup: int, peak: float, total_steps: int
) -> schedules.Schedule:
    """The warm-up (0 to ``peak`` over ``warmup`` steps, linear), then ``stages`` from there."""
    builder = schedules.ScheduleBuilder([schedules.ChangePoint(0, 0.0, "linear", peak, warmup)])
    builder.append_segment(warmup, stages)
    return builder.build(total_steps, stages.provenance)


class _StageDriver:
    """Carries out the search's decisions on the trainer."""

    def __init__(
        self,
        search: AutoLRSSearch,
        trainer: harness.Trainer,
        reporter: base.Reporter,
        phases: Phases | None = None,
    ) -> None:
        self.search = search
        self.trainer = trainer
        self.reporter = reporter
        self.phases = phases
        self.snapshot: dict[str, Any] | None = None
        self.snapshot_stage = -1
        self.stage_start_loss = math.inf
        # The validation loss where the first stage started (after any warm-up).
        self.first_stage_loss = math.inf

    def run(self, out: Path | None) -> None:
        while not isinstance(decision := self.search.next_decision(), base.Finished):
            self._restore_stage_start(decision.stage)
            if isinstance(decision, base.TryCandidate):
                self._probe(decision)
            else:
                if not self._commit(decision) and self.snapshot is not None:
                    # The stage is retried from its start: that is what a resume must find too.
                    self.trainer.load_state_dict(self.snapshot)
                if out is not None:
                    _save(out, self.search, self.trainer, self.first_stage_loss)

    def _restore_stage_start(self, stage: int) -> None:
        if stage != self.snapshot_stage:
            # state_dict() is a deep copy: training on does not change the snapshot.
            self.snapshot = self.trainer.state_dict()
            self.snapshot_stage = stage
            self.stage_start_loss = float(self.trainer.evaluate()["val_loss"])
            if not math.isfinite(self.first_stage_loss):
                self.first_stage_loss = self.stage_start_loss
            plan = self.search.plan()
            self.reporter.on_event(
                "stage",
                f"stage {stage}: {plan.tau} steps from step {plan.start_step}, "
                f"probes of {plan.tau_prime} steps"
                + (f", validation every {plan.val_every}" if plan.val_every else ""),
                stage=stage,
                tau=plan.tau,
                tau_prime=plan.tau_prime,
            )
        else:
            assert self.snapshot is not None
            self.trainer.load_state_dict(self.snapshot)

    def _probe(self, decision: base.TryCandidate) -> None:
        steps: list[int] = []
        values: list[float] = []
        diverged, trained = False, 0
        for offset in range(1, decision.steps + 1):
            result = self.trainer.step(decision.lr)
            trained = offset
            if result.diverged or not math.isfinite(result.loss):
                diverged = True
                break
            if decision.val_every is None:
                steps.append(offset)
                values.append(result.loss)
            elif offset % decision.val_every == 0:
                steps.append(offset)
                values.append(float(self.trainer.evaluate()["val_loss"]))
        annealed, branch = self._annealed(decision) if not diverged else (None, 0)
        value = self.search.report_candidate(
            steps, values, diverged=diverged, trained=trained, annealed=annealed, branch=branch
        )
        kind = "diverged" if diverged else "candidate"
        what = "annealed" if annealed is not None else "forecast"
        self.reporter.on_event(
            kind,
            f"stage {decision.stage} candidate {decision.index}: lr={decision.lr:.3g} "
            f"{what}={value:.4g}" + (" (diverged)" if diverged else ""),
            lr=decision.lr,
            forecast=value,
        )

    def _annealed(self, decision: base.TryCandidate) -> tuple[float | None, int]:
        """The probe's validation loss after a cooldown branch of ``anneal.fraction * tau'``
        steps from the candidate LR to the floor, and the branch's steps (None, 0: off)."""
        if self.phases is None or self.phases.anneal_fraction <= 0:
            return None, 0
        steps = max(1, round(self.phases.anneal_fraction * decision.steps))
        metrics, trained = self.trainer.annealed_evaluate(
            steps, floor=self.phases.floor, shape=self.phases.anneal_shape, start_lr=decision.lr
        )
        return float(metrics["val_loss"]), trained

    def warm_up(self, steps: int, peak: float) -> None:
        """Train the first ``steps`` steps with the LR rising linearly from 0 to ``peak`` (the
        arithmetic of the stored schedule's warm-up segment), before the first stage."""
        assert self.phases is not None
        self.reporter.on_event("stage", f"warm-up: {steps} steps, lr 0 -> {peak:.3g}")
        for step in range(self.trainer.global_step, steps):
            result = self.trainer.step(self.phases.lr(peak, step))
            self.reporter.on_progress(0, step + 1, result.loss, result.lr)

    def cool_down(self, schedule: schedules.Schedule) -> None:
        """Train from the end of the last stage to the end of ``schedule`` (the cooldown)."""
        start = self.trainer.global_step
        if start >= schedule.total_steps:
            return
        self.reporter.on_event(
            "stage",
            f"cooldown: steps {start}-{schedule.total_steps}, lr "
            f"{schedule.lr_at(start):.3g} -> {schedule.points[-1].lr:.3g}",
        )
        result = None
        for step in range(start, schedule.total_steps):
            result = self.trainer.step(schedule.lr_at(step))
            self.reporter.on_progress(0, step + 1, result.loss, result.lr)
            if result.diverged:
                return
        if result is not None:
            end = float(self.trainer.evaluate()["val_loss"])
            self.reporter.on_progress(0, result.step + 1, result.loss, result.lr, val_loss=end)

    def _commit(self, decision: base.Commit) -> bool:
        """Train the stage at the chosen LR; False when it failed (it is then retried)."""
        start = self.trainer.global_step  # the stage's start (after any warm-up)
        self.reporter.on_event(
            "commit", f"stage {decision.stage}: lr={decision.lr:.3g} for {decision.steps} steps"
        )
        trained, problem = decision.steps, None
        for offset in range(1, decision.steps + 1):
            result = self.trainer.step(decision.lr)
            self.reporter.on_progress(0, start + offset, result.loss, decision.lr)
            if result.diverged:
                trained, problem = offset, f"diverged at step {start + offset}"
                break
        if problem is None:
            end = float(self.trainer.evaluate()["val_loss"])
            self.reporter.on_progress(0, start + trained, result.loss, decision.lr, val_loss=end)
            problem = stage_problem(end, self.first_stage_loss)
        if problem is not None:
            self.reporter.on_event(
                "diverged" if result.diverged else "stage",
                f"stage {decision.stage}: lr={decision.lr:.3g} {problem}; "
                "retrying the stage from its start",
                lr=decision.lr,
            )
        self.search.report_commit(failed=problem is not None, trained=trained)
        return problem is None


def stage_problem(end: float, first_stage_loss: float) -> str | None:
    """Why a committed stage that ended at validation loss ``end`` failed (None: it did not)."""
    if end < first_stage_loss * (1.0 - MIN_STAGE_IMPROVEMENT):
        return None
    return (
        f"ended at val_loss {end:.4g}, no better than the first stage started "
        f"({first_stage_loss:.4g})"
    )


def _save(
    out: Path, search: AutoLRSSearch, trainer: harness.Trainer, first_stage_loss: float
) -> None:
    """Save the trainer under a name of its own, then the state naming it (atomically), then
    drop older trainer files: a kill at any point leaves a state whose trainer file matches."""
    out.mkdir(parents=True, exist_ok=True)
    name = TRAINER_PATTERN.format(step=trainer.global_step)
    trainer.save(out / name)
    first = first_stage_loss if math.isfinite(first_stage_loss) else None
    state = {**search.state_dict(), TRAINER_KEY: name, FIRST_STAGE_LOSS_KEY: first}
    base.write_state(out / STATE_FILE, state)
    for old in [out / TRAINER_FILE, *out.glob(TRAINER_PATTERN.format(step="*"))]:
        if old.name != name:
            old.unlink(missing_ok=True)


def _resume(
    out: Path, search: AutoLRSSearch, trainer: harness.Trainer, driver: _StageDriver
) -> bool:
    state_path = out / STATE_FILE
    if not state_path.exists():
        return False
    state = json.loads(state_path.read_text())
    # States written before trainer files were named per stage name none: the one fixed file.
    trainer_file = str(state.pop(TRAINER_KEY, TRAINER_FILE))
    first = state.pop(FIRST_STAGE_LOSS_KEY, None)
    # A state written before this key: the first stage after the resume stands in for it.
    driver.first_stage_loss = float(first) if first is not None else math.inf
    wanted = search.state_dict()
    keys = ("config", "totalSteps", "lrMin", "lrMax", "seed")
    base.check_same_search(state, {key: wanted[key] for key in keys}, out, "an AutoLRS search")
    search.load_state_dict(state)
    trainer.load(out / trainer_file)
    return True
