"""What every search strategy shares: decisions as data, the strategy protocol, results, reporters.

A strategy is a pure object: the runner tells it what happened (losses, objectives, checkpoints)
and asks it what to do next; the answer is one of the frozen dataclasses below, which the runner
(local process, Ray, or the cluster's coordinator) carries out. Nothing here touches torch, so
decisions and states can cross a network or be written to a status subresource as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO, runtime_checkable

from schedsearch.trainers import schedules

JSONDict = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# PBT decisions: the answer to one member's report.


@dataclass(frozen=True)
class Continue:
    """Keep training with the current configuration."""


@dataclass(frozen=True)
class Exploit:
    """Member ``dst`` loads ``src``'s checkpoint (taken at ``src_step``) and continues with
    ``new_config``. The checkpoint path travels with the decision so a remote member can load it.
    """

    src: int
    dst: int
    new_config: dict[str, float]
    src_step: int
    checkpoint_path: str


@dataclass(frozen=True)
class Stop:
    """Stop this member for good (it diverged and no member can be copied)."""

    reason: str


@dataclass(frozen=True)
class Wait:
    """Synchronous mode: pause until the whole population reached the interval, then poll."""


PBTDecision = Continue | Exploit | Stop | Wait

# ---------------------------------------------------------------------------------------------
# AutoLRS decisions: what the single trainer does next.


@dataclass(frozen=True)
class TryCandidate:
    """Restore the stage checkpoint and train ``steps`` steps at ``lr`` to probe it.

    ``val_every`` is None when the stage forecasts training loss, else the number of steps
    between validation measurements the forecast is fitted to.
    """

    stage: int
    index: int
    lr: float
    steps: int
    val_every: int | None


@dataclass(frozen=True)
class Commit:
    """Restore the stage checkpoint and train ``steps`` steps at ``lr``, applied from step one."""

    stage: int
    lr: float
    steps: int


@dataclass(frozen=True)
class Finished:
    """The training budget is spent; the applied schedule is final."""


AutoLRSDecision = TryCandidate | Commit | Finished

_DECISION_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (Continue, Exploit, Stop, Wait, TryCandidate, Commit, Finished)
}


def decision_to_dict(decision: object) -> JSONDict:
    """A decision as JSON data: its fields plus ``kind`` (the class name)."""
    if type(decision).__name__ not in _DECISION_TYPES:
        raise TypeError(f"not a decision: {decision!r}")
    return {"kind": type(decision).__name__, **dataclasses.asdict(decision)}  # type: ignore[call-overload]


def decision_from_dict(data: JSONDict) -> Any:
    """Inverse of :func:`decision_to_dict`."""
    fields = dict(data)
    kind = fields.pop("kind", None)
    if kind not in _DECISION_TYPES:
        raise ValueError(f"decision kind must be one of {sorted(_DECISION_TYPES)}, got {kind!r}")
    return _DECISION_TYPES[kind](**fields)


# ---------------------------------------------------------------------------------------------
# The strategy protocol and the result of a search.


@runtime_checkable
class SearchStrategy(Protocol):
    """A resumable search: its whole state is plain JSON data."""

    def state_dict(self) -> JSONDict:
        """Everything needed to continue exactly where it stopped, JSON-serialisable."""
        ...

    def load_state_dict(self, state: JSONDict) -> None:
        """Replace this object's state by one produced by :meth:`state_dict`."""
        ...

    def schedule(self) -> schedules.Schedule:
        """The schedule found (or applied) so far."""
        ...


@dataclass
class SearchResult:
    """The outcome of one search, whichever the strategy.

    ``member_steps`` is the search's whole cost: optimiser steps summed over every member,
    candidate probe and replica, to compare against the ``steps`` of the found schedule.
    """

    strategy: str  # the strategy's name in ``registry``
    workload: str
    best_schedule: schedules.Schedule
    best_objective: float
    best_member: int
    member_steps: int
    history: list[JSONDict] = field(default_factory=list)
    wall_seconds: float = 0.0
    # Of ``member_steps``: the steps of annealed-evaluation branches (thrown away after use).
    evaluation_steps: int = 0

    def to_dict(self) -> JSONDict:
        return {
            "strategy": self.strategy,
            "workload": self.workload,
            "bestSchedule": self.best_schedule.to_dict(),
            "bestObjective": _json_float(self.best_objective),
            "bestMember": self.best_member,
            "memberSteps": self.member_steps,
            "wallSeconds": round(self.wall_seconds, 3),
            "evaluationSteps": self.evaluation_steps,
            "history": self.history,
        }


def _json_float(value: float) -> float | None:
    """JSON has no NaN/inf: a non-finite objective is written as null."""
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# Live progress.

EventKind = Literal[
    "start", "stage", "candidate", "commit", "exploit", "diverged", "stopped", "finished"
]


def write_state(path: Path, state: JSONDict) -> None:
    """Write a search's saved ``state`` to ``path`` as JSON, atomically: a reader (a resumed
    search) sees the previous file or this one, never a part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, allow_nan=False))
    tmp.replace(path)


def read_state(path: Path, state_format: str, what: str) -> JSONDict | None:
    """The state saved at ``path`` (None: nothing saved there yet); a file of another kind is
    refused. ``what`` names the search in the error ("a law search")."""
    if not path.exists():
        return None
    saved: JSONDict = json.loads(path.read_text())
    if saved.get("format") != state_format:
        raise ValueError(f"out: {path} is not {what}'s state ({saved.get('format')!r})")
    return saved


def check_same_search(saved: JSONDict, wanted: JSONDict, out: Path, what: str) -> None:
    """Refuse to resume a saved search that is not the one asked for, naming the first field
    of ``wanted`` whose saved value differs."""
    for key, value in wanted.items():
        if saved.get(key) != value:
            raise ValueError(
                f"out: {out} holds {what} with {key}={saved.get(key)!r}, not {value!r}; use "
                "another directory to start a new search"
            )


class Reporter(Protocol):
    """What runners call while they train; implementations print, log, or publish metrics."""

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        """A member (or candidate, or replica) reached ``step``; called every few steps."""
        ...

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        """Something happened that changes the search: a stage began, an exploit, a divergence."""
        ...


class NullReporter:
    """Reports nothing."""

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        pass

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        pass


class TextReporter:
    """Plain lines on a stream; progress is printed every ``every`` steps to keep logs short."""

    def __init__(self, stream: TextIO | None = None, *, every: int = 100) -> None:
        self._stream = stream
        self._every = max(1, every)

    @property
    def stream(self) -> TextIO:
        # Resolved late so pytest's capture and redirections made after construction still apply.
        return self._stream if self._stream is not None else sys.stderr

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        if step % self._every != 0 and val_loss is None:
            return
        val = f" val_loss={val_loss:.4f}" if val_loss is not None else ""
        print(f"[member {member}] step {step} loss={loss:.4f} lr={lr:.3g}{val}", file=self.stream)

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        print(f"[{kind}] {message}", file=self.stream)
