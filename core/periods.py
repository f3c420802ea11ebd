"""Bars per year, and the one function that annualises with it."""

from __future__ import annotations

import math

# Daily equity bars: the trading days of a year, the convention of quantstats.
PERIODS_PER_YEAR = 252


def annualise_sharpe(per_period: float, periods_per_year: float = PERIODS_PER_YEAR) -> float:
    """An annualised Sharpe ratio from a per-bar one: ``per_period * sqrt(periods_per_year)``."""
    return per_period * math.sqrt(periods_per_year)
