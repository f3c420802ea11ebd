"""The engine against an independent pandas twin, no look-ahead, input errors, the chart."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from strategies import ExecutionSettings, run_backtest
from strategies.plotting import save_chart
from tests.test_strategies import EXECUTION, THRESHOLDS, golden_bars, golden_forecast

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def sample_bars(ticker: str = "GSPC") -> pd.DataFrame:
    """Bundled bars read with pandas alone, adjusted (OHLC * Adj Close / Close) when possible."""
    raw = pd.read_csv(SAMPLE / f"{ticker}.csv", parse_dates=["Date"], index_col="Date")
    raw = raw.dropna()
    factor = raw["Adj Close"] / raw["Close"] if "Adj Close" in raw.columns else 1.0
    bars = pd.DataFrame({c.lower(): raw[c] * factor for c in ("Open", "High", "Low", "Close")})
    bars["volume"] = raw["Volume"].astype(float)
    bars.index.name = "date"
    return bars


def pandas_sma_crossover(
    bars: pd.DataFrame, fast: int, slow: int, trade_start: str, ex: ExecutionSettings
) -> pd.Series:
    """The long-only SMA crossover written directly in pandas (no Backtrader).

    Signals at a close, fills at the next open with slippage capped at the
    bar's range, percent-of-equity sizing at the signal close with the cash
    cap, commission percent + fixed; equity = cash + units * close.
    """
    close = bars["close"]
    diff = close.rolling(fast).mean() - close.rolling(slow).mean()
    last_nonzero = diff.where(diff != 0).ffill().shift(1)
    event = pd.Series(0, index=bars.index)
    event[(last_nonzero < 0) & (diff > 0)] = 1
    event[(last_nonzero > 0) & (diff < 0)] = -1
    event[bars.index < pd.Timestamp(trade_start)] = 0
    # Crosses alternate, so the intended position is the sign of the last event (flat before any).
    wanted = event.replace(0, np.nan).ffill().fillna(-1).eq(1).astype(int)
    changes = wanted.diff().fillna(wanted.iloc[0])
    signals = changes[changes != 0]

    cash, units = ex.cash, 0
    cash_at, units_at = {}, {}
    position = {d: i for i, d in enumerate(bars.index)}
    for day, change in signals.items():
        i = position[day]
        if i + 1 >= len(bars):
            break  # an order sent on the last bar never fills
        nxt = bars.iloc[i + 1]
        if change > 0:
            c = close.iloc[i]
            per_unit = c * (1 + ex.slippage) * (1 + ex.commission)
            target = min(cash * ex.percent / 100 / c, (cash - ex.commission_fixed) / per_unit)
            units = math.floor(target + 1e-9)
            price = min(nxt["open"] * (1 + ex.slippage), nxt["high"])
            cash -= units * price * (1 + ex.commission) + ex.commission_fixed
        else:
            price = max(nxt["open"] * (1 - ex.slippage), nxt["low"])
            cash += units * price * (1 - ex.commission) - ex.commission_fixed
            units = 0
        cash_at[bars.index[i + 1]] = cash
        units_at[bars.index[i + 1]] = units
    cash_line = pd.Series(cash_at, dtype=float).reindex(bars.index).ffill().fillna(ex.cash)
    units_line = pd.Series(units_at, dtype=float).reindex(bars.index).ffill().fillna(0.0)
    equity = cash_line + units_line * close
    return equity[equity.index >= pd.Timestamp(trade_start)]


def test_sma_crossover_matches_a_pandas_twin_on_gspc():
    bars = sample_bars("GSPC")
    ex = ExecutionSettings(
        cash=100_000, commission=0.001, commission_fixed=2.0, slippage=0.0005, percent=90
    )
    start = "2005-01-03"
    result = run_backtest(bars, "sma_crossover", {"fast": 20, "slow": 50}, ex, trade_start=start)
    twin = pandas_sma_crossover(bars, 20, 50, start, ex)
    assert result.metrics["trades"] >= 20  # enough round trips for the check to bite
    assert result.metrics["rejected_orders"] == 0
    assert result.equity.index.equals(twin.index)
    np.testing.assert_allclose(result.equity.to_numpy(), twin.to_numpy(), rtol=1e-10, atol=0)


def test_nothing_before_t_moves_when_later_bars_change():
    bars, forecast = golden_bars(), golden_forecast()
    t = 12
    later = bars.copy()
    later.iloc[t + 1 :, :4] *= 1.3  # every price after t
    later_forecast = forecast.copy()
    later_forecast.iloc[t + 1 :] = later["close"].iloc[t + 1 :] * 0.9
    for strategy, params in [("forecast", THRESHOLDS), ("sma_crossover", {"fast": 2, "slow": 4})]:
        a = run_backtest(bars, strategy, params, EXECUTION, forecast=forecast)
        b = run_backtest(later, strategy, params, EXECUTION, forecast=later_forecast)
        cut = bars.index[t]
        pd.testing.assert_series_equal(a.equity[:cut], b.equity[:cut])
        pd.testing.assert_frame_equal(
            a.orders[a.orders["date"] <= cut], b.orders[b.orders["date"] <= cut]
        )
        assert not a.equity.equals(b.equity)  # the change after t is seen after t


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda f: f.drop(f.index[5]), r"missing for 1 bar date\(s\): 2024-01-08"),
        (
            lambda f: pd.concat([f, pd.Series([1.0], index=[pd.Timestamp("2024-02-01")])]),
            r"extra date\(s\) with no bar: 2024-02-01",
        ),
        (lambda f: f.shift(1, freq="B"), "missing for 1 bar date.*extra date"),
    ],
)
def test_forecast_that_does_not_line_up_is_an_error(edit, match):
    forecast = edit(golden_forecast()).rename("lstm")
    with pytest.raises(ValueError, match=match) as err:
        run_backtest(golden_bars(), "forecast", THRESHOLDS, EXECUTION, forecast=forecast)
    assert "'lstm'" in str(err.value) and "reindex" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cash": -1_000.0}, "cash must be positive"),
        ({"cash": 0.0}, "cash must be positive"),
        ({"commission": -0.001}, "commission"),
        ({"commission_fixed": -1.0}, "commission_fixed"),
        ({"slippage": 0.5}, "slippage"),
        ({"percent": 0.0}, "percent"),
        ({"percent": 150.0}, "percent"),
    ],
)
def test_bad_execution_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExecutionSettings(**kwargs)


def test_bad_bars_are_named():
    bars = golden_bars()
    bars.iloc[3, 3] = np.nan
    with pytest.raises(ValueError, match="missing or infinite prices on 2024-01-04"):
        run_backtest(bars, "buy_and_hold", {}, EXECUTION)
    with pytest.raises(ValueError, match="strictly increasing"):
        run_backtest(golden_bars().iloc[::-1], "buy_and_hold", {}, EXECUTION)
    with pytest.raises(ValueError, match="no parameter"):
        run_backtest(golden_bars(), "buy_and_hold", {"fast": 2}, EXECUTION)
    with pytest.raises(ValueError, match="unknown strategy"):
        run_backtest(golden_bars(), "momentum", {}, EXECUTION)


def test_fractional_units_and_the_cash_cap():
    bars = golden_bars()
    ex = ExecutionSettings(
        cash=10_000, commission=0.001, slippage=0.01, percent=100, fractional=True
    )
    result = run_backtest(bars, "buy_and_hold", {}, ex, trade_start=bars.index[10])
    # 100 % of equity would not pay for slippage and commission: capped at cash / (c (1+s)(1+k))
    assert result.orders["size"].tolist() == [pytest.approx(10_000 / (100 * 1.01 * 1.001))]
    assert result.orders["status"].tolist() == ["filled"]


def test_gap_up_beyond_the_headroom_is_a_logged_rejection():
    bars = golden_bars()
    bars.loc[bars.index[3], ["open", "high"]] = [120.0, 125.0]  # +18 % gap after t2's signal
    ex = ExecutionSettings(cash=10_000, percent=100)
    result = run_backtest(bars, "buy_and_hold", {}, ex, trade_start=bars.index[2])
    assert result.orders["status"].tolist()[:2] == ["margin", "filled"]
    assert result.orders["date"].iloc[1] == bars.index[4]  # tried again at t3, filled at t4
    assert result.metrics["rejected_orders"] == 1


def test_headless_chart_is_a_png(tmp_path):
    result = run_backtest(
        golden_bars(),
        "forecast",
        THRESHOLDS,
        EXECUTION,
        forecast=golden_forecast(),
        keep_cerebro=True,
    )
    path = save_chart(result, tmp_path / "chart" / "forecast.png", dpi=40)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(ValueError, match="keep_cerebro"):
        save_chart(run_backtest(golden_bars(), "buy_and_hold", {}, EXECUTION), tmp_path / "x.png")


def test_forecast_feed_loads_the_same_lines_as_pandasdata():
    import backtrader as bt

    from strategies.feeds import make_feed

    class Record(bt.Strategy):
        def __init__(self):
            self.rows = []

        def next(self):
            d = self.data
            self.rows.append(
                (d.datetime[0], d.open[0], d.high[0], d.low[0], d.close[0], d.volume[0])
            )

    bars = sample_bars("GOOG").iloc[:300]
    rows = []
    for feed in (make_feed(bars), bt.feeds.PandasData(dataname=bars, openinterest=None)):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed)
        cerebro.addstrategy(Record)
        rows.append(cerebro.run()[0].rows)
    assert len(rows[0]) == 300 and rows[0] == rows[1]
