"""What one reconcile pass reuses instead of building again: the PBT coordinator it reads, a
search's parsed spec, the state's size as stored; each must follow a change of what it came from.
"""

from __future__ import annotations

import pytest

from schedsearch.controller import observe, plan, results
from schedsearch.controller import state as state_mod
from schedsearch.trainers.strategies.pbt.coordinator import Coordinator

from .controller_fixtures import (  # noqa: F401
    CONFIG,
    UID,
    _builtin_workloads,
    checkpoint,
    deliver,
    fresh_state,
    observed,
    raw_spec,
    view,
)


def test_the_coordinator_read_from_a_state_is_built_once_per_population() -> None:
    state = fresh_state(view("pbt"))
    reader = state_mod.read_coordinator(state)
    assert state_mod.read_coordinator(state) is reader
    # A fresh state's reader is the coordinator it was made from: it answers as one built
    # from the stored population does.
    assert state.population is not None
    stored = Coordinator.from_state(state.population)
    assert [reader.start_point(m) for m in range(4)] == [stored.start_point(m) for m in range(4)]
    # A copy shares the population, and so the reader.
    assert state_mod.read_coordinator(state.copy()) is reader


def test_a_replaced_population_is_read_afresh() -> None:
    state = fresh_state(view("pbt"))
    assert results.best_so_far(state, "min") is None  # no member reported yet
    before = state_mod.read_coordinator(state)
    state = deliver(state, checkpoint(2, 100, 0.25)).state
    assert state_mod.read_coordinator(state) is not before
    best = results.best_so_far(state, "min")
    assert best is not None and (best.member, best.objective, best.step) == (2, 0.25, 100)
    # Giving up on a member replaces the population too: it is no longer read as training.
    state_mod.give_up(state, 2)
    assert state_mod.read_coordinator(state).population.members[2].stopped


def test_a_state_read_from_its_configmap_reads_its_own_population() -> None:
    state = deliver(fresh_state(view("pbt")), checkpoint(1, 100, 0.5)).state
    data, binary = state.to_configmap()
    read = state_mod.SearchState.from_configmap({"data": data, "binaryData": binary})
    best = results.best_so_far(read, "min")
    assert best is not None and best.member == 1


def test_a_spec_is_parsed_once_per_search_and_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observe, "_parsed", type(observe._parsed)())
    spec, problems = observe.parse_spec(raw_spec("pbt"), search_uid=UID)
    assert spec is not None and not problems
    again, _ = observe.parse_spec(raw_spec("pbt"), search_uid=UID)
    assert again is spec
    # An edit is another text, parsed afresh...
    edited, _ = observe.parse_spec(raw_spec("pbt", seed=7), search_uid=UID)
    assert edited is not None and edited.seed == 7 and spec.seed == 0
    # ... and so is another search's spec, even the same one.
    assert observe.parse_spec(raw_spec("pbt"), search_uid="another")[0] is not spec
    # A spec that cannot run keeps its problems.
    bad = raw_spec("pbt", budget={"steps": 0})
    for _ in range(2):
        none, problems = observe.parse_spec(bad, search_uid=UID)
        assert none is None and any(p.startswith("spec.budget.steps") for p in problems)


def test_parsed_specs_are_kept_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observe, "_parsed", type(observe._parsed)())
    monkeypatch.setattr(observe, "SPECS_KEPT", 2)
    first, _ = observe.parse_spec(raw_spec("pbt"), search_uid="a")
    observe.parse_spec(raw_spec("pbt"), search_uid="b")
    observe.parse_spec(raw_spec("pbt"), search_uid="c")
    assert len(observe._parsed) == 2
    assert observe.parse_spec(raw_spec("pbt"), search_uid="a")[0] is not first


def test_a_running_state_is_measured_as_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_mod, "CONFIGMAP_LIMIT_BYTES", 60_000)
    search = view("pbt")
    seen = observed(search)
    stored = state_mod.configmap_bytes(*seen.state.to_configmap()) if seen.state else 0
    fits = plan.plan(search, seen, config=CONFIG)
    assert fits.status is None or fits.status.phase != "Failed"
    # The same state, stored at a size past the running share of the limit, fails the search.
    grown = observe.Observed(now=seen.now, secret=True, state=seen.state, state_bytes=59_000)
    assert stored < 59_000
    failed = plan.plan(search, grown, config=CONFIG)
    assert failed.status is not None and failed.status.phase == "Failed"
    assert "has grown to about 57 KiB" in failed.status.message
