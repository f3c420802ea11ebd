"""Golden trade logs on 20 hand-made bars: exact fills, commissions and final values.

Every expected number below was worked out by hand from the bars, the rules in
the strategies' docstrings and the execution conventions in
``strategies.engine`` (fills at the next open, slippage against the order and
capped at the bar's range, commission 0.1 % + 1 per fill, 50 % of equity per
position in whole units), and written as the arithmetic that produces it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from strategies import ExecutionSettings, run_backtest

NAN = np.nan
DATES = pd.bdate_range("2024-01-01", periods=20, name="date")
# fmt: off
#          t0   t1   t2   t3   t4   t5   t6   t7   t8   t9
OPENS = [100, 100, 102, 103, 104, 104, 106, 109, 110, 106,
         103, 100,  98,  98, 100, 103, 107, 109, 107, 104]  # t10 .. t19
CLOSES = [100, 101, 102, 104, 103, 105, 108, 110, 107, 104,
          100,  98,  97,  99, 102, 106, 109, 108, 105, 103]
# fmt: on
# Forecast of the next close made at each close; expected return f/c - 1 in the comments.
FORECAST = [
    NAN,  # t0
    110.0,  # t1  +8.9 %, but before trade_start (t2): ignored
    102.51,  # t2  +0.5 %: below the entry threshold
    106.08,  # t3  +2.0 %: buy
    103.2,  # t4  +0.19 %: hold
    NAN,  # t5  no forecast: no decision
    107.352,  # t6  -0.6 %: below exit -0.5 %: sell
    108.35,  # t7  -1.5 %: short entry (long-short only)
    106.0,  # t8  -0.93 %: hold the short
    104.3,  # t9  +0.29 %: hold the short (cover needs > +0.5 %)
    102.0,  # t10 +2.0 %: buy (long-short: cover and reverse)
    99.47,  # t11 +1.5 %: hold
    96.224,  # t12 -0.8 %: sell (not below -1 %: no short)
    NAN,  # t13
    101.0,  # t14 -0.98 %: nothing (short entry needs < -1 %)
    104.41,  # t15 -1.5 %: short entry (long-short only)
    109.5,  # t16 +0.46 %: hold the short
    110.16,  # t17 +2.0 %: buy (long-short: cover and reverse)
    106.0,  # t18 +0.95 %: hold
    99.0,  # t19 -3.9 %: sell, but the order would fill after the last bar: never fills
]
THRESHOLDS = {"entry_threshold": 0.01, "exit_threshold": -0.005}
EXECUTION = ExecutionSettings(
    cash=10_000.0, commission=0.001, commission_fixed=1.0, slippage=0.01, percent=50.0
)
LONG_SHORT = ExecutionSettings(**{**EXECUTION.__dict__, "allow_short": True})


def golden_bars() -> pd.DataFrame:
    """OHLC with a 2-point range around open/close, so 1 % slippage never hits the range...

    ...except on t11, whose high (100.6) is below open * 1.01 = 101: a buy
    filled there is capped at the high.
    """
    bars = pd.DataFrame({"open": OPENS, "close": CLOSES}, index=DATES, dtype=float)
    bars["high"] = bars[["open", "close"]].max(axis=1) + 2
    bars["low"] = bars[["open", "close"]].min(axis=1) - 2
    bars.loc[DATES[11], "high"] = 100.6
    bars["volume"] = 1000.0
    return bars[["open", "high", "low", "close", "volume"]]


def golden_forecast() -> pd.Series:
    return pd.Series(FORECAST, index=DATES, name="hand")


def commission(units: float, price: float) -> float:
    return units * price * 0.001 + 1.0


def d(t: int) -> pd.Timestamp:
    return DATES[t]


# (fill date, signed units, fill price); price arithmetic: buy = open * 1.01, sell = open * 0.99
LONG_ONLY_FILLS = [
    # t3 signal: floor(10000 * 0.5 / 104) = 48 units
    (d(4), 48, 104 * 1.01),
    (d(7), -48, 109 * 0.99),
    # t10: cash 10125.5384 -> floor(5062.7692 / 100) = 50; fill capped at t11's high
    (d(11), 50, 100.6),
    (d(13), -50, 98 * 0.99),
    # t17: cash 9934.6574 -> floor(4967.3287 / 108) = 45
    (d(18), 45, 107 * 1.01),
]
# cash after each fill, by hand:
# 10000 - 48*105.04 - 6.04192 = 4952.03808; + 48*107.91 - 6.17968 = 10125.5384
# - 50*100.6 - 6.03 = 5089.5084;  + 50*97.02 - 5.851 = 9934.6574
# - 45*108.07 - 5.86315 = 5065.64425
# final value: 5065.64425 + 45 * 103 = 9700.64425
LONG_ONLY_FINAL = 9700.64425

LONG_SHORT_FILLS = [
    (d(4), 48, 104 * 1.01),
    (d(7), -48, 109 * 0.99),
    # t7 short: equity 10125.5384 -> floor(5062.7692 / 110) = 46
    (d(8), -46, 110 * 0.99),
    # t10 reversal: cover 46, then equity 15128.929 - 46*100 = 10528.929 -> floor(52.64) = 52
    (d(11), 46, 100.6),
    (d(11), 52, 100.6),
    (d(13), -52, 98 * 0.99),
    # t15 short: equity 10297.26516 -> floor(5148.63 / 106) = 48
    (d(16), -48, 107 * 0.99),
    # t17 reversal: cover 48, equity 15375.82052 - 48*108 = 10191.82052 -> floor(47.18) = 47
    (d(18), 48, 107 * 1.01),
    (d(18), 47, 107 * 1.01),
]
# cash: 10125.5384 (as above); + 46*108.9 - 6.0094 = 15128.929; - 46*100.6 - 5.6276 = 10495.7014
# - 52*100.6 - 6.2312 = 5258.2702; + 52*97.02 - 6.04504 = 10297.26516; + 48*105.93 - 6.08464
# = 15375.82052; - 48*108.07 - 6.18736 = 10182.27316; - 47*108.07 - 6.07929 = 5096.90387
# final value: 5096.90387 + 47 * 103 = 9937.90387
LONG_SHORT_FINAL = 9937.90387

# SMA(2) - SMA(4) of the closes: ... t8 +1.0, t9 -1.75 (down), ..., t13 -0.5, t14 +1.5 (up),
# t17 +2.25, t18 -0.5 (down). No upward cross before t14, so the first buy is sent at t14.
SMA_FILLS = [
    # floor(10000 * 0.5 / 102) = 49
    (d(15), 49, 103 * 1.01),
    (d(19), -49, 104 * 0.99),
]
# 10000 - 49*104.03 - 6.09747 = 4896.43253; + 49*102.96 - 6.04504 = 9935.42749
SMA_FINAL = 9935.42749

# EMA(2) - EMA(4) (seeded with the SMA, alpha 2/3 and 2/5): t13 -0.767, t14 +0.451 (up),
# t18 +0.149, t19 -0.694 (down on the last bar: that sell never fills).
EMA_FILLS = [(d(15), 49, 103 * 1.01)]
EMA_FINAL = 4896.43253 + 49 * 103  # 9943.43253

# Long-short SMA(2)/SMA(4), no trade_start: the same crosses (t9 down, t14 up, t18 down), each
# acted on. Sizes from equity at the signal's close, as the forecast strategy's.
SMA_LONG_SHORT_FILLS = [
    # t9 down from flat: short floor(10000 * 0.5 / 104) = 48, filled at t10's open
    (d(10), -48, 103 * 0.99),
    # t14 up: cover 48; equity 14888.66544 - 48*102 = 9992.66544 -> floor(4996.33 / 102) = 48
    (d(15), 48, 103 * 1.01),
    (d(15), 48, 103 * 1.01),
    # t18 down: sell 48; equity 4889.79856 + 48*105 = 9929.79856 -> floor(4964.90 / 105) = 47
    (d(19), -48, 104 * 0.99),
    (d(19), -47, 104 * 0.99),
]
# cash: 10000 + 48*101.97 - 5.89456 = 14888.66544; - 48*104.03 - 5.99344 = 9889.232
# - 48*104.03 - 5.99344 = 4889.79856; + 48*102.96 - 5.94208 = 9825.93648
# + 47*102.96 - 5.83912 = 14659.21736; final value: 14659.21736 - 47 * 103 = 9818.21736
SMA_LONG_SHORT_FINAL = 9818.21736

# Buy and hold from t10: floor(10000 * 0.5 / 100) = 50, filled at t11 capped at its high 100.6
BUY_HOLD_FILLS = [(d(11), 50, 100.6)]
BUY_HOLD_FINAL = 10_000 - 50 * 100.6 - commission(50, 100.6) + 50 * 103  # 10113.97

WINDOWS = {"fast": 2, "slow": 4}
# name: (strategy, params, execution, trade_start, fills, final value)
CASES = {
    "forecast_long_only": (
        "forecast",
        THRESHOLDS,
        EXECUTION,
        d(2),
        LONG_ONLY_FILLS,
        LONG_ONLY_FINAL,
    ),
    "forecast_long_short": (
        "forecast",
        THRESHOLDS,
        LONG_SHORT,
        d(2),
        LONG_SHORT_FILLS,
        LONG_SHORT_FINAL,
    ),
    "sma_crossover": ("sma_crossover", WINDOWS, EXECUTION, None, SMA_FILLS, SMA_FINAL),
    "ema_crossover": ("ema_crossover", WINDOWS, EXECUTION, None, EMA_FILLS, EMA_FINAL),
    "sma_crossover_long_short": (
        "sma_crossover",
        WINDOWS,
        LONG_SHORT,
        None,
        SMA_LONG_SHORT_FILLS,
        SMA_LONG_SHORT_FINAL,
    ),
    "buy_and_hold": ("buy_and_hold", {}, EXECUTION, d(10), BUY_HOLD_FILLS, BUY_HOLD_FINAL),
}


def run_case(name: str, **kwargs):
    strategy, params, execution, start, _, _ = CASES[name]
    return run_backtest(
        golden_bars(),
        strategy,
        params,
        execution,
        trade_start=start,
        forecast=golden_forecast(),
        **kwargs,
    )


@pytest.mark.parametrize("name", list(CASES))
def test_golden_trade_log(name):
    _, _, _, start, fills, final = CASES[name]
    result = run_case(name)
    orders = result.orders
    assert (orders["status"] == "filled").all()
    assert list(orders["date"]) == [f[0] for f in fills]
    assert orders["size"].tolist() == [float(f[1]) for f in fills]
    np.testing.assert_allclose(orders["price"], [f[2] for f in fills], rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        orders["commission"], [commission(abs(f[1]), f[2]) for f in fills], rtol=0, atol=1e-9
    )
    assert result.equity.iloc[-1] == pytest.approx(final, abs=1e-8)
    assert result.equity.index[0] == (DATES[0] if start is None else start)
    assert result.equity.index[-1] == DATES[-1]


def test_golden_round_trips_long_short():
    trades = run_case("forecast_long_short").trades
    assert trades["entry_date"].tolist() == [d(4), d(8), d(11), d(16), d(18)]
    assert trades["exit_date"].iloc[:4].tolist() == [d(7), d(11), d(13), d(18)]
    assert pd.isna(trades["exit_date"].iloc[4]) and trades["open"].tolist() == [False] * 4 + [True]
    assert trades["size"].tolist() == [48, -46, 52, -48, 47]
    # pnl after both commissions, by hand: e.g. the first short: -46 * (100.6 - 108.9) - 11.637
    expected_net = [
        48 * (107.91 - 105.04) - commission(48, 105.04) - commission(48, 107.91),
        -46 * (100.6 - 108.9) - commission(46, 108.9) - commission(46, 100.6),
        52 * (97.02 - 100.6) - commission(52, 100.6) - commission(52, 97.02),
        -48 * (108.07 - 105.93) - commission(48, 105.93) - commission(48, 108.07),
        47 * (103 - 108.07) - commission(47, 108.07),  # open: marked at the last close
    ]
    np.testing.assert_allclose(trades["pnl_net"], expected_net, atol=1e-9)
    assert 10_000 + sum(expected_net) == pytest.approx(LONG_SHORT_FINAL, abs=1e-8)


def test_golden_metrics_count_the_log():
    result = run_case("forecast_long_only")
    m = result.metrics
    assert m["trades"] == 3  # two round trips and the position open at the end
    assert m["orders"] == 5 and m["rejected_orders"] == 0
    assert m["win_rate"] == pytest.approx(1 / 3)
    assert m["commissions"] == pytest.approx(
        sum(commission(abs(u), p) for _, u, p in LONG_ONLY_FILLS), abs=1e-9
    )
    assert m["total_return"] == pytest.approx(LONG_ONLY_FINAL / 10_000 - 1, abs=1e-12)
    # held at the close of t4..t6, t11, t12, t18, t19 out of the 17 return days t3..t19
    assert m["exposure"] == pytest.approx(7 / 17)


@pytest.mark.parametrize("name", list(CASES))
def test_same_results_in_every_engine_mode(name):
    reference = run_case(name, runonce=True, preload=True)
    for runonce, preload in itertools.product([True, False], repeat=2):
        other = run_case(name, runonce=runonce, preload=preload)
        pd.testing.assert_series_equal(other.equity, reference.equity, check_exact=True)
        pd.testing.assert_frame_equal(other.orders, reference.orders, check_exact=True)
        pd.testing.assert_frame_equal(other.trades, reference.trades, check_exact=True)
        assert pd.Series(other.metrics).equals(pd.Series(reference.metrics))


def test_forecast_nan_means_no_decision():
    forecast = golden_forecast()
    forecast.loc[d(6)] = NAN  # t6's exit signal disappears: the long is kept until t7's (-1.5 %)
    result = run_backtest(
        golden_bars(), "forecast", THRESHOLDS, EXECUTION, trade_start=d(2), forecast=forecast
    )
    assert result.orders["date"].tolist()[:2] == [d(4), d(8)]


def test_no_trade_before_trade_start():
    forecast = golden_forecast()
    result = run_backtest(
        golden_bars(), "forecast", THRESHOLDS, EXECUTION, trade_start=d(5), forecast=forecast
    )
    # t3's buy signal is before trade_start; the first is t10's
    assert result.orders["date"].iloc[0] == d(11)
    assert result.equity.index[0] == d(5)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"entry_threshold": -0.01, "exit_threshold": -0.02}, "entry_threshold must be"),
        ({"entry_threshold": 0.01, "exit_threshold": 0.005}, "exit_threshold must be"),
        ({"entry_threshold": float("nan")}, "entry_threshold must be"),
    ],
)
def test_thresholds_of_the_wrong_sign(params, match):
    with pytest.raises(ValueError, match=match):
        run_backtest(golden_bars(), "forecast", params, EXECUTION, forecast=golden_forecast())


def test_crossover_periods_checked():
    with pytest.raises(ValueError, match="fast < slow"):
        run_backtest(golden_bars(), "sma_crossover", {"fast": 4, "slow": 2}, EXECUTION)


def test_forecast_strategy_needs_a_forecast():
    with pytest.raises(ValueError, match="needs a forecast"):
        run_backtest(golden_bars(), "forecast", THRESHOLDS, EXECUTION)
