"""The portfolio engine: one Backtrader run over a universe, one data feed per instrument.

Same execution model as ``strategies.engine`` (its docstring holds the
conventions): signals at a bar's close, market orders filled at the next
bar's open with ``slippage`` against the order (capped at the bar's range),
``PercentCommission`` per fill, no cheat on open or close. Sizes come from the
portfolio strategies themselves (``strategies.topk``: ``percent`` of equity
split over the names of a book), so the engine's one-position sizer is not used.

Results (``PortfolioResult``, a ``BacktestResult``):

- ``equity``, ``returns`` and the metrics as for one instrument (broker value
  of the whole account, from ``trade_start``); ``exposure`` counts the bars
  with any position open.
- ``positions``: the number of instruments held (long or short) at each close;
  ``holdings``: units of each instrument at each close (one column each).
- ``trades`` and ``orders``: the columns of ``strategies.broker`` plus
  ``instrument``; a trade still open at the end is marked to its
  instrument's last close without exit costs.

All instruments must have the same bar dates (the pipeline aligns them on
their common dates first): Backtrader would otherwise advance feeds with
missing bars by repeating their last bar.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import backtrader as bt
import pandas as pd

from strategies.broker import Recorder
from strategies.engine import BacktestResult, ExecutionSettings, new_cerebro
from strategies.feeds import make_feed
from strategies.metrics import compute_metrics
from strategies.topk import EqualWeightBuyAndHold, TopK

PORTFOLIO_STRATEGIES: dict[str, type[bt.Strategy]] = {
    "top_k": TopK,
    "equal_weight": EqualWeightBuyAndHold,
}


@dataclass
class PortfolioResult(BacktestResult):
    """A ``BacktestResult`` of a universe, plus each instrument's units at each close.

    Args:
        holdings: units held of each instrument (columns) at each close from ``trade_start``.
    """

    holdings: pd.DataFrame = field(default_factory=pd.DataFrame)


class PortfolioRecorder(Recorder):
    """``strategies.broker.Recorder`` over every feed: the units of each feed at each bar,
    and each order and trade with its instrument (``trade_log`` takes each instrument's
    last close).

    Args:
        dates: the bars' index (shared by every feed).
    """

    by_feed = True

    def _units(self):
        return [self.strategy.getposition(d).size for d in self.strategy.datas]


def _checked_universe(
    bars: Mapping[str, pd.DataFrame], forecasts: Mapping[str, pd.Series] | None, needs: bool
) -> pd.DatetimeIndex:
    """The universe's shared dates; an instrument on other dates or without a forecast is named."""
    if not bars:
        raise ValueError("a portfolio needs at least one instrument, got none")
    names = list(bars)
    dates = bars[names[0]].index
    for name in names[1:]:
        if not bars[name].index.equals(dates):
            raise ValueError(
                f"bars of {name} are not on the dates of {names[0]}: align the universe on "
                "its common dates first"
            )
    if needs:
        missing = [n for n in names if forecasts is None or n not in forecasts]
        if missing:
            raise ValueError(f"top_k needs a forecast for every instrument; none for {missing}")
    return dates


def run_portfolio(
    bars: Mapping[str, pd.DataFrame],
    strategy: str,
    params: dict[str, Any] | None = None,
    execution: ExecutionSettings | None = None,
    trade_start: pd.Timestamp | str | None = None,
    risk_free: float | pd.Series = 0.0,
    runonce: bool = True,
    preload: bool = True,
    *,
    forecasts: Mapping[str, pd.Series] | None = None,
) -> PortfolioResult:
    """Backtest a portfolio strategy (``top_k`` or ``equal_weight``) over a universe.

    Args:
        bars: instrument -> its bars (open, high, low, close, volume), all on the same dates.
        strategy: ``top_k`` (``strategies.topk.TopK``) or ``equal_weight``.
        params: the strategy's own parameters (``k``, ``short`` for top_k);
            ``percent`` and ``fractional`` come from ``execution``.
        execution: the execution model; default ``ExecutionSettings()``.
        trade_start: first date a strategy may act on, and the start of the
            measured equity curve (None: the first bar).
        risk_free: annual risk-free rate (decimal), constant or a Series by date.
        runonce, preload: Backtrader engine modes (results do not depend on them).
        forecasts: instrument -> next-close forecasts on its bars' dates (top_k).
    """
    execution = ExecutionSettings() if execution is None else execution
    if strategy not in PORTFOLIO_STRATEGIES:
        raise ValueError(
            f"unknown portfolio strategy {strategy!r}; choose {list(PORTFOLIO_STRATEGIES)}"
        )
    cls = PORTFOLIO_STRATEGIES[strategy]
    dates = _checked_universe(bars, forecasts, needs=cls is TopK)
    start = dates[0] if trade_start is None else pd.Timestamp(trade_start)
    first = int(dates.searchsorted(start))
    if first >= len(dates) - 1:
        raise ValueError(f"trade_start {start.date()} leaves fewer than 2 bars to trade")

    cerebro = new_cerebro(execution, runonce=runonce, preload=preload, stdstats=False)
    for name, frame in bars.items():
        forecast = None if forecasts is None else forecasts.get(name)
        cerebro.adddata(make_feed(frame, forecast, name=name))
    run_params = {**(params or {}), "percent": execution.percent}
    run_params["fractional"] = execution.fractional
    cerebro.addstrategy(cls, trade_start=start, **run_params)
    cerebro.addanalyzer(PortfolioRecorder, _name="recorder", dates=dates)
    (strat,) = cerebro.run()
    recorder = strat.analyzers.recorder

    equity = pd.Series(recorder.values, index=dates, name="equity", dtype=float).iloc[first:]
    holdings = pd.DataFrame(recorder.units, index=dates, columns=list(bars), dtype=float)
    holdings = holdings.iloc[first:]
    positions = (holdings != 0).sum(axis=1).astype(float).rename("position")
    returns = equity.pct_change().iloc[1:].rename("returns")
    last_close = {name: float(frame["close"].iloc[-1]) for name, frame in bars.items()}
    trades = recorder.trade_log(dates, last_close)
    orders = recorder.order_log()
    metrics = compute_metrics(
        equity, positions, trades, orders, risk_free, execution.periods_per_year
    )
    return PortfolioResult(
        metrics=metrics,
        equity=equity,
        returns=returns,
        positions=positions,
        trades=trades,
        orders=orders,
        strategy=cls.__name__,
        params=run_params,
        holdings=holdings,
    )
