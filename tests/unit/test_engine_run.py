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


def test_a_new_search_is_recorded_only_once_the_engine_is_up(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    registration = _register(store, _search(), resume=False)
    assert registration == run.Registration(exists=False)
    assert store.list_searches() == []  # nothing written yet
    run._record_start(store, _search(), registration)
    assert store.get_search("s").phase == "Running"


def _recorded(store: SQLiteStore, search: api.ScheduleSearch, phase: Any = "Running") -> None:
    run._record_start(store, search, run.Registration(exists=False))
    store.set_phase(search.name, phase)


def test_running_an_existing_search_again_needs_resume(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    _recorded(store, _search(), "Interrupted")
    with pytest.raises(SearchExistsError, match=r"already exists \(Interrupted\).*--resume"):
        _register(store, _search(), resume=False)


def test_resume_returns_the_saved_state(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    _recorded(store, _search(), "Interrupted")
    saved = state.EngineState("autolrs", tmp_path / "runs" / "s", {"checkpointDir": "x"})
    store.save_engine_state("s", saved.to_bytes())
    assert _register(store, _search(), resume=True) == run.Registration(True, saved)


@pytest.mark.parametrize("resume", [False, True])
def test_a_succeeded_search_says_so_and_how_to_run_it_again(tmp_path: Path, resume: bool) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    _recorded(store, _search(), "Succeeded")
    with pytest.raises(StoreError) as refused:
        _register(store, _search(), resume=resume)
    message = str(refused.value)
    assert "already succeeded" in message and "--name s-2" in message
    assert "schedsearch delete s" in message and "resume it" not in message


def test_resume_of_a_missing_search_starts_it(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    assert _register(store, _search(), resume=True) == run.Registration(exists=False)


class _Options:
    def __init__(self, store_path: Path, address: str | None) -> None:
        self.store_path, self.ray_address, self.resume = store_path, address, False


def test_a_cluster_that_cannot_be_joined_leaves_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    store = SQLiteStore(tmp_path / "r.db")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        options = _Options(tmp_path / "r.db", address)
        for _ in range(2):  # the retry meets the same error, not a name taken by a record
            with pytest.raises(run.RayConnectError, match="nothing answers"):
                run.run_search(
                    _search(), options=options, store=store, console=Console(file=io.StringIO())
                )
    assert store.list_searches() == []


class _StoppedJob:
    """A job interrupted after its members trained: what ``progress`` reports."""

    def progress(self) -> Any:
        from schedsearch.engine import jobs
        from schedsearch.trainers.schedules import ScheduleBuilder

        schedule = ScheduleBuilder().set_lr(0, 0.05).build(100)
        best = jobs.BestSoFar(objective=0.25, member=1, step=60, schedule=schedule)
        return jobs.ProgressSoFar(member_steps=240, best=best)


def test_an_interrupted_search_keeps_its_cost_and_best_so_far(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    _recorded(store, _search())
    run._keep_progress(store, "s", _StoppedJob())  # type: ignore[arg-type]
    record = store.get_search("s")
    assert record.member_steps == 240
    assert (record.best_objective, record.best_member, record.best_step) == (0.25, 1, 60)
    assert store.best_schedule("s").schedule.lr_at(10) == pytest.approx(0.05)


def test_a_pbt_job_reports_its_cost_and_best_member_so_far(tmp_path: Path) -> None:
    from schedsearch.engine import jobs

    search = _search(strategy={"pbt": {"population": 2, "perturbationInterval": 10}})
    job = jobs.make_job(search, tmp_path, None)
    assert job.progress() == jobs.ProgressSoFar(member_steps=0, best=None)
    coordinator = job._local  # type: ignore[attr-defined]
    coordinator.report(0, 10, 0.5, str(tmp_path / "a.pt"))
    coordinator.report(1, 10, 0.3, str(tmp_path / "b.pt"))
    so_far = job.progress()
    assert so_far.member_steps == coordinator.outcome()["memberSteps"] >= 20
    assert so_far.best is not None and (so_far.best.member, so_far.best.step) == (1, 10)
    assert so_far.best.objective == pytest.approx(0.3)


def test_an_autolrs_job_counts_the_steps_its_trial_reports(tmp_path: Path) -> None:
    from schedsearch.engine import jobs

    job = jobs.make_job(_search(), tmp_path, None)
    # A probe goes back to its stage start and trains forward again: both count.
    for step in (10, 20, 10, 30):
        job.on_result({"progress": [[0, step, 1.0, 0.1, None]]})
    assert job.progress().member_steps == 10 + 10 + 20


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
