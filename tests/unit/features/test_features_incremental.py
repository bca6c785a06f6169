"""The O(1) streaming blocks against direct computations over the same windows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from quantum.features.incremental import (
    ExponentialAverage,
    RollingBeta,
    RollingExtreme,
    RollingWindow,
    WilderAverage,
)


def random_walk(size: int, level: float, seed: int) -> np.ndarray:
    """A price-like path: a large level with small steps, the hard case for variances."""
    steps = np.random.default_rng(seed).normal(0.0, level * 1e-3, size)
    return level + np.cumsum(steps)


@pytest.mark.parametrize("window", [1, 3, 20, 96])
def test_rolling_window_matches_exact_two_pass(window: int) -> None:
    values = random_walk(2000, 100_000.0, seed=window)
    rolling = RollingWindow(window)
    weights = np.arange(1, window + 1, dtype="float64")
    for i, x in enumerate(values):
        rolling.push(float(x))
        if i + 1 < window:
            assert not rolling.full
            continue
        current = values[i + 1 - window : i + 1]
        mean = math.fsum(current) / window
        assert rolling.mean() == pytest.approx(mean, rel=1e-14)
        assert rolling.sum() == pytest.approx(math.fsum(current), rel=1e-14)
        assert rolling.weighted_mean() == pytest.approx(current @ weights / weights.sum(),
                                                        rel=1e-14)
        exact = math.fsum((v - mean) ** 2 for v in current) / window
        assert rolling.variance() == pytest.approx(exact, rel=1e-9, abs=1e-300)


def test_rolling_window_is_exact_on_a_constant_run() -> None:
    rolling = RollingWindow(12)
    for x in random_walk(50, 3.0, seed=7):
        rolling.push(float(x))
    for _ in range(12):
        rolling.push(0.1)
    assert rolling.constant
    assert rolling.mean() == 0.1 and rolling.weighted_mean() == 0.1
    assert rolling.variance() == 0.0 and rolling.variance(ddof=1) == 0.0
    rolling.push(0.2)
    assert not rolling.constant and rolling.variance() > 0.0


@pytest.mark.parametrize("maximum", [True, False])
def test_rolling_extreme_matches_brute_force(maximum: bool) -> None:
    values = np.round(random_walk(1000, 50.0, seed=3), 1)  # rounding makes ties common
    extreme = RollingExtreme(14, maximum=maximum)
    reduce = max if maximum else min
    for i, x in enumerate(values):
        assert extreme.push(float(x)) == reduce(values[max(0, i - 13) : i + 1])


@pytest.mark.parametrize("span", [9, 26, 48])
def test_exponential_average_matches_pandas_ewm(span: int) -> None:
    values = random_walk(600, 2.5, seed=span)
    expected = pd.Series(values).ewm(span=span, adjust=False, min_periods=span).mean()
    average = ExponentialAverage(span=span, min_periods=span)
    for i, x in enumerate(values):
        value = average.update(float(x))
        assert average.ready == (i + 1 >= span)
        if average.ready:
            assert value == pytest.approx(expected.iloc[i], rel=1e-15)


def test_wilder_average_seeds_with_the_mean() -> None:
    average = WilderAverage(4)
    assert all(math.isnan(average.update(x)) for x in (1.0, 2.0, 3.0))
    assert not average.ready and math.isnan(average.value)
    assert average.update(6.0) == 3.0
    assert average.update(7.0) == pytest.approx(3.0 + (7.0 - 3.0) / 4)


def test_exponential_average_needs_one_parameter() -> None:
    with pytest.raises(ValueError):
        ExponentialAverage()
    with pytest.raises(ValueError):
        ExponentialAverage(span=3, alpha=0.5)


def test_rolling_beta_matches_a_two_pass_and_waits_out_a_missing_pair() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(0.0, 1e-3, 1500)
    x = 1.3 * y + rng.normal(0.0, 5e-4, y.size)
    x[700] = math.nan  # one missing pair
    window = 100
    beta = RollingBeta(window)
    for i in range(y.size):
        beta.push(float(x[i]), float(y[i]))
        complete = i >= window - 1 and not (i - window < 700 <= i)
        assert beta.ready is complete, i
        if complete:
            xs, ys = x[i - window + 1 : i + 1], y[i - window + 1 : i + 1]
            dx, dy = xs - xs.mean(), ys - ys.mean()
            assert beta.beta() == pytest.approx((dx * dy).sum() / (dy * dy).sum(), rel=1e-12)
    flat = RollingBeta(3)
    for value in (0.01, 0.002, 0.002, 0.002):
        flat.push(value, 0.002)
    assert flat.ready and flat.beta() == 0.0
    same = RollingBeta(window)
    for value in y[:window]:
        same.push(float(value), float(value))
    assert same.beta() == 1.0
