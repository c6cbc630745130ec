"""The AutoLRS and PBT runners on the real harness, with the small ``regression`` workload."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from schedsearch.trainers import harness
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.autolrs import runner as autolrs_runner
from schedsearch.trainers.strategies.autolrs.config import AutoLRSConfig
from schedsearch.trainers.strategies.pbt import runner as pbt_runner
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.workloads import get_workload

SMALL_AUTOLRS = AutoLRSConfig(tau=20, tau_prime=4, tau_max=80, candidates=3)


class RecordingTrainer(harness.Trainer):
    """Logs (step index, LR on the optimizer when the step ran) of every step of every trainer."""

    log: list[tuple[int, float]] = []

    def step(self, lr: float) -> harness.StepResult:
        index = self.global_step
        result = super().step(lr)
        RecordingTrainer.log.append((index, float(self.optimizer.param_groups[0]["lr"])))
        return result


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    RecordingTrainer.log = []
    monkeypatch.setattr(harness, "Trainer", RecordingTrainer)
    return RecordingTrainer.log


def run_small_autolrs(out: Path | None = None, **overrides: Any) -> base.SearchResult:
    return autolrs_runner.run_autolrs(
        overrides.pop("config", SMALL_AUTOLRS),
        "regression",
        total_steps=overrides.pop("total_steps", 60),
        lr_bounds=overrides.pop("lr_bounds", (1e-3, 0.5)),
        seed=3,
        out_dir=out,
        device="cpu",
        **overrides,
    )


def test_autolrs_trains_each_stage_at_the_committed_lr_from_its_first_step(
    recording: list[tuple[int, float]],
) -> None:
    result = run_small_autolrs()
    found = result.best_schedule
    # 60 training steps, 3 probes of 4 then 3 of 8 steps (more if a stage had to be retried).
    assert len(recording) == result.member_steps >= 60 + (3 * 4 + 3 * 8)
    # Probes rewind to the stage start; the commit runs last, so the last LR logged for each step
    # is what the final model was trained with.
    final_lr = dict(recording)
    assert sorted(final_lr) == list(range(60))
    assert [final_lr[s] for s in range(60)] == found.lrs()
    restarts = [i for i in range(1, len(recording)) if recording[i][0] <= recording[i - 1][0]]
    assert {recording[i][0] for i in restarts} == {0, 20}  # every restore lands on a stage start
    assert math.isfinite(result.best_objective)


def test_autolrs_resumes_from_its_directory_and_refuses_another_search(
    tmp_path: Path, recording: list[tuple[int, float]]
) -> None:
    first = run_small_autolrs(tmp_path, total_steps=20)
    recording.clear()
    again = run_small_autolrs(tmp_path, total_steps=20)
    assert recording == []  # the saved search was complete: nothing to train
    assert again.best_schedule.points == first.best_schedule.points
    assert again.best_objective == pytest.approx(first.best_objective)
    with pytest.raises(ValueError, match=r"out: .* totalSteps=20"):
        run_small_autolrs(tmp_path, total_steps=40)


def test_an_autolrs_save_cut_short_resumes_from_the_last_complete_one(tmp_path: Path) -> None:
    """A kill after the trainer file is written but before the state is: the state still names
    the trainer it was saved with, which is still there."""
    search = autolrs_runner.AutoLRSSearch(
        SMALL_AUTOLRS, total_steps=60, lr_min=1e-3, lr_max=0.5, seed=3
    )
    trainer = harness.Trainer(get_workload("regression"), seed=3, device="cpu")
    trainer.train(20, lambda _: 0.01)
    autolrs_runner._save(tmp_path, search, trainer, 0.5)
    trainer.train(20, lambda _: 0.01)
    # The next save got as far as the trainer file: the kill came before the state file.
    trainer.save(tmp_path / autolrs_runner.TRAINER_PATTERN.format(step=trainer.global_step))
    resumed = harness.Trainer(get_workload("regression"), seed=3, device="cpu")
    fresh = autolrs_runner.AutoLRSSearch(
        SMALL_AUTOLRS, total_steps=60, lr_min=1e-3, lr_max=0.5, seed=3
    )
    driver = autolrs_runner._StageDriver(fresh, resumed, base.NullReporter())
    assert autolrs_runner._resume(tmp_path, fresh, resumed, driver)
    assert resumed.global_step == 20
    assert driver.first_stage_loss == 0.5  # what the failure rule compares with, kept
    # A complete save then removes the older trainer files.
    autolrs_runner._save(tmp_path, fresh, resumed, driver.first_stage_loss)
    assert sorted(p.name for p in tmp_path.glob("autolrs-trainer*")) == ["autolrs-trainer-20.pt"]


def test_a_stage_fails_only_when_it_ends_no_better_than_the_first_stage_started() -> None:
    # A later stage may end above its own start (a higher LR, not annealed yet): kept.
    assert autolrs_runner.stage_problem(0.30, 1.0) is None
    # Back at the first stage's start (the network was killed): retried.
    assert "no better than the first stage started (1)" in str(
        autolrs_runner.stage_problem(0.9995, 1.0)
    )
    assert autolrs_runner.stage_problem(float("nan"), 1.0) is not None


def test_autolrs_survives_diverging_probes() -> None:
    result = run_small_autolrs(lr_bounds=(1e-3, 1e4), total_steps=20)
    candidates = [c for stage in result.history[:-1] for c in stage["candidates"]]
    assert any(c["diverged"] for c in candidates), "the test needs a diverging probe"
    assert all(lr <= 1e4 and math.isfinite(lr) for lr in result.best_schedule.lrs())
    assert math.isfinite(result.best_objective)


class ScriptedCoordinator:
    def __init__(self, decisions: list[base.PBTDecision]) -> None:
        self.decisions = decisions
        self.reports: list[tuple[int, float, str | None]] = []
        self.finished: list[tuple[int, int]] = []

    def report(
        self,
        member: int,
        step: int,
        objective: float,
        checkpoint_path: str | None,
        config: dict[str, float] | None = None,
    ) -> base.PBTDecision:
        assert checkpoint_path is None or Path(checkpoint_path).exists()  # saved before reporting
        self.reports.append((step, objective, checkpoint_path))
        return self.decisions.pop(0)

    def poll(self, member: int) -> base.PBTDecision:
        return self.decisions.pop(0)

    def finish(self, member: int, step: int) -> None:
        self.finished.append((member, step))


def test_member_loop_checkpoints_reports_and_follows_an_exploit(
    tmp_path: Path, recording: list[tuple[int, float]]
) -> None:
    workload = get_workload("regression")
    source = harness.Trainer(workload, seed=9, device="cpu")
    source.train(15, lambda _: 0.01)
    source_path = source.save(tmp_path / "source.pt")
    recording.clear()
    coordinator = ScriptedCoordinator(
        [
            base.Exploit(1, 0, {"lr": 0.005}, 15, str(source_path)),
            base.Wait(),
            base.Continue(),
            base.Continue(),
        ]
    )
    trainer = harness.Trainer(workload, seed=0, device="cpu")
    loop = pbt_runner.MemberLoop(
        0,
        trainer,
        {"lr": 0.02},
        coordinator,
        total_steps=30,
        interval=10,
        checkpoint_dir=tmp_path,
    )
    assert loop.advance()  # 10 steps at 0.02, then the exploit
    assert trainer.global_step == 15 and loop.step == 15 and loop.config == {"lr": 0.005}
    for name, tensor in source.model.state_dict().items():
        assert torch.equal(tensor, trainer.model.state_dict()[name])
    assert loop.advance() and loop.waiting  # 10 steps at 0.005, then told to wait
    assert loop.advance() and not loop.waiting  # the poll says continue
    assert not loop.advance()  # the last 5 steps, the final report, done
    assert [step for step, _, _ in coordinator.reports] == [10, 25, 30]
    assert coordinator.finished == [(0, 30)]
    assert [lr for _, lr in recording] == [0.02] * 10 + [0.005] * 15
    assert [index for index, _ in recording] == [*range(10), *range(15, 30)]
    saved = sorted(p.name for p in (tmp_path / "member-0").iterdir())
    assert saved == ["step-25.pt", "step-30.pt"]  # the oldest was removed


def test_a_halt_cuts_the_interval_short_with_a_checkpoint_and_a_report(tmp_path: Path) -> None:
    coordinator = ScriptedCoordinator([base.Continue(), base.Stop("interrupted")])
    trainer = harness.Trainer(get_workload("regression"), seed=0, device="cpu")
    loop = pbt_runner.MemberLoop(
        1, trainer, {"lr": 0.01}, coordinator, total_steps=100, interval=20, checkpoint_dir=tmp_path
    )
    assert loop.advance()  # a whole interval
    original_step = trainer.step

    def step_then_halt(lr: float) -> Any:
        result = original_step(lr)
        if trainer.global_step == 27:
            loop.request_halt()  # as the trial's pump does when the run is interrupted
        return result

    trainer.step = step_then_halt  # type: ignore[method-assign]
    assert not loop.advance()
    assert [(step, path is not None) for step, _, path in coordinator.reports] == [
        (20, True),
        (27, True),
    ]
    assert (tmp_path / "member-1" / "step-27.pt").exists() and loop.done
    assert coordinator.finished == []  # stopped, not finished


def test_a_halt_right_after_a_report_saves_the_same_step_once(tmp_path: Path) -> None:
    coordinator = ScriptedCoordinator([base.Continue(), base.Continue(), base.Stop("interrupted")])
    trainer = harness.Trainer(get_workload("regression"), seed=0, device="cpu")
    loop = pbt_runner.MemberLoop(
        0, trainer, {"lr": 0.01}, coordinator, total_steps=100, interval=10, checkpoint_dir=tmp_path
    )
    assert loop.advance() and loop.advance()
    loop.request_halt()
    assert not loop.advance()
    assert [step for step, _, _ in coordinator.reports] == [10, 20, 20]
    # The file both reports name is still there (it was kept, not rotated out as a duplicate).
    assert sorted(p.name for p in (tmp_path / "member-0").iterdir()) == ["step-10.pt", "step-20.pt"]


def test_member_loop_reports_divergence_without_a_checkpoint(tmp_path: Path) -> None:
    coordinator = ScriptedCoordinator([base.Stop("diverged and no member with a checkpoint")])
    trainer = harness.Trainer(get_workload("regression"), seed=0, device="cpu")
    loop = pbt_runner.MemberLoop(
        2, trainer, {"lr": 1e6}, coordinator, total_steps=50, interval=25, checkpoint_dir=tmp_path
    )
    assert not loop.advance()
    ((step, objective, path),) = coordinator.reports
    assert step < 25 and math.isnan(objective) and path is None
    assert loop.done and coordinator.finished == []


def test_run_pbt_returns_the_best_members_lineage(recording: list[tuple[int, float]]) -> None:
    config = PBTConfig(population=3, perturbation_interval=10, quantile_fraction=0.34, seed=4)
    result = pbt_runner.run_pbt(
        config, "regression", total_steps=30, lr_bounds=(1e-3, 0.1), seed=0, device="cpu"
    )
    assert result.strategy == "pbt" and result.workload == "regression"
    assert result.member_steps == len(recording) >= 3 * 30
    assert result.best_schedule.total_steps == 30
    assert result.best_schedule.provenance["member"] == result.best_member
    exploits = [e for e in result.history if e["event"] == "exploit"]
    assert exploits, "three members over three intervals should exploit at least once"
    assert math.isfinite(result.best_objective)


def test_run_pbt_in_synchronous_mode_closes_every_round() -> None:
    config = PBTConfig(population=3, perturbation_interval=10, synch=True, seed=1)
    result = pbt_runner.run_pbt(
        config, "regression", total_steps=30, lr_bounds=(1e-3, 0.1), seed=0, device="cpu"
    )
    exploits = [e for e in result.history if e["event"] == "exploit"]
    # One bottom member per round (steps 10, 20, 30), each copying a round-start checkpoint.
    assert [e["step"] for e in exploits] == [10, 20, 30]
    assert result.member_steps == 3 * 30


def test_run_pbt_refuses_to_resume_another_search_from_its_folder(tmp_path: Path) -> None:
    def search(config: PBTConfig, seed: int) -> base.SearchResult:
        return pbt_runner.run_pbt(
            config,
            "regression",
            total_steps=20,
            lr_bounds=(1e-3, 0.1),
            seed=seed,
            device="cpu",
            out_dir=tmp_path,
        )

    config = PBTConfig(population=2, perturbation_interval=10, seed=4)
    first = search(config, 0)
    assert (tmp_path / pbt_runner.STATE_FILE).exists()
    # The same search again: resumed from its saved state at its end, nothing trained anew.
    again = search(config, 0)
    assert again.best_schedule.points == first.best_schedule.points
    assert again.member_steps == first.member_steps
    with pytest.raises(ValueError, match=r"holds a PBT search with seed=0, not 1; use another"):
        search(config, 1)
    other = PBTConfig(population=2, perturbation_interval=5, seed=4)
    with pytest.raises(ValueError, match=r"with config=.*perturbationInterval.: 10"):
        search(other, 0)
