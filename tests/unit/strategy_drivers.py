"""Drivers that run each search strategy on a cheap synthetic problem, for the conformance suite.

A driver owns a *world* (the simulated training: losses, checkpoints, whatever the strategy acts
on) and advances a strategy by one interaction per :meth:`StrategyDriver.step`, returning the
decision taken as JSON data. The suite deep-copies worlds and JSON-round-trips strategy states,
so a world must be plain Python data.

To add a strategy: write a class with ``name``, ``create`` and ``step`` and register an instance
in ``DRIVERS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.autolrs.config import AutoLRSConfig
from schedsearch.trainers.strategies.autolrs.search import AutoLRSSearch
from schedsearch.trainers.strategies.hdet.config import HDETConfig
from schedsearch.trainers.strategies.hdet.controller import HDETController
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.pbt.population import Population

LR_MIN, LR_MAX = 1e-4, 1.0


@dataclass(frozen=True)
class SyntheticProblem:
    """A loss that relaxes towards a floor depending on log(lr), best at ``best_lr``.

    The noise is a deterministic function of (step, lr) so runs are reproducible without an RNG.
    LRs above ``diverge_above`` make the loss NaN, as a real divergence would.
    """

    best_lr: float = 0.01
    diverge_above: float | None = None
    rate: float = 0.05

    def floor(self, lr: float) -> float:
        return 0.1 + 0.3 * math.log10(lr / self.best_lr) ** 2

    def next_loss(self, loss: float, lr: float, step: int) -> float:
        if self.diverge_above is not None and lr > self.diverge_above:
            return math.nan
        if not math.isfinite(loss):
            return loss
        target = self.floor(lr)
        noise = 0.005 * math.sin(12.9898 * step + 78.233 * lr)
        return target + (loss - target) * (1.0 - self.rate) + noise


class StrategyDriver(Protocol):
    """Runs one strategy kind against a :class:`SyntheticProblem`."""

    name: str

    def create(self, seed: int, problem: SyntheticProblem) -> tuple[base.SearchStrategy, Any]:
        """A fresh strategy and its world."""
        ...

    def step(self, strategy: Any, world: Any) -> dict[str, Any] | None:
        """One interaction; the decision as JSON data, or None once the search is over."""
        ...


# ---------------------------------------------------------------------------------------------


@dataclass
class AutoLRSWorld:
    problem: SyntheticProblem
    loss: float = 2.5


class AutoLRSDriver:
    """A single trainer: probes restart from the stage's loss, a commit moves it."""

    name = "autolrs"
    # Stages of 40, 80, 80 steps (tau' 8 -> 16 = tauMax/10, then it stays): 3 stages, 9 probes.
    config = AutoLRSConfig(tau=40, tau_prime=8, tau_max=160, candidates=3)
    total_steps = 200

    def create(self, seed: int, problem: SyntheticProblem) -> tuple[AutoLRSSearch, AutoLRSWorld]:
        search = AutoLRSSearch(
            self.config, total_steps=self.total_steps, lr_min=LR_MIN, lr_max=LR_MAX, seed=seed
        )
        return search, AutoLRSWorld(problem)

    def step(self, strategy: AutoLRSSearch, world: AutoLRSWorld) -> dict[str, Any] | None:
        decision = strategy.next_decision()
        if isinstance(decision, base.Finished):
            return None
        losses = self._train(world, decision.lr, decision.steps, strategy.trained_steps)
        record = base.decision_to_dict(decision)
        if isinstance(decision, base.TryCandidate):
            every = decision.val_every or 1
            steps = list(range(every, decision.steps + 1, every))
            record["forecast"] = strategy.report_candidate(steps, [losses[s - 1] for s in steps])
        else:
            world.loss = losses[-1]
            strategy.report_commit()
        return record

    @staticmethod
    def _train(world: AutoLRSWorld, lr: float, steps: int, start: int) -> list[float]:
        loss, out = world.loss, []
        for i in range(steps):
            loss = world.problem.next_loss(loss, lr, start + i)
            out.append(loss)
        return out


# ---------------------------------------------------------------------------------------------


@dataclass
class PBTWorld:
    problem: SyntheticProblem
    losses: dict[int, float]
    steps: dict[int, int]
    checkpoints: dict[str, float] = field(default_factory=dict)
    waiting: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    cursor: int = 0


