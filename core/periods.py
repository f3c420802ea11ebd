"""Bars per year, the Sharpe ratio, and the one function that annualises it.

Every Sharpe ratio in gatecast (a backtest's metrics, the report's PSR, DSR,
bootstrap intervals and cost sweep) is computed by ``per_period_sharpe`` and
annualised by ``annualise_sharpe``, so the backtest and the report cannot
disagree on the convention: ``mean / std (ddof=1)`` of daily (excess) returns,
times ``sqrt(252)``, as quantstats does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Daily equity bars: the trading days of a year, the convention of quantstats.
PERIODS_PER_YEAR = 252

# A standard deviation this small next to the returns is float noise of a constant series.
_FLAT = 1e-15


def annualise_sharpe(
    per_period: float | np.ndarray, periods_per_year: float = PERIODS_PER_YEAR
) -> float | np.ndarray:
    """An annualised Sharpe ratio from a per-bar one: ``per_period * sqrt(periods_per_year)``."""
    return per_period * math.sqrt(periods_per_year)


def per_period_sharpe(returns: np.ndarray, axis: int = -1) -> float | np.ndarray:
    """``mean / std`` (``ddof=1``) of ``returns`` along ``axis``; NaN where it is undefined.

    Undefined means fewer than two values, or a standard deviation that is float
    noise (at most ``1e-15`` of the largest absolute return, or of 1): a
    strategy that never trades has constant excess returns and no Sharpe ratio.
    Works on one series or on many at once (the rows of a bootstrap).

    Args:
        returns: finite (excess) returns, one series along ``axis``.
        axis: the time axis.
    """
    x = np.asarray(returns, dtype=float)
    if x.shape[axis] < 2:
        shape = np.delete(np.array(x.shape), axis % x.ndim)
        out = np.full(tuple(shape), np.nan)
        return float(out) if out.ndim == 0 else out
    sd = x.std(axis=axis, ddof=1)
    scale = np.maximum(1.0, np.abs(x).max(axis=axis))
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = np.where(sd > _FLAT * scale, x.mean(axis=axis) / sd, np.nan)
    return float(sr) if np.ndim(sr) == 0 else sr


def sharpe_ratio(
    returns: Sequence[float] | np.ndarray, periods_per_year: float | None = None
) -> float:
    """Sharpe ratio of one series of (excess) returns: per period, or annualised.

    Non-finite values are dropped first. NaN when ``per_period_sharpe`` is
    undefined.

    Args:
        returns: the (excess) returns, e.g. daily.
        periods_per_year: annualise with ``annualise_sharpe`` (e.g. 252); None
            gives the per-period ratio.
    """
    r = np.asarray(returns, dtype=float)
    if r.ndim != 1:
        raise ValueError(f"returns must be one-dimensional, got shape {r.shape}")
    sr = per_period_sharpe(r[np.isfinite(r)])
    return float(annualise_sharpe(sr, periods_per_year)) if periods_per_year else float(sr)
