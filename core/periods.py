"""Bars per year, measured from the bars, and the one function that annualises with it.

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
"""

from __future__ import annotations

import math

import pandas as pd

# Daily equity bars: the trading days of a year, the convention of quantstats.
PERIODS_PER_YEAR = 252
DAYS_PER_YEAR = 365.25


def annualise_sharpe(per_period: float, periods_per_year: float = PERIODS_PER_YEAR) -> float:
    """An annualised Sharpe ratio from a per-bar one: ``per_period * sqrt(periods_per_year)``."""
    return per_period * math.sqrt(periods_per_year)


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
