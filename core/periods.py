"""Bars per year, measured from the bars; the one Sharpe ratio and the one annualisation.

Every annualised figure of gatecast (Sharpe, Sortino, CAGR, volatility,
turnover, the risk-free rate per bar) uses the bars per year of the data it
is computed on:

- **daily equity bars** (timestamps at midnight, about a day apart, none on a
  Saturday or Sunday): 252, the trading days of a year and the convention of
  quantstats;
- **any other interval** (hourly, minute, weekly bars, or daily bars that
  include weekends, as crypto markets trade): the bars per calendar year over
  the sample, ``(bars - 1) / (last - first in years of 365.25 days)``;
- or a value the user sets (config key ``data.periods_per_year``), for
  example 252 * 6.5 for hourly bars of a 6.5-hour session measured on too
  short a sample.

Every Sharpe ratio in gatecast (a backtest's metrics, the report's PSR, DSR,
bootstrap intervals and cost sweep) is computed by ``per_period_sharpe`` and
annualised by ``annualise_sharpe``, so the backtest and the report cannot
disagree on the convention: ``mean / std (ddof=1)`` of per-bar (excess)
returns, times ``sqrt(bars per year)``, as quantstats does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

# Daily equity bars: the trading days of a year, the convention of quantstats.
PERIODS_PER_YEAR = 252
DAYS_PER_YEAR = 365.25

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


def bar_interval(index: pd.DatetimeIndex) -> str:
    """The bars' interval in words: ``daily``, ``weekly``, ``5d``, ``1h``, ``15min`` ...

    The median spacing of the timestamps; bars stamped at midnight about a day
    apart (weekends and holidays allowed) are ``daily``.
    """
    if len(index) < 2:
        return "-"
    step = pd.Series(index).diff().median()
    if (index == index.normalize()).all():
        days = step / pd.Timedelta(days=1)
        if days <= 4:  # a Friday-to-Monday step is 3 days; one holiday more is 4
            return "daily"
        return "weekly" if 6 <= days <= 8 else f"{round(days)}d"
    minutes = int(step.total_seconds() // 60)
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}min"


def is_daily_equity(index: pd.DatetimeIndex) -> bool:
    """Midnight timestamps about a day apart with none on a weekend."""
    return bar_interval(index) == "daily" and bool((index.dayofweek < 5).all())


def periods_per_year(index: pd.DatetimeIndex, override: float | None = None) -> float:
    """Bars per year of a series of bars (see the module docstring).

    Args:
        index: the bars' timestamps, increasing.
        override: the user's value (``data.periods_per_year``), used as it is.

    Raises:
        ValueError: with fewer than two bars or a zero span, where nothing can
            be measured and no override is given.
    """
    if override is not None:
        if not (math.isfinite(override) and override > 0):
            raise ValueError(f"periods_per_year must be a positive number, got {override!r}")
        return float(override)
    if is_daily_equity(index):
        return float(PERIODS_PER_YEAR)
    if len(index) < 2 or index[-1] <= index[0]:
        raise ValueError(
            "cannot measure bars per year from fewer than two timestamps; set data.periods_per_year"
        )
    years = (index[-1] - index[0]) / pd.Timedelta(days=DAYS_PER_YEAR)
    return (len(index) - 1) / years
