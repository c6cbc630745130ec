"""The SQLite results store: round trips, atomic final result, concurrent writers, resume state."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from schedsearch.api import ScheduleSearch, load_spec
from schedsearch.store import (
    HistoryPoint,
    NotFoundError,
    ResultsBackend,
    SearchExistsError,
    SQLiteStore,
    StoreError,
    default_store_path,
    member_summaries,
)
from schedsearch.store import sqlite as sqlite_store
from schedsearch.store.reporter import StoreReporter
from schedsearch.trainers.schedules import ScheduleBuilder

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "examples" / "digits-pbt.yaml"


def search_named(name: str) -> ScheduleSearch:
    data = load_spec(SPEC).to_wire()
    data["metadata"]["name"] = name
    return ScheduleSearch.model_validate(data)


def lineage(total: int = 600):  # type: ignore[no-untyped-def]
    builder = ScheduleBuilder().set_lr(0, 0.05).set_lr(200, 0.06).set_lr(400, 0.012)
    return builder.build(total, {"lineage": [0, 2, 2]})


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "results.db")


def test_store_is_a_results_backend(store: SQLiteStore) -> None:
    assert isinstance(store, ResultsBackend)


def test_search_round_trip(store: SQLiteStore) -> None:
    search = search_named("alpha")
    created = store.create_search(search)
    assert (created.phase, created.strategy, created.workload) == (
        "Pending",
        "pbt",
        search.spec.workload.ref,
    )
    assert created.spec == search.to_wire()
    assert created.parsed() == search
    store.set_phase("alpha", "Running")
    store.append_history(
        "alpha",
        [HistoryPoint(1, 100, 0.05, 1.5, 1.4), HistoryPoint(0, 100, 0.05, 1.6, None)],
        member_steps=200,
    )
    record = store.get_search("alpha")
    assert record.phase == "Running" and record.started_at is not None
    assert record.member_steps == 200
    assert [(p.member, p.step) for p in store.history("alpha")] == [(0, 100), (1, 100)]
    assert [r.name for r in store.list_searches()] == ["alpha"]


def test_final_result_and_best_schedule_with_provenance(store: SQLiteStore) -> None:
    store.create_search(search_named("alpha"))
    schedule = lineage()
    store.finish("alpha", schedule=schedule, objective=0.25, member=2, member_steps=2400)
    record = store.get_search("alpha")
    assert (record.phase, record.best_objective, record.best_member) == ("Succeeded", 0.25, 2)
    assert record.best_step == 600 and record.completed_at is not None
    best = store.best_schedule("alpha")
    assert best.name == "alpha-best"
    assert best.schedule.points == schedule.points
    assert [best.schedule.lr_at(s) for s in range(600)] == schedule.lrs()
    p = best.provenance
    assert (p.search, p.strategy, p.member) == ("alpha", "pbt", 2)
    assert p.objective is not None and (p.objective.metric, p.objective.value) == ("val_loss", 0.25)
    assert best.schedule.provenance["lineage"] == [0, 2, 2]
    status = record.status()
    assert status.best is not None and status.best.schedule == "alpha-best"
    assert status.phase == "Succeeded" and status.member_steps == 2400


def test_the_control_in_the_best_schedule_is_in_the_record_and_its_status(
    store: SQLiteStore,
) -> None:
    store.create_search(search_named("alpha"))
    assert store.get_search("alpha").control is None
    control = {
        "seed": 1_000_003,
        "metric": "val_loss",
        "mode": "min",
        "found": 0.0081,
        "base": 0.0112,
        "steps": 600,
        "summary": "found 0.0081 vs base 0.0112 val_loss on a fresh seed (1000003), -28%",
    }
    schedule = lineage().with_provenance(control=control)
    store.finish("alpha", schedule=schedule, objective=0.25, member=2, member_steps=2400)
    record = store.get_search("alpha")
    assert record.control is not None and record.control.model_dump() == control
    assert record.status().control == record.control
    # A schedule without one (another strategy, the control off) gives none.
    store.create_search(search_named("beta"))
    store.finish("beta", schedule=lineage(), objective=0.25, member=2, member_steps=2400)
    assert store.get_search("beta").control is None


def test_every_stored_schedule_is_listed_even_after_its_search_is_deleted(
    store: SQLiteStore,
) -> None:
    assert store.list_schedules() == []
    for name, objective in (("beta", 0.3), ("alpha", 0.25)):
        store.create_search(search_named(name))
        store.finish(name, schedule=lineage(), objective=objective, member=1, member_steps=10)
    store.create_search(search_named("gamma"))  # no schedule stored yet
    store.delete_search("beta")
    listed = store.list_schedules()
    assert [(s.name, s.search) for s in listed] == [("alpha-best", "alpha"), ("beta-best", "beta")]
    assert listed[1] == store.best_schedule("beta")


def test_reexecuted_steps_replace_history(store: SQLiteStore) -> None:
    store.create_search(search_named("alpha"))
    store.append_history("alpha", [HistoryPoint(0, 100, 0.05, 2.0, 1.9)])
    store.append_history("alpha", [HistoryPoint(0, 100, 0.04, 1.8, 1.7)])  # after a resume
    assert store.history("alpha") == [HistoryPoint(0, 100, 0.04, 1.8, 1.7)]


def test_diverged_losses_are_stored_as_unknown(store: SQLiteStore) -> None:
    store.create_search(search_named("alpha"))
    store.append_history("alpha", [HistoryPoint(0, 10, 0.9, float("nan"), float("inf"))])
    assert store.history("alpha") == [HistoryPoint(0, 10, 0.9, None, None)]


def test_names_are_unique_and_resume_needs_the_same_spec(store: SQLiteStore) -> None:
    search = search_named("alpha")
    store.create_search(search)
    with pytest.raises(SearchExistsError, match="already exists"):
        store.create_search(search)
    assert store.create_search(search, exist_ok=True).name == "alpha"
    data = search.to_wire()
    data["spec"]["budget"]["steps"] = 800
    with pytest.raises(SearchExistsError, match="different spec"):
        store.create_search(ScheduleSearch.model_validate(data), exist_ok=True)


def test_unknown_names_raise_not_found(store: SQLiteStore) -> None:
    for call in (
        lambda: store.get_search("nope"),
        lambda: store.best_schedule("nope"),
        lambda: store.history("nope"),
        lambda: store.set_phase("nope", "Running"),
        lambda: store.load_engine_state("nope"),
    ):
        with pytest.raises(NotFoundError, match="'nope'"):
            call()
    store.create_search(search_named("alpha"))
    with pytest.raises(NotFoundError, match="none stored yet"):
        store.best_schedule("alpha")


def test_unknown_phase_is_refused(store: SQLiteStore) -> None:
    store.create_search(search_named("alpha"))
    with pytest.raises(ValueError, match="phase: 'Done' is not one of"):
        store.set_phase("alpha", "Done")  # type: ignore[arg-type]


def test_engine_state_blob_round_trips_and_is_replaced(store: SQLiteStore) -> None:
    store.create_search(search_named("alpha"))
    assert store.load_engine_state("alpha") is None
    blob = bytes(range(256)) * 4
    store.save_engine_state("alpha", blob)
    assert store.load_engine_state("alpha") == blob
    store.save_engine_state("alpha", b"\x00next")
    assert store.load_engine_state("alpha") == b"\x00next"
    # A second handle on the same file (a later `run --resume`) reads it back.
    assert SQLiteStore(store.path).load_engine_state("alpha") == b"\x00next"


def test_interrupted_search_shows_as_pending_in_its_status(store: SQLiteStore) -> None:
    store.create_search(search_named("alpha"))
    store.set_phase("alpha", "Running")
    store.set_phase("alpha", "Interrupted", message="resume with --resume")
    record = store.get_search("alpha")
    assert record.phase == "Interrupted"
    assert record.status().phase == "Pending"
    assert record.status().message == "resume with --resume"


def test_failed_final_write_leaves_nothing_behind(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_search(search_named("alpha"))
    store.set_phase("alpha", "Running")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    # Fails after the history rows of the same transaction were inserted.
    monkeypatch.setattr(sqlite_store.api.LRScheduleSpec, "from_schedule", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        store.finish(
            "alpha",
            schedule=lineage(),
            objective=0.2,
            member=1,
            member_steps=100,
            history=[HistoryPoint(1, 600, 0.01, 0.3, 0.2)],
        )
    record = store.get_search("alpha")
    assert record.phase == "Running" and record.best_objective is None
    assert store.history("alpha") == []


def test_readers_never_see_half_a_final_result(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_search(search_named("alpha"))
    store.set_phase("alpha", "Running")
    inside, release = threading.Event(), threading.Event()
    original = SQLiteStore._put_best

    def paused(self: SQLiteStore, conn: sqlite3.Connection, *args: Any) -> Any:
        stored = original(self, conn, *args)
        inside.set()  # history and schedule written, transaction still open
        assert release.wait(10)
        return stored

    monkeypatch.setattr(SQLiteStore, "_put_best", paused)
    writer = threading.Thread(
        target=store.finish,
        args=("alpha",),
        kwargs={
            "schedule": lineage(),
            "objective": 0.2,
            "member": 1,
            "member_steps": 100,
            "history": [HistoryPoint(1, 600, 0.01, 0.3, 0.2)],
        },
    )
    writer.start()
    try:
        assert inside.wait(10)
        reader = SQLiteStore(store.path)
        assert reader.get_search("alpha").phase == "Running"
        assert reader.history("alpha") == []
        with pytest.raises(NotFoundError):
            reader.best_schedule("alpha")
    finally:
        release.set()
        writer.join(10)
    assert store.get_search("alpha").phase == "Succeeded"
    assert store.best_schedule("alpha").schedule.points == lineage().points
    assert len(store.history("alpha")) == 1


def _writer(path: str, name: str, member: int, rounds: int) -> None:
    store = SQLiteStore(path)
    store.create_search(search_named(name))
    for step in range(rounds):
        points = [HistoryPoint(member, step * 10 + i, 0.01, 1.0, None) for i in range(10)]
        store.append_history(name, points, member_steps=step)
        store.append_history("shared", points)
        store.save_engine_state(name, bytes([member]) * 1000)


def test_two_writer_processes_do_not_corrupt_the_store(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    SQLiteStore(path).create_search(search_named("shared"))
    rounds = 25
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_writer, args=(str(path), f"w{m}", m, rounds)) for m in (0, 1)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    store = SQLiteStore(path)
    assert [r.name for r in store.list_searches()] == ["shared", "w0", "w1"]
    assert len(store.history("shared")) == 2 * rounds * 10
    for member in (0, 1):
        assert len(store.history(f"w{member}")) == rounds * 10
        assert store.load_engine_state(f"w{member}") == bytes([member]) * 1000
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_written_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    with sqlite3.connect(store.path) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(StoreError, match="newer schedsearch"):
        SQLiteStore(store.path)


def test_migrations_run_in_order_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    store.create_search(search_named("alpha"))
    current = sqlite_store.SCHEMA_VERSION
    assert store.schema_version() == current

    def add_notes(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE searches ADD COLUMN notes TEXT")

    monkeypatch.setattr(sqlite_store, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(sqlite_store.MIGRATIONS, current + 1, add_notes)
    upgraded = SQLiteStore(store.path)
    assert upgraded.schema_version() == current + 1
    assert upgraded.get_search("alpha").name == "alpha"
    with sqlite3.connect(store.path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(searches)")]
    assert "notes" in columns


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, just some text that is long enough to have a header" * 20)
    with pytest.raises(StoreError, match="not a usable results store"):
        SQLiteStore(path)


def test_default_path_follows_env_and_xdg(tmp_path: Path) -> None:
    assert default_store_path({"SCHEDSEARCH_STORE": str(tmp_path / "x.db")}) == tmp_path / "x.db"
    assert default_store_path({"XDG_DATA_HOME": str(tmp_path)}) == (
        tmp_path / "schedsearch" / "results.db"
    )
    assert default_store_path({}).parts[-4:] == (".local", "share", "schedsearch", "results.db")


def test_reporter_keeps_evaluations_and_every_nth_step_in_batches(store: SQLiteStore) -> None:
    store.create_search(search_named("alpha"))
    reporter = StoreReporter(store, "alpha", every=50, batch=3)
    for step in range(0, 120, 10):
        reporter.on_progress(0, step, 1.0, 0.05, val_loss=0.9 if step == 30 else None)
    # steps 0, 30 (an evaluation), 50, 100 are kept; a batch of 3 was written already.
    assert [p.step for p in store.history("alpha")] == [0, 30, 50]
    reporter.on_event("exploit", "member 0 copies member 1")
    assert [p.step for p in store.history("alpha")] == [0, 30, 50, 100]
    assert store.history("alpha")[1].val_loss == 0.9


def test_member_summaries_are_bounded_and_best_first() -> None:
    history = [
        HistoryPoint(m, s, 0.01, 1.0, 10.0 - m * 0.01 - s * 0.001)
        for m in range(100)
        for s in (0, 5)
    ]
    summaries = member_summaries(history, "val_loss", mode="min")
    assert len(summaries) == 64
    assert summaries[0].id == 99 and summaries[0].step == 5
    assert summaries[0].objective == pytest.approx(10.0 - 0.99 - 0.005)
    assert member_summaries(history, "val_loss", mode="max")[0].id == 0
