"""Runs the ``law`` strategy on one trainer: probes, fit, optimisation, verification.

1. Probes (``probe.ProbePlan``): a short run per candidate trunk LR, each judged by its loss after
   a cooldown branch; the best continues as a constant-LR trunk from which cooldown branches of
   several lengths leave. Every run records its validation curve and the LR of every step.
2. Fit (``fit``): the law's parameters from all the curves; its error on the trunk's tail when
   that tail is left out of the fit is reported.
3. Optimise (``optimise``): how long to go on holding the trunk LR and how to decay from it to
   the floor by the end of the budget, minimising the law's predicted final loss.
4. Verify: the trunk is continued with that schedule to the end of the budget. The trunk was
   trained from scratch with the search's seed at exactly the schedule's LRs (its warm-up, then
   the trunk LR held), so this run *is* the found schedule trained once; its measured final
   validation loss is the search's objective, reported beside the prediction (and the law's
   prediction of every point it had not seen).

A candidate or a trunk that diverges, or becomes unstable (its validation loss climbs above
``UNSTABLE_FACTOR`` times the lowest it had reached), is out. When the trunk does, the next best
candidate's run is trained again (training is deterministic) and continues as the trunk; the
abandoned trunk's curves are kept under other names and not fitted.

Cost: ``probeCost`` budgets of probes (the trunk included), plus the budget's steps after the
trunk for the verification, plus whatever an abandoned trunk trained. With ``out_dir`` the state
(every completed probe curve, the candidates' outcomes, the trunk's checkpoint) is saved after
each probe, and a later call with the same directory continues from there; an interrupted
verification continues the trunk again from its end.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from schedsearch.trainers import harness, schedules
from schedsearch.trainers.evaluation import Phases, train_cooldown_branch
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies import peaks as peak_probes
from schedsearch.trainers.strategies.law import fit, laws, optimise, probe
from schedsearch.trainers.strategies.law import state as law_state
from schedsearch.trainers.strategies.law.config import LawConfig
from schedsearch.trainers.workloads import Workload, get_workload

STRATEGY: Final = "law"
CANDIDATE_FILE = "law-candidate-{index}.pt"
TRUNK_FILE = "law-trunk-{step}.pt"
# The share of the trunk, at its end, whose points are held out to measure the fit's error.
HELD_OUT_SHARE = 0.2
# A run whose validation loss climbs above this multiple of the lowest it had reached is unstable
# at its LR (scatter at a high LR stays within 3x on the built-in workloads; a run that is
# falling apart, towards the loss of an untrained model, passes it): it is stopped and treated
# as diverged.
UNSTABLE_FACTOR = 4.0

Points = list[list[float]]


@dataclass(frozen=True)
class _Setting:
    """What the search is asked for, resolved: the budget's warm-up, floor and base peak."""

    total_steps: int
    warmup: int
    floor: float
    base_peak: float
    lr_bounds: tuple[float, float]
    cooldown: int = 0  # the shortest final decay a found schedule may have

    def trunk_schedule(self, peak: float, steps: int) -> schedules.Schedule:
        """The warm-up to ``peak``, then ``peak`` held, over ``steps`` steps."""
        builder = schedules.ScheduleBuilder()
        if self.warmup:
            builder.set_lr(0, 0.0, "linear")
        builder.set_lr(self.warmup, peak)
        return builder.build(steps)

    def branch_schedule(self, peak: float, branch: probe.Branch) -> schedules.Schedule:
        """The trunk to ``branch.start``, then linearly to the floor over ``branch.steps`` (the
        arithmetic of ``evaluation.train_cooldown_branch``)."""
        builder = schedules.ScheduleBuilder(self.trunk_schedule(peak, branch.start).points)
        builder.set_lr(branch.start, peak, "linear")
        builder.set_lr(branch.start + branch.steps, self.floor)
        return builder.build(branch.start + branch.steps)


