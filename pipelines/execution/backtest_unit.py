"""One unit of the backtest stage: one strategy on one instrument, with its cost sweep.

A unit is a plain function of its inputs (``backtest_strategy``, or
``run_unit`` on a picklable ``BacktestUnit``) that returns its results
(``StrategyBacktest``); it reads no file, writes none, keeps no global state
and never talks to MLflow, so the stage can run units in this process or in
worker processes and get the same numbers.

The cost sweep: the strategy is backtested again at each commission of
``cost_sweep_bp`` (basis points of traded value) with everything else as
configured; the point equal to the configured commission reuses the main
backtest instead of running it twice. Only the Sharpe ratio and the daily
returns of each point are kept (the report draws Sharpe against cost, finds
the break-even cost against buy-and-hold and pools the returns).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from strategies.engine import BacktestResult, ExecutionSettings, run_backtest


@dataclass
class StrategyBacktest:
    """What one unit returns.

    Args:
        backtest: the backtest at the configured execution (metrics, equity,
            returns, positions, trades, orders; no engine kept).
        sweep_sharpe: commission in bp -> annualised Sharpe ratio at that cost.
        sweep_returns: daily returns at each swept commission, one column per
            bp (float column labels, in sweep order), on ``backtest.returns``'s dates.
        chart_png: Backtrader's chart of the backtest as PNG bytes, when asked for.
    """

    backtest: BacktestResult
    sweep_sharpe: dict[float, float] = field(default_factory=dict)
    sweep_returns: pd.DataFrame = field(default_factory=pd.DataFrame)
    chart_png: bytes | None = None


def _chart_bytes(result: BacktestResult) -> bytes:
    from strategies.plotting import save_chart

    with tempfile.TemporaryDirectory(prefix="gatecast-chart-") as tmp:
        return save_chart(result, Path(tmp) / "chart.png").read_bytes()


def backtest_strategy(
    bars: pd.DataFrame,
    strategy: str,
    params: dict[str, Any],
    execution: ExecutionSettings,
    *,
    trade_start: pd.Timestamp,
    warmup: int | None,
    risk_free: float | pd.Series,
    forecast: pd.Series | None = None,
    cost_sweep_bp: Sequence[float] = (),
    chart: bool = False,
) -> StrategyBacktest:
    """Backtest ``strategy`` on ``bars`` once, then at each commission of ``cost_sweep_bp``.

    Args:
        bars: the instrument's bars (open, high, low, close, volume) by date,
            up to the end of its out-of-sample period.
        strategy: an engine strategy name (``strategies.engine.STRATEGIES``).
        params: the strategy's parameters.
        execution: the execution model; the sweep changes only its commission.
        trade_start: the out-of-sample start (first date a strategy may act on).
        warmup: bars fed before ``trade_start`` (``strategies.engine.warmup_bars``).
        risk_free: annual risk-free rate, constant or a Series on the bars' dates.
        forecast: the forecast column, for ``strategy == "forecast"``.
        cost_sweep_bp: commissions to sweep, in bp; empty for none.
        chart: also draw Backtrader's chart (``chart_png``).

    Raises:
        ValueError: from the engine, for inputs it cannot run (the stage names the file).
    """

    def run(settings: ExecutionSettings, keep_cerebro: bool = False) -> BacktestResult:
        return run_backtest(
            bars,
            strategy,
            params,
            settings,
            trade_start=trade_start,
            risk_free=risk_free,
            forecast=forecast,
            warmup=warmup,
            keep_cerebro=keep_cerebro,
        )

    main = run(execution, keep_cerebro=chart)
    png = _chart_bytes(main) if chart else None
    main.cerebro = None  # the engine holds every line; the PNG is all that is kept of it
    sharpe: dict[float, float] = {}
    returns: dict[float, pd.Series] = {}
    for bp in cost_sweep_bp:
        bp = float(bp)
        if math.isclose(bp / 1e4, execution.commission):
            point = main
        else:
            point = run(dataclasses.replace(execution, commission=bp / 1e4))
        sharpe[bp] = float(point.metrics["sharpe"])
        returns[bp] = point.returns
    sweep = pd.DataFrame(returns, index=main.returns.index) if returns else pd.DataFrame()
    return StrategyBacktest(main, sharpe, sweep, png)


@dataclass(frozen=True)
class BacktestUnit:
    """The inputs of one ``backtest_strategy`` call, as one picklable value for an executor.

    Args:
        instrument: the instrument (for the stage's file names and messages).
        name: the strategy's name in the stage's outputs (e.g. ``lstm``, ``sma_crossover``).
        strategy, params, ...: the arguments of ``backtest_strategy``.
    """

    instrument: str
    name: str
    bars: pd.DataFrame
    strategy: str
    params: dict[str, Any]
    execution: ExecutionSettings
    trade_start: pd.Timestamp
    warmup: int | None
    risk_free: float | pd.Series
    forecast: pd.Series | None = None
    cost_sweep_bp: tuple[float, ...] = ()
    chart: bool = False

    def __str__(self) -> str:
        return f"{self.instrument}/{self.name}"

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``backtest_strategy``."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del fields["instrument"], fields["name"]
        return fields


def run_unit(unit: BacktestUnit) -> StrategyBacktest:
    """``backtest_strategy`` on a unit's inputs (top level, so a process pool can pickle it)."""
    return backtest_strategy(**unit.arguments())


def unit_inputs(unit: BacktestUnit) -> dict[str, Any]:
    """What ``run_unit``'s result depends on, for ``pipelines.execution.unit_cache``'s key:
    every field."""
    return {f.name: getattr(unit, f.name) for f in dataclasses.fields(unit)}
