"""What a search's strategy decided, as plain data for the page: PBT exploits and lineage,
AutoLRS stages, HDET syncs.

The local store keeps these in the engine state it saves for ``run --resume`` (the strategy's own
JSON: the PBT population's event history, the AutoLRS or HDET trial's result history), updated
while the search runs. The cluster keeps no such history (a search's status holds each member's
latest point only), so there, and for a search without saved state, every list is empty and
``recorded`` says so. Unknown or missing fields are skipped, never fatal: the page shows what is
there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from schedsearch.engine import state
from schedsearch.store import ResultsBackend

JSONDict = dict[str, Any]


def strategy_events(backend: ResultsBackend, name: str) -> JSONDict:
    """The events of search ``name`` the backend recorded (see the module docstring)."""
    job = _saved_job(backend, name)
    return from_engine_job(job)


def from_engine_job(job: Mapping[str, Any] | None) -> JSONDict:
    """Events from the strategy's saved state (``None``: nothing recorded)."""
    events: JSONDict = {"recorded": job is not None, "exploits": [], "stages": [], "syncs": []}
    if job is None:
        return events
    population = job.get("population")
    if isinstance(population, Mapping):
        history = _dicts(population.get("history"))
        events["exploits"] = [_exploit(e) for e in history if e.get("event") == "exploit"]
        events["members"] = _ranked_members(population)
        # Annealed-evaluation branches were trained: the objectives ranked are the annealed ones.
        events["rankedBy"] = "annealed" if _number(population.get("annealSteps")) else "raw"
        events["lineage"] = lineage_graph(
            _members_of(population), events["exploits"], _first_lrs(population, events["exploits"])
        )
        return events
    result = job.get("result")
    history = _dicts(result.get("history")) if isinstance(result, Mapping) else []
    events["stages"] = [_stage(e) for e in history if "stage" in e]
    events["syncs"] = [_sync(e) for e in history if e.get("kind") == "Converge"]
    return events


def lineage_graph(
    members: Sequence[int], exploits: Sequence[JSONDict], first_lrs: Mapping[int, float]
) -> JSONDict:
    """Who copied whom: a node is a stretch of one member's training (from step 0, or from the
    exploit that replaced its weights), an edge goes from the stretch that was copied to the one
    that copied it. Nodes are in the order they started."""
    nodes: list[JSONDict] = []
    current: dict[int, str] = {}
    for member in members:
        node_id = f"{member}@0"
        nodes.append({"id": node_id, "member": member, "step": 0, "lr": first_lrs.get(member)})
        current[member] = node_id
    edges: list[JSONDict] = []
    for event in sorted(exploits, key=lambda e: e["step"]):
        src, dst = event["src"], event["dst"]
        node_id = f"{dst}@{event['step']}"
        if any(node["id"] == node_id for node in nodes):
            node_id = f"{node_id}#{len(nodes)}"  # copied twice at one step: still two nodes
        nodes.append({"id": node_id, "member": dst, "step": event["step"], "lr": event["newLR"]})
        if src in current:
            edges.append({"from": current[src], "to": node_id, "step": event["step"]})
        current[dst] = node_id
    return {"nodes": nodes, "edges": edges}


def _saved_job(backend: ResultsBackend, name: str) -> Mapping[str, Any] | None:
    load = getattr(backend, "load_engine_state", None)
    if load is None:
        return None
    blob = load(name)
    if blob is None:
        return None
    try:
        return state.EngineState.from_bytes(blob).job
    except (KeyError, TypeError, ValueError):
        return None  # an unreadable state shows as "not recorded", as no state does


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [e for e in value if isinstance(e, Mapping)] if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _members_of(population: Mapping[str, Any]) -> list[int]:
    members = population.get("members")
    return sorted(int(m) for m in members) if isinstance(members, Mapping) else []


def _ranked_members(population: Mapping[str, Any]) -> list[JSONDict]:
    """Each member's step, LR and the objective PBT last ranked it by."""
    members = population.get("members")
    if not isinstance(members, Mapping):
        return []
    rows = []
    for member in sorted(members, key=int):
        data = members[member]
        if not isinstance(data, Mapping):
            continue
        config = data.get("config")
        status = "finished" if data.get("finished") else "stopped" if data.get("stopped") else ""
        rows.append(
            {
                "member": int(member),
                "step": int(data.get("step", 0)),
                "lr": _number(config.get("lr")) if isinstance(config, Mapping) else None,
                "objective": _number(data.get("objective")),
                "status": status or "training",
            }
        )
    return rows


def _first_lrs(population: Mapping[str, Any], exploits: Sequence[JSONDict]) -> dict[int, float]:
    """The LR each member started with. A member's LR changes only when it exploits, so that is
    the LR it left at its first exploit; a member that never exploited still has its own
    lineage, whose first LR after the warm-up is it."""
    lrs: dict[int, float] = {}
    for event in sorted(exploits, key=lambda e: e["step"], reverse=True):
        if event["oldLR"] is not None:
            lrs[event["dst"]] = event["oldLR"]
    lineage = population.get("lineage")
    if not isinstance(lineage, Mapping):
        return lrs
    for member, entry in lineage.items():
        points = _dicts(entry.get("points")) if isinstance(entry, Mapping) else []
        first = next((lr for lr in (_number(p.get("lr")) for p in points) if lr), None)
        if first is not None:
            lrs.setdefault(int(member), first)
    return lrs


def _exploit(event: Mapping[str, Any]) -> JSONDict:
    return {
        "step": int(event.get("step", 0)),
        "src": int(event.get("src", -1)),
        "dst": int(event.get("dst", -1)),
        "reason": str(event.get("reason", "")),
        "oldLR": _number(event.get("oldLR")),
        "newLR": _number(event.get("newLR")),
        "explore": event.get("explore"),
    }


def _stage(entry: Mapping[str, Any]) -> JSONDict:
    candidates = [
        {
            "lr": _number(c.get("lr")),
            "forecast": _number(c.get("forecast")),
            "diverged": bool(c.get("diverged", False)),
        }
        for c in _dicts(entry.get("candidates"))
    ]
    return {
        "stage": int(entry.get("stage", 0)),
        "startStep": int(entry.get("startStep", 0)),
        "steps": int(entry.get("tau", 0)),
        "probeSteps": int(entry.get("tauPrime", 0)),
        "lr": _number(entry.get("lr")),
        "candidates": candidates,
        "failedCommits": [_number(v) for v in entry.get("failedCommits") or []],
    }


def _sync(entry: Mapping[str, Any]) -> JSONDict:
    def numbers(key: str) -> list[float | None]:
        value = entry.get(key)
        return [_number(v) for v in value] if isinstance(value, list) else []

    return {
        "step": int(entry.get("step", 0)),
        "baseLR": _number(entry.get("base_lr")),
        "multipliers": numbers("multipliers"),
        "losses": numbers("losses"),
        "autoLR": entry.get("auto_lr"),
    }
