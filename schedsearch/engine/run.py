"""``schedsearch run``: one search from spec to stored result, on a local Ray or an existing one.

The store is the record of truth. A search moves Pending -> Running -> Succeeded / Failed, or
Interrupted on Ctrl-C with its engine state saved; ``--resume`` picks up the state and the member
checkpoints. The engine state is also saved while the search runs (after each exploit and every
few seconds), so even a killed process leaves a state that matches checkpoints on disk.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from schedsearch.api import spec as api
from schedsearch.api.fields import parse_quantity
from schedsearch.engine import jobs, progress, session, shipping, state, trials, tuning
from schedsearch.engine.interrupt import Interrupt
from schedsearch.engine.messages import Tee
from schedsearch.engine.session import RayConnectError as RayConnectError
from schedsearch.store.base import NotFoundError, SearchExistsError, StoreError
from schedsearch.store.reporter import StoreReporter
from schedsearch.store.sqlite import SQLiteStore
from schedsearch.trainers import evaluation
from schedsearch.trainers.strategies.base import Reporter, SearchResult
from schedsearch.trainers.workloads import get_workload

# Seconds between two engine-state saves while nothing else asks for one.
SAVE_EVERY_SECONDS = 5.0


class RunOptions(Protocol):
    """What the CLI's ``run`` command passes (its ``RunOptions``)."""

    @property
    def store_path(self) -> Path: ...

    @property
    def ray_address(self) -> str | None: ...

    @property
    def resume(self) -> bool: ...


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the search; its state is saved and ``--resume`` continues it. The
    engine prints nothing about it: the caller knows how the run was started and says how to
    continue it."""


class SearchFailed(RuntimeError):
    """The search could not produce a result; the store says Failed with the reason."""


def run_search(
    search: api.ScheduleSearch,
    *,
    options: RunOptions,
    store: SQLiteStore,
    runs_dir: Path | None = None,
    console: Console | None = None,
    out: Console | None = None,
    reporters: Sequence[Reporter] = (),
) -> SearchResult:
    """Run ``search`` to its end and store the result; print progress and the best schedule.

    ``console`` shows progress (default: stderr), ``out`` the final tables (default: stdout);
    ``reporters`` also receive every member's progress and events (``run --metrics-port``).
    Nothing is written to the store before the engine has started or joined its Ray: a
    cluster that cannot be reached leaves no record behind (:class:`RayConnectError`).
    """
    console = console or Console(stderr=True)
    out = out or Console(file=sys.stdout, highlight=False)
    registration = _register(store, search, resume=options.resume, console=console)
    run_dir = _run_dir(search.name, options.store_path, runs_dir, registration.saved)
    with state.run_lock(run_dir):
        job = _make_job(search, run_dir, registration.saved)
        started = time.monotonic()
        result = _run_job(
            search, job, store, options.ray_address, run_dir, console, registration, reporters
        )
        result.wall_seconds = time.monotonic() - started
        _prune_checkpoints(run_dir)
    _print_result(out, search, job, result)
    return result


# -- steps ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """What the store holds of a search about to run: whether it exists, its saved state."""

    exists: bool
    saved: state.EngineState | None = None


def _register(
    store: SQLiteStore, search: api.ScheduleSearch, *, resume: bool, console: Console
) -> Registration:
    """Check that ``search`` may run under its name (reads only: see :func:`_record_start`)."""
    try:
        record = store.get_search(search.name)
    except NotFoundError:
        if resume:
            console.print(f"nothing to resume for {search.name!r}: starting it", markup=False)
        return Registration(exists=False)
    if record.phase == "Succeeded":
        raise StoreError(
            f"search {search.name!r} already succeeded (`schedsearch get {search.name}` shows "
            f"it); to run the spec again, give the run another name (--name {search.name}-2) or "
            f"delete the search first (`schedsearch delete {search.name}`)"
        )
    if not resume:
        raise SearchExistsError(
            f"search {search.name!r} already exists ({record.phase}): continue it with --resume, "
            f"or run under another name (--name {search.name}-2)"
        )
    # Refuses a different spec under the same name (writes nothing for an existing search).
    store.create_search(search, exist_ok=True)
    blob = store.load_engine_state(search.name)
    if blob is None:
        console.print(f"no saved state for {search.name!r}: starting it over", markup=False)
        return Registration(exists=True)
    try:
        return Registration(exists=True, saved=state.EngineState.from_bytes(blob))
    except ValueError as err:
        raise StoreError(f"cannot resume {search.name!r}: {err}") from None


def _record_start(
    store: SQLiteStore, search: api.ScheduleSearch, registration: Registration
) -> None:
    """The engine is up: create the search (if new) and mark it Running."""
    if not registration.exists:
        store.create_search(search)
    store.set_phase(search.name, "Running", message="resumed" if registration.saved else None)


def _make_job(
    search: api.ScheduleSearch, run_dir: Path, saved: state.EngineState | None
) -> jobs.Job:
    """The strategy's job, continuing the saved state; a state that does not fit is refused."""
    if saved is not None and saved.strategy != search.spec.strategy_name:
        raise StoreError(
            f"cannot resume {search.name!r}: its saved state is for strategy {saved.strategy!r}, "
            f"the spec says {search.spec.strategy_name!r}"
        )
    try:
        return jobs.make_job(search, run_dir, saved.job if saved else None)
    except (KeyError, TypeError, ValueError) as err:
        raise StoreError(f"cannot resume {search.name!r}: unusable saved state ({err})") from None


