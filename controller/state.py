"""A search's durable state, kept in a ConfigMap the search owns: what the controller must not lose.

It holds what the API cannot be asked again: each member's last report (step, objective,
checkpoint, the answer it got, for idempotency), how many pods each member has had, the PBT
coordinator (its ``state_dict``: the population, the members' start points), the final result
once a member sent it, and the control run's
pod record and result (when ``evaluation.control`` asks for one). The report channel
and the reconciler both write it, always by read-modify-write on the ConfigMap's
``resourceVersion`` (optimistic concurrency), so a restarted controller continues exactly where
its predecessor stopped and two writers never lose each other's updates.

Size stays bounded: one small record per member, the population's event history trimmed to its
last :data:`HISTORY_KEEP` entries (Events carry the rest), and the coordinator compressed.

A state written before the coordinator held the start points (a bare population in
:data:`POPULATION_KEY`, each member's start point in its record) is migrated as it is read.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
from dataclasses import dataclass, field
from typing import Any

from schedsearch.trainers.evaluation import Phases
from schedsearch.trainers.strategies.pbt import coordinator as pbt_coordinator
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.pbt.population import Population

STATE_KEY = "state.json"
POPULATION_KEY = "population.json.gz"
HISTORY_KEEP = 200
FORMAT = 1
# The API server refuses a ConfigMap whose data and binaryData hold more than 1 MiB together.
CONFIGMAP_LIMIT_BYTES = 1024 * 1024
# About what one member's record grows to once it reports (its last answer, start point and
# checkpoint paths): a new search must leave that much room per member.
MEMBER_RECORD_BYTES = 600
# A running search fails when its state passes this share of the limit: one report adds far
# less than the rest, so this happens before a write is refused.
RUNNING_LIMIT_SHARE = 0.9


class StateTooLarge(ValueError):
    """The state would not fit in its ConfigMap."""


@dataclass
class MemberRecord:
    """What the controller knows of one member beyond its pod."""

    step: int = 0
    objective: float | None = None
    lr: float | None = None
    checkpoint: str | None = None
    member_steps: int = 0
    attempts: int = 0
    # The attempts whose pods failed (crashed): what failurePolicy.maxMemberRestarts counts.
    # Attempts ended by a disruption or a deletion are not here.
    failed: list[int] = field(default_factory=list)
    finished: bool = False
    fatal: str | None = None
    # Set by the reconciler when the member used up its restarts.
    gave_up: bool = False
    # The last report applied (its sequence number and key) and the answer it got.
    last_seq: int = 0
    last_key: str | None = None
    last_answer: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.finished or self.fatal is not None or self.gave_up


@dataclass
class SearchState:
    """Everything in the state ConfigMap, as Python data."""

    search_uid: str
    strategy: str
    members: dict[int, MemberRecord]
    # The spec the search started with: members restarted later run the same spec even if the
    # object was edited meanwhile (an edit cannot apply to members already half-way through).
    spec: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    # The PBT coordinator's ``state_dict`` (None for the other strategies).
    population: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    # The control run's pod, counted like a member's (attempts, failures, its last report), and
    # what it found (``ControlResult`` data, non-finite objectives as None) once it reported.
    control: MemberRecord = field(default_factory=MemberRecord)
    control_result: dict[str, Any] | None = None
    resource_version: str | None = field(default=None, compare=False)
    # The coordinator built from ``population`` for reading (see :func:`read_coordinator`),
    # with the population dict it was built from: valid while that dict is ``population``.
    _reader: tuple[dict[str, Any], pbt_coordinator.Coordinator] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def copy(self) -> SearchState:
        """A copy safe to change: new member records; the population and result dicts are
        shared, since changes replace them rather than edit them in place (and so is the
        coordinator read from that population)."""
        members = {i: dataclasses.replace(r) for i, r in self.members.items()}
        new = dataclasses.replace(self, members=members, control=dataclasses.replace(self.control))
        new._reader = self._reader
        return new

    @property
    def control_index(self) -> int:
        """The member index the control run's pod reports under: the one after the last member.

        The report channel keys idempotency and sequence numbers by member index, and every pod
        presents the search's one token; the next free index gives the control a slot of its
        own without a second channel or a second token, and can never be a member's.
        """
        return len(self.members)

    def member(self, index: int) -> MemberRecord:
        if index not in self.members:
            raise KeyError(f"member: must be in 0..{len(self.members) - 1}, got {index}")
        return self.members[index]

    def record(self, index: int) -> MemberRecord:
        """The record of a member, or of the control run at :attr:`control_index`."""
        return self.control if index == self.control_index else self.member(index)

    # -- ConfigMap encoding ----------------------------------------------------------------------

    def to_configmap(self) -> tuple[dict[str, str], dict[str, str]]:
        """(data, binaryData) of the ConfigMap."""
        members = {str(i): _record_json(r) for i, r in sorted(self.members.items())}
        doc = {
            "format": FORMAT,
            "searchUID": self.search_uid,
            "strategy": self.strategy,
            "spec": self.spec,
            "generation": self.generation,
            "members": members,
            "result": self.result,
        }
        if self.control != MemberRecord() or self.control_result is not None:
            doc["control"] = {"record": _record_json(self.control), "result": self.control_result}
        data = {STATE_KEY: json.dumps(doc, sort_keys=True, separators=(",", ":"))}
        binary: dict[str, str] = {}
        if self.population is not None:
            raw = json.dumps(_trimmed(self.population), separators=(",", ":")).encode()
            binary[POPULATION_KEY] = base64.b64encode(gzip.compress(raw, mtime=0)).decode()
        return data, binary

    @classmethod
    def from_configmap(cls, obj: dict[str, Any]) -> SearchState:
        """Parse a ConfigMap read from the API (raises ValueError when it is not ours)."""
        data = obj.get("data") or {}
        if STATE_KEY not in data:
            raise ValueError(f"configmap has no {STATE_KEY}")
        doc = json.loads(data[STATE_KEY])
        population = None
        blob = (obj.get("binaryData") or {}).get(POPULATION_KEY)
        if blob is not None:
            population = json.loads(gzip.decompress(base64.b64decode(blob)))
        raw = {int(i): dict(r) for i, r in doc["members"].items()}
        starts = {i: r.pop("start", None) for i, r in raw.items()}
        if population is not None and population.get("format") is None:
            population = _migrated(population, raw, starts)
        members = {i: MemberRecord(**r) for i, r in raw.items()}
        control = doc.get("control") or {}
        meta = obj.get("metadata") or {}
        return cls(
            search_uid=str(doc["searchUID"]),
            strategy=str(doc["strategy"]),
            members=members,
            spec=dict(doc.get("spec") or {}),
            generation=int(doc.get("generation") or 0),
            population=population,
            result=doc.get("result"),
            control=MemberRecord(**(control.get("record") or {})),
            control_result=control.get("result"),
            resource_version=meta.get("resourceVersion"),
        )


def configmap_bytes(data: dict[str, str], binary: dict[str, str]) -> int:
    """What the API server counts against :data:`CONFIGMAP_LIMIT_BYTES`: keys and values."""
    return sum(len(k) + len(v.encode()) for part in (data, binary) for k, v in part.items())


def check_size(data: dict[str, str], binary: dict[str, str]) -> None:
    """Raise :class:`StateTooLarge` rather than send a ConfigMap the API server would refuse."""
    size = configmap_bytes(data, binary)
    if size > CONFIGMAP_LIMIT_BYTES:
        raise StateTooLarge(
            f"the search's state is {size} bytes, over the {CONFIGMAP_LIMIT_BYTES} bytes a "
            "ConfigMap holds"
        )


def size_problem(size: int, members: int, *, new: bool) -> str | None:
    """Why a state of ``size`` bytes (:func:`configmap_bytes`) with ``members`` members cannot
    be kept in a ConfigMap, or None.

    A ``new`` state must leave room for every member's record to grow as it reports; a
    running one must stay under :data:`RUNNING_LIMIT_SHARE` of the limit."""
    if new:
        size += MEMBER_RECORD_BYTES * members
        limit = CONFIGMAP_LIMIT_BYTES
    else:
        limit = int(CONFIGMAP_LIMIT_BYTES * RUNNING_LIMIT_SHARE)
    if size <= limit:
        return None
    return (
        f"the search's state {'would need' if new else 'has grown to'} about {size // 1024} KiB "
        f"for {members} member(s), over the {limit // 1024} KiB its ConfigMap may hold"
    )


_RECORD_FIELDS = dataclasses.fields(MemberRecord)


def _record_json(record: MemberRecord) -> dict[str, Any]:
    # Absent means default; `is` so that an objective of 0.0 is kept. The values themselves,
    # not copies (``asdict`` deep-copies each answer): they are only encoded.
    values = ((f.name, getattr(record, f.name)) for f in _RECORD_FIELDS)
    return {k: v for k, v in values if v is not None and v is not False and v != []}


def _trimmed(coordinator: dict[str, Any]) -> dict[str, Any]:
    population = coordinator["population"]
    history = population.get("history") or []
    if len(history) <= HISTORY_KEEP:
        return coordinator
    return {**coordinator, "population": {**population, "history": history[-HISTORY_KEEP:]}}


def _migrated(
    population: dict[str, Any],
    records: dict[int, dict[str, Any]],
    starts: dict[int, dict[str, Any] | None],
) -> dict[str, Any]:
    """The coordinator state of a search stored with a bare population: the start points come
    from the member records that held them, the positions from the members' last steps."""
    coordinator = pbt_coordinator.Coordinator.around(_load_population(population))
    for member, start in starts.items():
        if start is not None:
            coordinator.starts[member] = pbt_coordinator.StartPoint.from_dict(start)
        coordinator.positions[member] = int(records[member].get("step") or 0)
    coordinator.member_steps = sum(int(r.get("member_steps") or 0) for r in records.values())
    return coordinator.state_dict()