def run_law(
    config: LawConfig,
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
    """Search a schedule of ``total_steps`` steps with the ``law`` strategy, training here.

    ``phases`` gives the warm-up, the floor and the base schedule's peak (the candidates' trunk
    LRs are multiples of it); without it there is no warm-up, the floor is 0 and the peak is the
    geometric mean of ``lr_bounds``.
    """
    started = time.monotonic()
    work = get_workload(workload) if isinstance(workload, str) else workload
    reporter = reporter or base.NullReporter()
    setting = _setting(total_steps, lr_bounds, phases)
    peaks = peak_probes.candidates(setting.base_peak, config.peak_factors or (1.0,), lr_bounds)
    plan = probe.make_plan(
        total_steps=total_steps,
        warmup=setting.warmup,
        candidates=len(peaks),
        probe_cost=config.probe_cost,
        # The found schedule's decay starts at the trunk's end at the earliest.
        max_trunk=total_steps - config.change_points - setting.cooldown,
    )
    state = law_state.fresh(
        config,
        workload=work.name,
        total_steps=total_steps,
        lr_bounds=lr_bounds,
        seed=seed,
        plan=plan,
    )
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and law_state.resume(out, state):
        reporter.on_event(
            "start",
            f"law: resumed with {len(state['curves'])} probe curves",
            curves=len(state["curves"]),
        )
    else:
        reporter.on_event(
            "start",
            f"law: probes of {plan.cost} steps ({plan.cost / total_steps:.2f} S), trunk of "
            f"{plan.trunk_steps} steps, trunk LRs {', '.join(f'{p:.3g}' for p in peaks)}",
        )
    prober = _Prober(work, seed, device, setting, plan, state, out, reporter)
    prober.candidates(peaks)
    prober.trunk()
    fitted, fits = _fit(config, state, setting, seed)
    reporter.on_event("stage", _fit_summary(fitted), law=fitted.law.to_dict())
    stalled = annealed_loss_stalled(probe_curves(state, setting.warmup))
    if stalled is not None:
        reporter.on_event("stage", f"law: {stalled}")
    space = optimise.ScheduleSpace(
        total_steps=total_steps,
        warmup=setting.warmup,
        lr_min=min(lr_bounds[0], state["peak"]),
        lr_max=state["peak"],
        floor=setting.floor,
        change_points=config.change_points,
        monotone=config.parameterisation == "monotone",
        min_decay=setting.cooldown,
        hold_from=plan.trunk_steps,
        max_slope=_steepest_cooldown(plan, float(state["peak"]), setting.floor),
    )
    found = optimise.optimise(fitted.law, space, restarts=config.optimise_restarts, seed=seed)
    reporter.on_event(
        "commit",
        f"law: optimised schedule, predicted final val_loss {found.predicted:.4g}",
        predicted=found.predicted,
    )
    verification = prober.verify(found.schedule, fitted.law) if config.verify else None
    objective = found.predicted
    if verification is not None:
        objective = math.nan if verification["final"] is None else verification["final"]
    reporter.on_event(
        "finished",
        f"law done: val_loss={objective:.4f} (predicted {found.predicted:.4f}), "
        f"{state['memberSteps']} member-steps",
        val_loss=objective,
        predicted=found.predicted,
    )
    schedule = found.schedule.with_provenance(
        strategy=STRATEGY,
        workload=work.name,
        seed=seed,
        law=fitted.law.to_dict(),
        # The steps the law treats as warm-up: predicting another schedule needs them.
        lawWarmup=setting.warmup,
        fitError=fitted.train_error,
        heldOutError=fitted.held_out_error,
        predictedFinal=found.predicted,
        verified=verification is not None,
        **({"stalled": stalled} if stalled is not None else {}),
        trunkLR=state["peak"],
        probeSteps=plan.cost,
    )
    return base.SearchResult(
        strategy=STRATEGY,
        workload=work.name,
        best_schedule=schedule,
        best_objective=objective,
        best_member=0,
        member_steps=state["memberSteps"],
        evaluation_steps=state["evaluationSteps"],
        history=[
            {"plan": plan.to_dict()},
            {"candidates": state["candidates"], "trunkLR": state["peak"]},
            {"fits": [f.to_dict() for f in fits], "chosen": fitted.law.name},
            {"predictedFinal": found.predicted, "verification": verification},
        ],
        wall_seconds=time.monotonic() - started,
    )


def _steepest_cooldown(plan: probe.ProbePlan, peak: float, floor: float) -> float:
    """The fastest fall of the LR per step among the probes' cooldown branches (the trunk's
    and the chosen candidate's): the steepest decay the law was fitted on."""
    shortest = min(plan.candidate_branch, *(b.steps for b in plan.branches))
    return (peak - floor) / shortest


def _fit_summary(fitted: fit.FitResult) -> str:
    held = fitted.held_out_error
    return f"law {fitted.law.name}: fit error {fitted.train_error:.2%}" + (
        f", held-out error {held:.2%}" if held is not None else ""
    )


def _setting(total_steps: int, lr_bounds: tuple[float, float], phases: Phases | None) -> _Setting:
    low, high = lr_bounds
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"lr_bounds: need 0 < min < max, got {lr_bounds}")
    if phases is not None and phases.total_steps != total_steps:
        raise ValueError(f"phases: laid out for {phases.total_steps} steps, not {total_steps}")
    peak = phases.peak_lr if phases is not None else None
    return _Setting(
        total_steps=total_steps,
        warmup=phases.warmup_steps if phases is not None else 0,
        floor=phases.floor if phases is not None else 0.0,
        base_peak=math.sqrt(low * high) if peak is None else min(max(peak, low), high),
        lr_bounds=(low, high),
        cooldown=phases.total_steps - phases.search_end if phases is not None else 0,
    )


