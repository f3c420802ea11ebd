"""The backtest engine: one execution model for every strategy, and the conventions of its results.

This docstring is the one place where the conventions of a gatecast backtest
are written down; ``strategies.metrics`` computes what is defined here.

Execution (``ExecutionSettings``, identical for every strategy):

- Signals are taken at a bar's close; market orders fill at the **next bar's
  open** (Backtrader's default broker with ``cheat_on_close`` and
  ``cheat_on_open`` off). An order sent on the last bar never fills.
- **Slippage** moves the fill against the order by ``slippage`` of the price
  (``broker.set_slippage_perc(..., slip_open=True)`` so that next-open fills
  slip): a buy fills at ``min(open * (1 + slippage), high)``, a sell at
  ``max(open * (1 - slippage), low)`` (Backtrader caps slippage at the bar's
  range).
- **Commission** per fill: ``commission * |units| * fill price +
  commission_fixed``. A reversal is sent as two orders (close, then open),
  so it pays the fixed part twice.
- **Sizing** (``PercentOfEquitySizer``): an entry order gets ``percent`` of
  the equity (broker value at the signal bar's close) converted to units at
  that bar's **close**, ``floor``-ed unless ``fractional`` (a 1e-9 tolerance
  keeps float noise in an exact multiple from losing a unit). The fill is at
  the next open, so the position's value at the fill is not exactly the
  target. A long entry is also capped so that, at the signal close, its cost
  with slippage and commission fits in the cash left after closing any open
  position. A gap up at the open larger than the remaining headroom
  (``100 - percent`` percent) can still leave too little cash: Backtrader then
  rejects the order (status ``Margin``), it is logged in ``orders`` and
  counted in ``rejected_orders``, and the strategy simply stays flat.
- Short sales (``allow_short``: forecast strategies and the crossovers) credit the sale
  proceeds to cash (Backtrader's ``shortcash``); equity = cash + units x close.
- No strategy acts on a bar before ``trade_start`` (the out-of-sample start).
  Indicators may warm up on the earlier bars, which only uses past data.

Warm-up (``run_backtest(..., warmup=...)``, ``warmup_bars``):

- Backtrader is fed the bars from ``warmup`` bars before ``trade_start`` to
  the end (``warmup=None``: the whole history); the bars before that are
  checked like the rest but not fed, which is what keeps a backtest of the
  last few years of a long history cheap.
- The backtest stage feeds every strategy of an instrument the same bars:
  ``warmup_bars(strategies)``, the most that any of them needs, each
  strategy class saying what it needs in ``warmup_bars(params)``:
  forecast strategies and buy-and-hold 0 (a forecast is read, not computed);
  SMA crossover ``slow`` (the slow window plus the previous bar that
  ``CrossOver`` compares with); EMA crossover ``10 * slow``. Backtrader
  seeds an EMA of period ``p`` with the simple average of its first ``p``
  bars and then weighs the seed by ``(1 - 2 / (p + 1)) ** k`` after ``k``
  more bars; at ``trade_start`` ``k = 9 p + 1`` for the slow average (more
  for the fast one), so the seed weighs less than ``exp(-18)`` (1.5e-8).
- With that warm-up a backtest gives the same fills and equity as on the
  whole history: exactly for forecast strategies, buy-and-hold and the SMA
  crossover (whose averages are sums over the same windows; only a fast and
  slow average exactly equal on the first fed bar would lose the memory of
  the last cross); the EMA crossover's averages differ from the
  whole-history ones by less than ``1.5e-8`` times the gap between the two
  seeds, which moves a signal only if its fast and slow averages are that
  close on some bar.

Results (``BacktestResult``; the metrics come from ``strategies.metrics``):

- ``equity``: broker value at each bar's close from the ``trade_start`` bar
  to the last bar (the first value is the starting cash, no position can be
  open before the first fill); ``returns``: its simple per-bar returns, so the
  first return is that of the bar after ``trade_start``. Every strategy on an
  instrument is measured on the same dates.
- ``P`` is the number of bars per year, ``ExecutionSettings.periods_per_year``:
  252 for daily equity bars, measured from the timestamps for other intervals
  (``core.periods``). ``n`` below is the number of returns; ``rf_t`` the
  annual risk-free rate at bar ``t`` (a constant or a Series aligned to the
  dates, forward filled), turned into a rate per bar ``(1 + rf_t) ** (1 / P) - 1``;
  ``excess_t = return_t - rf per bar_t``.
- ``total_return = equity[-1] / equity[0] - 1``.
- ``cagr = (1 + total_return) ** (P / n) - 1`` (quantstats ``cagr``: years
  counted as bars / P, not calendar days).
- ``volatility = std(returns, ddof=1) * sqrt(P)`` (quantstats).
- ``sharpe = mean(excess) / std(excess, ddof=1) * sqrt(P)`` (``core.periods``,
  quantstats' convention, on the excess returns; Backtrader's SharpeRatio
  analyzer is not used: it defaults to yearly returns and a 1% rate).
- ``sortino = mean(excess) / sqrt(sum(min(excess, 0) ** 2) / n) * sqrt(P)``
  (quantstats ``sortino``: downside deviation against 0 over all ``n`` bars).
- ``max_drawdown = min(equity / running max(equity) - 1)`` (a fraction <= 0);
  ``max_drawdown_duration``: the longest run of consecutive bars whose
  equity is below its running maximum (still running at the end counts).
- ``calmar = cagr / |max_drawdown|`` (NaN without a drawdown).
- Trades are round trips from ``notify_trade``: ``trades`` counts the closed
  ones plus a position still open at the end, which is marked to the last
  close without exit costs (so buy-and-hold has one trade).
  ``win_rate``: fraction of trades with a positive ``pnl_net`` (profit after
  both commissions); ``profit_factor``: sum of positive ``pnl_net`` / |sum of
  negative ``pnl_net``| (inf with no losing trade, NaN with no trade).
- ``exposure``: fraction of the ``n`` return bars at whose close a position
  was open.
- ``turnover``: traded value (sum of |units| x fill price over all fills) /
  mean equity, annualised by ``P / n``.
- ``commissions``: sum of the commissions of all fills; ``orders``: filled
  orders; ``rejected_orders``: orders Backtrader refused for lack of cash.
- Ratios that are undefined are NaN: Sharpe and Sortino when the excess
  returns have no variance (a strategy that never trades), Sortino without a
  losing day, Calmar without a drawdown, win rate and profit factor without
  a trade.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from core import registry
from core.periods import PERIODS_PER_YEAR
from strategies.broker import (
    PercentCommission,
    PercentOfEquitySizer,
    Recorder,
)
from strategies.feeds import ForecastData, make_feed, validate_bars
from strategies.metrics import compute_metrics


@dataclass(frozen=True)
class ExecutionSettings:
    """How orders are sized, filled and charged; the same for every strategy.

    Args:
        cash: starting cash (> 0).
        commission: fraction of the traded value charged per fill.
        commission_fixed: cash charged per fill.
        slippage: fraction of the price the fill moves against the order.
        percent: percent of equity put into each new position (0 < p <= 100).
        fractional: trade fractional units (else whole units, floored).
        allow_short: let forecast strategies and the crossovers go short.
        periods_per_year: bars per year, for every annualised metric and the
            risk-free rate per bar (252 for daily equity bars; ``core.periods``).
    """

    cash: float = 100_000.0
    commission: float = 0.0
    commission_fixed: float = 0.0
    slippage: float = 0.0
    percent: float = 95.0
    fractional: bool = False
    allow_short: bool = False
    periods_per_year: float = float(PERIODS_PER_YEAR)

    def __post_init__(self):
        def finite(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"execution {name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"execution {name} must be finite, got {value!r}")
            return float(value)

        if finite("cash") <= 0:
            raise ValueError(
                f"execution cash must be positive (starting cash), got {self.cash!r}; "
                "e.g. backtest.cash: 100000"
            )
        for name, upper in (("commission", 0.1), ("slippage", 0.1)):
            value = finite(name)
            if not 0 <= value < upper:
                raise ValueError(
                    f"execution {name} is a fraction of the price in [0, {upper}), got {value!r}; "
                    "e.g. 0.001 for 10 bp"
                )
        if finite("commission_fixed") < 0:
            raise ValueError(
                f"execution commission_fixed must be >= 0, got {self.commission_fixed!r}"
            )
        if finite("periods_per_year") <= 0:
            raise ValueError(
                f"execution periods_per_year must be positive, got {self.periods_per_year!r}"
            )
        if not 0 < finite("percent") <= 100:
            raise ValueError(
                "execution percent of equity per position must be in (0, 100], "
                f"got {self.percent!r}"
            )


@dataclass
class BacktestResult:
    """What one backtest produced (conventions in this module's docstring).

    Args:
        metrics: flat dict of performance figures (``strategies.metrics``).
        equity: broker value at each close from ``trade_start``, indexed by date.
        returns: daily simple returns of ``equity`` (first: the bar after ``trade_start``).
        positions: units held at each close from ``trade_start``.
        trades: one row per round trip, columns ``TRADE_COLUMNS``.
        orders: one row per filled or refused order, columns ``ORDER_COLUMNS``.
        strategy: strategy class name; params: its parameters as run.
        cerebro: the Backtrader engine after the run (only with ``keep_cerebro``,
            for ``strategies.plotting``).
    """

    metrics: dict[str, float | int]
    equity: pd.Series
    returns: pd.Series
    positions: pd.Series
    trades: pd.DataFrame
    orders: pd.DataFrame
    strategy: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    cerebro: bt.Cerebro | None = None


def warmup_bars(
    strategies: Iterable[tuple[str | type[bt.Strategy], dict[str, Any] | None]],
) -> int | None:
    """Bars before ``trade_start`` to feed so that every one of ``strategies`` is fully warm.

    The most that any of them needs (each class's ``warmup_bars(params)``; see
    the module docstring); None (the whole history) if one of them does not say.

    Args:
        strategies: (strategy name or class, params) pairs.
    """
    need = 0
    for strategy, params in strategies:
        rule = getattr(resolve_strategy(strategy), "warmup_bars", None)
        if rule is None:
            return None
        need = max(need, int(rule(dict(params or {}))))
    return need


def resolve_strategy(strategy: str | type[bt.Strategy]) -> type[bt.Strategy]:
    """A strategy class from its registered name (entry point group ``gatecast.strategies``,
    or ``package.module:Class``), or the class itself."""
    if isinstance(strategy, str):
        try:
            strategy = registry.load(registry.STRATEGIES, strategy)
        except registry.RegistryError as err:
            raise ValueError(f"strategy: {err}") from None
    if isinstance(strategy, type) and issubclass(strategy, bt.Strategy):
        return strategy
    raise ValueError(f"strategy must be a name or a bt.Strategy subclass, got {strategy!r}")


def run_backtest(
    bars: pd.DataFrame,
    strategy: str | type[bt.Strategy],
    params: dict[str, Any] | None = None,
    execution: ExecutionSettings | None = None,
    trade_start: pd.Timestamp | str | None = None,
    risk_free: float | pd.Series = 0.0,
    runonce: bool = True,
    preload: bool = True,
    *,
    forecast: pd.Series | None = None,
    warmup: int | None = None,
    keep_cerebro: bool = False,
) -> BacktestResult:
    """Backtest one strategy on one instrument under ``execution``.

    Args:
        bars: daily bars (open, high, low, close, volume) indexed by date; a
            ``forecast`` column is used when ``forecast`` is None.
        strategy: a registered strategy name or a ``bt.Strategy`` subclass.
        params: strategy parameters (``trade_start`` and ``allow_short`` come
            from the arguments of this function, not from here).
        execution: the execution model; default ``ExecutionSettings()``.
        trade_start: first date a strategy may act on, and the start of the
            measured equity curve (None: the first bar).
        risk_free: annual risk-free rate (decimal), constant or a Series by date.
        runonce, preload: Backtrader engine modes (results do not depend on them).
        forecast: next-close forecasts on exactly the bars' dates (for a strategy that
            ``trades_forecast``).
        warmup: bars before ``trade_start`` fed to Backtrader (None: all of them);
            at least the strategy's own ``warmup_bars`` (see the module docstring).
        keep_cerebro: keep the engine, with the standard observers, in the
            result so that ``strategies.plotting`` can draw it.
    """
    execution = ExecutionSettings() if execution is None else execution
    if not isinstance(execution, ExecutionSettings):
        raise ValueError(f"execution must be an ExecutionSettings, got {type(execution).__name__}")
    cls = resolve_strategy(strategy)
    params = _checked_params(cls, params)
    validate_bars(bars)
    start, first = _trade_start_position(bars, trade_start)
    fed = _first_fed_bar(cls, params, first, warmup)
    feed = _make_checked_feed(cls, bars, forecast, fed)
    dates = bars.index[fed:]
    params = _engine_params(cls, params, start, execution.allow_short)

    cerebro = _make_cerebro(
        feed, cls, params, execution, dates, runonce=runonce, preload=preload, stdstats=keep_cerebro
    )
    (strat,) = cerebro.run()
    recorder = strat.analyzers.recorder
    equity, positions, returns = _measured_curves(recorder, dates, first - fed)
    trades = recorder.trade_log(dates, float(bars["close"].iloc[-1]))
    orders = recorder.order_log()

    metrics = compute_metrics(
        equity, positions, trades, orders, risk_free, execution.periods_per_year
    )
    run_params = {k: v for k, v in params.items() if k != "trade_start"}
    return BacktestResult(
        metrics=metrics,
        equity=equity,
        returns=returns,
        positions=positions,
        trades=trades,
        orders=orders,
        strategy=cls.__name__,
        params=run_params,
        cerebro=cerebro if keep_cerebro else None,
    )


def _checked_params(cls: type[bt.Strategy], params: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of the caller's ``params``, refusing engine-owned and unknown names."""
    params = dict(params or {})
    for reserved in ("trade_start", "allow_short"):
        if reserved in params:
            raise ValueError(
                f"pass {reserved} to run_backtest (trade_start=..., or execution.allow_short), "
                "not in params"
            )
    known = set(cls.params._getkeys())
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{cls.__name__} has no parameter(s) {unknown}; known: {sorted(known)}")
    return params