# -- the initial state of a search --------------------------------------------------------------


def initial(
    *,
    search_uid: str,
    strategy: str,
    members: int,
    spec: dict[str, Any],
    generation: int,
    pbt: PBTConfig | None = None,
    lr_min: float = 0.0,
    lr_max: float = 0.0,
    total_steps: int = 0,
    mode: str = "min",
    phases: Phases | None = None,
) -> SearchState:
    """A fresh state; PBT searches get their coordinator (seeded, so this is deterministic)."""
    records = {i: MemberRecord() for i in range(members)}
    state = SearchState(search_uid, strategy, records, dict(spec), generation)
    if pbt is not None:
        live = pbt_coordinator.Coordinator(
            pbt,
            lr_min=lr_min,
            lr_max=lr_max,
            total_steps=total_steps,
            mode=_mode(mode),
            phases=phases,
        )
        state.population = live.state_dict()
        # Unchanged from here on, it is what read_coordinator would build from that population.
        state._reader = (state.population, live)
    return state


def _load_population(state: dict[str, Any]) -> Population:
    """The live PBT population of a stored ``Population.state_dict``."""
    config = PBTConfig.model_validate(state["config"])
    population = Population(
        config,
        float(state["lrMin"]),
        float(state["lrMax"]),
        int(state["totalSteps"]),
        mode=_mode(state["mode"]),
    )
    population.load_state_dict(state)
    return population


