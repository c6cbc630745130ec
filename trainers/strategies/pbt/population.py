"""PBT decisions, as a pure object: members' reports in, Continue/Exploit/Stop/Wait out.

Semantics follow Ray Tune's PopulationBasedTraining: a member is *ready* when at least
``perturbationInterval`` steps passed since its last perturbation and it is past the burn-in;
its score is then recorded, and if it sits in the bottom quantile (n = ceil(N*q), capped at
floor(N/2), over members with a score) it copies a random member of the top quantile and
explores that member's config: the LR is resampled from its prior (log-uniform over the bounds)
with probability ``resampleProbability``, else multiplied by a random perturbation factor, then
clipped to the bounds. Differences, on purpose:

* a source must have a checkpoint: the random draw is among top members that have one (Ray draws
  first and then skips the exploit);
* a member reporting a NaN/inf objective is exploited at once, from a valid top member or else
  from any valid member, whatever the interval; if no member is valid it is stopped.

In synchronous mode ready members get :class:`Wait` until every active member reached the sync
point; then the whole round is decided (top quantile first) and waiting members :meth:`poll`.

With :class:`~schedsearch.trainers.evaluation.Phases` the budget is warm-up, searched part and
cooldown: members are ready only from the warm-up's end to the cooldown's start (the report at
the cooldown's start is always a ready point: the last decision), so nobody is exploited while
its LR follows the warm-up or the cooldown and every lineage replays exactly. Members rank by the
objective they report, which is the *annealed* one at decision points (the loss after a short
cooldown branch, see ``trainers.evaluation``); the branches' steps are counted in
``anneal_steps``. The best member is judged at the end of its real cooldown.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from schedsearch.trainers import schedules
from schedsearch.trainers.evaluation import Phases
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.pbt.lineage import Lineage

Mode = Literal["min", "max"]


@dataclass
class MemberState:
    """What the population knows of one member (Ray's per-trial state plus ours)."""

    config: dict[str, float]
    step: int = 0
    objective: float | None = None
    # Higher is better; set at ready points only, like Ray's last_score. -inf marks divergence.
    score: float | None = None
    last_perturbation: int = 0
    last_ready: int = 0
    checkpoint: str | None = None
    checkpoint_step: int | None = None
    finished: bool = False
    stopped: bool = False
    waiting: bool = False

    @property
    def active(self) -> bool:
        return not (self.finished or self.stopped)

    def is_valid_source(self) -> bool:
        return (
            self.active
            and self.checkpoint is not None
            and self.score is not None
            and math.isfinite(self.score)
            and self.objective is not None
            and math.isfinite(self.objective)
        )


@dataclass
class Population:
    """The PBT scheduler for ``config.population`` members over an LR in [lr_min, lr_max]."""

    config: PBTConfig
    lr_min: float
    lr_max: float
    total_steps: int
    mode: Mode = "min"
    phases: Phases | None = None
    members: dict[int, MemberState] = field(init=False)
    lineage: Lineage = field(init=False)
    history: list[dict[str, Any]] = field(init=False, default_factory=list)
    _rng: np.random.Generator = field(init=False)
    _next_sync: int = field(init=False)
    _round: dict[int, dict[str, Any]] = field(init=False, default_factory=dict)
    # Steps the members trained in annealed-evaluation branches (search cost, not in any lineage).
    anneal_steps: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not (0.0 < self.lr_min < self.lr_max and math.isfinite(self.lr_max)):
            raise ValueError(
                f"lrBounds must satisfy 0 < min < max, got min={self.lr_min} max={self.lr_max}"
            )
        if self.mode not in ("min", "max"):
            raise ValueError(f"objective mode must be 'min' or 'max', got {self.mode!r}")
        if self.total_steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.total_steps}")
        self._rng = np.random.default_rng(self.config.seed)
        self._next_sync = max(self.config.perturbation_interval, self.config.burn_in_period)
        if self.phases is not None and self.phases.total_steps != self.total_steps:
            raise ValueError(
                f"phases: laid out for {self.phases.total_steps} steps, the budget is "
                f"{self.total_steps}"
            )
        self.lineage = Lineage(self.phases)
        self.members = {}
        for member, lr in enumerate(self._initial_lrs()):
            self.members[member] = MemberState(config={"lr": lr})
            self.lineage.start(member, lr)

    def _initial_lrs(self) -> list[float]:
        # Stratified log-uniform draws: each member gets its own slice of the prior, so a small
        # population still spans the range (plain i.i.d. draws often cluster).
        n = self.config.population
        order = self._rng.permutation(n)
        return [self._lr_at((int(order[i]) + float(self._rng.uniform())) / n) for i in range(n)]

    # -- reports --------------------------------------------------------------------------------

    def report(
        self,
        member: int,
        step: int,
        objective: float,
        checkpoint_path: str | None,
        config: dict[str, float] | None = None,
    ) -> base.PBTDecision:
        """A member reached ``step`` with ``objective``, having saved ``checkpoint_path``."""
        state = self._member(member)
        if not state.active:
            return base.Stop("finished" if state.finished else "stopped")
        self._record(member, state, step, objective, checkpoint_path, config)
        branched = self.phases is not None and self.phases.branches_at(step)
        if branched and checkpoint_path is not None and math.isfinite(objective):
            assert self.phases is not None
            self.anneal_steps += self.phases.anneal_steps
        if not math.isfinite(objective):
            return self._rescue(member, state)
        if step < self.config.burn_in_period:
            return base.Continue()
        if not self._ready(state, step):
            return base.Continue()
        state.score = self._score(objective)
        state.last_ready = step
        if self.config.synch:
            if step < self._next_sync:
                # Behind the sync point (it copied an older checkpoint): catch up first.
                return base.Continue()
            state.waiting = True
            self._maybe_close_round()
            return self.poll(member)
        state.last_perturbation = step
        return self._exploit_or_continue(member)

    def _ready(self, state: MemberState, step: int) -> bool:
        if self.phases is not None:
            if not self.phases.decides_at(step):
                return False  # in the warm-up or the cooldown
            if step == self.phases.search_end and step > state.last_perturbation:
                return True  # the last decision before the cooldown
        return step - state.last_perturbation >= self.config.perturbation_interval

    def poll(self, member: int) -> base.PBTDecision:
        """Synchronous mode: the decision of a member that was told to :class:`Wait`."""
        state = self._member(member)
        if member in self._round:
            return base.decision_from_dict(self._round.pop(member))
        if state.waiting:
            return base.Wait()
        if not state.active:
            return base.Stop("finished" if state.finished else "stopped")
        return base.Continue()

    def finish(self, member: int, step: int | None = None) -> None:
        """``member`` trained its whole budget (``step``, when given, is its last step): it leaves
        the quantiles and holds no round."""
        state = self._member(member)
        if step is not None:
            state.step = step
        state.finished, state.waiting = True, False
        if self.config.synch:
            self._maybe_close_round()

    def fail(self, member: int) -> None:
        """``member`` failed for good (its runner gave up on it): it leaves the population.

        It is no longer a copy source nor in the quantiles, holds no synchronous round, and
        since it never reached the end of the budget its last objective cannot make it the best
        member. Failing a member twice changes nothing.
        """
        state = self._member(member)
        if state.stopped and state.objective is None and not state.finished:
            return
        state.finished, state.stopped, state.waiting = False, True, False
        state.objective = None
        self._round.pop(member, None)
        self.history.append({"event": "failed", "member": member, "step": state.step})
        if self.config.synch:
            self._maybe_close_round()

    def _record(
        self,
        member: int,
        state: MemberState,
        step: int,
        objective: float,
        checkpoint_path: str | None,
        config: dict[str, float] | None,
    ) -> None:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if config is not None and config.get("lr") not in (None, state.config["lr"]):
            # The member's own account wins (e.g. it restarted from an older state); its
            # lineage changes at the last step both sides agreed on.
            self.lineage.set_lr(member, state.step, float(config["lr"]))
            state.config = {**state.config, "lr": float(config["lr"])}
        state.step = step
        state.objective = float(objective)
        state.checkpoint = checkpoint_path
        state.checkpoint_step = step if checkpoint_path is not None else None

    # -- decisions ------------------------------------------------------------------------------

    def quantiles(self) -> tuple[list[int], list[int]]:
        """(bottom, top) members among active members with a score, worst first / best last."""
        scored = [m for m, s in self.members.items() if s.active and s.score is not None]
        if len(scored) <= 1:
            return [], []
        # Member id breaks ties so the order never depends on dict iteration.
        scored.sort(key=lambda m: (self.members[m].score, -m))
        n = min(math.ceil(len(scored) * self.config.quantile_fraction), len(scored) // 2)
        if n == 0:
            return [], []
        return scored[:n], scored[-n:]

    def _exploit_or_continue(self, member: int) -> base.PBTDecision:
        bottom, top = self.quantiles()
        if member not in bottom:
            return base.Continue()
        sources = [m for m in top if self.members[m].is_valid_source()]
        if not sources:
            return base.Continue()
        return self._exploit(member, self._choose(sources), reason="bottom quantile")

    def _rescue(self, member: int, state: MemberState) -> base.PBTDecision:
        """A diverged member copies a valid member or, if none is left, stops."""
        state.score = -math.inf
        state.last_perturbation = state.step
        _, top = self.quantiles()
        sources = [m for m in top if m != member and self.members[m].is_valid_source()]
        if not sources:
            sources = [m for m, s in self.members.items() if m != member and s.is_valid_source()]
        if not sources:
            state.stopped, state.waiting = True, False
            self.history.append({"event": "stop", "member": member, "step": state.step})
            if self.config.synch:
                self._maybe_close_round()
            return base.Stop("diverged and no member with a checkpoint to copy")
        state.waiting = False
        return self._exploit(member, self._choose(sources), reason="diverged")

    def _choose(self, candidates: list[int]) -> int:
        return int(candidates[int(self._rng.integers(len(candidates)))])

    def _exploit(self, dst: int, src: int, *, reason: str) -> base.Exploit:
        source, target = self.members[src], self.members[dst]
        assert source.checkpoint is not None and source.checkpoint_step is not None
        if self.phases is not None and source.checkpoint_step > self.phases.search_end:
            # A member rescued in the cooldown continues the source's cooldown as it is.
            new_lr, how = source.config["lr"], "none (cooldown)"
        else:
            new_lr, how = self.explore(source.config["lr"])
        decision = base.Exploit(
            src=src,
            dst=dst,
            new_config={**source.config, "lr": new_lr},
            src_step=source.checkpoint_step,
            checkpoint_path=source.checkpoint,
        )
        self.lineage.exploit(dst, src, source.checkpoint_step, new_lr)
        self.history.append(
            {
                "event": "exploit",
                "reason": reason,
                "src": src,
                "dst": dst,
                "step": source.checkpoint_step,
                "dstStep": target.step,
                "oldLR": target.config["lr"],
                "sourceLR": source.config["lr"],
                "newLR": new_lr,
                "explore": how,
            }
        )
        # dst now *is* src's checkpoint with a new config: it takes src's clock and score
        # (as Ray transfers the perturbation/train times) and has no checkpoint of its own yet.
        target.config = dict(decision.new_config)
        target.step = source.checkpoint_step
        target.score = source.score
        target.objective = source.objective
        target.last_perturbation = source.last_perturbation
        target.last_ready = source.last_ready
        target.checkpoint, target.checkpoint_step = None, None
        return decision

    def explore(self, lr: float) -> tuple[float, str]:
        """A new LR from ``lr``: resampled from the prior or perturbed, clipped to the bounds."""
        if float(self._rng.uniform()) < self.config.resample_probability:
            return self._lr_at(float(self._rng.uniform())), "resample"
        factors = self.config.perturbation_factors
        factor = float(factors[int(self._rng.integers(len(factors)))])
        return min(self.lr_max, max(self.lr_min, lr * factor)), f"x{factor:g}"

    # -- synchronous rounds ---------------------------------------------------------------------

    def _maybe_close_round(self) -> None:
        active = [m for m, s in self.members.items() if s.active]
        if not active or not all(self.members[m].waiting for m in active):
            return
        bottom, top = self.quantiles()
        middle = [m for m in active if m not in bottom and m not in top]
        # Top first, bottom last: strong members are settled before weak ones copy them.
        for member in [*top, *middle, *bottom]:
            state = self.members[member]
            state.last_perturbation = state.last_ready
            state.waiting = False
            decision = self._exploit_or_continue(member)
            self._round[member] = base.decision_to_dict(decision)
        latest = max(self.members[m].last_ready for m in active)
        self._next_sync = max(self._next_sync + self.config.perturbation_interval, latest)

    # -- results --------------------------------------------------------------------------------

    def best_member(self, among: Collection[int] | None = None) -> int:
        """The search's one rule for its best member: the best last objective (lowest id on
        ties; 0 if none is finite), among ``among`` when given (a finished search counts the
        members that trained their whole budget, see ``Coordinator.best_member``)."""
        finite = [
            m
            for m, s in self.members.items()
            if s.objective is not None
            and math.isfinite(s.objective)
            and (among is None or m in among)
        ]
        if not finite:
            return 0
        return max(finite, key=lambda m: (self._score(self.members[m].objective or 0.0), -m))

    def schedule(self) -> schedules.Schedule:
        """The best member's lineage: PBT's found schedule."""
        return self.lineage.schedule(self.best_member(), self.total_steps)

    def result(
        self,
        *,
        workload: str,
        member_steps: int,
        wall_seconds: float = 0.0,
        among: Collection[int] | None = None,
    ) -> base.SearchResult:
        """The search's result: the best member (among ``among`` when given), its lineage, its
        objective (NaN if no such member has a finite one) and its cost, ``member_steps``
        (every step the members trained, the annealed branches included; the branches are
        also counted apart)."""
        best = self.best_member(among)
        objective = self.members[best].objective
        if objective is None or (among is not None and best not in among):
            objective = math.nan
        return base.SearchResult(
            strategy="pbt",
            workload=workload,
            best_schedule=self.lineage.schedule(best, self.total_steps),
            best_objective=objective,
            best_member=best,
            member_steps=member_steps,
            evaluation_steps=self.anneal_steps,
            history=list(self.history),
            wall_seconds=wall_seconds,
        )

    def _score(self, objective: float) -> float:
        return -objective if self.mode == "min" else objective

    def _lr_at(self, unit: float) -> float:
        log_lr = math.log(self.lr_min) + unit * (math.log(self.lr_max) - math.log(self.lr_min))
        return min(self.lr_max, max(self.lr_min, math.exp(log_lr)))

    def _member(self, member: int) -> MemberState:
        if member not in self.members:
            raise ValueError(f"member must be in 0..{len(self.members) - 1}, got {member}")
        return self.members[member]

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(by_alias=True, mode="json"),
            "lrMin": self.lr_min,
            "lrMax": self.lr_max,
            "totalSteps": self.total_steps,
            "mode": self.mode,
            "members": {str(m): _member_to_json(s) for m, s in self.members.items()},
            "lineage": self.lineage.state_dict(),
            "history": list(self.history),
            "rng": self._rng.bit_generator.state,
            "nextSync": self._next_sync,
            "round": {str(m): d for m, d in self._round.items()},
            "phases": None if self.phases is None else self.phases.to_dict(),
            "annealSteps": self.anneal_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.config = PBTConfig.model_validate(state["config"])
        self.lr_min, self.lr_max = float(state["lrMin"]), float(state["lrMax"])
        self.total_steps = int(state["totalSteps"])
        self.mode = state["mode"]
        self.members = {int(m): _member_from_json(s) for m, s in state["members"].items()}
        phases = state.get("phases")
        self.phases = None if phases is None else Phases.from_dict(phases)
        self.anneal_steps = int(state.get("annealSteps", 0))
        self.lineage = Lineage(self.phases)
        self.lineage.load_state_dict(state["lineage"])
        self.history = list(state["history"])
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self._next_sync = int(state["nextSync"])
        self._round = {int(m): dict(d) for m, d in state["round"].items()}


def _member_to_json(state: MemberState) -> dict[str, Any]:
    data = asdict(state)
    # JSON has no infinities; a diverged score/objective is written as a string.
    for key in ("score", "objective"):
        value = data[key]
        if value is not None and not math.isfinite(value):
            data[key] = repr(value)
    return data


def _member_from_json(data: dict[str, Any]) -> MemberState:
    fields = dict(data)
    for key in ("score", "objective"):
        if isinstance(fields[key], str):
            fields[key] = float(fields[key])
    fields["config"] = {k: float(v) for k, v in fields["config"].items()}
    return MemberState(**fields)