def _run_dir(
    name: str, store_path: Path, runs_dir: Path | None, saved: state.EngineState | None
) -> Path:
    if runs_dir is not None:
        return runs_dir.expanduser() / name
    if saved is not None:
        return saved.run_dir
    return state.default_run_dir(store_path, name)


def _prune_checkpoints(run_dir: Path) -> None:
    """A succeeded search is never resumed (its result is in the store, and ``--resume``
    refuses it), so its members' checkpoints only take space."""
    shutil.rmtree(trials.checkpoint_dir(run_dir), ignore_errors=True)


def _run_job(
    search: api.ScheduleSearch,
    job: jobs.Job,
    store: SQLiteStore,
    ray_address: str | None,
    run_dir: Path,
    console: Console,
    registration: Registration,
    reporters: Sequence[Reporter] = (),
) -> SearchResult:
    saver = _StateSaver(store, search.name, job, run_dir)
    with tempfile.TemporaryDirectory(prefix="schedsearch-ship-") as stage:
        address, _ = session.resolve_address(ray_address)
        runtime_env = shipping.runtime_env(search, Path(stage)) if address else None
        try:
            with session.ray_session(ray_address, runtime_env=runtime_env) as ray_info:
                _record_start(store, search, registration)
                return _run_in_session(
                    search, job, store, ray_info, run_dir, saver, console, reporters
                )
        except SearchInterrupted:
            raise
        except KeyboardInterrupt:
            if not _recorded(store, search.name):
                raise  # Ctrl-C while Ray was still starting: nothing to keep
            # A second Ctrl-C: no clean stop, but the state saved last still matches the disk.
            _keep_progress(store, search.name, job)
            store.set_phase(search.name, "Interrupted", message="interrupted (forced)")
            raise SearchInterrupted("forced: the state saved last is kept") from None
        except (SearchFailed, session.RayConnectError):
            raise
        except Exception as err:
            if _recorded(store, search.name):
                store.set_phase(search.name, "Failed", message=f"engine error: {err}")
            raise


def _run_in_session(
    search: api.ScheduleSearch,
    job: jobs.Job,
    store: SQLiteStore,
    ray_info: session.RaySession,
    run_dir: Path,
    saver: _StateSaver,
    console: Console,
    reporters: Sequence[Reporter] = (),
) -> SearchResult:
    console.print(_ray_line(ray_info), markup=False, highlight=False)
    job.start()
    try:
        interrupt = _train(search, job, store, ray_info, run_dir, saver, console, reporters)
    finally:
        job.stop()
    saver.save()
    if interrupt.requested:
        _keep_progress(store, search.name, job)
        store.set_phase(search.name, "Interrupted", message="interrupted; resume with --resume")
        raise SearchInterrupted("state saved")
    return _finish(search, job, store, console)


