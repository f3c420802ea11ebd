"""Per strategy and instrument: the tear-sheet statistics and tables of the report.

The statistics come from quantstats (``quantstats.stats``: ``monthly_returns``
with the year's compounded return, ``to_drawdown_series`` and
``drawdown_details``, ``rolling_sharpe``), computed on the backtest's per-bar
returns in excess of its risk-free rate, annualised with the run's bars per
year. The trade list is the backtest stage's trade log
(``<run>/backtests/<INST>/<strategy>_trades.parquet``, the file its
``summary.json`` names), read here because ``report_inputs.StrategyRun`` keeps
only the trades' net profits. Everything is built from data up to each date:
a rolling Sharpe ratio at ``t`` uses the ``window`` bars ending at ``t``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.common.outputs import read_stage_parquet, read_stage_summary
from pipelines.config import Config
from pipelines.report.comparison import excess_returns
from pipelines.report.inputs import StrategyRun

ROLLING_BARS = 126  # about half a year of daily bars, quantstats' default
DRAWDOWN_ROWS = 5
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
TRADE_HEADERS = (
    "entry",
    "exit",
    "side",
    "units",
    "entry price",
    "exit price",
    "net P&L",
    "return",
    "bars held",
)


@dataclass
class StrategyStats:
    """What the report shows of one strategy on one instrument.

    Args:
        monthly: year x month compounded returns plus ``EOY`` (the year's return).
        drawdowns: the deepest drawdown periods (start, valley, end, days, depth %).
        rolling_sharpe: annualised Sharpe ratio over the last ``ROLLING_BARS`` bars.
        returns: per-bar returns (for the distribution).
        rolling_volatility, rolling_sortino: annualised, over the same window (quantstats).
        rolling_beta: beta to the benchmark's returns over the same window (quantstats'
            ``rolling_greeks``); empty for the benchmark itself or without one.
    """

    monthly: pd.DataFrame
    drawdowns: pd.DataFrame
    rolling_sharpe: pd.Series
    returns: pd.Series
    rolling_volatility: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    rolling_sortino: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    rolling_beta: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))


def load_trade_logs(cfg: Config, names: Sequence[str]) -> dict[str, dict[str, pd.DataFrame]]:
    """The backtest stage's trade log of every strategy: ``{instrument: {strategy: frame}}``.

    A strategy whose entry names no trade log gets an empty frame.
    """
    directory = cfg.stage_directory("backtest")
    summary = read_stage_summary(directory / "summary.json", "backtest")
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for name in names:
        entry = summary.get("instruments", {}).get(name) or {}
        out[name] = {}
        for strategy, item in (entry.get("strategies") or {}).items():
            file = (item.get("files") or {}).get("trades")
            if file and (directory / file).is_file():
                out[name][strategy] = read_stage_parquet(directory / file, "backtest")
            else:
                out[name][strategy] = pd.DataFrame()
    return out


def strategy_stats(
    run: StrategyRun, periods_per_year: float, benchmark: pd.Series | None = None
) -> StrategyStats:
    """quantstats' monthly returns, drawdown periods and rolling Sharpe ratio, volatility,
    Sortino ratio and (against ``benchmark``'s returns) beta of one run."""
    import quantstats as qs  # 2-4 s to import: only the report stage pays it

    returns = run.returns.astype(float)
    excess = excess_returns(returns, run.risk_free, periods_per_year)
    monthly = _blank_outside(qs.stats.monthly_returns(returns, eoy=True, compounded=True), returns)
    underwater = qs.stats.to_drawdown_series(returns)
    details = qs.stats.drawdown_details(underwater)
    if isinstance(details, pd.DataFrame) and not details.empty:
        # quantstats ends a drawdown still open on the last bar with that bar's date
        details = details.assign(recovered=True)
        if len(underwater) and underwater.iloc[-1] < 0:
            last = details["start"].astype(str).max()
            details.loc[details["start"].astype(str) == last, "recovered"] = False
        drawdowns = details.sort_values("max drawdown").head(DRAWDOWN_ROWS)
    else:
        drawdowns = pd.DataFrame()
    per_year = round(periods_per_year)
    rolling = qs.stats.rolling_sharpe(
        excess, rolling_period=ROLLING_BARS, periods_per_year=per_year
    )
    volatility = qs.stats.rolling_volatility(
        returns, rolling_period=ROLLING_BARS, periods_per_year=per_year
    )
    sortino = qs.stats.rolling_sortino(
        excess, rolling_period=ROLLING_BARS, periods_per_year=per_year
    )
    beta = pd.Series(dtype=float)
    if benchmark is not None and not returns.equals(benchmark.astype(float)):
        both = pd.concat([returns, benchmark.astype(float)], axis=1, join="inner").dropna()
        if len(both) > ROLLING_BARS:
            greeks = qs.stats.rolling_greeks(both.iloc[:, 0], both.iloc[:, 1], ROLLING_BARS)
            beta = greeks["beta"]

    def finite(series: pd.Series) -> pd.Series:
        return series.astype(float).replace([np.inf, -np.inf], np.nan)

    return StrategyStats(
        monthly,
        drawdowns,
        finite(rolling),
        returns,
        finite(volatility),
        finite(sortino),
        finite(beta),
    )


def _blank_outside(monthly: pd.DataFrame, returns: pd.Series) -> pd.DataFrame:
    """``monthly`` with NaN (a blank cell) for the months outside the returns' dates, which
    quantstats fills with 0 as if the strategy had been flat then."""
    if monthly.empty or returns.empty:
        return monthly
    first, last = returns.index[0].to_period("M"), returns.index[-1].to_period("M")
    out = monthly.astype(float).copy()
    for year in out.index:
        for k, month in enumerate(MONTHS, start=1):
            column = month.upper()
            if (
                column in out.columns
                and not first <= pd.Period(year=int(year), month=k, freq="M") <= last
            ):
                out.loc[year, column] = np.nan
    return out


def _pct(value: float, digits: int = 1) -> str:
    if not math.isfinite(value):
        return "–"
    text = f"{100 * value:.{digits}f}%"
    return text.replace("-0.0%", "0.0%") if text.startswith("-0.0") and digits == 1 else text


def _heat(value: float, scale: float) -> str:
    """A background for a return: green for gains, red for losses, paler when small."""
    if not math.isfinite(value) or scale <= 0:
        return ""
    strength = min(abs(value) / scale, 1.0)
    hue = "0, 158, 115" if value > 0 else "213, 94, 0"  # Okabe-Ito bluish green / vermillion
    return f"background: rgba({hue}, {0.08 + 0.6 * strength:.2f})"


def monthly_rows(
    monthly: pd.DataFrame, benchmark: pd.DataFrame | None = None
) -> list[dict[str, Any]]:
    """The monthly-returns heatmap as table rows: year, twelve months, the year, and with
    ``benchmark`` (its ``monthly``) the benchmark's return that year beside it."""
    values = monthly.drop(columns="EOY", errors="ignore").to_numpy(float)
    finite = np.abs(values[np.isfinite(values) & (values != 0)])
    scale = float(np.quantile(finite, 0.9)) if finite.size else 0.0
    rows = []
    for year, row in monthly.iterrows():
        cells = []
        for month in MONTHS:
            value = float(row.get(month.upper(), math.nan))
            cells.append({"text": _pct(value), "raw": repr(value), "style": _heat(value, scale)})
        eoy = float(row.get("EOY", math.nan))
        cells.append({"text": _pct(eoy), "raw": repr(eoy), "style": _heat(eoy, 4 * scale)})
        if benchmark is not None:
            same = benchmark.index.astype(str) == str(year)
            other = float(benchmark.loc[same, "EOY"].iloc[0]) if same.any() else math.nan
            cells.append(
                {"text": _pct(other), "raw": repr(other), "style": _heat(other, 4 * scale)}
            )
        rows.append({"year": str(year), "cells": cells})
    return rows


def drawdown_rows(drawdowns: pd.DataFrame) -> list[list[str]]:
    """The deepest drawdowns: start, valley, end ("not recovered" for one still open at the
    last bar), days, depth."""
    rows = []
    for record in drawdowns.to_dict(orient="records"):
        end = record.get("end")
        recovered = record.get("recovered", True) and end is not None and str(end) != "nan"
        rows.append(
            [
                str(record.get("start", "")),
                str(record.get("valley", "")),
                str(end) if recovered else "not recovered",
                f"{int(record.get('days', 0)):d}",
                f"{float(record.get('max drawdown', math.nan)):.1f}%",
            ]
        )
    return rows


def trade_rows(trades: pd.DataFrame) -> list[list[dict[str, str]]]:
    """The trade list, one row per round trip (an open position last, exit "open")."""
    rows = []
    for t in trades.itertuples(index=False):
        open_ = pd.isna(t.exit_date)
        cost = abs(float(t.size) * float(t.entry_price))
        ret = float(t.pnl_net) / cost if cost else math.nan
        cells = [
            (str(pd.Timestamp(t.entry_date).date()), ""),
            ("open" if open_ else str(pd.Timestamp(t.exit_date).date()), ""),
            ("long" if t.size > 0 else "short", ""),
            (f"{abs(float(t.size)):,.0f}", repr(abs(float(t.size)))),
            (f"{float(t.entry_price):,.2f}", repr(float(t.entry_price))),
            (f"{float(t.exit_price):,.2f}", repr(float(t.exit_price))),
            (f"{float(t.pnl_net):,.0f}", repr(float(t.pnl_net))),
            (_pct(ret, 2), repr(ret)),
            (f"{int(t.bars):d}", repr(int(t.bars))),
        ]
        rows.append([{"text": text, "raw": raw} for text, raw in cells])
    return rows


def metric_rows(run: StrategyRun, trades: pd.DataFrame) -> list[list[str]]:
    """The strategy's key figures, as (name, value, what it is) rows: the backtest's own
    (trades, exposure, win rate, profit factor, Calmar; ``strategies.engine``'s
    conventions), quantstats' (VaR and CVaR at 95%, skew, kurtosis of the per-bar
    returns), and from the trade log: expectancy (mean net P&L per closed trade) and the
    average and longest holding time in bars."""
    import quantstats as qs

    m, returns = run.metrics, run.returns.astype(float)
    count = int(m.get("trades", 0) or 0)
    closed = trades[trades["exit_date"].notna()] if not trades.empty else trades
    held = trades["bars"].astype(float) if not trades.empty else pd.Series(dtype=float)
    spread = len(returns) > 2 and returns.std() > 0

    def stat(fn: Any) -> float:
        return float(fn(returns)) if spread else math.nan

    expectancy = float(closed["pnl_net"].mean()) if len(closed) else math.nan
    return [
        ["trades", f"{count:,d} trade{'' if count == 1 else 's'}", "round trips"],
        ["exposure", _pct(m.get("exposure", math.nan)), "share of bars holding a position"],
        ["win rate", _pct(m.get("win_rate", math.nan)), "trades with a net profit"],
        ["profit factor", _num(m.get("profit_factor", math.nan)), "gains / losses, net"],
        ["expectancy", _money(expectancy), "mean net P&L per closed trade"],
        ["average holding", _bars(held.mean()), "bars a trade is held"],
        ["longest holding", _bars(held.max()), ""],
        ["Calmar", _num(m.get("calmar", math.nan)), "CAGR / |max drawdown|"],
        ["VaR 95%", _pct(stat(qs.stats.value_at_risk), 2), "a bar's loss exceeded 5% of the time"],
        ["CVaR 95%", _pct(stat(qs.stats.cvar), 2), "mean loss beyond the VaR"],
        ["skew", _num(stat(qs.stats.skew)), "of the per-bar returns"],
        ["kurtosis", _num(stat(qs.stats.kurtosis)), "excess, of the per-bar returns"],
    ]


def _num(value: float) -> str:
    if not math.isfinite(value):
        return "∞" if value == math.inf else "–"
    text = f"{value:.2f}"
    return text[1:] if text == "-0.00" else text


def _money(value: float) -> str:
    return f"{value:+,.0f}" if math.isfinite(value) else "–"


def _bars(value: float) -> str:
    return f"{value:,.1f}" if math.isfinite(value) else "–"
