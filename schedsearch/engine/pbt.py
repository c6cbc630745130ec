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

The coordinator itself (start points, restart points when a file is gone, cost, halt, result)
is ``trainers.strategies.pbt.coordinator.Coordinator``, the one the cluster controller keeps in
a search's state too; this module adds only what a Ray run needs: gathering the members' trials
before they train.
"""

from __future__ import annotations

from typing import Any

from schedsearch.trainers.strategies.pbt.coordinator import Coordinator


class PBTCoordinator(Coordinator):
    """The coordinator as the engine's Ray actor: every member trial talks to this one instance
    (Ray runs an actor's calls one at a time), which also tracks which trials are up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Takes ``Coordinator``'s arguments."""
        super().__init__(*args, **kwargs)
        # Members present in this run (not state: every run gathers its members again).
        self.arrived: set[int] = set()
        # Members whose trials Ray has given resources to (their processes are starting).
        self.placed: set[int] = set()

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