# --- the probes ---------------------------------------------------------------------------------


class _Prober:
    """Trains the probes the plan lists, recording their curves in ``state``."""

    def __init__(
        self,
        work: Workload,
        seed: int,
        device: str,
        setting: _Setting,
        plan: probe.ProbePlan,
        state: dict[str, Any],
        out: Path | None,
        reporter: base.Reporter,
    ) -> None:
        self.work, self.seed, self.device = work, seed, device
        self.setting, self.plan, self.state = setting, plan, state
        self.out, self.reporter = out, reporter
        self.trainer: harness.Trainer | None = None
        # The best candidate's trainer so far at the end of its run, to continue it as the trunk
        # without reading it back (or, with no out_dir, without training it again).
        self.kept: dict[int, dict[str, Any]] = {}

    def candidates(self, peaks: list[float]) -> None:
        """One short run per trunk LR, each with its cooldown branch; the best one's trainer
        becomes the trunk."""
        for index in range(len(self.state["candidates"]), len(peaks)):
            self._candidate(index, peaks[index])
        if self.state["peak"] is None:
            outcomes = [
                peak_probes.ProbeOutcome(
                    c["peak"], math.nan if c["loss"] is None else c["loss"], c["steps"]
                )
                for c in self.state["candidates"]
            ]
            chosen = peak_probes.choose(outcomes)
            index = [c["peak"] for c in self.state["candidates"]].index(chosen.peak)
            self._make_trunk(index, CANDIDATE_FILE.format(index=index))

    def _make_trunk(self, index: int, file: str | None) -> None:
        """Candidate ``index``'s run continues as the trunk, from ``file`` (None: trained again)."""
        candidate = self.state["candidates"][index]
        self.state["peak"] = candidate["peak"]
        self.state["trunk"] = {
            "step": self.plan.candidate_steps,
            "file": file,
            "curve": f"candidate-{index}",
            "candidate": index,
        }
        loss = math.nan if candidate["loss"] is None else candidate["loss"]
        self.reporter.on_event(
            "commit", f"law: trunk LR {candidate['peak']:.3g} (loss {loss:.4g} annealed)"
        )
        self._save()
        self._drop_files(keep=file)

    def _abandon_trunk(self) -> bool:
        """The trunk diverged or became unstable: the next best candidate (a finite annealed
        loss, not abandoned) becomes the trunk. False, and nothing changes, when none is left."""
        current = self.state["trunk"]["candidate"]
        left = [
            (c["loss"], c["peak"], i)
            for i, c in enumerate(self.state["candidates"])
            if i != current and c["loss"] is not None and not c.get("abandoned")
        ]
        if not left:
            return False
        _, _, index = min(left)
        abandoned = self.state["candidates"][current]
        abandoned["abandoned"] = True
        # Renamed, the abandoned run's curves stay in the record but out of the fit.
        names = {self.state["trunk"]["curve"], *self.state["doneBranches"]}
        for record in self.state["curves"]:
            if record["name"] in names:
                record["name"] = f"abandoned-{current}-{record['name']}"
        self.state["doneBranches"] = []
        self.trainer, self.kept = None, {}
        self.reporter.on_event(
            "stage",
            f"law: trunk LR {abandoned['peak']:.3g} abandoned; the next best candidate's run is "
            "trained again and continues as the trunk",
        )
        self._make_trunk(index, None)
        return True

    def _candidate(self, index: int, peak: float) -> None:
        trainer = harness.Trainer(self.work, seed=self.seed, device=self.device)
        name = f"candidate-{index}"
        schedule = self.setting.trunk_schedule(peak, self.plan.trunk_steps)
        points: Points = []
        stable = self._train(
            trainer, schedule, self.plan.candidate_steps, self.plan.eval_every, points
        )
        self._add_curve(name, schedule, points)
        branch = probe.Branch(self.plan.candidate_steps, self.plan.candidate_branch)
        loss = math.nan
        if stable:
            loss = self._branch(trainer, peak, branch, name=f"{name}-branch")
        self.state["candidates"].append(
            {
                "peak": peak,
                "loss": loss if math.isfinite(loss) else None,
                "steps": self.plan.candidate_steps + branch.steps,
            }
        )
        self.reporter.on_event(
            "candidate",
            f"law candidate {index}: trunk LR {peak:.3g}, annealed val_loss {loss:.4g}",
            lr=peak,
            forecast=loss,
        )
        # Only the best candidate so far is kept (the one ``choose`` would pick among them).
        earlier = [c for c in self.state["candidates"][:-1] if c["loss"] is not None]
        if math.isfinite(loss) and all((loss, peak) < (c["loss"], c["peak"]) for c in earlier):
            self.kept = {index: trainer.state_dict()}
            if self.out is not None:
                name = CANDIDATE_FILE.format(index=index)
                trainer.save(self.out / name)
                self._save()
                self._drop_files(keep=name)
                return
        self._save()

    def trunk(self) -> None:
        """Continue the chosen run to each branch point, and train the branches there; when the
        trunk diverges or becomes unstable, go on with the next best candidate."""
        while not self._grow_trunk() and self._abandon_trunk():
            pass

    def _grow_trunk(self) -> bool:
        """The trunk to its last branch point, with its branches (False: it diverged or became
        unstable, and stopped there)."""
        peak = float(self.state["peak"])
        schedule = self.setting.trunk_schedule(peak, self.plan.trunk_steps)
        trainer = self._trunk_trainer()
        for stop in self.plan.stops:
            pending = [
                b
                for b in self.plan.branches
                if b.start == stop and b.name not in self.state["doneBranches"]
            ]
            if not pending:
                continue
            if trainer.global_step < stop:
                curve = self._curve(self.state["trunk"]["curve"])
                if not self._train(trainer, schedule, stop, self.plan.eval_every, curve["points"]):
                    self._save()
                    return False
                self._save_trunk(trainer)
            for branch in pending:
                self._branch(trainer, peak, branch, name=branch.name)
                self.state["doneBranches"].append(branch.name)
                self._save()
        return True

    def _trunk_trainer(self) -> harness.Trainer:
        """The trainer at the trunk's latest saved step (kept in memory while this runs)."""
        if self.trainer is not None:
            return self.trainer
        trainer = harness.Trainer(self.work, seed=self.seed, device=self.device)
        trunk = self.state["trunk"]
        kept = self.kept.get(trunk["candidate"])
        if kept is not None and trunk["step"] == self.plan.candidate_steps:
            trainer.load_state_dict(kept)
        elif self.out is not None and trunk["file"] and (self.out / trunk["file"]).exists():
            trainer.load(self.out / trunk["file"])
        else:
            # No checkpoint (the chosen candidate diverged, or the trunk went back to another
            # candidate): train its run again, to the same state (training is deterministic);
            # those steps count.
            peak = float(self.state["peak"])
            schedule = self.setting.trunk_schedule(peak, self.plan.trunk_steps)
            done = trainer.train(trunk["step"], schedule.lr_at)
            self.state["memberSteps"] += len(done)
        self.trainer = trainer
        return trainer

    def _save_trunk(self, trainer: harness.Trainer) -> None:
        self.state["trunk"]["step"] = trainer.global_step
        if self.out is not None:
            name = TRUNK_FILE.format(step=trainer.global_step)
            trainer.save(self.out / name)
            self.state["trunk"]["file"] = name
        self._save()
        if self.out is not None:
            self._drop_files(keep=self.state["trunk"]["file"])

    def _train(
        self,
        trainer: harness.Trainer,
        schedule: schedules.Schedule,
        until: int,
        every: int,
        points: Points,
        *,
        guard: bool = True,
    ) -> bool:
        """Train to step ``until`` at ``schedule``'s LRs, evaluating every ``every`` steps and at
        ``until`` (the points are appended to ``points``, which may hold the run's earlier ones).
        False when the run diverged or, with ``guard``, became unstable (see
        ``UNSTABLE_FACTOR``) and stopped."""
        start, diverged = trainer.global_step, 0
        lowest = min((p[1] for p in points), default=math.inf)
        while trainer.global_step < until and not trainer.diverged:
            result = trainer.step(schedule.lr_at(trainer.global_step))
            if result.diverged:
                diverged = 1  # the step ran (and counts) though its update was skipped
                self.reporter.on_event(
                    "diverged", f"law: the trunk diverged at step {result.step}", lr=result.lr
                )
                break
            step = trainer.global_step
            val = None
            if step % every == 0 or step == until:
                val = float(trainer.evaluate()["val_loss"])
                if math.isfinite(val):  # JSON has no NaN; a missing point is not fitted
                    points.append([step, val])
                    lowest = min(lowest, val)
            self.reporter.on_progress(0, step, result.loss, result.lr, val_loss=val)
            if guard and val is not None and math.isfinite(val) and val > UNSTABLE_FACTOR * lowest:
                self.reporter.on_event(
                    "diverged",
                    f"law: unstable at LR {result.lr:.3g}: val_loss {val:.4g} at step {step}, "
                    f"{val / lowest:.1f}x the lowest it reached ({lowest:.4g})",
                    lr=result.lr,
                )
                self.state["memberSteps"] += trainer.global_step - start
                return False
        self.state["memberSteps"] += trainer.global_step - start + diverged
        return not trainer.diverged

    def _branch(
        self, trainer: harness.Trainer, peak: float, branch: probe.Branch, *, name: str
    ) -> float:
        """Train ``branch`` from the trainer's state and restore it; record the branch's curve
        and return its final validation loss (NaN: diverged)."""
        saved = trainer.state_dict()
        points: Points = []
        every, done = branch.eval_every, [0]

        def step(lr: float) -> bool:
            result = trainer.step(lr)
            done[0] += 1
            if not result.diverged and (done[0] % every == 0 or done[0] == branch.steps):
                val = float(trainer.evaluate()["val_loss"])
                if math.isfinite(val):
                    points.append([trainer.global_step, val])
            return result.diverged

        try:
            trained = train_cooldown_branch(
                step, branch.steps, start=peak, floor=self.setting.floor, shape="linear"
            )
        finally:
            trainer.load_state_dict(saved)
        self.state["memberSteps"] += trained
        self.state["evaluationSteps"] += trained
        self._add_curve(name, self.setting.branch_schedule(peak, branch), points)
        complete = trained == branch.steps and points and points[-1][0] == branch.start + trained
        return float(points[-1][1]) if complete else math.nan

    def verify(self, schedule: schedules.Schedule, law: laws.Law) -> dict[str, Any]:
        """Continue the trunk with ``schedule`` to the end of the budget (the trunk trained its
        first steps at the same LRs, so this is ``schedule`` trained once from scratch); the
        measured curve beside the law's prediction."""
        trainer = self._trunk_trainer()
        start = trainer.global_step
        self.reporter.on_event(
            "stage",
            f"law: verifying the schedule: the trunk continued from step {start} to "
            f"{schedule.total_steps}",
        )
        trunk_points = list(self._curve(self.state["trunk"]["curve"])["points"])
        points: Points = []
        if not trainer.diverged:
            # The found schedule is measured as it trains, stable or not.
            self._train(
                trainer, schedule, schedule.total_steps, self.plan.eval_every, points, guard=False
            )
        final = None
        if not trainer.diverged and points and points[-1][0] == schedule.total_steps:
            final = float(points[-1][1])
        after = [p for p in points if p[0] > self.setting.warmup]
        predicted = law.predict(
            schedule.lrs(), [int(p[0]) for p in after], warmup=self.setting.warmup
        )
        measured = np.asarray([p[1] for p in after])
        # None, not NaN, where nothing was measured: the result is JSON.
        return {
            "final": final,
            "predictedFinal": float(predicted[-1]) if after else None,
            "finalError": float(predicted[-1]) / final - 1.0 if final is not None else None,
            # The law's error on the points it had not seen (after the trunk's end).
            "curveError": float(np.mean(np.abs(predicted / measured - 1.0))) if after else None,
            "from": start,
            "curve": [*[p for p in trunk_points if p[0] < start], *points],
        }

    # --- state ---

    def _add_curve(self, name: str, schedule: schedules.Schedule, points: Points) -> None:
        self.state["curves"].append(
            {"name": name, "schedule": schedule.to_dict(), "points": points}
        )

    def _curve(self, name: str) -> dict[str, Any]:
        return next(c for c in self.state["curves"] if c["name"] == name)

    def _save(self) -> None:
        if self.out is not None:
            law_state.save(self.out, self.state)

    def _drop_files(self, *, keep: str | None) -> None:
        if self.out is None:
            return
        for pattern in (CANDIDATE_FILE.format(index="*"), TRUNK_FILE.format(step="*")):
            for path in self.out.glob(pattern):
                if path.name != keep:
                    path.unlink(missing_ok=True)


