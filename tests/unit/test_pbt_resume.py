"""A PBT member pod resumes where the controller's PBT coordinator says.

A member told to copy another member's checkpoint restarts, if its pod dies before it saves its
own, from that very file: the controller's answers tell the source which of its files start points
still name, and its checkpoint rotation keeps them. Were that file gone all the same, the pod asks
the coordinator for its restart point, which re-records the member's lineage to the file it loads
instead (as the local engine does): a pod never picks another file on its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from schedsearch.controller import state as state_mod
from schedsearch.trainers import channel, harness, pod, report_client
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.pbt import runner as pbt_runner
from schedsearch.trainers.strategies.pbt.coordinator import StartPoint
from schedsearch.trainers.workloads import get_workload

from .controller_fixtures import _builtin_workloads, deliver, fresh_state, raw_spec, view  # noqa: F401
from .test_report_channel import FakeApi, channel_server, pod_environ  # noqa: F401


def checkpoint(member: int, step: int, objective: float) -> channel.Report:
    return channel.Report(
        member=member,
        kind="checkpoint",
        step=step,
        objective=objective,
        checkpoint_path=f"/ckpt/member-{member}/step-{step}.pt",
        config={"lr": 0.01},
    )


def test_answers_tell_a_source_which_of_its_files_a_start_point_names() -> None:
    state = fresh_state(view("pbt"))  # population 4, interval 100: quantile of 1
    # Worst first, so that each is the best so far and nobody copies anybody yet.
    for member, objective in ((3, 0.9), (2, 0.6), (1, 0.5), (0, 0.1)):
        outcome = deliver(state, checkpoint(member, 100, objective))
        state = outcome.state
        assert outcome.answer["keep"] == [] and outcome.answer["decision"]["kind"] == "Continue"
    outcome = deliver(state, checkpoint(3, 200, 0.95))
    state = outcome.state
    decision = base.decision_from_dict(outcome.answer["decision"])
    assert isinstance(decision, base.Exploit) and decision.src == 0
    copied = decision.checkpoint_path
    # Were member 3's pod to die before it saves a checkpoint of its own, it would load that file.
    start = state_mod.start_point(state, 3)
    assert start is not None and start["checkpoint"] == copied
    # Member 0 saves two more checkpoints: every answer says to keep the copied one...
    for step in (200, 300):
        outcome = deliver(state, checkpoint(0, step, 0.1))
        state = outcome.state
        assert outcome.answer["keep"] == [copied]
    # ... until member 3 has a checkpoint of its own to restart from.
    state = deliver(state, checkpoint(3, 200, 0.05)).state
    assert deliver(state, checkpoint(0, 400, 0.1)).answer["keep"] == []


def test_the_http_coordinator_keeps_the_latest_keep_list_in_one_set() -> None:
    answers = iter(
        [
            {"decision": {"kind": "Continue"}, "duplicate": False, "keep": ["/a", "/b"]},
            {"decision": {"kind": "Continue"}, "duplicate": False, "keep": []},
        ]
    )

    class Client:
        def send(self, report: channel.Report, **_: Any) -> dict[str, Any]:
            return next(answers)

    coordinator = report_client.HTTPCoordinator(Client())  # type: ignore[arg-type]
    held = coordinator.pinned
    coordinator.report(0, 10, 0.5, "/c")
    assert held == {"/a", "/b"}
    coordinator.report(0, 20, 0.5, "/d")
    assert coordinator.pinned is held and held == set()


class Rotation:
    """A coordinator that says Continue and checks each reported file exists."""

    def report(self, member: int, step: int, objective: float, path: str | None, *_: Any) -> Any:
        assert path is not None and Path(path).exists()
        return base.Continue()

    def poll(self, member: int) -> base.PBTDecision:
        return base.Continue()

    def finish(self, member: int, step: int) -> None:
        pass


def test_rotation_keeps_the_files_a_start_point_names(tmp_path: Path) -> None:
    trainer = harness.Trainer(get_workload("regression"), seed=0, device="cpu")
    loop = pbt_runner.MemberLoop(
        0, trainer, {"lr": 0.01}, Rotation(), total_steps=60, interval=10, checkpoint_dir=tmp_path
    )
    folder = tmp_path / "member-0"
    pinned: set[str] = set()
    loop.pinned = pinned

    def files() -> list[str]:
        return sorted((p.name for p in folder.iterdir()), key=lambda n: int(n[5:-3]))

    assert loop.advance()
    pinned.add(str(folder / "step-10.pt"))  # another member was told to copy step 10
    for _ in range(3):
        assert loop.advance()
    assert files() == ["step-10.pt", "step-30.pt", "step-40.pt"]
    pinned.clear()  # that member saved its own checkpoint since
    assert loop.advance()
    assert files() == ["step-40.pt", "step-50.pt"]


class NeverAsked:
    """A coordinator a pod whose file is there must not ask."""

    def restart_point(self, member: int) -> StartPoint:
        raise AssertionError(f"member {member} asked for a restart point")


def test_a_pod_resumes_from_the_named_file_when_it_is_there(tmp_path: Path) -> None:
    (tmp_path / "step-300.pt").write_bytes(b"")
    there = StartPoint({"lr": 0.1}, 300, str(tmp_path / "step-300.pt"), source=0)
    assert pod.resume_point(there, 3, NeverAsked()) == there  # type: ignore[arg-type]
    scratch = StartPoint({"lr": 0.1})
    assert pod.resume_point(scratch, 3, NeverAsked()) == scratch  # type: ignore[arg-type]


def test_a_pod_whose_named_file_is_gone_resumes_where_the_coordinator_says(
    channel_server: tuple[FakeApi, str, list[str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    api, url, _ = channel_server
    assert api.state is not None

    def saved(member: int, step: int, objective: float) -> channel.Report:
        path = tmp_path / f"member-{member}" / f"step-{step}.pt"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"checkpoint")
        return dataclasses.replace(checkpoint(member, step, objective), checkpoint_path=str(path))

    for member, objective in ((3, 0.9), (2, 0.6), (1, 0.5), (0, 0.1)):  # nobody copies yet
        api.state = deliver(api.state, saved(member, 100, objective)).state
    outcome = deliver(api.state, saved(3, 200, 0.95))
    api.state = outcome.state
    decision = base.decision_from_dict(outcome.answer["decision"])
    assert isinstance(decision, base.Exploit) and (decision.src, decision.src_step) == (0, 100)
    # The source moves on, and the file member 3 was told to copy is lost all the same.
    api.state = deliver(api.state, saved(0, 200, 0.1)).state
    Path(decision.checkpoint_path).unlink()
    given = state_mod.start_point(api.state, 3)
    assert given is not None and given["checkpoint"] == decision.checkpoint_path
    client = report_client.ReportClient(
        url, "ml", "s1", "s3cret", backoff_base=0.01, last_seq=api.state.members[3].last_seq
    )
    resumed = pod.resume_point(
        StartPoint.from_dict(given), 3, report_client.HTTPCoordinator(client)
    )
    source_latest = str(tmp_path / "member-0" / "step-200.pt")
    assert resumed == StartPoint(decision.new_config, 200, source_latest, source=0)
    # The coordinator in the state agrees, and the lineage says what member 3 really trained.
    live = state_mod.coordinator(api.state)
    assert live.start_point(3) == resumed
    lineage = live.population.lineage.schedule(3, 1000)
    assert lineage.provenance["exploits"][-1] == {"step": 200, "from": 0}
    assert lineage.lr_at(200) == decision.new_config["lr"]


def test_an_arithmetic_error_is_reported_fatal_not_retried(
    channel_server: tuple[FakeApi, str, list[str]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api, url, _ = channel_server

    def overflow(_: pod.Pod) -> None:
        raise OverflowError("math range error")

    monkeypatch.setitem(pod.SHAPES, "population", overflow)
    spec = raw_spec("pbt", workload={"builtin": "regression"})
    assert pod.main(pod_environ(url, spec)) == channel.EXIT_CONFIG
    assert api.state is not None
    assert api.state.members[1].fatal == "ArithmeticError: OverflowError: math range error"


def test_a_copied_checkpoint_survives_its_sources_rotation_end_to_end(
    channel_server: tuple[FakeApi, str, list[str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Member 0 trains for real against the controller's report channel; member 3 is told to copy
    its step-100 file and its pod dies at once. Member 0 saves two more checkpoints (it keeps
    two), yet the file member 3's start point names is still there for its replacement."""
    api, url, _ = channel_server
    assert api.state is not None
    for member, objective in ((3, 30.0), (2, 20.0), (1, 10.0)):  # nobody copies anybody yet
        api.state = deliver(api.state, checkpoint(member, 100, objective)).state
    coordinator = report_client.HTTPCoordinator(
        report_client.ReportClient(url, "ml", "s1", "s3cret", backoff_base=0.01)
    )
    trainer = harness.Trainer(get_workload("regression"), seed=0, device="cpu")
    loop = pbt_runner.MemberLoop(
        0, trainer, {"lr": 0.01}, coordinator, total_steps=1000, interval=100,
        checkpoint_dir=tmp_path,
    )  # fmt: skip
    loop.pinned = coordinator.pinned
    assert loop.advance() and loop.step == 100
    outcome = deliver(api.state, checkpoint(3, 200, 100.0))
    api.state = outcome.state
    decision = base.decision_from_dict(outcome.answer["decision"])
    assert isinstance(decision, base.Exploit) and decision.src == 0
    assert decision.checkpoint_path == str(tmp_path / "member-0" / "step-100.pt")
    assert loop.advance() and loop.advance() and loop.step == 300
    start = state_mod.start_point(api.state, 3)
    assert start is not None
    resumed = pod.resume_point(StartPoint.from_dict(start), 3, NeverAsked())  # type: ignore[arg-type]
    assert (resumed.step, resumed.checkpoint_path) == (100, decision.checkpoint_path)
    assert sorted(p.name for p in (tmp_path / "member-0").iterdir()) == [
        "step-100.pt",
        "step-200.pt",
        "step-300.pt",
    ]