def _trade_start_position(
    bars: pd.DataFrame, trade_start: pd.Timestamp | str | None
) -> tuple[pd.Timestamp, int]:
    """``trade_start`` as a timestamp and the position of the first bar on or after it.

    At least 2 bars must be left from there, so that there is a return to measure.
    """
    start = bars.index[0] if trade_start is None else pd.Timestamp(trade_start)
    first = int(bars.index.searchsorted(start))
    if first >= len(bars) - 1:
        raise ValueError(
            f"trade_start {start.date()} leaves fewer than 2 bars to trade "
            f"(bars end {bars.index[-1].date()})"
        )
    return start, first


def _first_fed_bar(
    cls: type[bt.Strategy], params: dict[str, Any], first: int, warmup: int | None
) -> int:
    """Position of the first bar fed to Backtrader: ``warmup`` bars before ``first``.

    0 (the whole history) without ``warmup``; a ``warmup`` shorter than what
    the strategy says it needs (``cls.warmup_bars(params)``) is refused.
    """
    if warmup is None:
        return 0
    need = getattr(cls, "warmup_bars", lambda _: 0)(params)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < need:
        raise ValueError(
            f"warmup must be a whole number of bars >= {need} "
            f"(what {cls.__name__} needs with {params}), got {warmup!r}"
        )
    return max(first - warmup, 0)


