"""Local HDET: start one worker process per replica on this machine and collect rank 0's result.

The workers meet over a free loopback port with the same env:// variables a cluster sets. Rank
0's tagged report lines are forwarded to the caller's reporter; every rank's other output goes to
``out_dir/replica-<r>.log``. If any replica fails, the others are stopped and the error names the
log to read. Calling again with the same ``out_dir`` resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from schedsearch.trainers import schedules
from schedsearch.trainers.config import BaseScheduleConfig
from schedsearch.trainers.evaluation import Phases
from schedsearch.trainers.strategies import base as strategy_base
from schedsearch.trainers.strategies.hdet.config import HDETConfig
from schedsearch.trainers.strategies.hdet.job import JOB_FILE, REPORT_TAG, ReplicaJob

WORKER_MODULE = "schedsearch.trainers.strategies.hdet.worker"
POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 10.0


def free_port() -> int:
    """A loopback port free right now (the workers bind it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_hdet(
    config: HDETConfig,
    workload_ref: str,
    *,
    total_steps: int,
    base: BaseScheduleConfig | None,
    lr_bounds: tuple[float, float],
    seed: int,
    out_dir: str | Path,
    reporter: strategy_base.Reporter | None = None,
    phases: Phases | None = None,
) -> strategy_base.SearchResult:
    """Run HDET with ``config.replicas`` local processes; returns rank 0's result.

    The result's ``best_schedule`` is the base schedule the replicas followed (the one a single
    model replays, ending in ``phases``'s cooldown), ``member_steps`` is replicas * steps plus
    the probes and scoring branches (``evaluation_steps``), and the last ``history`` entry
    (``kind: Timing``) holds the measured converge cost.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    job = ReplicaJob(
        config=config,
        workload=workload_ref,
        total_steps=total_steps,
        lr_bounds=lr_bounds,
        out_dir=str(out),
        base=base,
        seed=seed,
        phases=phases,
    )
    job.write(out / JOB_FILE)
    reporter = reporter or strategy_base.NullReporter()
    processes = _launch(job, out)
    _supervise(processes, out, reporter)
    return read_result(job.result_path)


def _launch(job: ReplicaJob, out: Path) -> list[subprocess.Popen[str]]:
    port = free_port()
    # The replicas share this machine's cores: one thread each keeps them from oversubscribing.
    threads = max(1, (os.cpu_count() or 1) // job.config.replicas)
    processes = []
    for rank in range(job.config.replicas):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(job.config.replicas),
            "LOCAL_WORLD_SIZE": str(job.config.replicas),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": str(threads),
        }
        log = open(out / f"replica-{rank}.log", "a")  # noqa: SIM115 - closed with the process
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, "--job", str(out / JOB_FILE)],
                env=env,
                stdout=subprocess.PIPE if rank == 0 else log,
                stderr=log,
                text=True,
            )
        )
        log.close()  # the child holds its own descriptor
    return processes


def _supervise(
    processes: list[subprocess.Popen[str]], out: Path, reporter: strategy_base.Reporter
) -> None:
    lead = processes[0]
    assert lead.stdout is not None
    forwarder = threading.Thread(
        target=_forward, args=(lead.stdout, out / "replica-0.log", reporter), daemon=True
    )
    forwarder.start()
    try:
        while any(p.poll() is None for p in processes):
            _raise_if_failed(processes, out)
            time.sleep(POLL_SECONDS)
        _raise_if_failed(processes, out)
    finally:
        _stop(processes)
        forwarder.join(timeout=STOP_GRACE_SECONDS)


def _raise_if_failed(processes: list[subprocess.Popen[str]], out: Path) -> None:
    """One failed replica blocks or fails the others: name every failure with its last log line
    (the first to fail is the cause; its peers report the closed connection)."""
    failed = [r for r, p in enumerate(processes) if p.poll() not in (None, 0)]
    if not failed:
        return
    lines = [
        f"replica {r} (exit {processes[r].returncode}): {_failure_line(out / f'replica-{r}.log')}"
        for r in failed
    ]
    raise RuntimeError("HDET failed; logs in " + str(out) + "\n" + "\n".join(lines))


def _failure_line(path: Path) -> str:
    """Why a replica failed, from its log: the exception its last Python traceback ended with
    (a process that raised may still print more while it exits, e.g. torch.distributed's
    threads aborting it), else its last line."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call")]
    if starts:
        after = lines[starts[-1] + 1 :]
        raised = next((line for line in after if line and not line[0].isspace()), None)
        if raised is not None:
            return raised.strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), "(empty log)")


def _stop(processes: list[subprocess.Popen[str]]) -> None:
    """Terminate the replicas still running (a failed peer leaves them blocked), then kill."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _forward(stream: IO[str], log_path: Path, reporter: strategy_base.Reporter) -> None:
    """Rank 0's stdout: tagged lines become reporter calls, the rest goes to its log."""
    with open(log_path, "a") as log:
        for line in stream:
            if line.startswith(REPORT_TAG):
                _dispatch(json.loads(line[len(REPORT_TAG) :]), reporter)
            else:
                log.write(line)
                log.flush()


def _dispatch(record: dict[str, Any], reporter: strategy_base.Reporter) -> None:
    if record.get("type") == "progress":
        reporter.on_progress(
            record["member"],
            record["step"],
            _float(record["loss"]),
            record["lr"],
            None if record.get("valLoss") is None else _float(record["valLoss"]),
        )
    else:
        reporter.on_event(record["kind"], record["message"], **record.get("data", {}))


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


def read_result(path: Path) -> strategy_base.SearchResult:
    """Inverse of ``SearchResult.to_dict`` for the file rank 0 writes."""
    if not path.exists():
        raise RuntimeError(f"HDET finished without a result at {path}")
    data = json.loads(path.read_text())
    return strategy_base.SearchResult(
        strategy=data["strategy"],
        workload=data["workload"],
        best_schedule=schedules.Schedule.from_dict(data["bestSchedule"]),
        best_objective=_float(data["bestObjective"]),
        best_member=int(data["bestMember"]),
        member_steps=int(data["memberSteps"]),
        history=list(data["history"]),
        wall_seconds=float(data["wallSeconds"]),
        evaluation_steps=int(data.get("evaluationSteps", 0)),
    )
