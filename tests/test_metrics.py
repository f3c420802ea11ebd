"""Forecast metrics and the Diebold-Mariano test, against hand arithmetic and known behaviour."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from models.metrics import diebold_mariano, forecast_metrics, theil_u2

# Diebold-Mariano ----------------------------------------------------------------------


def test_dm_squared_loss_h1_by_hand():
    e_a = [2, -1, 3, 0, -2, 1]
    e_b = [1, 1, -2, 1, -1, 1]
    # squared losses:   a: 4, 1, 9, 0, 4, 1        b: 1, 1, 4, 1, 1, 1
    # d = a - b:        3, 0, 5, -1, 3, 0          n = 6, sum = 10, dbar = 5/3
    # d - dbar:         4/3, -5/3, 10/3, -8/3, 4/3, -5/3
    # gamma_0 = (16 + 25 + 100 + 64 + 16 + 25) / 9 / 6 = 246 / 54 = 41/9
    # V = gamma_0 / n = 41/54;  DM = (5/3) / sqrt(41/54) = 1.912776...
    # HLN factor = sqrt((n + 1 - 2h + h(h-1)/n) / n) = sqrt(5/6)
    # statistic = 1.912776 * 0.912871 = 1.746076; p = 2 * P(T_5 > 1.746076) = 0.1412
    expected = (5 / 3) / math.sqrt(41 / 54) * math.sqrt(5 / 6)
    statistic, p_value = diebold_mariano(e_a, e_b, h=1, loss="squared")
    assert statistic == pytest.approx(expected, rel=1e-14)
    assert statistic == pytest.approx(1.746076, abs=1e-6)
    assert p_value == pytest.approx(2 * stats.t.sf(expected, df=5), rel=1e-12)
    assert p_value == pytest.approx(0.1412, abs=1e-4)


def test_dm_absolute_loss_h2_by_hand():
    e_a = [-1.5, 3, -4, 5, 3, -1.5]
    e_b = [0.5, -1, 1, -2, 1, 0.5]
    # absolute losses:  a: 1.5, 3, 4, 5, 3, 1.5    b: 0.5, 1, 1, 2, 1, 0.5
    # d = a - b:        1, 2, 3, 3, 2, 1           dbar = 12/6 = 2
    # d - dbar:         -1, 0, 1, 1, 0, -1
    # gamma_0 = (1 + 0 + 1 + 1 + 0 + 1) / 6 = 4/6
    # gamma_1 = (0*-1 + 1*0 + 1*1 + 0*1 + -1*0) / 6 = 1/6
    # V = (gamma_0 + 2 gamma_1) / n = (6/6) / 6 = 1/6;  DM = 2 / sqrt(1/6) = 2 sqrt(6)
    # HLN factor = sqrt((6 + 1 - 4 + 2/6) / 6) = sqrt(5/9)
    # statistic = 2 sqrt(6) sqrt(5) / 3 = 2 sqrt(30) / 3 = 3.651484; p = 2 P(T_5 > 3.651484)
    expected = 2 * math.sqrt(30) / 3
    statistic, p_value = diebold_mariano(e_a, e_b, h=2, loss="absolute")
    assert statistic == pytest.approx(expected, rel=1e-14)
    assert p_value == pytest.approx(2 * stats.t.sf(expected, df=5), rel=1e-12)
    assert p_value == pytest.approx(0.0147, abs=1e-4)


def test_dm_falls_back_to_h1_when_the_long_run_variance_is_not_positive():
    e_a = [2, -1, 3, 0, -2, 1]
    e_b = [1, 1, -2, 1, -1, 1]
    # From the h=1 example: gamma_1 = (-20 - 50 - 80 - 32 - 20) / 9 / 6 = -101/27, so
    # V(h=2) = (41/9 - 202/27) / 6 < 0.
    with pytest.warns(RuntimeWarning, match="not positive"):
        result = diebold_mariano(e_a, e_b, h=2)
    assert result == diebold_mariano(e_a, e_b, h=1)


def test_dm_identical_forecasts_give_statistic_zero():
    errors = np.random.default_rng(0).normal(size=50)
    assert diebold_mariano(errors, errors.copy()) == (0.0, 1.0)
    assert diebold_mariano(errors, -errors, loss="squared") == (0.0, 1.0)  # same losses
    assert diebold_mariano(errors, errors, h=3, loss="absolute") == (0.0, 1.0)


def test_dm_constant_non_zero_differential_is_infinitely_significant():
    assert diebold_mariano([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], loss="absolute") == (-math.inf, 0.0)


def test_dm_sign_convention_negative_means_the_first_is_more_accurate():
    rng = np.random.default_rng(1)
    small = rng.normal(0.0, 1.0, 300)
    large = rng.normal(0.0, 2.0, 300)
    statistic, p_value = diebold_mariano(small, large)
    assert statistic < 0
    assert p_value < 1e-6


@pytest.mark.parametrize("h", [1, 2, 5])
@pytest.mark.parametrize("loss", ["squared", "absolute"])
def test_dm_is_antisymmetric(h, loss):
    rng = np.random.default_rng(2)
    a = rng.normal(size=80)
    b = a + rng.normal(0.0, 0.5, 80)
    forward = diebold_mariano(a, b, h=h, loss=loss)
    backward = diebold_mariano(b, a, h=h, loss=loss)
    assert forward[0] == pytest.approx(-backward[0], rel=1e-12)
    assert forward[1] == pytest.approx(backward[1], rel=1e-12)


def test_dm_has_about_its_nominal_size_under_the_null():
    # Two equally accurate forecasters: the 5% test should reject about 5% of the time.
    rng = np.random.default_rng(3)
    p_values = [diebold_mariano(rng.normal(size=60), rng.normal(size=60))[1] for _ in range(600)]
    assert 0.025 < np.mean(np.array(p_values) < 0.05) < 0.085


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1, 2, 3], [1, 2], {}, "3 errors_a but 2 errors_b"),
        ([1, np.nan, 3], [1, 2, 3], {}, "finite"),
        ([1, 2, 3], [3, 2, 1], {"h": 3}, "more than h=3"),
        ([1, 2, 3], [3, 2, 1], {"h": 0}, "positive integer"),
        ([1, 2, 3], [3, 2, 1], {"loss": "huber"}, "'squared' or 'absolute'"),
    ],
)
def test_dm_bad_input_is_a_clear_error(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        diebold_mariano(a, b, **kwargs)


def test_dm_refuses_series_on_different_dates():
    a = pd.Series([1.0, 2.0, 3.0], index=pd.date_range("2020-01-01", periods=3))
    b = pd.Series([1.0, 2.0, 3.0], index=pd.date_range("2020-01-02", periods=3))
    with pytest.raises(ValueError, match="same dates"):
        diebold_mariano(a, b)


# forecast_metrics -----------------------------------------------------------------------


def _example():
    # closes 10, 11, 10, 12, 12, 13, 13: forecasts made on the first six dates
    dates = pd.bdate_range("2020-01-06", periods=6)
    close = [10.0, 11.0, 10.0, 12.0, 12.0, 13.0]
    actual = pd.Series([11.0, 10.0, 12.0, 12.0, 13.0, np.nan], index=dates)  # last: unknown
    random_walk = pd.Series(close, index=dates)
    forecast = pd.Series([10.5, 11.5, 10.0, 12.5, 12.0, 13.7], index=dates, name="toy")
    return actual, forecast, random_walk


def test_forecast_metrics_by_hand():
    actual, forecast, random_walk = _example()
    train_close = pd.Series([8.0, 9.0, 11.0, 10.0])
    m = forecast_metrics(actual, forecast, random_walk, train_close=train_close)
    # Scored dates: the first five (the sixth has no realised next close).
    # errors f - y:       -0.5, 1.5, -2, 0.5, -1 -> squares 0.25, 2.25, 4, 0.25, 1 (sum 7.75)
    # random walk c - y:  -1, 1, -2, 0, -1       -> squares 1, 1, 4, 0, 1 (sum 7)
    assert m["n"] == 5
    assert m["rmse"] == pytest.approx(math.sqrt(7.75 / 5), rel=1e-14)
    assert m["mae"] == pytest.approx(5.5 / 5, rel=1e-14)
    assert m["theil_u2"] == pytest.approx(math.sqrt(7.75 / 7), rel=1e-14)
    # naive in-sample MAE on 8, 9, 11, 10: (1 + 2 + 1) / 3 = 4/3 -> MASE = 1.1 / (4/3) = 0.825
    assert m["mase"] == pytest.approx(0.825, rel=1e-14)
    # moves f - c: +.5, +.5, 0, +.5, 0; actual moves y - c: +1, -1, +2, 0, +1.
    # Counted only where both are non-zero: dates 1 (hit) and 2 (miss) -> 1/2, p = 1.
    assert m["directional_n"] == 2
    assert m["directional_accuracy"] == 0.5
    assert m["directional_p_value"] == pytest.approx(1.0)
    # DM against the random walk on d = (-0.75, 1.25, 0, 0.25, 0)
    e = np.array([-0.5, 1.5, -2, 0.5, -1])
    e_rw = np.array([-1, 1, -2, 0, -1.0])
    assert (m["dm_statistic"], m["dm_p_value"]) == diebold_mariano(e, e_rw)
    assert math.isnan(forecast_metrics(actual, forecast, random_walk)["mase"])  # no train_close


def test_directional_p_value_is_the_exact_binomial_tail():
    # 9 right calls out of 10: two-sided p = 2 * (C(10,9) + C(10,10)) / 2^10 = 22/1024.
    dates = pd.bdate_range("2021-01-04", periods=10)
    random_walk = pd.Series(100.0, index=dates)
    actual = pd.Series([101.0] * 9 + [99.0], index=dates)
    forecast = pd.Series(100.5, index=dates)
    m = forecast_metrics(actual, forecast, random_walk)
    assert m["directional_accuracy"] == 0.9
    assert m["directional_p_value"] == pytest.approx(22 / 1024, rel=1e-12)


def test_the_random_walk_scores_as_the_baseline():
    actual, _, random_walk = _example()
    m = forecast_metrics(actual, random_walk, random_walk)
    assert m["theil_u2"] == 1.0
    assert (m["dm_statistic"], m["dm_p_value"]) == (0.0, 1.0)
    assert m["directional_n"] == 0
    assert math.isnan(m["directional_accuracy"]) and math.isnan(m["directional_p_value"])


def test_forecast_metrics_refuses_mismatched_or_missing_forecasts():
    actual, forecast, random_walk = _example()
    with pytest.raises(ValueError, match="same dates"):
        forecast_metrics(actual, forecast.iloc[1:], random_walk)
    gappy = forecast.copy()
    gappy.iloc[2] = np.nan
    with pytest.raises(ValueError, match=r"'toy' is missing on 1 scored dates"):
        forecast_metrics(actual, gappy, random_walk)


def test_theil_u2_by_hand_and_scale_free():
    e = np.array([-0.5, 1.5, -2, 0.5, -1])
    e_rw = np.array([-1, 1, -2, 0, -1.0])
    assert theil_u2(e, e_rw) == pytest.approx(math.sqrt(7.75 / 7), rel=1e-14)
    # dividing both by one positive number (how the report pools instruments) changes nothing
    assert theil_u2(e / 3.7, e_rw / 3.7) == pytest.approx(theil_u2(e, e_rw), rel=1e-14)
    assert math.isnan(theil_u2(e, np.zeros(5)))  # a perfect random walk: nothing to beat
    actual, forecast, random_walk = _example()
    assert forecast_metrics(actual, forecast, random_walk)["theil_u2"] == theil_u2(e, e_rw)
