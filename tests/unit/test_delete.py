"""What a search leaves behind: ``schedsearch delete`` (local store and cluster) and the
checkpoints a succeeded local search no longer needs."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from schedsearch.api import ScheduleSearch, load_spec
from schedsearch.api import spec as api
from schedsearch.cli.main import cli
from schedsearch.engine import state
from schedsearch.store import NotFoundError, SQLiteStore
from schedsearch.store import sqlite as sqlite_store
from schedsearch.store.kube import ClusterBackend, ClusterTarget
from schedsearch.trainers.schedules import Schedule, ScheduleBuilder

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "examples" / "digits-pbt.yaml"
FOUND = ScheduleBuilder().set_lr(0, 0.05).set_lr(300, 0.01).build(600, {})


def search_named(name: str) -> ScheduleSearch:
    data = load_spec(SPEC).to_wire()
    data["metadata"]["name"] = name
    return ScheduleSearch.model_validate(data)


def finished(store: SQLiteStore, name: str) -> None:
    store.create_search(search_named(name))
    store.finish(name, schedule=FOUND, objective=0.3, member=0, member_steps=2400)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


# --- the store ----------------------------------------------------------------------------------


def test_a_deleted_search_keeps_its_best_schedule(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    finished(store, "a")
    store.delete_search("a")
    with pytest.raises(NotFoundError):
        store.get_search("a")
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM member_history").fetchone()[0] == 0
    assert store.best_schedule("a").schedule.lrs() == FOUND.lrs()
    assert store.delete_schedule(api.best_schedule_name("a")) is True
    assert store.delete_schedule(api.best_schedule_name("a")) is False
    with pytest.raises(NotFoundError, match="search 'a' not found"):
        store.best_schedule("a")
    with pytest.raises(NotFoundError):
        store.delete_search("a")


def test_a_store_written_before_schedules_outlived_searches_is_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.db"
    with monkeypatch.context() as old:
        old.setattr(sqlite_store, "SCHEMA_VERSION", 1)
        finished(SQLiteStore(path), "a")
    store = SQLiteStore(path)
    assert store.schema_version() == sqlite_store.SCHEMA_VERSION >= 2
    assert store.best_schedule("a").schedule.points == FOUND.points
    store.delete_search("a")
    assert store.best_schedule("a").schedule.points == FOUND.points


# --- the command, local store -------------------------------------------------------------------


def test_delete_removes_the_record_and_run_folder_and_says_so(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    finished(store, "a")
    run_dir = state.default_run_dir(store.path, "a")
    (run_dir / "checkpoints" / "member-0").mkdir(parents=True)
    (run_dir / "checkpoints" / "member-0" / "step-600.pt").write_bytes(b"x")
    code, output = invoke("delete", "a", "--store", str(store.path))
    assert code == 0, output
    assert f"deleted search 'a' from {store.path}" in output
    assert f"deleted its run folder {run_dir}" in output
    assert "kept its best schedule 'a-best'" in output
    assert not run_dir.exists()
    assert [r.name for r in store.list_searches()] == []
    code, output = invoke("best", "a", "--store", str(store.path), "-o", "json")
    assert code == 0 and "a-best" in output
    # The name is free again.
    store.create_search(search_named("a"))


def test_delete_with_schedule_and_a_leftover_schedule(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    finished(store, "a")
    finished(store, "b")
    code, output = invoke("delete", "a", "--with-schedule", "--store", str(store.path))
    assert code == 0 and "deleted its best schedule 'a-best'" in output
    assert invoke("best", "a", "--store", str(store.path))[0] == 3
    invoke("delete", "b", "--store", str(store.path))
    code, output = invoke("delete", "b", "--with-schedule", "--store", str(store.path))
    assert code == 0 and "deleted its kept best schedule 'b-best'" in output
    code, output = invoke("delete", "b", "--store", str(store.path))
    assert code == 3 and "'b' not found" in output


def test_a_search_being_run_is_not_deleted(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    store.create_search(search_named("a"))
    run_dir = state.default_run_dir(store.path, "a")
    with state.run_lock(run_dir):  # what `schedsearch run` holds while it trains
        code, output = invoke("delete", "a", "--store", str(store.path))
    assert code == 1 and "being run by another process" in output
    assert store.get_search("a").phase == "Pending" and run_dir.is_dir()


def test_only_the_searchs_own_folder_is_removed(tmp_path: Path) -> None:
    """The run folder comes from stored state: one not named after the search is left alone."""
    store = SQLiteStore(tmp_path / "r.db")
    store.create_search(search_named("a"))
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    store.save_engine_state("a", state.EngineState("pbt", elsewhere, {}).to_bytes())
    code, output = invoke("delete", "a", "--store", str(store.path))
    assert code == 0 and "run folder" not in output
    assert elsewhere.is_dir()


# --- the command, cluster -----------------------------------------------------------------------


class FakeCustomObjects:
    """The two calls delete makes, on a dict of (plural, name) -> object."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objects = objects
        self.deleted: list[tuple[str, str]] = []

    def get_namespaced_custom_object(self, *args: Any, **_: Any) -> dict[str, Any]:
        return self._find(args)

    def delete_namespaced_custom_object(self, *args: Any, **_: Any) -> dict[str, Any]:
        found = self._find(args)
        self.deleted.append((args[3], args[4]))
        del self.objects[(args[3], args[4])]
        return found

    def _find(self, args: tuple[Any, ...]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        group, version, namespace, plural, name = args
        assert (group, version, namespace) == (api.API_GROUP, api.API_VERSION_NAME, "ml")
        if (plural, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return self.objects[(plural, name)]


def cluster(tmp_path: Path, objects: dict[tuple[str, str], dict[str, Any]]) -> ClusterBackend:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u, namespace: ml}}]\n"
    )
    backend = ClusterBackend(ClusterTarget(kubeconfig))
    backend._api = FakeCustomObjects(objects)
    return backend


def test_cluster_delete_removes_the_search_and_keeps_its_schedule(tmp_path: Path) -> None:
    from schedsearch.cli import deletion

    search = search_named("a").to_wire()
    search["metadata"]["namespace"] = "ml"
    schedule = {
        "apiVersion": api.API_VERSION,
        "kind": "LRSchedule",
        "metadata": {"name": "a-best", "namespace": "ml"},
        "spec": api.LRScheduleSpec.from_schedule(
            Schedule.from_dict(FOUND.to_dict()), api.Provenance(search="a")
        ).to_wire(),
    }
    objects = {("schedulesearches", "a"): search, ("lrschedules", "a-best"): schedule}
    backend = cluster(tmp_path, objects)
    lines = deletion.delete_search(backend, "a", where=backend.where, with_schedule=False)
    assert backend._api.deleted == [("schedulesearches", "a")]
    assert "deleted ScheduleSearch 'a'" in lines[0] and "kept its best schedule" in lines[1]
    lines = deletion.delete_search(backend, "a", where=backend.where, with_schedule=True)
    assert backend._api.deleted[-1] == ("lrschedules", "a-best")
    assert "deleted its kept best schedule 'a-best'" in lines[0]
    with pytest.raises(NotFoundError):
        deletion.delete_search(backend, "a", where=backend.where, with_schedule=True)