# --- the fit --------------------------------------------------------------------------------------


def probe_curves(state: dict[str, Any], warmup: int) -> list[fit.Curve]:
    """The curves the law is fitted on: the trunk (its tail held out), the chosen candidate's
    branch and the trunk's branches (the other candidates ran at other LRs: the laws describe
    schedules below one peak, so they are left out)."""
    trunk_name = state["trunk"]["curve"]
    wanted = {trunk_name, f"{trunk_name}-branch", *state["doneBranches"]}
    curves = []
    for record in state["curves"]:
        if record["name"] not in wanted or not record["points"]:
            continue
        schedule = schedules.Schedule.from_dict(record["schedule"])
        steps = tuple(int(p[0]) for p in record["points"])
        losses = tuple(float(p[1]) for p in record["points"])
        held = None
        if record["name"] == trunk_name:
            cut = (1.0 - HELD_OUT_SHARE) * state["trunk"]["step"]
            held = next((i for i, s in enumerate(steps) if s > max(cut, warmup)), None)
        lrs = tuple(schedule.lrs(max(steps)))
        # A branch that ran to its end is at the floor; the trunk's run ends at its peak.
        annealed = record["name"] != trunk_name and steps[-1] == schedule.total_steps
        curves.append(
            fit.Curve(record["name"], lrs, steps, losses, held_out_from=held, annealed=annealed)
        )
    return curves


