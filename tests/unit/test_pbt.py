"""PBT decisions: quantiles, exploit/explore statistics, checkpoints, divergence, lineage, synch."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.pbt.lineage import Lineage
from schedsearch.trainers.strategies.pbt.population import Population

LR_MIN, LR_MAX = 1e-4, 1.0


def population(n: int = 4, **overrides: object) -> Population:
    config = PBTConfig(**{"population": n, "perturbation_interval": 10, **overrides})
    return Population(config, LR_MIN, LR_MAX, total_steps=100)


def rank(pop: Population, objectives: list[float], step: int = 10) -> list[base.PBTDecision]:
    """Every member reports ``step``, worst first: each is the best so far, so none exploits."""
    order = sorted(range(len(objectives)), key=lambda m: -objectives[m])
    decisions = {}
    for m in order:
        decisions[m] = pop.report(m, step, objectives[m], f"m{m}-s{step}")
    return [decisions[m] for m in range(len(objectives))]


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 8, 10, 16, 33])
@pytest.mark.parametrize("q", [0.0, 0.1, 0.2, 0.25, 0.4, 0.5])
def test_quantile_sizes(n: int, q: float) -> None:
    pop = population(n, quantile_fraction=q)
    objectives = [float(x) for x in np.random.default_rng(n).permutation(n)]
    rank(pop, objectives)
    bottom, top = pop.quantiles()
    expected = min(math.ceil(n * q), n // 2)
    assert len(bottom) == len(top) == expected == pop.config.quantile_size()
    assert not set(bottom) & set(top)
    if expected:
        assert max(objectives[m] for m in top) < min(objectives[m] for m in bottom)


def test_only_bottom_members_exploit_and_only_from_the_top() -> None:
    pop = population(8, quantile_fraction=0.25, seed=4)
    objectives = [0.1 * (m + 1) for m in range(8)]  # member 0 best, 7 worst
    rank(pop, objectives)
    decisions = {m: pop.report(m, 20, objectives[m], f"m{m}-s20") for m in range(8)}
    for m, decision in decisions.items():
        if m in (6, 7):
            assert isinstance(decision, base.Exploit)
            assert decision.dst == m and decision.src in (0, 1)
            assert decision.checkpoint_path == f"m{decision.src}-s20"
            assert decision.src_step == 20
        else:
            assert decision == base.Continue()


def test_not_ready_between_intervals_nor_during_burn_in() -> None:
    pop = population(4, burn_in_period=30)
    objectives = [1.0, 2.0, 3.0, 4.0]
    assert rank(pop, objectives, step=10) == [base.Continue()] * 4
    assert rank(pop, objectives, step=20) == [base.Continue()] * 4
    assert pop.quantiles() == ([], [])  # nobody was ready: no score yet
    assert rank(pop, objectives, step=30) == [base.Continue()] * 4  # worst first: none below
    assert pop.report(3, 35, 9.0, "m3-s35") == base.Continue()  # 5 steps since its last ready
    assert isinstance(pop.report(3, 40, 9.0, "m3-s40"), base.Exploit)


def test_explore_frequencies_match_the_parameters() -> None:
    p, factors, draws = 0.3, (1.2, 0.8, 1.5), 6000
    pop = population(4, resample_probability=p, perturbation_factors=factors, seed=1)
    results = [pop.explore(0.01) for _ in range(draws)]
    kinds = Counter(how for _, how in results)
    # Binomial tolerance of 4 standard deviations.
    assert abs(kinds["resample"] - p * draws) < 4 * math.sqrt(draws * p * (1 - p))
    perturbed = [kinds[f"x{f:g}"] for f in factors]
    assert sum(perturbed) + kinds["resample"] == draws
    assert stats.chisquare(perturbed).pvalue > 1e-3  # factors drawn uniformly
    for lr, how in results:
        if how != "resample":
            assert lr == pytest.approx(0.01 * float(how[1:]))
    resampled = [math.log(lr) for lr, how in results if how == "resample"]
    uniform = stats.uniform(math.log(LR_MIN), math.log(LR_MAX) - math.log(LR_MIN))
    assert stats.kstest(resampled, uniform.cdf).pvalue > 1e-3  # log-uniform prior


def test_exploit_source_is_uniform_over_the_top_and_explore_clips_to_bounds() -> None:
    sources: Counter[int] = Counter()
    for seed in range(300):
        pop = population(8, quantile_fraction=0.25, seed=seed, resample_probability=0.0)
        objectives = [0.1 * (m + 1) for m in range(8)]
        rank(pop, objectives)
        pop.members[0].config["lr"] = LR_MAX  # a perturbation up must stay within the bounds
        decision = pop.report(7, 20, objectives[7], "m7-s20")
        assert isinstance(decision, base.Exploit)
        sources[decision.src] += 1
        assert LR_MIN <= decision.new_config["lr"] <= LR_MAX
    assert set(sources) == {0, 1}
    assert stats.binomtest(sources[0], 300).pvalue > 1e-3


def test_no_exploit_of_a_source_without_checkpoint() -> None:
    pop = population(4, quantile_fraction=0.5)
    for m, objective in ((0, 1.0), (1, 2.0)):
        assert pop.report(m, 10, objective, None) == base.Continue()
    assert pop.report(2, 10, 3.0, "m2") == base.Continue()  # top = {0, 1}: none has a checkpoint
    assert pop.report(3, 10, 4.0, "m3") == base.Continue()
    # Member 1 now has a checkpoint, member 0 still not: 1 is the only possible source.
    pop.report(1, 20, 2.0, "m1-s20")
    for step in (20, 30, 40):
        decision = pop.report(3, step, 9.0, f"m3-s{step}")
        assert isinstance(decision, base.Exploit) and decision.src == 1
        pop.report(1, step + 10, 2.0, f"m1-s{step + 10}")


def test_diverged_member_is_exploited_at_once_or_stopped() -> None:
    pop = population(4)
    rank(pop, [1.0, 2.0, 3.0, 4.0])
    # Off-interval (step 13) and not in the bottom by its last score: exploited anyway.
    decision = pop.report(1, 13, math.nan, "m1-s13")
    assert isinstance(decision, base.Exploit) and decision.src == 0 and decision.dst == 1
    assert pop.history[-1]["reason"] == "diverged"

    lonely = population(2)
    assert lonely.report(0, 10, math.inf, "m0") == base.Stop(
        "diverged and no member with a checkpoint to copy"
    )
    assert lonely.report(0, 20, 1.0, "m0") == base.Stop("stopped")
    assert lonely.report(1, 10, 1.0, "m1") == base.Continue()
    assert lonely.quantiles() == ([], [])


def test_diverged_members_rank_last_and_are_never_sources() -> None:
    pop = population(4, quantile_fraction=0.5)
    assert pop.report(0, 10, math.nan, None) == base.Stop(
        "diverged and no member with a checkpoint to copy"
    )
    rank_rest = {1: 0.5, 2: 0.7, 3: 0.9}
    for m, objective in rank_rest.items():
        decision = pop.report(m, 10, objective, f"m{m}")
        assert not isinstance(decision, base.Exploit) or decision.src != 0


def test_max_mode_prefers_larger_objectives() -> None:
    config = PBTConfig(population=4, perturbation_interval=10)
    pop = Population(config, LR_MIN, LR_MAX, total_steps=100, mode="max")
    for m, objective in enumerate([1.0, 2.0, 3.0, 4.0]):  # ascending: each the best so far
        assert pop.report(m, 10, objective, f"m{m}") == base.Continue()
    assert pop.quantiles() == ([0], [3])
    assert pop.best_member() == 3


def test_lineage_follows_every_exploit() -> None:
    lineage = Lineage()
    lineage.start(0, 0.1)
    lineage.start(1, 0.01)
    lineage.exploit(dst=1, src=0, step=20, lr=0.2)  # 1 inherits 0's past up to 20
    lineage.set_lr(0, 30, 0.05)
    lineage.exploit(dst=0, src=1, step=40, lr=0.3)  # 0 inherits 1's: 0.1 then 0.2, not its own
    found = lineage.schedule(0, 60)
    assert [(p.step, p.lr) for p in found.points] == [(0, 0.1), (20, 0.2), (40, 0.3)]
    assert found.provenance["exploits"] == [{"step": 20, "from": 0}, {"step": 40, "from": 1}]
    # An exploit of an older checkpoint forgets the source's later segments.
    lineage.exploit(dst=1, src=0, step=30, lr=0.7)
    assert [(p.step, p.lr) for p in lineage.schedule(1, 60).points] == [
        (0, 0.1),
        (20, 0.2),
        (30, 0.7),
    ]
    restored = Lineage()
    restored.load_state_dict(lineage.state_dict())
    assert restored.schedule(1, 60) == lineage.schedule(1, 60)


def test_population_lineage_matches_the_exploits_it_decided() -> None:
    pop = population(4, quantile_fraction=0.25, seed=3)
    initial = {m: s.config["lr"] for m, s in pop.members.items()}
    rank(pop, [1.0, 2.0, 3.0, 4.0])
    decision = pop.report(3, 20, 4.0, "m3-s20")
    assert isinstance(decision, base.Exploit) and decision.src == 0
    lineage = pop.lineage.schedule(3, 100)
    assert lineage.lr_at(0) == initial[0]
    assert lineage.lr_at(9) == initial[0] and lineage.lr_at(10) == decision.new_config["lr"]
    assert pop.members[3].step == 10 and pop.members[3].checkpoint is None


def test_initial_lrs_are_spread_over_the_log_range() -> None:
    pop = population(8, seed=5)
    units = sorted(
        (math.log(s.config["lr"]) - math.log(LR_MIN)) / (math.log(LR_MAX) - math.log(LR_MIN))
        for s in pop.members.values()
    )
    assert all(i / 8 <= u < (i + 1) / 8 for i, u in enumerate(units))


def test_synch_waits_for_the_whole_population_and_settles_the_top_first() -> None:
    pop = population(4, synch=True, quantile_fraction=0.25, seed=2)
    objectives = [1.0, 2.0, 3.0, 4.0]
    for m in (3, 1, 2):
        assert pop.report(m, 10, objectives[m], f"m{m}-s10") == base.Wait()
        assert pop.poll(m) == base.Wait()
    last = pop.report(0, 10, objectives[0], "m0-s10")
    assert last == base.Continue()
    decisions = {m: pop.poll(m) for m in (1, 2, 3)}
    assert decisions[1] == decisions[2] == base.Continue()
    assert isinstance(decisions[3], base.Exploit) and decisions[3].src == 0
    assert pop.poll(3) == base.Continue()  # a decision is handed out once
    # The next round waits for the next interval.
    assert pop.report(1, 20, 2.0, "m1-s20") == base.Wait()


def test_synch_round_closes_when_a_member_finishes_or_stops() -> None:
    pop = population(3, synch=True)
    assert pop.report(0, 10, 1.0, "m0") == base.Wait()
    assert pop.report(1, 10, 2.0, "m1") == base.Wait()
    pop.finish(2)
    assert pop.poll(0) == base.Continue()
    assert isinstance(pop.poll(1), base.Exploit)


def test_a_failed_member_leaves_the_population() -> None:
    pop = population(4, quantile_fraction=0.25, seed=3)
    rank(pop, [0.1, 0.5, 0.6, 0.9])  # member 0 best (the only top member), 3 worst
    pop.fail(0)
    assert not pop.members[0].active and pop.members[0].objective is None
    assert 0 not in [m for side in pop.quantiles() for m in side]
    # The worst member now copies the best member left, never the failed one.
    decision = pop.report(3, 20, 0.9, "m3-s20")
    assert not (isinstance(decision, base.Exploit) and decision.src == 0)
    assert pop.best_member() != 0
    assert pop.report(0, 20, 0.05, "m0-s20") == base.Stop("stopped")
    history = [e for e in pop.history if e["event"] == "failed"]
    pop.fail(0)
    assert (
        [e for e in pop.history if e["event"] == "failed"]
        == history
        == [{"event": "failed", "member": 0, "step": 10}]
    )


def test_a_failed_member_releases_a_synchronous_round() -> None:
    pop = population(3, synch=True)
    assert pop.report(0, 10, 1.0, "m0") == base.Wait()
    assert pop.report(1, 10, 2.0, "m1") == base.Wait()
    pop.fail(2)
    assert pop.poll(0) == base.Continue()
    assert isinstance(pop.poll(1), base.Exploit)


def test_unknown_member_is_refused() -> None:
    with pytest.raises(ValueError, match=r"member must be in 0\.\.3"):
        population(4).report(4, 10, 1.0, None)
