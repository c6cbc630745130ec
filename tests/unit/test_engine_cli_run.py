"""`schedsearch run` at the terminal: what it says when a search is interrupted or cannot start."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

import schedsearch.engine as engine
from schedsearch.cli import main as cli_main

SPEC = textwrap.dedent(
    """\
    apiVersion: schedsearch.io/v1alpha1
    kind: ScheduleSearch
    metadata: {name: s}
    spec:
      workload: {builtin: regression}
      budget: {steps: 100}
      lrBounds: {min: 1.0e-3, max: 0.5}
      baseSchedule: {family: cosine, peakLR: 0.05}
      strategy: {autolrs: {tau: 40, tauPrime: 10, tauMax: 80}}
      checkpoints: {emptyDir: {}}
    """
)


def _run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    *extra: str,
) -> tuple[int, str]:
    spec = tmp_path / "my-search.yaml"
    spec.write_text(SPEC)

    def run_search(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(engine.run, "run_search", run_search)
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["run", str(spec), "--store", str(tmp_path / "r.db"), *extra])
    return int(exited.value.code or 0), capsys.readouterr().err


def test_an_interrupted_run_says_so_once_and_how_to_continue_this_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = engine.SearchInterrupted("state saved")
    code, err = _run(tmp_path, monkeypatch, capsys, stop, "--name", "other")
    assert code == 130
    assert err.count("Interrupted") == 1, err
    spec, store = tmp_path / "my-search.yaml", tmp_path / "r.db"
    assert f"schedsearch run {spec} --resume --name other --store {store}" in err
    assert "SPEC" not in err


def test_a_cluster_that_cannot_be_joined_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    error = engine.RayConnectError("cannot join the Ray cluster at h:1: nothing answers there")
    code, err = _run(tmp_path, monkeypatch, capsys, error, "--ray-address", "h:1")
    assert code == 1 and "nothing answers there" in err and "Traceback" not in err
