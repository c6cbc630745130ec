"""What `schedsearch run` decides before Ray starts: new search, resume, or refusal."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from schedsearch.api import spec as api
from schedsearch.engine import run, state
from schedsearch.store.base import SearchExistsError, StoreError
from schedsearch.store.sqlite import SQLiteStore


def _search(name: str = "s", strategy: dict[str, Any] | None = None) -> api.ScheduleSearch:
    return api.ScheduleSearch.model_validate(
        {
            "apiVersion": "schedsearch.io/v1alpha1",
            "kind": "ScheduleSearch",
            "metadata": {"name": name},
            "spec": {
                "workload": {"builtin": "regression"},
                "budget": {"steps": 100},
                "lrBounds": {"min": 1e-3, "max": 0.5},
                "baseSchedule": {"family": "cosine", "peakLR": 0.05},
                "strategy": strategy or {"autolrs": {"tau": 40, "tauPrime": 10, "tauMax": 80}},
                "checkpoints": {"persistentVolumeClaim": "ckpt"},
            },
        }
    )


def _register(store: SQLiteStore, search: api.ScheduleSearch, resume: bool) -> Any:
    console = Console(file=io.StringIO())
    return run._register(store, search, resume=resume, console=console)


def test_a_new_search_is_created_pending_with_no_state(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    assert _register(store, _search(), resume=False) is None
    assert store.get_search("s").phase == "Pending"


def test_running_an_existing_search_again_needs_resume(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    _register(store, _search(), resume=False)
    with pytest.raises(SearchExistsError, match="already exists"):
        _register(store, _search(), resume=False)


def test_resume_returns_the_saved_state(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    _register(store, _search(), resume=False)
    saved = state.EngineState("autolrs", tmp_path / "runs" / "s", {"checkpointDir": "x"})
    store.save_engine_state("s", saved.to_bytes())
    store.set_phase("s", "Interrupted")
    assert _register(store, _search(), resume=True) == saved


def test_a_succeeded_search_is_not_resumed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    _register(store, _search(), resume=False)
    store.set_phase("s", "Succeeded")
    with pytest.raises(StoreError, match="already succeeded"):
        _register(store, _search(), resume=True)


def test_resume_of_a_missing_search_starts_it(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    assert _register(store, _search(), resume=True) is None
    assert store.get_search("s").phase == "Pending"


def test_a_state_of_another_strategy_is_refused(tmp_path: Path) -> None:
    saved = state.EngineState("hdet", tmp_path, {})
    with pytest.raises(StoreError, match="strategy 'hdet'"):
        run._make_job(_search(), tmp_path, saved)


def test_a_damaged_pbt_state_is_refused_before_ray_starts(tmp_path: Path) -> None:
    pbt = {"pbt": {"population": 2, "perturbationInterval": 10}}
    saved = state.EngineState("pbt", tmp_path, {"format": "schedsearch.io/engine-pbt-v1"})
    with pytest.raises(StoreError, match="unusable saved state"):
        run._make_job(_search(strategy=pbt), tmp_path, saved)


def test_runs_live_beside_the_store_or_where_asked(tmp_path: Path) -> None:
    store_path = tmp_path / "data" / "r.db"
    assert run._run_dir("s", store_path, None, None).parent.name == "runs"
    assert (
        run._run_dir("s", store_path, tmp_path / "elsewhere", None) == tmp_path / "elsewhere" / "s"
    )
    saved = state.EngineState("pbt", tmp_path / "old" / "s", {})
    assert run._run_dir("s", store_path, None, saved) == tmp_path / "old" / "s"


def test_ctrl_c_stops_the_trials_after_the_grace_the_job_asks_for() -> None:
    from schedsearch.engine.interrupt import Interrupt
    from schedsearch.engine.tuning import _InterruptStopper

    now = [100.0]
    halts: list[int] = []
    interrupt = Interrupt()

    def halt() -> float:
        halts.append(1)
        return 30.0

    stopper = _InterruptStopper(interrupt, halt, clock=lambda: now[0])
    assert not stopper.stop_all() and halts == []  # no Ctrl-C: nothing happens
    interrupt.request()
    assert not stopper.stop_all() and halts == [1]  # halted once, trials get 30 s
    now[0] += 29.0
    assert not stopper.stop_all()
    now[0] += 1.0
    assert stopper.stop_all() and halts == [1]
    # A job that asks for no grace (a single trial saving only at safe points) stops at once.
    at_once = Interrupt()
    at_once.request()
    assert _InterruptStopper(at_once, lambda: 0.0, clock=lambda: 0.0).stop_all()
