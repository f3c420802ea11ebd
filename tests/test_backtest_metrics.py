"""The metrics dict against values computed by hand on a six-day equity curve."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from strategies.metrics import (
    METRIC_KEYS,
    compute_metrics,
    drawdown_stats,
    profit_factor,
    risk_free_per_bar,
    win_rate,
)

DATES = pd.bdate_range("2024-03-04", periods=6, name="date")
EQUITY = pd.Series([100.0, 110.0, 99.0, 99.0, 121.0, 110.0], index=DATES)
POSITIONS = pd.Series([0.0, 1.0, 1.0, 0.0, 2.0, 2.0], index=DATES)
TRADES = pd.DataFrame({"pnl_net": [50.0, -20.0, 30.0, -10.0]})
ORDERS = pd.DataFrame(
    {
        "status": ["filled", "filled", "margin", "filled"],
        "value": [100.0, 110.0, np.nan, 99.0],
        "commission": [1.0, 1.5, 0.0, 0.5],
    }
)
# daily returns of EQUITY, by hand
R = [10 / 100, -11 / 110, 0 / 99, 22 / 99, -11 / 121]


def sqrt252(x: float) -> float:
    return x * math.sqrt(252)


def test_metrics_match_hand_computation():
    m = compute_metrics(EQUITY, POSITIONS, TRADES, ORDERS, risk_free=0.0)
    assert list(m) == list(METRIC_KEYS)
    mean, sd = statistics.mean(R), statistics.stdev(R)
    downside = math.sqrt((R[1] ** 2 + R[4] ** 2) / 5)  # only the two losing days, over all 5
    cagr = 1.1 ** (252 / 5) - 1
    expected = {
        "total_return": 0.1,
        "cagr": cagr,
        "volatility": sqrt252(sd),
        "sharpe": sqrt252(mean / sd),
        "sortino": sqrt252(mean / downside),
        "calmar": cagr / 0.1,
        "max_drawdown": -0.1,  # 110 -> 99
        "max_drawdown_duration": 2,  # two closes under the 110 peak (the 121 peak: one)
        "trades": 4,
        "win_rate": 0.5,
        "profit_factor": 80 / 30,
        "exposure": 4 / 5,  # held at 4 of the 5 return closes
        "turnover": (100 + 110 + 99) / (sum(EQUITY) / 6) * 252 / 5,
        "commissions": 3.0,
        "orders": 3,
        "rejected_orders": 1,
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, rel=1e-12), key


def test_risk_free_is_subtracted_as_a_daily_rate():
    for annual in (0.05, -0.01):  # a negative rate too (quantstats alone would ignore it)
        daily = (1 + annual) ** (1 / 252) - 1
        excess = [r - daily for r in R]
        m = compute_metrics(EQUITY, POSITIONS, TRADES, ORDERS, risk_free=annual)
        assert m["sharpe"] == pytest.approx(
            sqrt252(statistics.mean(excess) / statistics.stdev(excess)), rel=1e-12
        )
        downside = math.sqrt(sum(min(x, 0) ** 2 for x in excess) / 5)
        assert m["sortino"] == pytest.approx(sqrt252(statistics.mean(excess) / downside), rel=1e-12)
        assert m["volatility"] == pytest.approx(sqrt252(statistics.stdev(R)), rel=1e-12)


def test_risk_free_series_is_forward_filled_by_date():
    rates = pd.Series([0.02, 0.04], index=[DATES[0] - pd.Timedelta(days=30), DATES[3]])
    daily = risk_free_per_bar(rates, DATES[1:])
    expected = [(1.02) ** (1 / 252) - 1] * 2 + [(1.04) ** (1 / 252) - 1] * 3
    np.testing.assert_allclose(daily.to_numpy(), expected, rtol=1e-15)


def test_drawdown_still_running_at_the_end_counts():
    equity = pd.Series([10.0, 12.0, 11.0, 9.0, 11.5, 10.0], index=DATES)
    assert drawdown_stats(equity) == (pytest.approx(9 / 12 - 1), 4)


def test_flat_strategy_has_no_ratios():
    flat = pd.Series(100.0, index=DATES)
    empty_orders = pd.DataFrame(columns=["status", "value", "commission"])
    m = compute_metrics(flat, flat * 0, pd.DataFrame({"pnl_net": []}), empty_orders, 0.03)
    assert m["total_return"] == 0 and m["volatility"] == 0 and m["max_drawdown"] == 0
    assert m["max_drawdown_duration"] == 0 and m["exposure"] == 0 and m["turnover"] == 0
    for key in ("sharpe", "sortino", "calmar", "win_rate", "profit_factor"):
        assert math.isnan(m[key]), key
    assert m["trades"] == 0 and m["orders"] == 0


def test_profit_factor_without_losses_is_infinite():
    m = compute_metrics(EQUITY, POSITIONS, pd.DataFrame({"pnl_net": [5.0, 1.0]}), ORDERS)
    assert m["profit_factor"] == math.inf and m["win_rate"] == 1.0


def test_equity_must_stay_positive():
    with pytest.raises(ValueError, match="not positive"):
        compute_metrics(EQUITY * [1, 1, 1, 0, 1, 1], POSITIONS, TRADES, ORDERS)


def test_win_rate_and_profit_factor_by_hand():
    pnl = np.array([30.0, -10.0, 0.0, 20.0, -15.0])
    assert win_rate(pnl) == pytest.approx(2 / 5)  # a zero trade is not a win
    assert profit_factor(pnl) == pytest.approx(50 / 25)
    assert math.isnan(win_rate(np.array([]))) and math.isnan(profit_factor(np.array([])))
    assert math.isnan(profit_factor(np.array([0.0, 0.0])))  # neither wins nor losses
    assert profit_factor(np.array([-1.0])) == 0.0
    # the metrics dict uses exactly these (the report's pooled rows too)
    m = compute_metrics(EQUITY, POSITIONS, pd.DataFrame({"pnl_net": pnl}), ORDERS)
    assert m["win_rate"] == win_rate(pnl) and m["profit_factor"] == profit_factor(pnl)


def test_every_annualised_figure_follows_the_bars_per_year():
    """Hourly bars: the same equity curve annualised with P = 6,240 bars a year, by hand."""
    per_year = 6240.0  # 24 bars a day, 5 days a week, 52 weeks
    m = compute_metrics(EQUITY, POSITIONS, TRADES, ORDERS, 0.03, periods_per_year=per_year)
    daily = compute_metrics(EQUITY, POSITIONS, TRADES, ORDERS, 0.03)
    rf = 1.03 ** (1 / per_year) - 1
    excess = [r - rf for r in R]
    n = len(R)
    assert m["cagr"] == pytest.approx((EQUITY.iloc[-1] / EQUITY.iloc[0]) ** (per_year / n) - 1)
    assert m["volatility"] == pytest.approx(statistics.stdev(R) * math.sqrt(per_year), rel=1e-12)
    assert m["sharpe"] == pytest.approx(
        statistics.mean(excess) / statistics.stdev(excess) * math.sqrt(per_year), rel=1e-12
    )
    assert m["total_return"] == daily["total_return"]  # nothing else moves
    assert m["turnover"] == pytest.approx(daily["turnover"] * per_year / 252, rel=1e-12)
    rates = risk_free_per_bar(0.03, DATES[1:], per_year)
    np.testing.assert_allclose(rates.to_numpy(), rf, rtol=1e-15)
