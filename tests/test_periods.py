"""core.periods: the one Sharpe ratio and the one annualisation, against quantstats."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import quantstats.stats as qs

from core.periods import PERIODS_PER_YEAR, annualise_sharpe, per_period_sharpe, sharpe_ratio


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