def annealed_loss_stalled(curves: list[fit.Curve]) -> str | None:
    """Why the law's prediction is optimistic when the annealed losses along the trunk stopped
    falling (the latest above an earlier one: overfitting, or a floor reached), else None. Every
    law here has the loss fall with training, so it extrapolates a fall the probes did not show."""
    ends = sorted((c.steps[-1], c.losses[-1]) for c in curves if c.annealed)
    if len(ends) < 2:
        return None
    (step, last), earlier = ends[-1], ends[:-1]
    best_step, best = min(earlier, key=lambda end: end[1])
    if last <= best:
        return None
    return (
        f"the annealed validation loss stopped falling along the trunk ({best:.4g} at step "
        f"{best_step}, {last:.4g} at step {step}): the law has it fall with training, so its "
        "predictions are optimistic"
    )


def _fit(
    config: LawConfig, state: dict[str, Any], setting: _Setting, seed: int
) -> tuple[fit.FitResult, list[fit.FitResult]]:
    kinds: list[laws.LawName] = ["multiPower", "tissue"] if config.law == "auto" else [config.law]
    return fit.fit_best(
        kinds,
        probe_curves(state, setting.warmup),
        warmup=setting.warmup,
        lr_scale=float(state["peak"]),
        huber_scale=config.huber_scale,
        restarts=config.fit_restarts,
        seed=seed,
    )