def _make_checked_feed(
    cls: type[bt.Strategy], bars: pd.DataFrame, forecast: pd.Series | None, fed: int
) -> ForecastData:
    """The data feed from bar ``fed`` on; a strategy that trades a forecast
    (``trades_forecast``) without any forecast is refused."""
    feed = make_feed(bars, forecast, first=fed)
    trades_forecast = getattr(cls, "trades_forecast", False)
    if trades_forecast and np.isnan(feed.p.dataname["forecast"].to_numpy()).all():
        raise ValueError(
            f"{cls.__name__} needs a forecast: pass forecast=<Series on the bars' dates> "
            "or a 'forecast' column in bars (it is missing or all NaN)"
        )
    return feed


def _engine_params(
    cls: type[bt.Strategy], params: dict[str, Any], start: pd.Timestamp, allow_short: bool
) -> dict[str, Any]:
    """The strategy's parameters as run: the caller's plus the engine-owned ones.

    ``trade_start`` always; ``allow_short`` from the execution settings, for
    the strategies that have that parameter.
    """
    params = {**params, "trade_start": start}
    if "allow_short" in cls.params._getkeys():
        params["allow_short"] = allow_short
    return params


def new_cerebro(
    execution: ExecutionSettings, *, runonce: bool, preload: bool, stdstats: bool
) -> bt.Cerebro:
    """A Backtrader engine with the broker of the module docstring and no data yet.

    Next-open fills (no cheat on close or open), slippage on opens and the
    percent-plus-fixed commission; the single-instrument engine and the
    portfolio engine (``strategies.portfolio``) both start from it.
    """
    cerebro = bt.Cerebro(
        runonce=runonce,
        preload=preload,
        stdstats=stdstats,
        tradehistory=True,
        cheat_on_open=False,
        maxcpus=1,
    )
    cerebro.broker.setcash(execution.cash)
    cerebro.broker.set_coc(False)
    cerebro.broker.set_coo(False)
    cerebro.broker.set_slippage_perc(
        execution.slippage, slip_open=True, slip_limit=True, slip_match=True, slip_out=False
    )
    cerebro.broker.addcommissioninfo(
        PercentCommission(commission=execution.commission, fixed=execution.commission_fixed)
    )
    return cerebro


