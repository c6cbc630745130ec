"""The AutoLRS state machine: stage lengths, validation forecasts, divergence, the chosen LR."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.autolrs.config import AutoLRSConfig
from schedsearch.trainers.strategies.autolrs.search import AutoLRSSearch

LR_MIN, LR_MAX = 1e-4, 1.0
Probe = Callable[[float, list[int]], list[float]]


def flat(lr: float, steps: list[int]) -> list[float]:
    """A probe whose loss is a constant depending on the LR: best near 1e-2."""
    return [0.1 + math.log10(lr / 1e-2) ** 2 for _ in steps]


def drive(search: AutoLRSSearch, probe: Probe = flat) -> list[base.AutoLRSDecision]:
    decisions: list[base.AutoLRSDecision] = []
    while not isinstance(decision := search.next_decision(), base.Finished):
        decisions.append(decision)
        if isinstance(decision, base.TryCandidate):
            every = decision.val_every or 1
            steps = list(range(every, decision.steps + 1, every))
            search.report_candidate(steps, probe(decision.lr, steps))
        else:
            search.report_commit()
    return decisions


def make(total: int, **overrides: object) -> AutoLRSSearch:
    config = AutoLRSConfig(**{"tau": 100, "tau_prime": 10, "tau_max": 800, **overrides})
    return AutoLRSSearch(config, total_steps=total, lr_min=LR_MIN, lr_max=LR_MAX, seed=0)


def test_stage_lengths_double_until_tau_prime_reaches_a_tenth_of_tau_max() -> None:
    search = make(100 + 200 + 400 + 800 + 800 + 800, candidates=2)
    decisions = drive(search)
    commits = [d.steps for d in decisions if isinstance(d, base.Commit)]
    probes = [d.steps for d in decisions if isinstance(d, base.TryCandidate)]
    # tau' = 10, 20, 40, 80 (= tauMax/10: no more doubling), 80, 80.
    assert commits == [100, 200, 400, 800, 800, 800]
    assert probes == [p for p in (10, 20, 40, 80, 80, 80) for _ in range(2)]
    assert search.trained_steps == sum(commits) == search.total_steps
    assert search.search_steps == sum(probes)


def test_reference_defaults_give_the_papers_stages() -> None:
    search = AutoLRSSearch(
        AutoLRSConfig(candidates=2),
        total_steps=1000 + 2000 + 4000 + 8000 + 8000,
        lr_min=1e-4,
        lr_max=1.0,
    )
    commits = []
    while not isinstance(decision := search.next_decision(), base.Finished):
        if isinstance(decision, base.TryCandidate):
            search.report_candidate([1, 2], [1.0, 1.0])
        else:
            commits.append(decision.steps)
            search.report_commit()
    assert commits == [1000, 2000, 4000, 8000, 8000]


def test_last_stage_fits_the_budget_and_its_probes_shrink_with_it() -> None:
    decisions = drive(make(100 + 50, candidates=2))
    assert [d.steps for d in decisions if isinstance(d, base.Commit)] == [100, 50]
    # Stage 1 would be tau=200, tau'=20; a quarter of it is left, so probes are 5 steps.
    assert [d.steps for d in decisions if isinstance(d, base.TryCandidate)] == [10, 10, 5, 5]


def test_a_stage_too_short_to_probe_keeps_the_previous_lr() -> None:
    decisions = drive(make(100 + 10, candidates=2))
    commits = [d for d in decisions if isinstance(d, base.Commit)]
    assert [c.steps for c in commits] == [100, 10]
    assert commits[1].lr == commits[0].lr
    assert sum(isinstance(d, base.TryCandidate) for d in decisions) == 2


def test_validation_forecasts_start_at_the_configured_stage() -> None:
    decisions = drive(make(700, candidates=2, val_forecast_from_stage=1, val_every_fraction=5))
    by_stage = {d.stage: d.val_every for d in decisions if isinstance(d, base.TryCandidate)}
    assert by_stage == {0: None, 1: 20 // 5, 2: 40 // 5}


def test_the_best_tried_lr_is_committed() -> None:
    search = make(100, candidates=6)
    decisions = drive(search)
    tried = [d.lr for d in decisions if isinstance(d, base.TryCandidate)]
    commit = decisions[-1]
    assert isinstance(commit, base.Commit)
    assert commit.lr in tried
    assert commit.lr == min(tried, key=lambda lr: flat(lr, [1])[0])
    assert len(set(tried)) == len(tried)  # LCB with a huge kappa spreads the probes


def test_nan_candidate_gets_the_diverged_loss_and_is_not_committed() -> None:
    def diverges_above_0_05(lr: float, steps: list[int]) -> list[float]:
        return [math.nan if lr > 0.05 else v for v in flat(lr, steps)]

    search = make(300, candidates=5, diverged_loss=1e6)
    decisions = drive(search, diverges_above_0_05)
    candidates = [c for stage in search.history for c in stage["candidates"]]
    assert any(c["lr"] > 0.05 for c in candidates), "the test needs a diverging probe"
    for c in candidates:
        assert c["diverged"] == (c["lr"] > 0.05)
        assert (c["forecast"] == 1e6) == (c["lr"] > 0.05)
    assert all(d.lr <= 0.05 for d in decisions if isinstance(d, base.Commit))


def test_reported_divergence_counts_the_steps_actually_run() -> None:
    search = make(100, candidates=2)
    decision = search.next_decision()
    assert isinstance(decision, base.TryCandidate)
    assert search.report_candidate([1, 2, 3], [1.0, 5.0, 50.0], diverged=True, trained=3) == 1e6
    assert search.search_steps == 3


def test_all_probes_diverging_commits_the_smallest_lr_tried() -> None:
    search = make(100, candidates=3)
    decisions = drive(search, lambda lr, steps: [math.inf for _ in steps])
    tried = [d.lr for d in decisions if isinstance(d, base.TryCandidate)]
    assert decisions[-1] == base.Commit(0, min(tried), 100)


def test_asking_twice_gives_the_same_decision_and_reports_must_match_it() -> None:
    search = make(100, candidates=2)
    first = search.next_decision()
    assert search.next_decision() == first
    with pytest.raises(RuntimeError, match="no commit is pending"):
        search.report_commit()
    for _ in range(2):
        assert isinstance(search.next_decision(), base.TryCandidate)
        search.report_candidate([1, 2], [1.0, 0.9])
    assert isinstance(search.next_decision(), base.Commit)
    with pytest.raises(RuntimeError, match="no candidate is pending"):
        search.report_candidate([1], [1.0])


def test_schedule_records_each_committed_lr_from_its_stage_start() -> None:
    search = make(300, candidates=2)
    decisions = drive(search)
    commits = [d for d in decisions if isinstance(d, base.Commit)]
    found = search.schedule()
    assert found.total_steps == 300
    assert found.lr_at(0) == commits[0].lr
    assert found.lr_at(99) == commits[0].lr
    assert found.lr_at(100) == commits[1].lr
    assert found.lr_at(299) == commits[1].lr


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"total_steps": 0}, "steps"),
        ({"lr_min": 0.0}, "lrBounds"),
        ({"lr_min": 1.0, "lr_max": 0.1}, "lrBounds"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(kwargs: dict, field: str) -> None:
    args = {"total_steps": 100, "lr_min": LR_MIN, "lr_max": LR_MAX, **kwargs}
    with pytest.raises(ValueError, match=field):
        AutoLRSSearch(AutoLRSConfig(), **args)


def test_a_failed_commit_is_retried_with_the_next_best_lr_then_smaller_ones() -> None:
    search = make(200, candidates=3)
    while isinstance(decision := search.next_decision(), base.TryCandidate):
        search.report_candidate([1, 2, 3, 4], flat(decision.lr, [1, 2, 3, 4]))
    tried = sorted((flat(c["lr"], [1])[0], c["lr"]) for c in search._tried)
    commits = []
    for _ in range(4):  # MAX_COMMIT_RETRIES failures, then the last attempt is kept
        decision = search.next_decision()
        assert isinstance(decision, base.Commit) and decision.stage == 0
        commits.append(decision.lr)
        search.report_commit(failed=True, trained=7)
    assert commits[:3] == [lr for _, lr in tried]  # best forecast first
    assert commits[3] == pytest.approx(max(LR_MIN, min(commits[:3]) / 10))
    assert search.stage == 1 and search.trained_steps == 100
    assert search.search_steps == 3 * 10 + 3 * 7
    assert search.history[0]["failedCommits"] == commits[:3]