class PBTDriver:
    """Members trained round-robin; each reports every interval with a checkpoint 'path'."""

    name: str
    total_steps = 200

    def __init__(self, *, synch: bool = False) -> None:
        self.synch = synch
        self.name = "pbt-synch" if synch else "pbt"
        self.config = PBTConfig(
            population=6, perturbation_interval=20, quantile_fraction=0.34, synch=synch
        )

    def create(self, seed: int, problem: SyntheticProblem) -> tuple[Population, PBTWorld]:
        population = Population(
            self.config.model_copy(update={"seed": seed}),
            lr_min=LR_MIN,
            lr_max=LR_MAX,
            total_steps=self.total_steps,
        )
        members = range(self.config.population)
        return population, PBTWorld(problem, {m: 2.5 for m in members}, {m: 0 for m in members})

    def step(self, strategy: Population, world: PBTWorld) -> dict[str, Any] | None:
        member = self._next_member(world)
        if member is None:
            return None
        if member in world.waiting:
            decision = strategy.poll(member)
        else:
            decision = self._train_and_report(strategy, world, member)
        self._apply(strategy, world, member, decision)
        return {"member": member, **base.decision_to_dict(decision)}

    def _next_member(self, world: PBTWorld) -> int | None:
        n = self.config.population
        for offset in range(n):
            member = (world.cursor + offset) % n
            if member not in world.done:
                world.cursor = (member + 1) % n
                return member
        return None

    def _train_and_report(self, population: Population, world: PBTWorld, member: int) -> Any:
        lr = population.members[member].config["lr"]
        loss, step = world.losses[member], world.steps[member]
        for i in range(self.config.perturbation_interval):
            loss = world.problem.next_loss(loss, lr, step + i)
        step += self.config.perturbation_interval
        world.losses[member], world.steps[member] = loss, step
        path = f"member-{member}/step-{step}.pt"
        world.checkpoints[path] = loss
        return population.report(member, step, loss, path, {"lr": lr})

    def _apply(self, population: Population, world: PBTWorld, member: int, decision: Any) -> None:
        world.waiting.discard(member)
        if isinstance(decision, base.Wait):
            world.waiting.add(member)
        elif isinstance(decision, base.Stop):
            world.done.add(member)
        elif isinstance(decision, base.Exploit):
            world.losses[member] = world.checkpoints[decision.checkpoint_path]
            world.steps[member] = decision.src_step
        finished = world.steps[member] >= self.total_steps
        if finished and member not in world.done and member not in world.waiting:
            world.done.add(member)
            population.finish(member)


# ---------------------------------------------------------------------------------------------


@dataclass
class HDETWorld:
    problem: SyntheticProblem
    losses: list[float]
    step: int = 0


class HDETDriver:
    """Replicas of one run; an interaction is one sync interval of every replica at its own LR.

    After each sync the world averages the replicas, leaving out the diverged ones as the
    worker's NaN guard does.
    """

    name = "hdet"
    config = HDETConfig(replicas=4, alpha=0.3, sync_interval=20)
    total_steps = 300

    def create(self, seed: int, problem: SyntheticProblem) -> tuple[HDETController, HDETWorld]:
        controller = HDETController(
            self.config, total_steps=self.total_steps, lr_bounds=(LR_MIN, LR_MAX), seed=seed
        )
        return controller, HDETWorld(problem, [2.5] * self.config.replicas)

    def step(self, strategy: HDETController, world: HDETWorld) -> dict[str, Any] | None:
        if world.step >= self.total_steps:
            return None
        end = min(world.step + self.config.sync_interval, self.total_steps)
        means = [self._train(strategy, world, r, end) for r in range(self.config.replicas)]
        world.step = end
        decision = strategy.sync(end, means)
        finite = [loss for loss in world.losses if math.isfinite(loss)]
        if finite:
            world.losses = [sum(finite) / len(finite)] * self.config.replicas
        return decision.to_dict()

    @staticmethod
    def _train(strategy: HDETController, world: HDETWorld, replica: int, end: int) -> float:
        loss, total = world.losses[replica], 0.0
        for step in range(world.step, end):
            loss = world.problem.next_loss(loss, strategy.lr(step, replica), step)
            total += loss
        world.losses[replica] = loss
        return total / (end - world.step)


DRIVERS: dict[str, StrategyDriver] = {
    d.name: d for d in (AutoLRSDriver(), PBTDriver(), PBTDriver(synch=True), HDETDriver())
}
