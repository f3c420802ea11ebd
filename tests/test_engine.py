"""The engine against a pandas twin, the warm-up trim, no look-ahead, input errors, the chart."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from strategies import ExecutionSettings, run_backtest, warmup_bars
from strategies.plotting import chart_figure, save_chart
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
    # Backtrader sees only the warm-up before trade_start; the twin computes on the whole history.
    result = run_backtest(
        bars, "sma_crossover", {"fast": 20, "slow": 50}, ex, trade_start=start, warmup=50
    )
    assert warmup_bars([("sma_crossover", {"fast": 20, "slow": 50})]) == 50
    twin = pandas_sma_crossover(bars, 20, 50, start, ex)
    assert result.metrics["trades"] >= 20  # enough round trips for the check to bite
    assert result.metrics["rejected_orders"] == 0
    assert result.equity.index.equals(twin.index)
    np.testing.assert_allclose(result.equity.to_numpy(), twin.to_numpy(), rtol=1e-10, atol=0)


WARMUP_PLAN = {
    "forecast": ("forecast", {"entry_threshold": 0.001, "exit_threshold": -0.001}),
    "forecast_long_short": ("forecast", {"entry_threshold": 0.001, "exit_threshold": -0.001}),
    "sma_crossover": ("sma_crossover", {"fast": 20, "slow": 50}),
    "ema_crossover": ("ema_crossover", {"fast": 12, "slow": 26}),
    "buy_and_hold": ("buy_and_hold", {}),
}


@pytest.fixture(scope="module")
def oos_case():
    """GSPC 2003-2010, a noisy next-close forecast from 2007 on (NaN before, as in the stage)."""
    bars = sample_bars("GSPC").loc["2003-01-01":"2010-12-31"]
    start = bars.index[bars.index.searchsorted(pd.Timestamp("2007-01-03"))]
    noise = np.random.default_rng(3).normal(0.0, 0.004, len(bars))
    forecast = (bars["close"] * (1 + noise)).where(bars.index >= start).rename("noisy")
    return bars, start, forecast


def _run(bars, name, start, forecast, **kwargs):
    strategy, params = WARMUP_PLAN[name]
    ex = ExecutionSettings(
        commission=0.001, slippage=0.0005, percent=95, allow_short=name.endswith("long_short")
    )
    return run_backtest(
        bars,
        strategy,
        params,
        ex,
        trade_start=start,
        forecast=forecast if strategy == "forecast" else None,
        **kwargs,
    )


@pytest.mark.parametrize("name", list(WARMUP_PLAN))
def test_warm_up_trim_gives_the_whole_history_backtest(oos_case, name):
    bars, start, forecast = oos_case
    warmup = warmup_bars(WARMUP_PLAN.values())
    assert warmup == 260  # 10 x the EMA crossover's slow period, the most any strategy needs
    whole = _run(bars, name, start, forecast)
    trimmed = _run(bars, name, start, forecast, warmup=warmup)
    assert whole.metrics["orders"] >= (1 if name == "buy_and_hold" else 10)
    pd.testing.assert_frame_equal(trimmed.orders, whole.orders, check_exact=True)
    pd.testing.assert_frame_equal(trimmed.trades, whole.trades, check_exact=True)
    if name == "ema_crossover":
        # The EMA seed differs (see strategies.engine): same fills, equity to a tiny tolerance.
        np.testing.assert_allclose(trimmed.equity, whole.equity, rtol=1e-12, atol=0)
        assert trimmed.equity.index.equals(whole.equity.index)
    else:
        pd.testing.assert_series_equal(trimmed.equity, whole.equity, check_exact=True)
        pd.testing.assert_series_equal(trimmed.positions, whole.positions, check_exact=True)
        assert trimmed.metrics == whole.metrics
    # The trim is a cut: the bars before the warm-up are not fed at all.
    first = int(bars.index.searchsorted(start)) - warmup
    cut = _run(bars.iloc[first:], name, start, forecast.iloc[first:])
    pd.testing.assert_series_equal(trimmed.equity, cut.equity, check_exact=True)
    pd.testing.assert_frame_equal(trimmed.orders, cut.orders, check_exact=True)


def test_ema_seed_weighs_less_than_exp_minus_18_after_the_warm_up(oos_case):
    """Backtrader's own EMA started where the trimmed feed starts vs at the first bar."""
    import backtrader as bt

    from strategies.feeds import make_feed

    class Average(bt.Strategy):
        params = (("period", 26),)

        def __init__(self):
            self.average = bt.indicators.EMA(self.data.close, period=self.p.period)

    def ema(bars: pd.DataFrame, period: int) -> pd.Series:
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(make_feed(bars))
        cerebro.addstrategy(Average, period=period)
        (strat,) = cerebro.run()
        return pd.Series(np.asarray(strat.average.array), index=bars.index)

    bars, start, _ = oos_case
    warmup = 10 * 26
    first = int(bars.index.searchsorted(start)) - warmup
    for period in (12, 26):
        whole, trimmed = ema(bars, period), ema(bars.iloc[first:], period)
        seed_at = trimmed.index[period - 1]
        seed_gap = abs(trimmed[seed_at] - whole[seed_at])
        # An EMA is linear in its start: the gap decays by exactly (1 - 2 / (p + 1)) a bar.
        decay = (1 - 2 / (period + 1)) ** (warmup - period + 1)
        assert decay < math.exp(-18)
        gap = (trimmed - whole).loc[start:].abs()
        # (plus what float rounding adds: a few ulp of the price, decaying the same way)
        assert seed_gap > 0.1 and gap.max() <= decay * seed_gap + 1e-10
        if period == 26:  # the slow average still differs, if only by about 2e-8
            assert gap.max() > 0


