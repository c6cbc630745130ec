"""``schedsearch run --metrics-port``: a local search serves its members' series while it runs;
and a succeeded local search leaves no checkpoints behind."""

from __future__ import annotations

import io
import socket
import types
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from schedsearch.api import ScheduleSearch, load_spec
from schedsearch.cli.main import cli
from schedsearch.engine import run, trials
from schedsearch.store import SQLiteStore
from schedsearch.trainers.schedules import ScheduleBuilder
from schedsearch.trainers.strategies.base import SearchResult

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "examples" / "digits-autolrs.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    return urllib.request.urlopen(url, timeout=5).read().decode()


def test_run_serves_member_metrics_while_the_search_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    seen: dict[str, Any] = {}

    def run_search(search: ScheduleSearch, *, reporters: Any, **_: Any) -> None:
        # What the engine does with each trial result: hand it to every reporter.
        for reporter in reporters:
            reporter.on_progress(1, 40, 0.75, 0.05, val_loss=0.8)
        seen["body"] = scrape(port)

    monkeypatch.setattr(run, "run_search", run_search)  # what `run` reaches through the engine
    args = ["run", str(SPEC), "--store", str(tmp_path / "r.db"), "--metrics-port", str(port)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    labels = 'member="1",namespace="",search="digits-autolrs"'
    assert f"schedsearch_trainer_training_loss{{{labels}}} 0.75" in seen["body"]
    assert f"schedsearch_trainer_validation_loss{{{labels}}} 0.8" in seen["body"]
    assert f"schedsearch_trainer_learning_rate{{{labels}}} 0.05" in seen["body"]
    assert f"schedsearch_trainer_step{{{labels}}} 40.0" in seen["body"]
    with pytest.raises(urllib.error.URLError):  # the port is let go when the search ends
        scrape(port)


def test_no_port_serves_nothing_and_a_busy_port_is_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []

    def run_search(search: ScheduleSearch, *, reporters: Any, **_: Any) -> None:
        calls.append(list(reporters))

    monkeypatch.setattr(run, "run_search", run_search)  # what `run` reaches through the engine
    store = str(tmp_path / "r.db")
    assert CliRunner().invoke(cli, ["run", str(SPEC), "--store", store]).exit_code == 0
    assert calls == [[]]
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["run", str(SPEC), "--store", store, "--metrics-port", str(port)]
        )
    assert result.exit_code == 1 and f"--metrics-port {port}: cannot serve" in result.output
    assert len(calls) == 1  # the search did not start
    assert CliRunner().invoke(cli, ["run", str(SPEC), "--metrics-port", "0"]).exit_code == 2


def test_a_succeeded_local_search_leaves_no_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = load_spec(SPEC)
    store = SQLiteStore(tmp_path / "r.db")
    run_dir = tmp_path / "runs" / search.name
    schedule = ScheduleBuilder().set_lr(0, 0.05).build(search.spec.budget.steps, {})

    def train(*args: Any, **kwargs: Any) -> SearchResult:
        folder = trials.checkpoint_dir(run_dir) / "member-0"
        folder.mkdir(parents=True)
        (folder / "step-800.pt").write_bytes(b"weights")
        store.create_search(search)
        store.finish(search.name, schedule=schedule, objective=0.1, member=0, member_steps=800)
        return SearchResult(
            strategy="autolrs",
            workload=search.spec.workload.ref,
            best_schedule=schedule,
            best_objective=0.1,
            best_member=0,
            member_steps=800,
        )

    monkeypatch.setattr(run, "_run_job", train)
    monkeypatch.setattr(run, "_print_result", lambda *args: None)
    options = types.SimpleNamespace(store_path=store.path, ray_address=None, resume=False)
    run.run_search(
        search,
        options=options,  # type: ignore[arg-type]
        store=store,
        runs_dir=tmp_path / "runs",
        console=Console(file=io.StringIO()),
    )
    assert store.get_search(search.name).phase == "Succeeded"
    assert run_dir.is_dir() and not trials.checkpoint_dir(run_dir).exists()
