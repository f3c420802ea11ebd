"""core.periods: bars per year follow the bars; the one Sharpe ratio and annualisation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import quantstats.stats as qs

from core.periods import (
    PERIODS_PER_YEAR,
    annualise_sharpe,
    bar_interval,
    is_daily_equity,
    per_period_sharpe,
    periods_per_year,
    sharpe_ratio,
)


def test_daily_equity_bars_are_252_a_year():
    index = pd.bdate_range("2020-01-01", periods=500)
    assert bar_interval(index) == "daily"
    assert is_daily_equity(index)
    assert periods_per_year(index) == 252.0


def test_daily_bars_with_weekends_are_measured():
    index = pd.date_range("2020-01-01", "2022-01-01", freq="D")  # 732 bars over 2 years
    assert bar_interval(index) == "daily" and not is_daily_equity(index)
    years = (index[-1] - index[0]).days / 365.25
    assert periods_per_year(index) == pytest.approx((len(index) - 1) / years)
    assert periods_per_year(index) == pytest.approx(365.25, rel=1e-3)


def test_hourly_bars_are_measured_over_the_sample():
    # 24 bars a day, 5 days a week, for 4 weeks: 480 bars, as an FX feed has them
    days = pd.bdate_range("2018-01-08", periods=20)
    index = pd.DatetimeIndex([d + pd.Timedelta(hours=h) for d in days for h in range(24)])
    assert bar_interval(index) == "1h"
    span_years = (index[-1] - index[0]) / pd.Timedelta(days=365.25)
    assert periods_per_year(index) == pytest.approx(479 / span_years)
    assert 5_000 < periods_per_year(index) < 7_000  # about 24 * 5 * 52 = 6,240


@pytest.mark.parametrize(
    ("freq", "words"), [("15min", "15min"), ("W-FRI", "weekly"), ("2h", "2h"), ("14D", "14d")]
)
def test_interval_in_words(freq, words):
    assert bar_interval(pd.date_range("2021-01-01", periods=50, freq=freq)) == words


def test_an_override_wins_and_is_checked():
    index = pd.bdate_range("2020-01-01", periods=10)
    assert periods_per_year(index, override=1638.0) == 1638.0
    with pytest.raises(ValueError, match="positive"):
        periods_per_year(index, override=0.0)


def test_too_few_bars_to_measure():
    with pytest.raises(ValueError, match="data.periods_per_year"):
        periods_per_year(pd.DatetimeIndex(["2020-01-01 10:00"]))


def test_annualise_sharpe():
    assert annualise_sharpe(0.1) == pytest.approx(0.1 * math.sqrt(252))
    assert annualise_sharpe(0.1, 6240) == pytest.approx(0.1 * math.sqrt(6240))


def test_sharpe_is_quantstats_convention():
    r = pd.Series(np.random.default_rng(3).normal(0.0005, 0.01, 400))
    assert PERIODS_PER_YEAR == 252
    assert sharpe_ratio(r, PERIODS_PER_YEAR) == pytest.approx(qs.sharpe(r), rel=1e-12)
    assert sharpe_ratio(r) == pytest.approx(r.mean() / r.std(ddof=1), rel=1e-12)
    assert annualise_sharpe(0.1) == pytest.approx(0.1 * math.sqrt(252), rel=1e-15)


def test_undefined_sharpe_is_nan():
    assert math.isnan(sharpe_ratio(np.zeros(50)))
    assert math.isnan(sharpe_ratio([0.01]))
    assert math.isnan(sharpe_ratio([]))
    # constant up to float noise (a flat strategy's excess returns under a constant rate)
    noisy = np.full(200, -7.9e-5) + np.random.default_rng(0).normal(0, 1e-21, 200)
    assert math.isnan(sharpe_ratio(noisy))
    # non-finite values are dropped, not propagated
    assert sharpe_ratio([0.01, np.nan, 0.02, -0.01]) == pytest.approx(
        sharpe_ratio([0.01, 0.02, -0.01]), rel=1e-15
    )
    with pytest.raises(ValueError, match="one-dimensional"):
        sharpe_ratio(np.zeros((3, 3)))


def test_rows_at_once_equal_one_series_at_a_time():
    x = np.random.default_rng(1).normal(0.001, 0.02, (6, 250))
    x[2] = 0.003  # a flat row
    rows = per_period_sharpe(x, axis=1)
    assert rows.shape == (6,)
    for k in range(6):
        one = sharpe_ratio(x[k])
        assert (math.isnan(one) and math.isnan(rows[k])) or rows[k] == one
    assert math.isnan(rows[2])
    assert per_period_sharpe(np.zeros((4, 1)), axis=1).shape == (4,)