def _recorded(store: SQLiteStore, name: str) -> bool:
    try:
        store.get_search(name)
    except NotFoundError:
        return False
    return True


def _keep_progress(store: SQLiteStore, name: str, job: jobs.Job) -> None:
    """An unfinished search still shows what it cost and its best member so far."""
    progress_so_far = job.progress()
    if progress_so_far.member_steps is not None:
        store.append_history(name, [], member_steps=progress_so_far.member_steps)
    best = progress_so_far.best
    if best is not None:
        store.save_best(
            name,
            schedule=best.schedule,
            objective=best.objective,
            member=best.member,
            step=best.step,
        )


def _train(
    search: api.ScheduleSearch,
    job: jobs.Job,
    store: SQLiteStore,
    ray_info: session.RaySession,
    run_dir: Path,
    saver: _StateSaver,
    console: Console,
    reporters: Sequence[Reporter] = (),
) -> Interrupt:
    configs = job.trial_configs()
    resources = session.trial_resources(
        ray_info,
        concurrent=max(1, len(configs)),
        cpu=float(parse_quantity(search.spec.resources.cpu)),
        gpu=float(search.spec.resources.gpu * _processes_per_trial(search)),
    )
    if configs:
        console.print(
            _resources_line(len(configs), resources, ray_info), markup=False, highlight=False
        )
    steps = search.spec.budget.steps
    board = progress.ProgressBoard(
        title=f"{search.name} ({job.strategy})",
        total_steps=steps,
        members=job.members,
        console=console,
    )
    history = StoreReporter(store, search.name, every=_history_every(steps))
    interrupt = Interrupt(on_request=lambda: console.print("stopping...", markup=False))

    def after_result(result: dict[str, Any]) -> None:
        board.tick()
        job.on_result(result)
        saver.maybe_save(result)

    with interrupt, board:
        if configs:
            outcome = tuning.run_trials(
                job.trainable(),
                configs,
                name="tune",
                storage=run_dir,
                resources=resources,
                reporter=Tee([board, history, *reporters]),
                interrupt=interrupt,
                max_failures=search.spec.failure_policy.max_member_restarts,
                after_result=after_result,
                after_error=job.on_trial_error,
                after_start=job.on_trial_start,
                before_stop=job.halt,
            )
            _check_failures(search, job, outcome)
    history.flush()
    return interrupt


def _processes_per_trial(search: api.ScheduleSearch) -> int:
    """A replica set's trial runs one process per GPU it is given; other trials run one."""
    chosen = search.spec.strategy
    return chosen.strategy.processes(chosen.config)


def _check_failures(
    search: api.ScheduleSearch, job: jobs.Job, outcome: tuning.TrialOutcome
) -> None:
    if not outcome.errors:
        return
    allowed = search.spec.failure_policy.max_failed_members
    if allowed is None:
        # A population goes on while one member lives; a single trial is the search.
        allowed = job.members - 1 if isinstance(job, jobs.PBTJob) else 0
    if len(outcome.errors) > allowed:
        trial, error = sorted(outcome.errors.items())[0]
        raise SearchFailed(f"{len(outcome.errors)} trial(s) failed; trial {trial}: {error}")


def _finish(
    search: api.ScheduleSearch, job: jobs.Job, store: SQLiteStore, console: Console
) -> SearchResult:
    result = job.result()
    if result is None or not math.isfinite(result.best_objective):
        message = "no member produced a finite objective"
        store.set_phase(search.name, "Failed", message=message)
        raise SearchFailed(message)
    result = _verified(search, result, console)
    store.finish(
        search.name,
        schedule=result.best_schedule,
        objective=result.best_objective,
        member=result.best_member,
        member_steps=result.member_steps,
        message=f"best member {result.best_member}",
    )
    return result


