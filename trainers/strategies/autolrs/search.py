"""The AutoLRS state machine (Jin et al., ICLR 2021), free of any training code.

Training is cut into stages. In a stage the runner checkpoints, then
:meth:`AutoLRSSearch.next_decision` hands out k :class:`TryCandidate` probes of tau' steps each
(the runner restores the checkpoint before each) and :meth:`report_candidate` turns each probe's
loss series into a forecast of the loss tau steps after the checkpoint, which the stage's Bayesian
optimiser is told. Then a :class:`Commit` says: restore, and train tau steps at the best *tried*
LR. After each stage tau and tau' double while tau' < tau_max/10. Stages from
``valForecastFromStage`` on forecast validation loss, measured every tau'/valEveryFraction steps.

The budget counts training steps of the final schedule only: the last stage is shortened to fit
and its probes shrink in proportion; probe steps are extra and counted in ``search_steps``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schedsearch.trainers import schedules
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.autolrs import bo, forecast
from schedsearch.trainers.strategies.autolrs.config import AutoLRSConfig

# Fewer probe steps than this cannot support a 3-parameter fit: such a short final stage keeps
# the previous stage's LR instead of searching.
MIN_PROBE_STEPS = 4
# A stage whose commit fails (diverges, or does not improve) is retried this many times.
MAX_COMMIT_RETRIES = 3


@dataclass(frozen=True)
class StagePlan:
    """Lengths of one stage after fitting it into the remaining budget."""

    index: int
    start_step: int
    tau: int
    tau_prime: int
    val_every: int | None
    search: bool


class AutoLRSSearch:
    """Ask/tell AutoLRS over LRs in [lr_min, lr_max] for a run of ``total_steps`` training steps."""

    def __init__(
        self,
        config: AutoLRSConfig,
        *,
        total_steps: int,
        lr_min: float,
        lr_max: float,
        seed: int = 0,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"steps must be >= 1, got {total_steps}")
        if not (0.0 < lr_min < lr_max and math.isfinite(lr_max)):
            raise ValueError(f"lrBounds must satisfy 0 < min < max, got min={lr_min} max={lr_max}")
        self.config = config
        self.total_steps = total_steps
        self.lr_min, self.lr_max = lr_min, lr_max
        self.seed = seed
        self.stage = 0
        self.trained_steps = 0
        self.search_steps = 0
        self.anneal_steps = 0  # of search_steps: annealed-evaluation branches
        self._tau, self._tau_prime = config.tau, config.tau_prime
        self._tried: list[dict[str, Any]] = []
        self._failed: list[float] = []  # LRs whose commit failed in this stage
        self._bo = self._fresh_bo()
        self._pending: base.AutoLRSDecision | None = None
        self._segments: list[tuple[int, float]] = []
        self.history: list[dict[str, Any]] = []

    # -- ask ------------------------------------------------------------------------------------

    def plan(self) -> StagePlan:
        """The current stage's lengths, shortened to the remaining budget."""
        remaining = self.total_steps - self.trained_steps
        tau = min(self._tau, remaining)
        probe = round(self._tau_prime * tau / self._tau)
        search = probe >= MIN_PROBE_STEPS or not self._segments
        probe = max(MIN_PROBE_STEPS, probe)
        val_every = None
        if self.stage >= self.config.val_forecast_from_stage:
            val_every = max(1, probe // self.config.val_every_fraction)
        return StagePlan(self.stage, self.trained_steps, tau, probe, val_every, search)

    def next_decision(self) -> base.AutoLRSDecision:
        """What to do next; asking again before reporting returns the same decision."""
        if self._pending is None:
            self._pending = self._decide()
        return self._pending

    def _decide(self) -> base.AutoLRSDecision:
        if self.trained_steps >= self.total_steps:
            return base.Finished()
        plan = self.plan()
        if plan.search and len(self._tried) < self.config.candidates:
            return base.TryCandidate(
                plan.index, len(self._tried), self._bo.ask(), plan.tau_prime, plan.val_every
            )
        return base.Commit(plan.index, self._chosen_lr(plan), plan.tau)

    def _chosen_lr(self, plan: StagePlan) -> float:
        """The best tried LR; failing that (all diverged), the smallest one tried, and after a
        commit itself failed, ten times smaller than the smallest that failed."""
        viable = [t for t in self._tried if not t["diverged"] and t["lr"] not in self._failed]
        if viable:
            return float(min(viable, key=lambda t: t["forecast"])["lr"])
        known = [float(t["lr"]) for t in self._tried] + self._failed
        if not plan.search:
            known.append(self._segments[-1][1])
        lowest = min(known)
        return lowest if lowest not in self._failed else max(self.lr_min, lowest / 10.0)

    # -- tell -----------------------------------------------------------------------------------

    def report_candidate(
        self,
        steps: Sequence[int],
        losses: Sequence[float],
        *,
        diverged: bool = False,
        trained: int | None = None,
        annealed: float | None = None,
        branch: int = 0,
    ) -> float:
        """Report the pending probe's series (validation losses if it asked for them).

        ``steps`` count from the checkpoint (first probe step = 1). A probe that diverged (or
        whose series holds NaN/inf) gets ``divergedLoss``. ``trained`` is how many steps the probe
        really ran (less than asked when stopped early on divergence). ``annealed``: the probe's
        loss after a cooldown branch of ``branch`` steps; when given it is the candidate's value
        instead of the forecast (see the runner for why). Returns the value told to the BO.
        """
        decision = self._pending
        if not isinstance(decision, base.TryCandidate):
            raise RuntimeError(f"no candidate is pending (pending: {decision!r})")
        plan = self.plan()
        if annealed is not None and not diverged:
            cap = self.config.diverged_loss
            value = min(annealed, cap) if math.isfinite(annealed) else cap
        else:
            value = self._forecast(steps, losses, diverged=diverged, horizon=plan.tau)
        self.search_steps += branch
        self.anneal_steps += branch
        self._bo.tell(decision.lr, value)
        self._tried.append(
            {"lr": decision.lr, "forecast": value, "diverged": value >= self.config.diverged_loss}
        )
        self.search_steps += decision.steps if trained is None else trained
        self._pending = None
        return value

    def _forecast(
        self, steps: Sequence[int], losses: Sequence[float], *, diverged: bool, horizon: int
    ) -> float:
        cap = self.config.diverged_loss
        if diverged or not losses or not all(math.isfinite(v) for v in losses):
            return cap
        value = forecast.forecast(steps, losses, horizon)
        if not math.isfinite(value):
            return cap
        return min(max(value, plausible_floor(losses)), cap)

    def report_commit(self, *, failed: bool = False, trained: int | None = None) -> None:
        """The pending commit's steps were trained: close the stage and grow the next one.

        ``failed``: the stage diverged (after ``trained`` steps) or ended no better than it
        started. The runner restores the stage start and the next decision commits the next
        best tried LR (or a smaller one); the lost steps count as search cost. After
        ``MAX_COMMIT_RETRIES`` failures in one stage the last attempt is kept.
        """
        decision = self._pending
        if not isinstance(decision, base.Commit):
            raise RuntimeError(f"no commit is pending (pending: {decision!r})")
        if failed and len(self._failed) < MAX_COMMIT_RETRIES:
            self._failed.append(decision.lr)
            self.search_steps += decision.steps if trained is None else trained
            self._pending = None
            return
        self._segments.append((self.trained_steps, decision.lr))
        self.history.append(
            {
                "stage": self.stage,
                "startStep": self.trained_steps,
                "tau": decision.steps,
                "tauPrime": self.plan().tau_prime,
                "lr": decision.lr,
                "candidates": self._tried,
                "failedCommits": list(self._failed),
            }
        )
        self.trained_steps += decision.steps
        self.stage += 1
        if self._tau_prime < self.config.tau_max / 10:
            self._tau, self._tau_prime = 2 * self._tau, 2 * self._tau_prime
        self._tried, self._failed = [], []
        self._bo = self._fresh_bo()
        self._pending = None

    # -- results --------------------------------------------------------------------------------

    def schedule(self, total_steps: int | None = None) -> schedules.Schedule:
        """The LRs committed so far, the last one holding to the end of the search's budget (or
        of ``total_steps``, for a run that goes on after the search, e.g. with a cooldown)."""
        builder = schedules.ScheduleBuilder()
        for start, lr in self._segments or [(0, self._bo.to_lr(0.5))]:
            builder.set_lr(start, lr)
        return builder.build(
            total_steps or self.total_steps,
            {"strategy": "autolrs", "stages": len(self._segments)},
        )

    def _fresh_bo(self) -> bo.LogLRBayesOpt:
        # A fresh optimiser per stage (the loss landscape moves as training proceeds), seeded by
        # (seed, stage) so a resumed search asks the same LRs.
        return bo.LogLRBayesOpt(
            self.lr_min,
            self.lr_max,
            kappa=self.config.kappa,
            seed=self.seed * 1_000_003 + self.stage,
        )

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(by_alias=True, mode="json"),
            "totalSteps": self.total_steps,
            "lrMin": self.lr_min,
            "lrMax": self.lr_max,
            "seed": self.seed,
            "stage": self.stage,
            "trainedSteps": self.trained_steps,
            "searchSteps": self.search_steps,
            "annealSteps": self.anneal_steps,
            "tau": self._tau,
            "tauPrime": self._tau_prime,
            "tried": [dict(t) for t in self._tried],
            "failedCommits": list(self._failed),
            "bo": self._bo.state_dict(),
            "pending": None if self._pending is None else base.decision_to_dict(self._pending),
            "segments": [[s, lr] for s, lr in self._segments],
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.config = AutoLRSConfig.model_validate(state["config"])
        self.total_steps = int(state["totalSteps"])
        self.lr_min, self.lr_max = float(state["lrMin"]), float(state["lrMax"])
        self.seed = int(state["seed"])
        self.stage = int(state["stage"])
        self.trained_steps = int(state["trainedSteps"])
        self.search_steps = int(state["searchSteps"])
        self.anneal_steps = int(state.get("annealSteps", 0))
        self._tau, self._tau_prime = int(state["tau"]), int(state["tauPrime"])
        self._tried = [dict(t) for t in state["tried"]]
        self._failed = [float(lr) for lr in state["failedCommits"]]
        self._bo = self._fresh_bo()
        self._bo.load_state_dict(state["bo"])
        pending = state["pending"]
        self._pending = None if pending is None else base.decision_from_dict(pending)
        self._segments = [(int(s), float(lr)) for s, lr in state["segments"]]
        self.history = list(state["history"])


def plausible_floor(losses: Sequence[float]) -> float:
    """The lowest loss a forecast may predict from ``losses``: no further below the lowest loss
    observed than the whole observed drop again, and never below zero when every observed loss
    is non-negative (an exponential fit to a short noisy series can run away, e.g. predict a
    negative cross-entropy, and would then win the stage on a loss that cannot happen)."""
    low, high = min(losses), max(losses)
    floor = low - (high - low)
    return max(floor, 0.0) if low >= 0 else floor