def coordinator(state: SearchState) -> pbt_coordinator.Coordinator:
    """The live PBT coordinator of ``state`` (which must be a PBT search's), a new one to
    change (the caller stores its ``state_dict`` as the new population)."""
    if state.population is None:
        raise ValueError(f"strategy {state.strategy}: the search has no PBT coordinator")
    return pbt_coordinator.Coordinator.from_state(state.population)


def read_coordinator(state: SearchState) -> pbt_coordinator.Coordinator:
    """The PBT coordinator of ``state`` for questions only (start points, the best member),
    never to be changed: built once per population, since one plan asks it many times (each
    new member's start point, the best member so far) and building it is no small cost."""
    population = state.population
    if population is None:
        raise ValueError(f"strategy {state.strategy}: the search has no PBT coordinator")
    if state._reader is None or state._reader[0] is not population:
        state._reader = (population, pbt_coordinator.Coordinator.from_state(population))
    return state._reader[1]


def give_up(state: SearchState, member: int) -> bool:
    """Mark ``member`` failed for good, in the record and in the PBT population (where it stops
    being a copy source); False when both already say so. Changes ``state`` in place."""
    record = state.record(member)
    changed = not record.gave_up
    record.gave_up = True
    if state.population is not None and in_population(state, member):
        live = coordinator(state)
        live.fail(member)
        state.population = live.state_dict()
        changed = True
    return changed


def in_population(state: SearchState, member: int) -> bool:
    """Whether the PBT population still counts ``member`` as training (False without one, and
    for the control run, which is no member of it)."""
    if state.population is None:
        return False
    members = state.population["population"]["members"]
    if str(member) not in members:
        return False
    return not (members[str(member)].get("finished") or members[str(member)].get("stopped"))


def named_checkpoints(state: SearchState, source: int) -> list[str]:
    """The checkpoints of ``source`` that another member's start point names: that member was
    told to copy one and has not saved a checkpoint of its own since, so a replacement pod of it
    would load that very file. ``source`` must keep them, however old (its answers say so)."""
    done = frozenset(m for m, r in state.members.items() if r.done)
    return read_coordinator(state).named_checkpoints(source, skip=done)


def start_point(state: SearchState, member: int) -> dict[str, Any] | None:
    """Where a (re)started PBT member resumes (the coordinator's start point: its last
    checkpoint, or the checkpoint it was last told to copy, with its config), and the steps it
    trained so far; None without a coordinator."""
    if state.population is None:
        return None
    start = read_coordinator(state).start_point(member)
    return {**start.to_dict(), "memberSteps": state.members[member].member_steps}


def _mode(mode: str) -> Any:
    if mode not in ("min", "max"):
        raise ValueError(f"objective.mode must be min or max, got {mode!r}")
    return mode
