"""Our PBT core and Ray Tune's PopulationBasedTraining decide alike on the same inputs.

The engine uses our Population as the decision-maker (see schedsearch/engine/pbt.py); Ray's
scheduler is the reference. Compared here: quantile sizes and membership for the same scores, who
exploits whom from a given ranking, and the explore step's distribution against Ray's ``_explore``
with a log-uniform domain.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("ray.tune")

from ray import tune
from ray.tune.schedulers import pbt as ray_pbt
from scipy import stats

from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.pbt.population import Population

LR_MIN, LR_MAX = 1e-4, 1.0


@dataclass(eq=False)
class _StandInTrial:
    """The three things Ray's PBT reads from a trial when ranking."""

    name: str
    config: dict[str, float]
    experiment_tag: str = ""

    def is_finished(self) -> bool:
        return False


def _ray_quantiles(objectives: list[float], q: float) -> tuple[list[int], list[int]]:
    scheduler = ray_pbt.PopulationBasedTraining(
        time_attr="step",
        metric="objective",
        mode="min",
        perturbation_interval=10,
        quantile_fraction=q,
        hyperparam_mutations={"lr": tune.loguniform(LR_MIN, LR_MAX)},
    )
    trials = [_StandInTrial(str(i), {"lr": 0.01}) for i in range(len(objectives))]
    for trial, objective in zip(trials, objectives, strict=True):
        state = ray_pbt._PBTTrialState(trial)  # type: ignore[arg-type]
        state.last_score = -objective  # Ray's metric_op for mode="min"
        scheduler._trial_state[trial] = state  # type: ignore[index]
    lower, upper = scheduler._quantiles()
    return [int(t.name) for t in lower], [int(t.name) for t in upper]


def _ranked_population(objectives: list[float], q: float, seed: int = 0) -> Population:
    """Every member reported once at the first interval, worst first, so none exploited yet."""
    config = PBTConfig(
        population=len(objectives), perturbation_interval=10, quantile_fraction=q, seed=seed
    )
    population = Population(config, LR_MIN, LR_MAX, total_steps=100)
    for member in sorted(range(len(objectives)), key=lambda m: -objectives[m]):
        decision = population.report(member, 10, objectives[member], f"ckpt-{member}")
        # Reported worst first, each member is the best so far: nobody is below it yet.
        assert decision == base.Continue()
    return population


def _objectives(n: int, seed: int) -> list[float]:
    return [float(x) for x in np.random.default_rng(seed).permutation(n) + 0.5]


@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 0.4, 0.5])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 8, 13])
def test_quantiles_match_ray(n: int, q: float) -> None:
    objectives = _objectives(n, seed=n)
    lower, upper = _ray_quantiles(objectives, q)
    ours_bottom, ours_top = _ranked_population(objectives, q).quantiles()
    assert (sorted(ours_bottom), sorted(ours_top)) == (sorted(lower), sorted(upper))
    assert len(ours_bottom) == PBTConfig(population=n, quantile_fraction=q).quantile_size()


def test_bottom_members_exploit_the_top_uniformly_like_ray() -> None:
    """From the same ranking: Ray's lower quantile exploits (random.choice over the upper)."""
    n, q = 8, 0.25
    objectives = _objectives(n, seed=3)
    lower, upper = _ray_quantiles(objectives, q)
    for member in set(range(n)) - set(lower):
        population = _ranked_population(objectives, q)
        assert population.report(member, 20, objectives[member], "c") == base.Continue()
    sources: Counter[int] = Counter()
    for seed in range(150):
        for member in lower:
            population = _ranked_population(objectives, q, seed=seed)
            decision = population.report(member, 20, objectives[member], f"ckpt-{member}-20")
            assert isinstance(decision, base.Exploit)
            assert decision.dst == member and decision.src in upper
            assert decision.checkpoint_path == f"ckpt-{decision.src}"
            sources[decision.src] += 1
    counts = [sources[m] for m in upper]
    # Uniform over the top quantile, as Ray's random.choice(upper_quantile).
    assert stats.chisquare(counts).pvalue > 0.001


def _ray_explore_draws(lr: float, draws: int, p: float) -> list[tuple[str, float]]:
    random.seed(1)
    np.random.seed(1)
    domain = tune.loguniform(LR_MIN, LR_MAX)
    out = []
    for _ in range(draws):
        new, ops = ray_pbt._explore({"lr": lr}, {"lr": domain}, p, (1.2, 0.8), None)
        out.append(("resample" if ops["lr"] == "resample" else f"x{ops['lr'][2:]}", new["lr"]))
    return out


def _our_explore_draws(lr: float, draws: int, p: float) -> list[tuple[str, float]]:
    config = PBTConfig(
        population=4, resample_probability=p, perturbation_factors=(1.2, 0.8), seed=2
    )
    population = Population(config, LR_MIN, LR_MAX, total_steps=100)
    return [(how, new) for new, how in (population.explore(lr) for _ in range(draws))]


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_explore_matches_ray_distribution(p: float) -> None:
    lr, draws = 0.01, 4000  # x1.2 and x0.8 stay inside the bounds: no clipping on either side
    ray_draws, our_draws = _ray_explore_draws(lr, draws, p), _our_explore_draws(lr, draws, p)
    ray_kinds = Counter(k for k, _ in ray_draws)
    our_kinds = Counter(k for k, _ in our_draws)
    assert set(ray_kinds) == set(our_kinds) == {"resample", "x1.2", "x0.8"}
    table = [[ray_kinds[k] for k in sorted(ray_kinds)], [our_kinds[k] for k in sorted(ray_kinds)]]
    assert stats.chi2_contingency(table).pvalue > 0.001
    assert abs(our_kinds["resample"] / draws - p) < 0.03
    for kind, factor in (("x1.2", 1.2), ("x0.8", 0.8)):
        assert all(math.isclose(v, lr * factor) for k, v in our_draws if k == kind)
    # Resampled LRs: both log-uniform over the bounds.
    ray_resampled = [math.log(v) for k, v in ray_draws if k == "resample"]
    our_resampled = [math.log(v) for k, v in our_draws if k == "resample"]
    assert stats.ks_2samp(ray_resampled, our_resampled).pvalue > 0.001
    uniform = stats.uniform(math.log(LR_MIN), math.log(LR_MAX) - math.log(LR_MIN))
    assert stats.kstest(our_resampled, uniform.cdf).pvalue > 0.001


def test_explore_clips_where_ray_does_not() -> None:
    """A documented difference: ours keeps the LR inside lrBounds, Ray's multiplies freely."""
    config = PBTConfig(population=4, resample_probability=0.0, perturbation_factors=(1.2,))
    population = Population(config, LR_MIN, LR_MAX, total_steps=100)
    assert population.explore(LR_MAX)[0] == LR_MAX
    new, _ = ray_pbt._explore(
        {"lr": LR_MAX}, {"lr": tune.loguniform(LR_MIN, LR_MAX)}, 0.0, (1.2,), None
    )
    assert new["lr"] == pytest.approx(1.2 * LR_MAX)
