"""The local engine end to end: `schedsearch run` on Ray Tune into a temporary store.

One Ray for the whole module (its start-up is the fixed cost): in-process runs reuse it, and the
`schedsearch run` subprocess of the interruption test joins it with --ray-address. Every run is
tiny (the regression MLP, a few hundred steps) so the module takes a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray.tune")

import ray
from click.testing import CliRunner

from schedsearch.cli.main import cli
from schedsearch.engine.state import RUNS_DIR_ENV, EngineState
from schedsearch.store.sqlite import SQLiteStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STEPS = 300


def _spec(
    tmp_path: Path,
    name: str,
    strategy: str,
    *,
    steps: int = STEPS,
    workload: str = "regression",
    control: bool = False,
) -> Path:
    """A spec file; the control run (two more budgets of training) only where a test needs it."""
    path = tmp_path / f"{name}.yaml"
    # The cluster needs a shared claim for PBT; the local engine keeps checkpoints on disk.
    checkpoints = (
        "{persistentVolumeClaim: ckpt}" if strategy.startswith("pbt") else "{emptyDir: {}}"
    )
    path.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: schedsearch.io/v1alpha1
            kind: ScheduleSearch
            metadata: {{name: {name}}}
            spec:
              workload: {{builtin: {workload}}}
              objective: {{metric: val_loss, mode: min}}
              budget: {{steps: {steps}}}
              lrBounds: {{min: 1.0e-3, max: 0.5}}
              baseSchedule: {{family: cosine, peakLR: 0.05, warmupSteps: 10}}
              strategy:
                {strategy}
              resources: {{cpu: "1", memory: 1Gi}}
              checkpoints: {checkpoints}
              evaluation: {{control: {{enabled: {str(control).lower()}}}}}
            """
        )
    )
    return path


PBT = "pbt: {population: 4, perturbationInterval: 50, seed: 3}"


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """One local Ray for the module, sized like the engine's own."""
    ray.init(
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=80 * 1024 * 1024,
        namespace="schedsearch",
    )
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def _run(store: Path, spec: Path, *extra: str) -> Any:
    return CliRunner().invoke(
        cli, ["run", str(spec), "--store", str(store), *extra], catch_exceptions=False
    )