def test_warm_up_shorter_than_the_strategy_needs_is_an_error(oos_case):
    bars, start, forecast = oos_case
    with pytest.raises(ValueError, match=r"warmup must be a whole number of bars >= 260"):
        _run(bars, "ema_crossover", start, forecast, warmup=100)
    with pytest.raises(ValueError, match=r">= 50 .*SmaCrossover"):
        _run(bars, "sma_crossover", start, forecast, warmup=49)
    with pytest.raises(ValueError, match="warmup must be"):
        _run(bars, "buy_and_hold", start, forecast, warmup=True)
    # more warm-up than history just feeds everything
    assert _run(bars, "buy_and_hold", start, forecast, warmup=10**6).equity.index[0] == start


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
    with pytest.raises(
        ValueError, match=r"unknown kind .momentum.: registered \(gatecast.strategies\)"
    ):
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
    # dates under the bottom panel, within the measured period
    fig = chart_figure(result)
    fig.canvas.draw()
    bottom = max(fig.axes, key=lambda ax: -ax.get_position().y0)
    shown = [t.get_text() for t in bottom.get_xticklabels() if t.get_visible() and t.get_text()]
    assert len(shown) >= 3
    dates = pd.to_datetime(shown)
    assert dates.min() >= result.equity.index[0] and dates.max() <= result.equity.index[-1]
    with pytest.raises(ValueError, match="keep_cerebro"):
        save_chart(run_backtest(golden_bars(), "buy_and_hold", {}, EXECUTION), tmp_path / "x.png")


@pytest.mark.parametrize("preload", [True, False])
def test_forecast_feed_loads_the_same_lines_as_pandasdata(preload):
    """Preloaded (whole columns at once) or bar by bar, the lines PandasData would load."""
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
            if hasattr(d, "forecast"):
                self.rows[-1] += (d.forecast[0], d.openinterest[0])

    bars = sample_bars("GOOG").iloc[:300]
    forecast = (bars["close"] * 1.01).where(bars.index >= bars.index[100]).rename("f")
    feeds = (
        make_feed(bars, forecast, first=40),
        bt.feeds.PandasData(dataname=bars.iloc[40:], openinterest=None),
    )
    rows = []
    for feed in feeds:
        cerebro = bt.Cerebro(stdstats=False, preload=preload, runonce=preload)
        cerebro.adddata(feed)
        cerebro.addstrategy(Record)
        rows.append(cerebro.run()[0].rows)
    assert len(rows[0]) == 260 and [r[:6] for r in rows[0]] == rows[1]
    fed_forecast = np.array([r[6] for r in rows[0]])
    np.testing.assert_array_equal(fed_forecast, forecast.iloc[40:].to_numpy())
    assert np.isnan([r[7] for r in rows[0]]).all()  # no open interest column: NaN
