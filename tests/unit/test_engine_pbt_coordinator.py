"""The PBT coordinator as the engine runs it: start points for resume, cost in member-steps,
exact state, restart points when a file is gone, and the trial side of the actor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schedsearch.engine.pbt import PBTCoordinator
from schedsearch.engine.trials import ActorCoordinator
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.pbt.coordinator import ENGINE_FORMAT_V1, StartPoint


def _coordinator(state: dict[str, object] | None = None, **overrides: object) -> PBTCoordinator:
    config = PBTConfig(population=4, perturbation_interval=10, seed=5, **overrides)  # type: ignore[arg-type]
    return PBTCoordinator(config, lr_min=1e-3, lr_max=1.0, total_steps=40, state=state)


def _round(coordinator: PBTCoordinator, step: int, objectives: dict[int, float]) -> list[object]:
    return [coordinator.report(m, step, objectives[m], f"m{m}/step-{step}.pt") for m in objectives]


def test_fresh_members_start_from_scratch_with_their_initial_lr() -> None:
    coordinator = _coordinator()
    for member, state in coordinator.population.members.items():
        assert coordinator.start_point(member) == StartPoint(dict(state.config), 0, None)


def test_a_member_resumes_from_its_own_last_checkpoint() -> None:
    coordinator = _coordinator()
    # Worst first: nobody is below a member when it reports, so no exploit this round.
    decisions = _round(coordinator, 10, {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0})
    assert all(d == base.Continue() for d in decisions)
    start = coordinator.start_point(2)
    assert (start.step, start.checkpoint_path) == (10, "m2/step-10.pt")
    assert start.config == coordinator.population.members[2].config


def test_an_exploited_member_resumes_from_the_source_checkpoint_and_new_config() -> None:
    coordinator = _coordinator()
    _round(coordinator, 10, {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0})
    decision = coordinator.report(0, 20, 9.0, "m0/step-20.pt")
    assert isinstance(decision, base.Exploit) and decision.dst == 0
    start = coordinator.start_point(0)
    assert start == StartPoint(
        decision.new_config, decision.src_step, decision.checkpoint_path, decision.src
    )


def test_member_steps_count_what_was_trained_including_redone_steps() -> None:
    coordinator = _coordinator()
    _round(coordinator, 10, {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0})
    assert coordinator.member_steps == 40
    decision = coordinator.report(0, 20, 9.0, "m0/step-20.pt")
    assert isinstance(decision, base.Exploit)
    assert coordinator.member_steps == 50
    # The halt ends this run only: the run that resumes from its state decides again.
    resumed = _coordinator(state=json.loads(json.dumps(coordinator.state_dict())))
    assert not resumed.is_halted() and resumed.poll(1) == base.Continue()
    # Member 0 restarts from the source's step 10 and trains to 20 again: 10 more steps.
    coordinator.resume(0)
    coordinator.report(0, 20, 1.5, "m0/step-20b.pt")
    assert coordinator.member_steps == 60
    coordinator.finish(0, 40)
    assert coordinator.member_steps == 80
    assert coordinator.is_finished(0)


def test_state_round_trips_through_json_and_decides_the_same() -> None:
    coordinator = _coordinator()
    _round(coordinator, 10, {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0})
    state = json.loads(json.dumps(coordinator.state_dict()))
    twin = _coordinator()
    twin.load_state_dict(state)
    assert twin.state_dict() == coordinator.state_dict()
    assert twin.report(0, 20, 9.0, "x") == coordinator.report(0, 20, 9.0, "x")
    assert twin.outcome() == coordinator.outcome()


def test_state_of_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="format: PBT coordinator state 'something-else'"):
        _coordinator().load_state_dict({"format": "something-else"})


def test_an_engine_state_stored_by_the_previous_version_still_loads() -> None:
    coordinator = _coordinator()
    _round(coordinator, 10, {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0})
    old = json.loads(json.dumps(coordinator.state_dict()))
    old["format"] = ENGINE_FORMAT_V1
    for start in old["starts"].values():
        start.pop("source", None)
    twin = _coordinator(state=old)
    assert twin.start_point(2) == coordinator.start_point(2)
    assert twin.report(0, 20, 9.0, "x") == coordinator.report(0, 20, 9.0, "x")


def test_outcome_names_the_best_member_and_its_lineage() -> None:
    coordinator = _coordinator()
    _round(coordinator, 10, {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0})
    outcome = coordinator.outcome()
    assert outcome["bestMember"] == 3 and outcome["bestObjective"] == 1.0
    assert outcome["schedule"]["provenance"]["member"] == 3
    assert [row["member"] for row in outcome["members"]] == [0, 1, 2, 3]


def test_a_lost_exploit_source_file_falls_back_to_the_source_latest_checkpoint() -> None:
    coordinator = _coordinator()
    _round(coordinator, 10, {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0})
    decision = coordinator.report(0, 20, 9.0, "m0/step-20.pt")
    assert isinstance(decision, base.Exploit)
    # The source moved on and saved a newer checkpoint (its step-10 file is gone).
    coordinator.report(decision.src, 30, 0.5, f"m{decision.src}/step-30.pt")
    start = coordinator.restart_point(0)
    assert start == StartPoint(decision.new_config, 30, f"m{decision.src}/step-30.pt", decision.src)
    lineage = coordinator.population.lineage.schedule(0, 40)
    assert lineage.provenance["exploits"][-1] == {"step": 30, "from": decision.src}
    assert lineage.lr_at(30) == decision.new_config["lr"]


def test_a_member_with_no_source_to_turn_to_starts_over() -> None:
    coordinator = _coordinator()
    coordinator.report(1, 10, 1.0, "m1/step-10.pt")
    start = coordinator.restart_point(1)
    assert start.step == 0 and start.checkpoint_path is None
    assert coordinator.start_point(1) == start


def test_a_failed_member_leaves_the_population_and_cannot_be_best() -> None:
    coordinator = _coordinator()
    _round(coordinator, 10, {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0})
    coordinator.fail(3)
    assert coordinator.is_finished(3)
    assert coordinator.outcome()["bestMember"] == 2
    assert coordinator.member_rows()[3]["status"] == "failed"
    assert 3 not in coordinator.population.quantiles()[1]


def test_a_failed_member_releases_a_synchronous_round() -> None:
    coordinator = _coordinator(synch=True)
    for member, objective in ((0, 4.0), (1, 3.0), (2, 2.0)):
        assert coordinator.report(member, 10, objective, f"m{member}") == base.Wait()
    coordinator.fail(3)
    decisions = [coordinator.poll(m) for m in (0, 1, 2)]
    assert base.Wait() not in decisions


def test_members_start_together_and_finished_ones_are_not_awaited() -> None:
    coordinator = _coordinator()
    coordinator.finish(2, 40)
    for member in (0, 1):
        coordinator.arrive(member)
        assert not coordinator.all_arrived()
    coordinator.arrive(3)
    assert coordinator.all_arrived()
    assert "arrived" not in json.dumps(coordinator.state_dict())


def _trial_side(coordinator: PBTCoordinator) -> ActorCoordinator:
    return ActorCoordinator(lambda method, *args: getattr(coordinator, method)(*args))


def _files(tmp_path: Path, *names: str) -> dict[str, str]:
    paths = {}
    for name in names:
        path = tmp_path / name
        path.write_bytes(b"checkpoint")
        paths[name] = str(path)
    return paths


def test_an_exploit_of_a_deleted_file_copies_the_source_latest_instead(tmp_path: Path) -> None:
    coordinator = _coordinator()
    files = _files(tmp_path, *(f"m{m}-10" for m in range(4)), "m3-30")
    for member, objective in ((0, 4.0), (1, 3.0), (2, 2.0), (3, 1.0)):
        coordinator.report(member, 10, objective, files[f"m{member}-10"])
    coordinator.report(3, 30, 0.5, files["m3-30"])
    # Member 3 (the top) moved on and deleted its step-10 file.
    Path(files["m3-10"]).unlink()
    trial = _trial_side(coordinator)
    decision = trial.report(0, 20, 9.0, None)
    # One member per quantile: member 0 (worst) copies member 3 (best), the only source.
    assert isinstance(decision, base.Exploit) and decision.src == 3
    assert (decision.src_step, decision.checkpoint_path) == (30, files["m3-30"])
    assert coordinator.start_point(0).checkpoint_path == files["m3-30"]


def test_a_start_whose_file_is_gone_falls_back_on_the_trial_side(tmp_path: Path) -> None:
    coordinator = _coordinator()
    files = _files(tmp_path, "m1-10", "m1-30")
    coordinator.report(1, 10, 1.0, files["m1-10"])
    Path(files["m1-10"]).unlink()
    start = _trial_side(coordinator).start_point(1)
    assert start.step == 0 and start.checkpoint_path is None


def test_a_halted_coordinator_stops_members_where_their_last_checkpoint_is() -> None:
    coordinator = _coordinator()
    _round(coordinator, 10, {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0})
    before = coordinator.population.state_dict()
    coordinator.halt()
    assert coordinator.report(0, 20, 9.0, "m0/step-20.pt") == base.Stop("interrupted")
    assert coordinator.poll(1) == base.Stop("interrupted")
    # No decision was made (no exploit recorded); the member resumes from what it just saved.
    assert coordinator.population.state_dict()["history"] == before["history"]
    assert coordinator.start_point(0) == StartPoint(
        coordinator.population.members[0].config, 20, "m0/step-20.pt"
    )
    assert coordinator.member_steps == 50
    # The halt ends this run only: the run that resumes from its state decides again.
    resumed = _coordinator(state=json.loads(json.dumps(coordinator.state_dict())))
    assert not resumed.is_halted() and resumed.poll(1) == base.Continue()
