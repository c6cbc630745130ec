"""One PBT coordinator, two hosts: the local engine's actor and the controller's stored state.

The same report sequence, sent to the engine's coordinator (through the trial side, as a Ray
trial calls it) and to the controller (through its report handling, state written back after
each report), gets the same decisions, the same start points, the same restart point when the
file a member was told to copy is gone (its lineage re-recorded to match), and the same result.
A state stored by the controller before the coordinator held the start points still loads.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from pathlib import Path
from typing import Any

from schedsearch.controller import reports, results
from schedsearch.controller import state as state_mod
from schedsearch.engine.pbt import PBTCoordinator
from schedsearch.engine.trials import ActorCoordinator
from schedsearch.trainers import channel
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.pbt.coordinator import StartPoint

from .controller_fixtures import _builtin_workloads, deliver, parsed  # noqa: F401

SPEC = parsed("pbt")  # population 4, interval 100, budget 1000, bounds [1e-4, 1]


class Paths:
    """The engine's coordinator and the controller's state, fed the same reports."""

    def __init__(self, folder: Path) -> None:
        config = SPEC.strategy.pbt
        assert config is not None
        lr_min, lr_max = SPEC.lr_bounds.min, SPEC.lr_bounds.max
        self.folder = folder
        self.engine = PBTCoordinator(
            config, lr_min=lr_min, lr_max=lr_max, total_steps=SPEC.budget.steps
        )
        self.trial = ActorCoordinator(lambda method, *a: getattr(self.engine, method)(*a))
        self.state = state_mod.initial(
            search_uid="u",
            strategy="pbt",
            members=config.population,
            spec=SPEC.to_wire(),
            generation=1,
            pbt=config,
            lr_min=lr_min,
            lr_max=lr_max,
            total_steps=SPEC.budget.steps,
        )

    def saved(self, member: int, step: int) -> str:
        path = self.folder / f"member-{member}" / f"step-{step}.pt"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"checkpoint")
        return str(path)

    def report(self, member: int, step: int, objective: float) -> base.PBTDecision:
        """Both paths hear ``member`` report; their decisions must agree."""
        path = None if math.isnan(objective) else self.saved(member, step)
        lr = self.engine.start_point(member).config["lr"]
        by_engine = self.trial.report(member, step, objective, path, {"lr": lr})
        sent = channel.Report(
            member=member,
            kind="checkpoint",
            step=step,
            objective=None if math.isnan(objective) else objective,
            checkpoint_path=path,
            config={"lr": lr},
        )
        outcome = deliver(self.state, sent)
        self.state = outcome.state
        by_controller = base.decision_from_dict(outcome.answer["decision"])
        assert by_controller == by_engine, f"member {member} at step {step}"
        return by_engine  # type: ignore[no-any-return]

    def finish(self, member: int) -> None:
        steps = SPEC.budget.steps
        self.trial.finish(member, steps)
        final = channel.Report(member=member, kind="final", step=steps)
        self.state = deliver(self.state, final).state

    def coordinator(self) -> Any:
        return state_mod.coordinator(self.state)


def test_both_paths_decide_restart_and_conclude_the_same(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    # Worst first, so nobody copies anybody at the first ready point.
    for member, objective in ((3, 0.9), (2, 0.6), (1, 0.5), (0, 0.1)):
        assert paths.report(member, 100, objective) == base.Continue()
    exploit = paths.report(3, 200, 0.95)
    assert isinstance(exploit, base.Exploit) and (exploit.src, exploit.src_step) == (0, 100)
    rescue = paths.report(2, 150, math.nan)  # diverged: rescued at once
    assert isinstance(rescue, base.Exploit) and rescue.dst == 2
    for member, objective in ((0, 0.08), (1, 0.4)):
        paths.report(member, 200, objective)
    # Member 3's pod (trial) died before loading its copy, and the copied file is gone.
    Path(exploit.checkpoint_path).unlink()
    assert paths.coordinator().start_point(3) == paths.engine.start_point(3)
    by_engine = paths.trial.start_point(3)
    restart = channel.Report(member=3, kind="restart", step=0)
    outcome = deliver(paths.state, restart)
    paths.state = outcome.state
    by_controller = StartPoint.from_dict(outcome.answer["start"])
    assert by_engine == by_controller
    assert (by_engine.step, by_engine.source) == (200, 0)
    assert by_engine.checkpoint_path == str(tmp_path / "member-0" / "step-200.pt")
    assert [n.reason for n in outcome.notes] == ["CheckpointMissing"]
    live = paths.coordinator()
    for member in range(4):
        ours = live.population.lineage.schedule(member, SPEC.budget.steps)
        theirs = paths.engine.population.lineage.schedule(member, SPEC.budget.steps)
        assert ours.points == theirs.points, f"member {member}'s lineage"
    assert live.population.lineage.schedule(3, 1000).provenance["exploits"][-1] == {
        "step": 200,
        "from": 0,
    }
    # On to the end: the same decisions, then the same best member, schedule and objective.
    for step in range(300, 1001, 100):
        for member, objective in ((0, 0.05), (1, 0.3), (2, 0.2), (3, 0.04)):
            paths.report(member, step, objective + step / 1e5)
    for member in range(4):
        paths.finish(member)
    found = paths.engine.result(SPEC.workload.ref)
    stored = results.compute(paths.state, SPEC)
    assert stored is not None
    assert (stored.member, stored.objective) == (found.best_member, found.best_objective)
    assert stored.schedule.points == found.best_schedule.points


def test_the_best_member_is_the_best_finished_one(tmp_path: Path) -> None:
    """A member still training never names the result, however good its last report."""
    paths = Paths(tmp_path)
    for member, objective in ((3, 0.9), (2, 0.6), (1, 0.5), (0, 0.1)):
        paths.report(member, 100, objective)
    for member in (1, 2, 3):
        paths.finish(member)
    stored = results.compute(paths.state, SPEC)
    assert stored is not None and stored.member == 1
    assert paths.engine.result(SPEC.workload.ref).best_member == 1
    # While running, the status's best so far counts everyone.
    best = results.best_so_far(paths.state, "min")
    assert best is not None and best.member == 0


def test_a_restart_report_outside_pbt_is_refused() -> None:
    state = state_mod.initial(search_uid="u", strategy="autolrs", members=1, spec={}, generation=1)
    restart = channel.Report(member=0, kind="restart", step=0, seq=1)
    try:
        reports.apply(state, restart)
    except channel.ReportError as err:
        assert "kind: restart reports come from PBT members" in str(err)
    else:
        raise AssertionError("a restart report of an AutoLRS search was accepted")


def _previous_version_configmap(state: state_mod.SearchState) -> dict[str, Any]:
    """``state`` as the controller stored it before the coordinator: a bare population, each
    member's start point in its record."""
    data, _ = state.to_configmap()
    doc = json.loads(data[state_mod.STATE_KEY])
    live = state_mod.coordinator(state)
    for member, record in doc["members"].items():
        start = live.starts[int(member)]
        if start.checkpoint_path is not None:
            record["start"] = start.to_dict()
    raw = json.dumps(live.population.state_dict()).encode()
    blob = base64.b64encode(gzip.compress(raw, mtime=0)).decode()
    return {
        "data": {state_mod.STATE_KEY: json.dumps(doc)},
        "binaryData": {state_mod.POPULATION_KEY: blob},
        "metadata": {"resourceVersion": "7"},
    }


def test_a_state_stored_by_the_previous_version_loads_and_continues(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    for member, objective in ((3, 0.9), (2, 0.6), (1, 0.5), (0, 0.1)):
        paths.report(member, 100, objective)
    exploit = paths.report(3, 200, 0.95)
    assert isinstance(exploit, base.Exploit)
    old = state_mod.SearchState.from_configmap(_previous_version_configmap(paths.state))
    assert old.population is not None and old.population["format"]
    migrated, current = state_mod.coordinator(old), paths.coordinator()
    for member in range(4):
        assert migrated.start_point(member) == current.start_point(member)
        assert state_mod.start_point(old, member) == state_mod.start_point(paths.state, member)
    assert state_mod.named_checkpoints(old, 0) == [exploit.checkpoint_path]
    # It decides on exactly as the state it came from.
    report = channel.Report(
        member=1, kind="checkpoint", step=200, objective=0.7, checkpoint_path="/x", seq=9
    )
    assert reports.apply(old, report).answer == reports.apply(paths.state, report).answer
