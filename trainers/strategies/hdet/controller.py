"""HDET's decisions, free of torch.distributed: which LR each replica uses and how the base moves.

N replicas train data-parallel; replica r applies the averaged gradient with ``base * rho_r``
(``HDETConfig.multipliers``). Every ``sync_interval`` steps the runner averages parameters and
calls :meth:`HDETController.sync` with each replica's mean loss over the interval; the answer is a
:class:`Converge` decision: average (always, with or without auto-LR), the base LR from now on, and
which multiplier each replica takes next.

Where the base LR comes from:

- auto-LR off: the base schedule (a family from ``BaseScheduleConfig``) drives it throughout;
- auto-LR on: the base schedule drives it until the *takeover* step, the later of
  ``warmupSteps`` and the step where the base schedule first reaches its peak (its own warm-up or
  OneCycle rise), and gives its value there as the start; from then on each sync moves it with the
  momentum rule of ``maths.meta_step``. The decay ``gamma`` is derived from the number K of
  update syncs so that, with no signal, the base reaches ``lrFloorFraction * start`` at the last.

With ``phases`` (a search's :class:`~schedsearch.trainers.evaluation.Phases`) the budget ends
in a cooldown: from ``phases.search_end`` on, the base decays from where it stands to the floor,
and the base stops moving there. The decay ``gamma`` is then 0: annealing is the cooldown's job,
so in the searched part the base moves only on the replicas' evidence. (The paper's decay towards
1% of the start is what made HDET's found schedules average a tenth of the tuned peak.)
:meth:`HDETController.set_peak` scales the base schedule to a peak chosen by the probes (see
``probe.py``) before training starts.

Only rank 0's permutation draws count: the runner broadcasts them (see ``scheduler.py``), so ranks
agree without relying on a shared global seed. The draws are counter-based, so the state is two
integers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from schedsearch.trainers import schedules
from schedsearch.trainers.evaluation import Phases
from schedsearch.trainers.strategies.hdet import maths
from schedsearch.trainers.strategies.hdet.config import HDETConfig

# Why the base LR did or did not move at a sync (``Converge.auto_lr``).
OFF, WARMUP, UPDATED, NO_SIGNAL, FINAL = "off", "warmup", "updated", "no-signal", "final"


@dataclass(frozen=True)
class Converge:
    """At ``step``: average parameters, then go on with ``base_lr`` and ``assignment``.

    ``assignment[r]`` is the index into ``HDETConfig.multipliers()`` replica r uses from now on;
    ``multipliers[r]`` is that multiplier. ``nonfinite`` lists the replicas whose interval loss
    was NaN/inf: they are left out of the parameter average and receive it.
    """

    step: int
    base_lr: float
    assignment: tuple[int, ...]
    multipliers: tuple[float, ...]
    auto_lr: str
    losses: tuple[float | None, ...]
    # What the auto-LR weighed: the annealed evaluation of each replica when it ran, else the
    # interval losses.
    scores: tuple[float | None, ...]
    weights: tuple[float, ...]
    delta: float
    velocity: float
    nonfinite: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = "Converge"
        for key in ("assignment", "multipliers", "losses", "scores", "weights", "nonfinite"):
            data[key] = list(data[key])
        return data


def peak_step(schedule: schedules.Schedule) -> int:
    """The first change point at which ``schedule`` holds its highest point LR."""
    top = max(point.lr for point in schedule.points)
    return min(point.step for point in schedule.points if point.lr == top)


def default_base_schedule(lr_bounds: tuple[float, float], total_steps: int) -> schedules.Schedule:
    """Without a base schedule: a constant start at the log-midpoint of the LR bounds."""
    low, high = lr_bounds
    return schedules.Schedule.constant(
        math.sqrt(low * high), total_steps, {"source": "hdet-default-start"}
    )


def check_bounds(lr_bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(v) for v in lr_bounds)
    if not (0.0 < low < high and math.isfinite(high)):
        raise ValueError(f"lrBounds must satisfy 0 < min < max, got min={low} max={high}")
    return low, high


class HDETController:
    """The auto-LR and fan-out of HDET for a run of ``total_steps`` steps; pure and resumable."""

    def __init__(
        self,
        config: HDETConfig,
        *,
        total_steps: int,
        base_schedule: schedules.Schedule | None = None,
        lr_bounds: tuple[float, float],
        seed: int = 0,
        phases: Phases | None = None,
    ) -> None:
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {total_steps!r}")
        if phases is not None and phases.total_steps != total_steps:
            raise ValueError(
                f"phases: laid out for {phases.total_steps} steps, the run has {total_steps}"
            )
        self.config = config
        self.total_steps = total_steps
        self.phases = phases
        self.search_end = phases.search_end if phases is not None else total_steps
        self.lr_bounds = check_bounds(lr_bounds)
        self.base_schedule = base_schedule or default_base_schedule(self.lr_bounds, total_steps)
        self.takeover = min(
            max(config.warmup_steps, peak_step(self.base_schedule)), self.search_end
        )
        cooldown = phases is not None and phases.has_cooldown
        self.gamma = 0.0 if cooldown else config.gamma(len(self.update_steps()))
        self._rho = config.multipliers()
        self.seed = seed
        self._draws = 0
        self._set_scale(1.0)
        self._base = self._start_lr()
        self._ceiling = self.lr_bounds[1]
        self._velocity = 0.0
        self._assignment = list(range(config.replicas))
        self._changes: list[tuple[int, float]] = []
        self._last_sync = 0
        self.history: list[dict[str, Any]] = []

    # -- what to train with -------------------------------------------------------------------

    def sync_steps(self) -> list[int]:
        """Steps after which parameters are averaged: every T, and at the end."""
        interval = self.config.sync_interval
        steps = list(range(interval, self.total_steps, interval))
        return [*steps, self.total_steps]

    def update_steps(self) -> list[int]:
        """The syncs that move the base LR: from the takeover to the cooldown's start, excluding
        the final one."""
        return [s for s in self.sync_steps() if self.moves_at(s)]

    def moves_at(self, step: int) -> bool:
        """True when the sync at ``step`` may move the base LR (and so reassigns multipliers)."""
        return (
            self.config.auto_lr
            and self.takeover <= step <= self.search_end
            and step < self.total_steps
            and self.is_sync(step)
        )

    def is_sync(self, step: int) -> bool:
        """True when ``step`` optimiser steps are done and parameters are due to be averaged."""
        if not 0 < step <= self.total_steps:
            return False
        return step == self.total_steps or step % self.config.sync_interval == 0

    def base_lr(self, step: int) -> float:
        """The base LR for training step ``step`` (0-based), given the syncs processed so far."""
        if self.phases is not None and self.phases.has_cooldown and step >= self.search_end:
            return self.phases.lr(self._cooldown_from(), step)
        if not self.config.auto_lr or step < self.takeover:
            return self._driver.lr_at(step)
        return self._base

    def _cooldown_from(self) -> float:
        """The base LR the cooldown starts from: where the base stood at its start."""
        if not self.config.auto_lr:
            return self._driver.lr_at(self.search_end)
        return self._base

    def set_peak(self, peak: float) -> None:
        """Scale the base schedule so its peak is ``peak`` (before any step is trained)."""
        if self._last_sync or self._changes:
            raise ValueError("set_peak: the run has started; the peak is chosen before training")
        if not (peak > 0 and math.isfinite(peak)):
            raise ValueError(f"peak: must be a finite LR > 0, got {peak}")
        self._set_scale(self._clip(peak) / self.base_schedule.peak_lr)
        self._base = self._start_lr()

    def _set_scale(self, scale: float) -> None:
        self._scale = scale
        # The schedule itself scaled, not its LRs times the scale: the found schedule is this
        # very object, so a replay repeats the training bit for bit.
        self._driver = self.base_schedule.scaled(scale) if scale != 1.0 else self.base_schedule

    @property
    def peak(self) -> float:
        """The peak of the base schedule as scaled (the start of the auto-LR)."""
        return self._driver.peak_lr

    def multiplier(self, replica: int) -> float:
        return self._rho[self._assignment[self._check_replica(replica)]]

    def lr(self, step: int, replica: int) -> float:
        """Replica ``replica``'s LR for training step ``step``: base * rho_r."""
        return self.base_lr(step) * self.multiplier(replica)

    @property
    def assignment(self) -> tuple[int, ...]:
        return tuple(self._assignment)

    @property
    def velocity(self) -> float:
        return self._velocity

    # -- what happened ------------------------------------------------------------------------

    def next_permutation(self) -> list[int]:
        """Rank 0's next draw: a permutation of the multiplier indices (counter-based, seeded)."""
        rng = random.Random(f"hdet:{self.seed}:{self._draws}")
        self._draws += 1
        order = list(range(self.config.replicas))
        rng.shuffle(order)
        return order

    def sync(
        self,
        step: int,
        losses: Sequence[float],
        permutation: Sequence[int] | None = None,
        scores: Sequence[float] | None = None,
    ) -> Converge:
        """Parameters are averaged at ``step``; ``losses[r]`` is replica r's mean interval loss.

        ``scores[r]``, when given, is what the auto-LR weighs instead of the interval loss (the
        replica's annealed evaluation: the interval loss favours the lower LRs, see
        ``evaluation.py``). ``permutation`` is the broadcast draw of rank 0; when omitted (rank
        0, or a single process simulating all replicas) the controller draws it itself, if it
        needs one.
        """
        self._check_sync(step, losses)
        if scores is not None and len(scores) != len(losses):
            raise ValueError(f"scores: expected {len(losses)} values, got {len(scores)}")
        weighed = losses if scores is None else scores
        nonfinite = tuple(r for r, loss in enumerate(losses) if not math.isfinite(loss))
        reason, step_result = self._maybe_update(step, weighed)
        if reason == UPDATED:
            order = list(permutation) if permutation is not None else self.next_permutation()
            self._assignment = self._check_permutation(order)
        self._last_sync = step
        decision = Converge(
            step=step,
            base_lr=self.base_lr(step),
            assignment=self.assignment,
            multipliers=tuple(self.multiplier(r) for r in range(self.config.replicas)),
            auto_lr=reason,
            losses=tuple(loss if math.isfinite(loss) else None for loss in losses),
            scores=tuple(v if math.isfinite(v) else None for v in weighed),
            weights=step_result.weights if step_result else (),
            delta=step_result.delta if step_result else 0.0,
            velocity=self._velocity,
            nonfinite=nonfinite,
        )
        self.history.append(decision.to_dict())
        return decision

    def _maybe_update(
        self, step: int, losses: Sequence[float]
    ) -> tuple[str, maths.MetaStep | None]:
        if not self.config.auto_lr:
            return OFF, None
        if step >= self.total_steps or step > self.search_end:
            return FINAL, None
        if step < self.takeover:
            return WARMUP, None
        lrs = [self._base * self.multiplier(r) for r in range(self.config.replicas)]
        result = maths.meta_step(
            base_lr=self._base,
            velocity=self._velocity,
            losses=losses,
            lrs=lrs,
            beta=self.config.beta,
            lam=self.config.lam,
            sigma=self.config.sigma,
            gamma=self.gamma,
            bounds=self.lr_bounds,
        )
        if not result.moved:
            return NO_SIGNAL, result
        self._lower_ceiling(losses, lrs)
        self._base, self._velocity = min(result.base_lr, self._ceiling), result.velocity
        self._changes.append((step, self._base))
        return UPDATED, result

    def _lower_ceiling(self, losses: Sequence[float], lrs: Sequence[float]) -> None:
        """A replica that diverged at LR x caps the base so the fan-out's top stays below x.

        The softmax already gives it zero weight, but the velocity may still carry the base up
        for a few syncs; the ceiling keeps a diverging LR out of the found schedule for good.
        """
        diverged = [lr for lr, loss in zip(lrs, losses, strict=True) if not math.isfinite(loss)]
        if diverged:
            # One fan-out width below: the top replica then trains at (1-alpha)*x, not at x again.
            ceiling = min(diverged) * min(self._rho) / max(self._rho)
            self._ceiling = max(min(self._ceiling, ceiling), self.lr_bounds[0])

    # -- the found schedule ----------------------------------------------------------------------

    def schedule(self) -> schedules.Schedule:
        """The base schedule applied so far (what a single model replays), padded to the budget."""
        provenance = {
            "source": "hdet",
            "strategy": "hdet",
            "replicas": self.config.replicas,
            "alpha": self.config.alpha,
            "syncInterval": self.config.sync_interval,
            "autoLR": self.config.auto_lr,
            "seed": self.seed,
        }
        base = self._driver
        if not self.config.auto_lr:
            found = base.with_provenance(**provenance)
        else:
            builder = schedules.ScheduleBuilder()
            if self.takeover > 0:
                builder.append_segment(0, base, n_steps=self.takeover)
            if self.takeover < self.total_steps:
                builder.set_lr(self.takeover, self._start_lr())
            for step, lr in self._changes:
                builder.set_lr(step, lr)
            found = builder.build(self.total_steps, provenance)
        return found if self.phases is None else self.phases.with_cooldown(found)

    def _start_lr(self) -> float:
        return self._clip(self._driver.lr_at(self.takeover))

    # -- state ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "draws": self._draws,
            "base": self._base,
            "scale": self._scale,
            "velocity": self._velocity,
            "ceiling": self._ceiling,
            "assignment": list(self._assignment),
            "changes": [[step, lr] for step, lr in self._changes],
            "lastSync": self._last_sync,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self._draws = int(state["draws"])
        self._base = float(state["base"])
        self._set_scale(float(state.get("scale", 1.0)))
        self._velocity = float(state["velocity"])
        self._ceiling = float(state["ceiling"])
        self._assignment = self._check_permutation([int(i) for i in state["assignment"]])
        self._changes = [(int(step), float(lr)) for step, lr in state["changes"]]
        self._last_sync = int(state["lastSync"])
        self.history = list(state["history"])

    # -- checks -----------------------------------------------------------------------------------

    def _clip(self, lr: float) -> float:
        low, high = self.lr_bounds
        return min(max(lr, low), high)

    def _check_replica(self, replica: int) -> int:
        if not 0 <= replica < self.config.replicas:
            raise ValueError(f"replica must be in [0, {self.config.replicas}), got {replica}")
        return replica

    def _check_sync(self, step: int, losses: Sequence[float]) -> None:
        if not self.is_sync(step) or step <= self._last_sync:
            raise ValueError(
                f"step {step} is not a sync step after {self._last_sync} "
                f"(syncInterval {self.config.sync_interval}, steps {self.total_steps})"
            )
        if len(losses) != self.config.replicas:
            raise ValueError(f"losses: expected {self.config.replicas} values, got {len(losses)}")

    def _check_permutation(self, order: list[int]) -> list[int]:
        if sorted(order) != list(range(self.config.replicas)):
            raise ValueError(f"permutation must order 0..{self.config.replicas - 1}, got {order}")
        return order
