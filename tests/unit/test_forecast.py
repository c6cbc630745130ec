"""The AutoLRS loss forecaster: exponential fits, outlier trimming, awkward series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from schedsearch.trainers.strategies.autolrs import forecast

STEPS = np.arange(1, 101, dtype=float)


def curve(a: float, b: float, c: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return a * np.exp(b * STEPS) + c + rng.normal(0.0, noise, len(STEPS))


@pytest.mark.parametrize(
    ("a", "b", "c"), [(2.0, -0.05, 0.5), (1.5, -0.03, 0.2), (0.8, -0.2, 1.1), (-0.5, -0.04, 2.0)]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_known_parameters_from_noisy_data(a: float, b: float, c: float, seed: int) -> None:
    fit = forecast.fit_exponential(STEPS, curve(a, b, c, noise=0.01, seed=seed))
    assert fit.a == pytest.approx(a, rel=0.1)
    assert fit.b == pytest.approx(b, rel=0.1)
    assert fit.c == pytest.approx(c, abs=0.03)
    assert forecast.forecast(STEPS, curve(a, b, c, 0.01, seed), 1000) == pytest.approx(c, abs=0.03)


@pytest.mark.parametrize("seed", range(5))
def test_spikes_are_trimmed_and_do_not_bias_the_fit(seed: int) -> None:
    losses = curve(2.0, -0.05, 0.5, noise=0.01, seed=seed)
    spikes = [10, 40, 70]
    losses[spikes] += 3.0
    fit = forecast.fit_exponential(STEPS, losses)
    dropped = {i for i, kept in enumerate(fit.kept) if not kept}
    assert set(spikes) <= dropped
    assert len(dropped) <= len(spikes) + 2  # a stray 3-sigma point at most, not the neighbours
    untrimmed = forecast.fit_exponential(STEPS, losses, z=math.inf)
    assert abs(fit.c - 0.5) < 0.02 < abs(untrimmed.c - 0.5)


def test_flat_series_forecasts_its_level() -> None:
    assert forecast.forecast(STEPS, np.full(100, 0.7), 5000) == pytest.approx(0.7)
    noisy = 0.7 + np.random.default_rng(0).normal(0.0, 0.01, 100)
    assert forecast.forecast(STEPS, noisy, 5000) == pytest.approx(0.7, abs=0.01)


def test_short_series_degrade_gracefully() -> None:
    assert math.isnan(forecast.forecast([], [], 10))
    assert forecast.forecast([1], [0.4], 10) == 0.4
    assert forecast.forecast([1, 2, 3], [0.9, 0.6, 0.3], 1000) == pytest.approx(0.6)
    assert math.isfinite(forecast.forecast([1, 2, 3, 4], [0.9, 0.6, 0.4, 0.35], 1000))


def test_non_finite_points_are_ignored() -> None:
    losses = curve(2.0, -0.05, 0.5, noise=0.0, seed=0)
    losses[[5, 50]] = [math.nan, math.inf]
    assert forecast.forecast(STEPS, losses, 1000) == pytest.approx(0.5, abs=0.01)
    assert math.isnan(forecast.forecast([1, 2], [math.nan, math.inf], 10))


def test_a_curve_that_does_not_settle_forecasts_where_it_got_to() -> None:
    # A straight or accelerating drop (the start of training) would be extrapolated to -8 by a
    # line: the forecast keeps the progress made and nothing more.
    line = 2.0 - 0.01 * STEPS
    assert forecast.forecast(STEPS, line, 1000) == pytest.approx(line[-1], abs=0.02)
    accelerating = 2.3 - 0.5 * (STEPS / 100) ** 3
    assert forecast.forecast(STEPS, accelerating, 1000) == pytest.approx(1.8, abs=0.05)
    settling = curve(2.0, -0.05, 0.5, noise=0.0, seed=0)
    assert forecast.forecast(STEPS, settling, 1000) == pytest.approx(0.5, abs=0.01)


def test_rising_loss_forecasts_higher() -> None:
    rising = curve(-1.0, -0.03, 3.0, noise=0.005, seed=3)
    assert forecast.forecast(STEPS, rising, 500) > rising[-1]


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        forecast.forecast([1, 2, 3], [1.0, 2.0], 10)


def test_noise_without_trend_forecasts_the_level_not_an_extrapolation() -> None:
    rng = np.random.default_rng(4)
    steps = np.arange(1, 11, dtype=float)
    for _ in range(20):
        noise = 2.3 + rng.normal(0.0, 0.05, 10)
        assert forecast.forecast(steps, noise, 100) == pytest.approx(np.mean(noise), abs=0.04)
    trending = 2.3 * np.exp(-0.2 * steps) + 1.0 + rng.normal(0.0, 0.01, 10)
    assert forecast.forecast(steps, trending, 100) < trending[-1] - 0.05