def _verified(search: api.ScheduleSearch, result: SearchResult, console: Console) -> SearchResult:
    """With the control on (the local engine's default): the found schedule and the base
    schedule trained from a fresh seed, side by side; the comparison goes into the schedule's
    provenance and the cost into the member-steps."""
    spec = search.spec
    if not spec.evaluation.control_enabled(local=True):
        return result
    seed = spec.evaluation.control_seed(spec.seed)
    console.print(
        f"control: training the found schedule and the base schedule ({spec.base_schedule.family}"
        f", peak {spec.base_schedule.peak_lr:g}) from seed {seed}, which no member used...",
        markup=False,
        highlight=False,
    )
    control = evaluation.control_run(
        get_workload(spec.workload.ref),
        result.best_schedule,
        spec.base_schedule_for_budget(),
        seed=seed,
        metric=spec.objective.metric,
        mode=spec.objective.mode,
    )
    console.print(f"control: {control.summary()}", markup=False, highlight=False, soft_wrap=True)
    schedule = result.best_schedule.with_provenance(control=control.to_dict())
    return dataclasses.replace(
        result, best_schedule=schedule, member_steps=result.member_steps + 2 * control.steps
    )


def _history_every(steps: int) -> int:
    """Keep about a hundred points per member besides every evaluation."""
    return max(10, (steps // 100) // 10 * 10)


def _ray_line(info: session.RaySession) -> str:
    if info.started_here:
        source = f" (${session.ADDRESS_ENV})" if info.address_from_env else ""
        where = f"joined {info.address}{source}" if info.address else "started locally"
    else:
        where = "already running in this process"
    return f"Ray {where} in {info.startup_seconds:.1f}s ({info.cpus:g} CPU, {info.gpus:g} GPU)"


def _resources_line(count: int, resources: session.TrialResources, info: session.RaySession) -> str:
    """How the trials share the machine: all of them run at once, a crowd time-shares."""
    each = f"{resources.cpu:g} CPU" + (f" + {resources.gpu:g} GPU" if resources.gpu else "")
    if count == 1:
        return f"1 trial ({each})"
    shared = " (time-shared: more trials than CPUs)" if count > info.cpus else ""
    return f"{count} trials at once on {info.cpus:g} CPU, {each} each{shared}"


class _StateSaver:
    """Writes the engine state to the store after evaluations and exploits, and every few
    seconds otherwise."""

    def __init__(self, store: SQLiteStore, name: str, job: jobs.Job, run_dir: Path) -> None:
        self._store = store
        self._name = name
        self._job = job
        self._run_dir = run_dir
        self._last = time.monotonic()
        self.clock: Callable[[], float] = time.monotonic

    def maybe_save(self, result: dict[str, Any]) -> None:
        kinds = {e.get("kind") for e in result.get("events", ())}
        # An evaluation comes with a checkpoint report: the state then names a newer file,
        # and the one it named before may be deleted soon.
        evaluated = any(point[4] is not None for point in result.get("progress", ()))
        if (
            evaluated
            or kinds & {"exploit", "finished", "stopped", "stage"}
            or self.clock() - self._last >= SAVE_EVERY_SECONDS
        ):
            self.save()

    def save(self) -> None:
        engine = state.EngineState(self._job.strategy, self._run_dir, self._job.engine_state())
        self._store.save_engine_state(self._name, engine.to_bytes())
        self._last = self.clock()


def _print_result(
    out: Console, search: api.ScheduleSearch, job: jobs.Job, result: SearchResult
) -> None:
    out.print(
        progress.summary_table(
            title=f"{search.name}: members",
            rows=job.summary_rows(),
            best_member=result.best_member,
        )
    )
    out.print(progress.schedule_table(result.best_schedule))
    out.print(
        f"best {search.spec.objective.metric} {result.best_objective:.4f} "
        f"(member {result.best_member}); cost {result.member_steps} member-steps; "
        f"wall {result.wall_seconds:.0f}s",
        markup=False,
    )
