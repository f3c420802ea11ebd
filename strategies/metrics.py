"""The flat metrics dict of a backtest.

Every definition and convention (periods per year, risk-free handling, what
counts as a trade, exposure, turnover) is written once, in the docstring of
``strategies.engine``. The Sharpe ratio and the periods per year are
``core.periods``'s (the report uses the same ones); CAGR, volatility and
Sortino come from ``quantstats.stats``, called on returns prepared here:
quantstats turns a non-zero annual ``rf`` into a daily rate only when it is
positive, so the excess returns are formed here and passed with ``rf=0``.
``win_rate`` and ``profit_factor`` are also what the report's pooled rows use.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.periods import PERIODS_PER_YEAR, sharpe_ratio

METRIC_KEYS = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_duration",
    "trades",
    "win_rate",
    "profit_factor",
    "exposure",
    "turnover",
    "commissions",
    "orders",
    "rejected_orders",
)


def risk_free_per_bar(
    risk_free: float | pd.Series,
    index: pd.DatetimeIndex,
    periods_per_year: float = PERIODS_PER_YEAR,
) -> pd.Series:
    """The risk-free rate per bar on ``index`` from an annual rate (constant or by date).

    ``(1 + annual) ** (1 / periods_per_year) - 1``: compounded over a year of
    bars it gives the annual rate.

    Args:
        risk_free: annual rate as a decimal, or a Series of annual rates by
            date (forward filled onto ``index``; dates before its first value
            take that first value).
        index: the dates of the bars' returns.
        periods_per_year: bars per year (``core.periods``).
    """
    if isinstance(risk_free, pd.Series):
        if risk_free.dropna().empty:
            raise ValueError("risk_free Series has no values")
        annual = risk_free.astype(float).sort_index()
        annual = annual.reindex(annual.index.union(index)).ffill().bfill().reindex(index)
    else:
        rate = float(risk_free)
        if not math.isfinite(rate) or rate <= -1:
            raise ValueError(f"risk_free must be an annual rate > -1 (decimal), got {risk_free!r}")
        annual = pd.Series(rate, index=index)
    return (1.0 + annual) ** (1.0 / periods_per_year) - 1.0


def drawdown_stats(equity: pd.Series) -> tuple[float, int]:
    """Maximum drawdown (fraction <= 0) and the longest run of bars below the running peak."""
    values = equity.to_numpy(dtype=float)
    peak = np.maximum.accumulate(values)
    drawdown = values / peak - 1.0
    longest = run = 0
    for under in drawdown < 0:
        run = run + 1 if under else 0
        longest = max(longest, run)
    return float(drawdown.min()), longest


def _ratio(value: float) -> float:
    return float(value) if np.isfinite(value) else float("nan")


def win_rate(pnl: np.ndarray) -> float:
    """Share of trades with a positive net profit; NaN without a trade.

    Args:
        pnl: the net profit (``pnl_net``) of every trade.
    """
    pnl = np.asarray(pnl, dtype=float)
    return float((pnl > 0).mean()) if pnl.size else float("nan")


def profit_factor(pnl: np.ndarray) -> float:
    """Sum of the winning trades' net profit over the losers' |sum|.

    Infinite with winners and no loser, NaN without a trade or with neither.

    Args:
        pnl: the net profit (``pnl_net``) of every trade.
    """
    pnl = np.asarray(pnl, dtype=float)
    wins = pnl[pnl > 0].sum()
    losses = -pnl[pnl < 0].sum()
    if pnl.size == 0:
        return float("nan")
    if losses == 0:
        return float("inf") if wins > 0 else float("nan")
    return float(wins / losses)


def compute_metrics(
    equity: pd.Series,
    positions: pd.Series,
    trades: pd.DataFrame,
    orders: pd.DataFrame,
    risk_free: float | pd.Series = 0.0,
    periods_per_year: float = PERIODS_PER_YEAR,
) -> dict[str, float | int]:
    """The metrics dict (keys ``METRIC_KEYS``) of one backtest.

    Args:
        equity: broker value at each close from the trade start (first value:
            the starting equity), indexed by date; at least two values.
        positions: units held at each close, same index as ``equity``.
        trades: round trips with a ``pnl_net`` column (one row per trade).
        orders: the order log with ``status``, ``value`` and ``commission``.
        risk_free: annual risk-free rate (constant or Series by date).
        periods_per_year: bars per year, for every annualised figure
            (``core.periods``: 252 for daily equity bars).
    """
    if len(equity) < 2:
        raise ValueError(f"need at least 2 equity values for metrics, got {len(equity)}")
    if (equity <= 0).any():
        first = equity.index[(equity <= 0).to_numpy()][0]
        raise ValueError(f"equity is not positive on {first}; the strategy lost everything")
    returns = equity.pct_change().iloc[1:]
    n = len(returns)
    periods = periods_per_year
    excess = returns - risk_free_per_bar(risk_free, returns.index, periods)

    # imported here, not with the module: quantstats brings matplotlib, seaborn and yfinance,
    # which a process that only reads a config (whose strategies import this module), such
    # as a train worker, does not need
    import quantstats.stats as qs

    total_return = float(equity.iloc[-1] / equity.iloc[0] - 1.0)
    cagr = float(qs.cagr(returns, periods=periods))
    volatility = float(qs.volatility(returns, periods=periods, prepare_returns=False))
    # A flat strategy's excess returns are constant up to float noise: neither ratio is defined
    # (its Sortino would be -sqrt(252) for any positive rate, an artifact of the formula).
    sharpe = sharpe_ratio(excess.to_numpy(), periods)
    if math.isnan(sharpe):
        sortino = float("nan")
    else:
        sortino = _ratio(qs.sortino(excess, rf=0.0, periods=periods))
    max_drawdown, duration = drawdown_stats(equity)
    calmar = cagr / abs(max_drawdown) if max_drawdown < 0 else float("nan")

    pnl = trades["pnl_net"].to_numpy(dtype=float) if len(trades) else np.array([])

    filled = orders[orders["status"] == "filled"] if len(orders) else orders
    traded_value = float(filled["value"].sum()) if len(filled) else 0.0
    turnover = traded_value / float(equity.mean()) * periods / n
    exposure = float((positions.iloc[1:].to_numpy() != 0).mean())

    return {
        "total_return": total_return,
        "cagr": cagr,
        "volatility": volatility,
        "sharpe": sharpe,
        "sortino": sortino,
        "calmar": float(calmar),
        "max_drawdown": max_drawdown,
        "max_drawdown_duration": duration,
        "trades": len(trades),
        "win_rate": win_rate(pnl),
        "profit_factor": profit_factor(pnl),
        "exposure": exposure,
        "turnover": float(turnover),
        "commissions": float(filled["commission"].sum()) if len(filled) else 0.0,
        "orders": len(filled),
        "rejected_orders": len(orders) - len(filled),
    }
