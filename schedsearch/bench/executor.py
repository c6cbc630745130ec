"""Runs a benchmark's tasks: cached ones are skipped, the rest go to worker processes, and
progress (what runs, i/n, elapsed, ETA) goes to stderr.

Workers are spawned (not forked: the parent already runs torch threads) and each uses
``threads`` torch threads. A task that fails is reported and left out of the cache, so a re-run
tries it again; the benchmark carries on with the others. Finishing (or failing) a run may add
tasks (a search's replays, the target once the grid is done): ``followups`` says which.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from schedsearch.bench import tasks
from schedsearch.bench.cache import RunCache
from schedsearch.bench.planning import format_duration
from schedsearch.trainers import harness

# (task, its result or None when it failed) -> the runs it calls for
Followups = Callable[[tasks.Task, dict[str, Any] | None], list[tasks.Task]]
Cost = Callable[[tasks.Task], float]


class Progress:
    """Counts runs and estimated seconds. ``cost`` is a run's estimated seconds on its own;
    parallel runs share ``jobs`` workers, timing runs go alone. The ETA is the estimate of what
    is left times the pace so far: the finished runs' own durations over their estimates (so a
    worker's start-up does not skew it)."""

    def __init__(self, total: int, cost: Cost, jobs: int, stream: TextIO | None = None) -> None:
        self.total, self.cost, self.jobs = total, cost, jobs
        self.done = 0
        self.estimated_left = 0.0
        self.estimated_done = 0.0
        self.actual_done = 0.0
        self.started = time.monotonic()
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def share(self, task: tasks.Task) -> float:
        """The wall-clock the run adds to the whole benchmark."""
        return self.cost(task) if task.exclusive else self.cost(task) / self.jobs

    def expect(self, task: tasks.Task) -> None:
        self.estimated_left += self.share(task)

    def forget(self, planned: list[tasks.Task]) -> None:
        """Runs that will not happen after all (a failed search's replays)."""
        self.total -= len(planned)
        self.estimated_left = max(0.0, self.estimated_left - sum(map(self.share, planned)))

    def start(self, task: tasks.Task) -> None:
        self._print(f"start  {task.workload} {task.label}")

    def finish(self, task: tasks.Task, status: str, seconds: float | None = None) -> None:
        self.done += 1
        self.estimated_left = max(0.0, self.estimated_left - self.share(task))
        if seconds is not None:
            self.estimated_done += self.cost(task)
            self.actual_done += seconds
        took = f" in {seconds:.1f}s" if seconds is not None else ""
        self._print(f"{status:<6} {task.workload} {task.label}{took}")

    def eta(self) -> float:
        pace = self.actual_done / self.estimated_done if self.estimated_done > 0 else 1.0
        return self.estimated_left * pace

    def _print(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(
            f"[bench {self.done}/{self.total}] {message} | elapsed {format_duration(elapsed)} "
            f"| ETA {format_duration(self.eta())}",
            file=self.stream,
            flush=True,
        )


def init_worker(threads: int) -> None:
    """Every run in this process (and any it starts) uses ``threads`` torch threads."""
    os.environ[harness.THREADS_ENV] = str(threads)
    harness.configure_threads(threads)


def _run(task: tasks.Task, workdir: Path) -> dict[str, Any]:
    try:
        return {"ok": True, "result": tasks.run_task(task, workdir)}
    except Exception as error:  # any failure of one run is reported, not fatal to the benchmark
        return {"ok": False, "error": f"{type(error).__name__}: {error}", "trace": _trace()}


def _trace() -> str:
    return "".join(traceback.format_exc(limit=8))


class Executor:
    """Runs tasks with a cache, ``jobs`` worker processes, and follow-up tasks."""

    def __init__(
        self,
        cache: RunCache,
        workdir: Path,
        progress: Progress,
        *,
        jobs: int,
        threads: int,
        followups: Followups,
        planned_followups: Callable[[tasks.Task], list[tasks.Task]],
    ) -> None:
        self.cache, self.workdir, self.progress = cache, workdir, progress
        self.jobs, self.threads = jobs, threads
        self.followups, self.planned_followups = followups, planned_followups
        self.results: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}
        self._queue: deque[tasks.Task] = deque()

    def add(self, task: tasks.Task) -> None:
        """Queue ``task``, or take its cached result (and queue its follow-ups)."""
        cached = self.results.get(task.key) or self.cache.get(task.key)
        if cached is None:
            self._queue.append(task)
            return
        self.results[task.key] = cached
        self.progress.finish(task, "cached")
        for follow in self.followups(task, cached):
            self.add(follow)

    def run_parallel(self) -> None:
        """Everything queued, ``jobs`` at a time (inline when jobs is 1)."""
        if self.jobs == 1:
            self.run_inline()
            return
        context = multiprocessing.get_context("spawn")
        pool = futures.ProcessPoolExecutor(
            self.jobs, mp_context=context, initializer=init_worker, initargs=(self.threads,)
        )
        running: dict[futures.Future[dict[str, Any]], tasks.Task] = {}
        try:
            while self._queue or running:
                while self._queue and len(running) < self.jobs:
                    task = self._queue.popleft()
                    self.progress.start(task)
                    running[pool.submit(_run, task, self.workdir)] = task
                done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    self._record(running.pop(future), future.result())
        except BaseException:
            # Ctrl-C reaches the workers too; do not wait for runs that will not finish.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def run_inline(self) -> None:
        """Everything queued, one at a time in this process (timing runs, or jobs=1)."""
        init_worker(self.threads)
        while self._queue:
            task = self._queue.popleft()
            self.progress.start(task)
            self._record(task, _run(task, self.workdir))

    def _record(self, task: tasks.Task, outcome: dict[str, Any]) -> None:
        if not outcome["ok"]:
            self.errors[task.key] = outcome["error"]
            self.results[task.key] = {"label": task.label, "error": outcome["error"]}
            self.progress.finish(task, "FAILED")
            print(outcome["trace"], file=self.progress.stream)
            self.progress.forget(self.planned_followups(task))
            for follow in self.followups(task, None):
                self.add(follow)
            return
        result = outcome["result"]
        self.cache.put(task.key, result)
        self.results[task.key] = result
        self.progress.finish(task, "done", result.get("seconds"))
        for follow in self.followups(task, result):
            self.add(follow)
