"""``schedsearch delete``: remove a search from the local store or the cluster, and say what went.

Local: the record, its history and resume state, and its run folder (checkpoints, Tune's files),
after taking the folder's run lock so a search that a ``schedsearch run`` is still training is
refused. Cluster: the ScheduleSearch (the controller then stops its pods and drops its state).
Either way the best schedule stays unless asked (``--with-schedule``): an LRSchedule outlives its
search, and ``best``/``export NAME`` keep reading it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

from schedsearch.api import spec as api
from schedsearch.store import NotFoundError, ResultsBackend, SQLiteStore, StoreError
from schedsearch.store.kube import ClusterBackend


class _Deletes(Protocol):
    def delete_search(self, name: str) -> None: ...

    def delete_schedule(self, name: str) -> bool: ...


def delete_search(
    backend: ResultsBackend, name: str, *, where: str, with_schedule: bool
) -> list[str]:
    """Delete search ``name`` (and, if asked, its best schedule); the lines saying what went."""
    if not isinstance(backend, (SQLiteStore, ClusterBackend)):
        backend.get_search(name)  # a store that does not exist: "not found"
        raise StoreError(f"cannot delete from {where}")
    schedule = api.best_schedule_name(name)
    try:
        backend.get_search(name)
    except NotFoundError:
        # Deleting the schedule a deleted search left behind is what --with-schedule asks.
        if with_schedule and backend.delete_schedule(schedule):
            return [f"no search {name!r} in {where}; deleted its kept best schedule {schedule!r}"]
        raise
    has_schedule = _has_best_schedule(backend, name)
    if isinstance(backend, SQLiteStore):
        lines = _delete_local(backend, name, where=where)
    else:
        backend.delete_search(name)
        lines = [
            f"deleted ScheduleSearch {name!r} from {where}; the controller stops its pods "
            "and removes its state"
        ]
    return lines + _schedule_lines(backend, name, schedule, has_schedule, with_schedule)


def _has_best_schedule(backend: ResultsBackend, name: str) -> bool:
    try:
        backend.best_schedule(name)
    except NotFoundError:
        return False
    return True


def _schedule_lines(
    backend: _Deletes, name: str, schedule: str, has_schedule: bool, with_schedule: bool
) -> list[str]:
    if not has_schedule:
        return []
    if with_schedule:
        backend.delete_schedule(schedule)
        return [f"deleted its best schedule {schedule!r}"]
    return [
        f"kept its best schedule {schedule!r}: `schedsearch best {name}` still reads it "
        "(delete it too with --with-schedule; a new search of that name replaces it)"
    ]


def _delete_local(store: SQLiteStore, name: str, *, where: str) -> list[str]:
    """The record, then the run folder; a search another process is running is refused."""
    from schedsearch.engine import state  # run folders and their lock; no Ray

    run_dir = _run_dir(store, name)
    said = f"deleted search {name!r} from {where} (its history and resume state)"
    # Only a folder named after the search is removed: the path comes from stored state.
    if run_dir.name != name or not run_dir.is_dir():
        store.delete_search(name)
        return [said]
    with state.run_lock(run_dir):  # RunInUseError (a StoreError) while it runs
        store.delete_search(name)
        shutil.rmtree(run_dir)
    return [said, f"deleted its run folder {run_dir} (checkpoints, Ray Tune files)"]


def _run_dir(store: SQLiteStore, name: str) -> Path:
    """Where the engine keeps the search's files: as its saved state says, else the default."""
    from schedsearch.engine import state

    blob = store.load_engine_state(name)
    if blob is not None:
        try:
            return state.EngineState.from_bytes(blob).run_dir
        except (KeyError, ValueError):
            pass  # unreadable state: the default location is still worth checking
    return state.default_run_dir(store.path, name)