def test_pbt_search_runs_through_the_cli_into_the_store(ray_address: str, tmp_path: Path) -> None:
    store_path = tmp_path / "results.db"
    result = _run(store_path, _spec(tmp_path, "pbt-e2e", PBT, control=True))
    assert result.exit_code == 0, result.output
    assert "best schedule" in result.output
    # The control: the found and the base schedule from a seed no member used, side by side.
    assert re.search(r"control: found \S+ vs base \S+ val_loss on a fresh seed", result.output)

    store = SQLiteStore(store_path)
    record = store.get_search("pbt-e2e")
    assert record.phase == "Succeeded"
    assert record.best_objective is not None and record.best_objective < 1.0
    # The steps trained: at least the best lineage; at most the budget per member plus what
    # exploits redo (a member that copies a source from behind trains those steps again), which
    # every interval of every member could do at most once, plus an annealed-evaluation branch
    # (half an interval) at each report (every interval, the warm-up's end, the cooldown's start)
    # and the control run (the found and the base schedule, one budget each).
    assert record.member_steps is not None
    redo, branches = 4 * (STEPS // 50) * 50, 4 * (STEPS // 50 + 2) * 25
    assert STEPS <= record.member_steps <= 4 * STEPS + redo + branches + 2 * STEPS
    best = store.best_schedule("pbt-e2e")
    assert best.schedule.total_steps == STEPS
    assert best.provenance.strategy == "pbt" and best.provenance.member == record.best_member
    members = {point.member for point in store.history("pbt-e2e")}
    assert members == {0, 1, 2, 3}
    # The run lives beside the store; a succeeded search no longer needs its checkpoints.
    assert (tmp_path / "runs" / "pbt-e2e").is_dir()
    assert not list((tmp_path / "runs" / "pbt-e2e" / "checkpoints").glob("member-*/step-*.pt"))


def test_a_population_that_does_not_divide_the_cpus_runs_at_once(
    ray_address: str, tmp_path: Path
) -> None:
    # One member more than the CPUs (3 on 2): each asked 2/3 CPU rounded up, one never fitted
    # and the others waited 10 minutes for it. Now they time-share the CPUs, all at once.
    cpus = int(ray.cluster_resources()["CPU"])
    population = cpus + 1
    pbt = f"pbt: {{population: {population}, perturbationInterval: 50, seed: 3}}"
    store_path = tmp_path / "results.db"
    started = time.monotonic()
    result = _run(store_path, _spec(tmp_path, "pbt-crowd", pbt))
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 180, result.output
    share = int(cpus / population * 10_000) / 10_000
    assert f"{population} trials at once on {cpus} CPU, {share:g} CPU each" in result.output
    assert "trains without them" not in result.output
    store = SQLiteStore(store_path)
    assert store.get_search("pbt-crowd").phase == "Succeeded"
    assert {point.member for point in store.history("pbt-crowd")} == set(range(population))


def test_autolrs_runs_as_one_trial(ray_address: str, tmp_path: Path) -> None:
    autolrs = "autolrs: {tau: 60, tauPrime: 15, tauMax: 120, candidates: 3}"
    store_path = tmp_path / "results.db"
    result = _run(store_path, _spec(tmp_path, "autolrs-e2e", autolrs, steps=200))
    assert result.exit_code == 0, result.output
    record = SQLiteStore(store_path).get_search("autolrs-e2e")
    assert record.phase == "Succeeded" and record.strategy == "autolrs"
    # Probes are search cost on top of the budget.
    assert record.member_steps is not None and record.member_steps > 200


def test_hdet_runs_as_one_trial_of_replica_processes(ray_address: str, tmp_path: Path) -> None:
    hdet = "hdet: {replicas: 2, syncInterval: 50}"
    store_path = tmp_path / "results.db"
    result = _run(store_path, _spec(tmp_path, "hdet-e2e", hdet, steps=200, control=True))
    assert result.exit_code == 0, result.output
    record = SQLiteStore(store_path).get_search("hdet-e2e")
    # Two replicas; the six default probes of 2T steps, each with its branch of half that; both
    # replicas' branches of T/2 at the three syncs of the searched part (50, 100, 150: the
    # cooldown starts at 160); and the control run (found and base schedule from a fresh seed).
    probes, scoring = 6 * (100 + 50), 2 * 25 * 3
    assert record.phase == "Succeeded"
    assert record.member_steps == 2 * 200 + probes + scoring + 2 * 200
    control = SQLiteStore(store_path).best_schedule("hdet-e2e").provenance.model_extra["control"]
    assert control["steps"] == 200 and control["found"] > 0 and control["base"] > 0
    assert SQLiteStore(store_path).best_schedule("hdet-e2e").schedule.total_steps == 200


def _wait_for_checkpoints(store: SQLiteStore, name: str, proc: subprocess.Popen[str]) -> dict:
    """The engine state once every member has reported a checkpoint."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        try:
            blob = store.load_engine_state(name)
        except Exception:
            blob = None
        if blob is not None:
            job = EngineState.from_bytes(blob).job
            if all(s["checkpoint"] for s in job["starts"].values()):
                return job
        time.sleep(0.2)
    raise AssertionError("no checkpoint from every member within 300 s")


# Two PBT runs of the CNN (interrupted, then resumed to the end), each with annealed-evaluation
# branches: about 3 minutes on an idle 2-core machine, more than 10 on a loaded one.
@pytest.mark.timeout(1500)
def test_ctrl_c_leaves_the_store_consistent_and_resume_finishes(
    ray_address: str, tmp_path: Path
) -> None:
    # The regression MLP trains a member's whole budget in about a second, too fast to be
    # interrupted half-way: the CNN on 600 steps trains for some 15 s on 2 cores.
    name, steps = "pbt-interrupted", 600
    spec = _spec(tmp_path, name, PBT, steps=steps, workload="digits-cnn")
    store_path = tmp_path / "results.db"
    store = SQLiteStore(store_path)
    env = {**os.environ, "CI": "1", RUNS_DIR_ENV: str(tmp_path / "runs")}
    command = [sys.executable, "-m", "schedsearch.cli.main", "run", str(spec)]
    proc = subprocess.Popen(
        [*command, "--store", str(store_path), "--ray-address", ray_address],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_checkpoints(store, name, proc)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    # Said once, with the command that continues this very file.
    assert output.count("Interrupted") == 1, output
    assert f"schedsearch run {spec} --resume" in output and "SPEC" not in output
    record = store.get_search(name)
    assert record.phase == "Interrupted", output
    # What the members trained so far is not lost from view: cost and best so far.
    assert record.member_steps is not None and record.member_steps > 0
    assert record.best_objective is not None and record.best_member is not None
    saved = EngineState.from_bytes(store.load_engine_state(name) or b"")
    starts = saved.job["starts"]
    unfinished = {
        int(m) for m, state in saved.job["population"]["members"].items() if not state["finished"]
    }
    assert unfinished, "every member finished before the interrupt; nothing was tested"
    for member in unfinished:
        assert Path(starts[str(member)]["checkpoint"]).exists()

    result = _run(store_path, spec, "--resume")
    assert result.exit_code == 0, result.output
    assert store.get_search(name).phase == "Succeeded"
    resumed = {
        int(m): int(s) for m, s in re.findall(r"member (\d+) resumes at step (\d+)", result.output)
    }
    # No member started from scratch: each one still training came back from a checkpoint.
    assert set(resumed) == unfinished and all(step > 0 for step in resumed.values())
    assert json.loads(json.dumps(store.best_schedule(name).schedule.to_dict()))
