"""The local results store: one SQLite file shared by the local engine (writer) and the CLI.

Concurrency: WAL journal (readers never block the writer and see only committed transactions), a
busy timeout, and every write in ``BEGIN IMMEDIATE`` so two writer processes queue instead of
failing on a lock upgrade. A connection is opened per operation, which keeps the store safe to use
from threads and forked workers. The schema carries a version and migrations run on open.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, get_args

import pydantic

from schedsearch.api import spec as api
from schedsearch.store.base import (
    HistoryPoint,
    NotFoundError,
    SearchExistsError,
    SearchRecord,
    StoredSchedule,
    StoreError,
    StorePhase,
)
from schedsearch.trainers.schedules import Schedule

STORE_ENV = "SCHEDSEARCH_STORE"
SCHEMA_VERSION = 2
DEFAULT_TIMEOUT_SECONDS = 30.0


def default_store_path(env: Mapping[str, str] | None = None) -> Path:
    """``$SCHEDSEARCH_STORE``, else ``$XDG_DATA_HOME/schedsearch/results.db`` (XDG default
    ``~/.local/share``)."""
    env = os.environ if env is None else env
    if env.get(STORE_ENV):
        return Path(env[STORE_ENV]).expanduser()
    return xdg_store_path(env)


def xdg_store_path(env: Mapping[str, str] | None = None) -> Path:
    """The built-in location, ``$XDG_DATA_HOME/schedsearch/results.db``: the one store whose
    folder the store creates. A path the user chose must be in a folder that exists, so a typo
    is an error instead of a new, empty store somewhere unexpected."""
    env = os.environ if env is None else env
    data_home = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "schedsearch" / "results.db"


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, which would end the migration's transaction.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _create_v1(conn: sqlite3.Connection) -> None:
    _execute_script(
        conn,
        """
        CREATE TABLE searches (
            name TEXT PRIMARY KEY,
            spec TEXT NOT NULL,
            phase TEXT NOT NULL,
            strategy TEXT NOT NULL,
            workload TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            started_at TEXT,
            completed_at TEXT,
            best_objective REAL,
            best_member INTEGER,
            best_step INTEGER,
            member_steps INTEGER,
            message TEXT,
            engine_state BLOB
        );
        CREATE TABLE member_history (
            search TEXT NOT NULL REFERENCES searches(name) ON DELETE CASCADE,
            member INTEGER NOT NULL,
            step INTEGER NOT NULL,
            lr REAL NOT NULL,
            loss REAL,
            val_loss REAL,
            PRIMARY KEY (search, member, step)
        );
        CREATE TABLE schedules (
            name TEXT PRIMARY KEY,
            search TEXT NOT NULL REFERENCES searches(name) ON DELETE CASCADE,
            spec TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX schedules_by_search ON schedules(search);
        """,
    )


def _schedules_outlive_searches(conn: sqlite3.Connection) -> None:
    """v2: a stored schedule no longer goes with its search (``delete`` keeps it unless asked,
    as an LRSchedule outlives its ScheduleSearch in a cluster). SQLite cannot drop a foreign key,
    so the table is copied without it."""
    _execute_script(
        conn,
        """
        CREATE TABLE schedules_v2 (
            name TEXT PRIMARY KEY,
            search TEXT NOT NULL,
            spec TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        INSERT INTO schedules_v2 (name, search, spec, created_at)
            SELECT name, search, spec, created_at FROM schedules;
        DROP TABLE schedules;
        ALTER TABLE schedules_v2 RENAME TO schedules;
        CREATE INDEX schedules_by_search ON schedules(search);
        """,
    )


# Migration ``n`` brings a store from version n-1 to n; each runs in the opening transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _create_v1,
    2: _schedules_outlive_searches,
}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class SQLiteStore:
    """Searches, their coarse member history, best schedules and engine state in one file.

    Implements ``ResultsBackend`` (the read side) plus the writes the local engine makes.
    """

    def __init__(
        self, path: str | Path | None = None, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self._timeout = timeout
        self._check_folder()
        try:
            self._initialise()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path}: not a usable results store ({err})") from err

    def _check_folder(self) -> None:
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder; the results store is a file in a folder")
        if self.path == xdg_store_path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.parent.is_dir():
            raise StoreError(
                f"cannot create the results store {self.path}: the folder {self.path.parent} "
                "does not exist (check the path, or create the folder first)"
            )

    # --- connections and transactions -----------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: the module issues no implicit BEGIN; transactions are ours.
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction: IMMEDIATE takes the write lock up front (no deadlock on upgrade);
        a read transaction sees one consistent snapshot."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _initialise(self) -> None:
        # Readers (the CLI) open the store while the engine writes: only a store that is new or
        # older than this code takes the write lock, to create or migrate the schema.
        with self._transaction(write=False) as conn:
            if _version(conn) == SCHEMA_VERSION:
                return
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")  # persistent; needs no open transaction
        with self._transaction(write=True) as conn:
            current = _version(conn)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: written by a newer schedsearch (schema {current}, "
                    f"this one reads up to {SCHEMA_VERSION})"
                )
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version](conn)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def schema_version(self) -> int:
        with self._transaction(write=False) as conn:
            return _version(conn)

    # --- writes (the local engine) ---------------------------------------------------------------

    def create_search(self, search: api.ScheduleSearch, *, exist_ok: bool = False) -> SearchRecord:
        """Register a search as Pending. With ``exist_ok`` an existing search of the same name and
        spec is returned as it is (resume); a different spec is refused either way."""
        spec_json = json.dumps(search.to_wire())
        now = _now().isoformat()
        with self._transaction(write=True) as conn:
            row = conn.execute(
                "SELECT spec FROM searches WHERE name = ?", (search.name,)
            ).fetchone()
            if row is not None:
                if not exist_ok:
                    raise SearchExistsError(
                        f"search {search.name!r} already exists in {self.path} "
                        "(resume it, or choose another name)"
                    )
                if _spec_body(row["spec"]) != _spec_body(spec_json):
                    raise SearchExistsError(
                        f"search {search.name!r} exists with a different spec; "
                        "choose another name to run the changed spec"
                    )
            else:
                conn.execute(
                    "INSERT INTO searches (name, spec, phase, strategy, workload, created_at, "
                    "updated_at) VALUES (?, ?, 'Pending', ?, ?, ?, ?)",
                    (
                        search.name,
                        spec_json,
                        search.spec.strategy_name,
                        search.spec.workload.ref,
                        now,
                        now,
                    ),
                )
        return self.get_search(search.name)

    def delete_search(self, name: str) -> None:
        """Remove a search with its history and engine state. Its stored schedules stay (as an
        LRSchedule outlives its ScheduleSearch): ``delete_schedule`` removes one."""
        with self._transaction(write=True) as conn:
            if conn.execute("DELETE FROM searches WHERE name = ?", (name,)).rowcount == 0:
                raise NotFoundError("search", name)

    def delete_schedule(self, name: str) -> bool:
        """Remove the stored schedule ``name``; False if there was none."""
        with self._transaction(write=True) as conn:
            return bool(conn.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount)

    def set_phase(self, name: str, phase: StorePhase, *, message: str | None = None) -> None:
        """Move a search to ``phase``; Running stamps the start, Succeeded/Failed the end."""
        if phase not in get_args(StorePhase):
            raise ValueError(f"phase: {phase!r} is not one of {', '.join(get_args(StorePhase))}")
        now = _now().isoformat()
        with self._transaction(write=True) as conn:
            self._require(conn, name)
            conn.execute(
                "UPDATE searches SET phase = ?, message = ?, updated_at = ?, "
                "started_at = CASE WHEN ? = 'Running' THEN COALESCE(started_at, ?) "
                "ELSE started_at END, "
                "completed_at = CASE WHEN ? IN ('Succeeded', 'Failed') THEN ? ELSE NULL END "
                "WHERE name = ?",
                (phase, message, now, phase, now, phase, now, name),
            )

    def append_history(
        self, name: str, points: Iterable[HistoryPoint], *, member_steps: int | None = None
    ) -> None:
        """Add coarse observations (a re-reported member step replaces the earlier one, as after
        a resume) and, optionally, the search's cost so far."""
        with self._transaction(write=True) as conn:
            self._require(conn, name)
            self._insert_history(conn, name, points)
            if member_steps is not None:
                conn.execute(
                    "UPDATE searches SET member_steps = ?, updated_at = ? WHERE name = ?",
                    (member_steps, _now().isoformat(), name),
                )

    def save_best(
        self,
        name: str,
        *,
        schedule: Schedule,
        objective: float,
        member: int,
        step: int | None = None,
    ) -> StoredSchedule:
        """Store the best schedule so far and its objective, together (one transaction)."""
        with self._transaction(write=True) as conn:
            stored = self._put_best(conn, name, schedule, objective, member, step)
            conn.execute(
                "UPDATE searches SET updated_at = ? WHERE name = ?", (_now().isoformat(), name)
            )
        return stored

    def finish(
        self,
        name: str,
        *,
        schedule: Schedule,
        objective: float,
        member: int,
        member_steps: int,
        step: int | None = None,
        history: Iterable[HistoryPoint] = (),
        message: str | None = None,
    ) -> StoredSchedule:
        """The final result, written atomically: best schedule, objective, cost, the last history
        points and phase Succeeded. A reader sees all of it or none of it."""
        now = _now().isoformat()
        with self._transaction(write=True) as conn:
            self._insert_history(conn, name, history)
            stored = self._put_best(conn, name, schedule, objective, member, step)
            conn.execute(
                "UPDATE searches SET phase = 'Succeeded', message = ?, member_steps = ?, "
                "completed_at = ?, updated_at = ? WHERE name = ?",
                (message, member_steps, now, now, name),
            )
        return stored

    def save_engine_state(self, name: str, state: bytes) -> None:
        """The engine's opaque resume state (replaced as a whole)."""
        with self._transaction(write=True) as conn:
            self._require(conn, name)
            conn.execute(
                "UPDATE searches SET engine_state = ?, updated_at = ? WHERE name = ?",
                (sqlite3.Binary(state), _now().isoformat(), name),
            )

    def load_engine_state(self, name: str) -> bytes | None:
        with self._transaction(write=False) as conn:
            row = self._require(conn, name, columns="engine_state")
        return None if row["engine_state"] is None else bytes(row["engine_state"])

    # --- reads (ResultsBackend) ------------------------------------------------------------------

    def list_searches(self) -> list[SearchRecord]:
        with self._transaction(write=False) as conn:
            rows = conn.execute("SELECT * FROM searches ORDER BY name").fetchall()
        return [_record(row) for row in rows]

    def get_search(self, name: str) -> SearchRecord:
        with self._transaction(write=False) as conn:
            record = _record(self._require(conn, name))
            best = conn.execute(
                "SELECT spec FROM schedules WHERE name = ?", (api.best_schedule_name(name),)
            ).fetchone()
        # The local engine keeps the control run's comparison in the best schedule's provenance
        # (the cluster in status.control): the record carries it either way.
        control = _control(best["spec"]) if best is not None else None
        return dataclasses.replace(record, control=control) if control is not None else record

    def best_schedule(self, name: str) -> StoredSchedule:
        """The best schedule ``name`` stored; it outlives a deleted search."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT * FROM schedules WHERE name = ?", (api.best_schedule_name(name),)
            ).fetchone()
            if row is None:
                self._require(conn, name)
                raise NotFoundError("best schedule of search", name, "none stored yet")
        spec = api.LRScheduleSpec.model_validate_json(row["spec"])
        return StoredSchedule(row["name"], name, spec.to_schedule(), spec.provenance)

    def list_schedules(self) -> list[StoredSchedule]:
        with self._transaction(write=False) as conn:
            rows = conn.execute("SELECT * FROM schedules ORDER BY name").fetchall()
        stored = []
        for row in rows:
            spec = api.LRScheduleSpec.model_validate_json(row["spec"])
            stored.append(
                StoredSchedule(row["name"], row["search"], spec.to_schedule(), spec.provenance)
            )
        return stored

    def history(self, name: str) -> list[HistoryPoint]:
        with self._transaction(write=False) as conn:
            self._require(conn, name)
            rows = conn.execute(
                "SELECT member, step, lr, loss, val_loss FROM member_history WHERE search = ? "
                "ORDER BY member, step",
                (name,),
            ).fetchall()
        return [
            HistoryPoint(r["member"], r["step"], r["lr"], r["loss"], r["val_loss"]) for r in rows
        ]

    # --- internals ------------------------------------------------------------------------------

    @staticmethod
    def _require(conn: sqlite3.Connection, name: str, *, columns: str = "*") -> sqlite3.Row:
        row = conn.execute(f"SELECT {columns} FROM searches WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError("search", name)
        return row  # type: ignore[no-any-return]

    @staticmethod
    def _insert_history(
        conn: sqlite3.Connection, name: str, points: Iterable[HistoryPoint]
    ) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO member_history (search, member, step, lr, loss, val_loss) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(name, p.member, p.step, p.lr, _finite(p.loss), _finite(p.val_loss)) for p in points],
        )

    def _put_best(
        self,
        conn: sqlite3.Connection,
        name: str,
        schedule: Schedule,
        objective: float,
        member: int,
        step: int | None,
    ) -> StoredSchedule:
        record = _record(self._require(conn, name))
        spec = api.LRScheduleSpec.from_schedule(schedule, _provenance(record, objective, member))
        schedule_name = api.best_schedule_name(name)
        conn.execute(
            "INSERT OR REPLACE INTO schedules (name, search, spec, created_at) VALUES (?, ?, ?, ?)",
            (schedule_name, name, json.dumps(spec.to_wire()), _now().isoformat()),
        )
        conn.execute(
            "UPDATE searches SET best_objective = ?, best_member = ?, best_step = ? WHERE name = ?",
            (_finite(objective), member, schedule.total_steps if step is None else step, name),
        )
        return StoredSchedule(schedule_name, name, spec.to_schedule(), spec.provenance)


def _version(conn: sqlite3.Connection) -> int:
    """The schema version of an open store (0: no schema yet)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)


def _provenance(record: SearchRecord, objective: float, member: int) -> api.Provenance:
    objective_value = None
    if math.isfinite(objective):
        objective_value = {"metric": record.objective_metric, "value": objective}
    return api.Provenance.model_validate(
        {
            "search": record.name,
            "namespace": record.spec.get("metadata", {}).get("namespace"),
            "strategy": record.strategy,
            "workload": record.workload,
            "objective": objective_value,
            "member": member,
            "createdAt": _now(),
        }
    )


def _spec_body(spec_json: str) -> Any:
    """The part of a stored object that decides whether two submissions are the same search."""
    data = json.loads(spec_json)
    return data.get("spec")


def _control(schedule_spec: str) -> api.ControlStatus | None:
    """The control run stored in a schedule's provenance, if it has one."""
    provenance = json.loads(schedule_spec).get("provenance") or {}
    try:
        return api.ControlStatus.model_validate(provenance["control"])
    except (KeyError, pydantic.ValidationError):
        return None


def _record(row: sqlite3.Row) -> SearchRecord:
    return SearchRecord(
        name=row["name"],
        spec=json.loads(row["spec"]),
        phase=row["phase"],
        strategy=row["strategy"],
        workload=row["workload"],
        created_at=_time(row["created_at"]) or _now(),
        updated_at=_time(row["updated_at"]) or _now(),
        best_objective=row["best_objective"],
        best_member=row["best_member"],
        best_step=row["best_step"],
        member_steps=row["member_steps"],
        message=row["message"],
        started_at=_time(row["started_at"]),
        completed_at=_time(row["completed_at"]),
    )