def _make_cerebro(
    feed: ForecastData,
    cls: type[bt.Strategy],
    params: dict[str, Any],
    execution: ExecutionSettings,
    dates: pd.DatetimeIndex,
    *,
    runonce: bool,
    preload: bool,
    stdstats: bool,
) -> bt.Cerebro:
    """A Backtrader engine set up with the execution model of the module docstring.

    Next-open fills (no cheat on close or open), slippage on opens, the
    percent-plus-fixed commission, the percent-of-equity sizer and the
    ``Recorder`` analyzer (named ``recorder``) over ``dates``.
    """
    cerebro = new_cerebro(execution, runonce=runonce, preload=preload, stdstats=stdstats)
    cerebro.adddata(feed)
    cerebro.addsizer(
        PercentOfEquitySizer,
        percent=execution.percent,
        fractional=execution.fractional,
        commission=execution.commission,
        fixed=execution.commission_fixed,
        slippage=execution.slippage,
    )
    cerebro.addstrategy(cls, **params)
    cerebro.addanalyzer(Recorder, _name="recorder", dates=dates)
    return cerebro


def _measured_curves(
    recorder: Recorder, dates: pd.DatetimeIndex, first: int
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Equity, positions and returns from the ``first`` fed bar (``trade_start``) on."""
    if len(recorder.values) != len(dates):
        raise RuntimeError(
            f"engine recorded {len(recorder.values)} bars for {len(dates)} input bars"
        )
    equity_all = pd.Series(recorder.values, index=dates, name="equity", dtype=float)
    units_all = pd.Series(recorder.units, index=dates, name="position", dtype=float)
    equity = equity_all.iloc[first:]
    positions = units_all.iloc[first:]
    returns = equity.pct_change().iloc[1:].rename("returns")
    return equity, positions, returns


def execution_dict(execution: ExecutionSettings) -> dict[str, Any]:
    """The execution settings as a plain dict (for JSON and tracking)."""
    return asdict(execution)
