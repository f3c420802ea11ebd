"""Cross-sectional skill of each forecaster over a universe: IC, rank IC and ICIR (as Qlib).

What is correlated, and when (no look-ahead):

- A forecast file's column ``f`` at row ``t`` is the forecast of the close of
  bar ``t + 1`` made at the close of ``t`` (``models.base.Forecaster``; NaN
  before the out-of-sample start). The **expected return** at ``t`` is
  ``f[t] / close[t] - 1``, the same signal the forecast strategies trade
  (``strategies.forecast``).
- The **realised return** paired with it is ``close[t + 1] / close[t] - 1``,
  the instrument's *next* bar, stored at date ``t``. Nothing at row ``t``
  uses a price after ``t + 1``, and the realised return is never an input of
  the forecast. The last bar has no next bar and is dropped.
- Each date ``t`` gives one cross-section: the instruments with both numbers
  that day. The **IC** of that date is Pearson's correlation of expected and
  realised returns across those instruments, the **rank IC** Spearman's.
  A date needs at least ``MIN_INSTRUMENTS`` (3) instruments: with two, any
  correlation is +1 or -1 (two points always lie on a line), so it says
  nothing and would swamp the mean; a cross-section with no spread (e.g. the
  random walk, whose expected return is 0 everywhere) has no correlation and
  is skipped too.
- Over the dates: ``ic_mean``, ``ic_std`` (sample, ``ddof=1``) and
  ``icir = ic_mean / ic_std``, likewise for the rank IC, and ``dates``, the
  number of cross-sections; this is Qlib's ``calc_ic`` followed by its
  ``IC``, ``ICIR``, ``Rank IC``, ``Rank ICIR`` summary (not annualised).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

__all__ = [
    "MIN_INSTRUMENTS",
    "CrossSection",
    "daily_ic",
    "ic_summary",
    "information_coefficients",
    "return_panels",
]

MIN_INSTRUMENTS = 3


def return_panels(
    frames: Mapping[str, pd.DataFrame], forecaster: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Expected and realised next-bar returns of ``forecaster``: dates x instruments.

    Args:
        frames: instrument -> its forecast file (bars with ``close`` plus one
            column per forecaster, indexed by date).
        forecaster: the forecast column.

    Returns:
        ``(expected, realised)``, both indexed by the date ``t`` the forecast
        was made; an instrument without the column is left out.
    """
    expected, realised = {}, {}
    for name, frame in frames.items():
        if forecaster not in frame.columns:
            continue
        if "close" not in frame.columns:
            raise ValueError(f"forecasts of {name}: no 'close' column")
        close = frame["close"].astype(float)
        expected[name] = frame[forecaster].astype(float) / close - 1.0
        realised[name] = close.shift(-1) / close - 1.0
    return pd.DataFrame(expected).sort_index(), pd.DataFrame(realised).sort_index()


def daily_ic(expected: pd.DataFrame, realised: pd.DataFrame) -> pd.DataFrame:
    """IC (Pearson) and rank IC (Spearman) of each date's cross-section, and how many
    instruments it holds: columns ic, rank_ic, names.

    Only dates with at least ``MIN_INSTRUMENTS`` instruments having both
    numbers and some spread in each are kept (see the module docstring).
    """
    both = expected.notna() & realised.notna()
    exp, real = expected.where(both), realised.where(both)
    enough = both.sum(axis=1) >= MIN_INSTRUMENTS
    spread = (exp.std(axis=1) > 0) & (real.std(axis=1) > 0)
    keep = enough & spread
    exp, real = exp[keep], real[keep]
    ic = exp.T.corrwith(real.T, method="pearson") if len(exp) else pd.Series(dtype=float)
    rank = exp.rank(axis=1).T.corrwith(real.rank(axis=1).T) if len(exp) else ic
    names = both[keep].sum(axis=1).astype(float)
    return pd.DataFrame({"ic": ic, "rank_ic": rank, "names": names}).dropna()


@dataclass(frozen=True)
class CrossSection:
    """One forecaster's IC summary.

    Args:
        forecaster: the forecast column.
        dates: cross-sections counted.
        names_per_date: instruments in a cross-section, on average (an IC over 3 names
            says little about any one date).
        ic_mean, ic_std, icir: Pearson IC's mean, sample std and their ratio.
        rank_ic_mean, rank_ic_std, rank_icir: the same for the rank IC.
    """

    forecaster: str
    dates: int
    names_per_date: float
    ic_mean: float
    ic_std: float
    icir: float
    rank_ic_mean: float
    rank_ic_std: float
    rank_icir: float


def _ratio(mean: float, std: float) -> float:
    return mean / std if math.isfinite(std) and std > 0 else math.nan


def ic_summary(forecaster: str, daily: pd.DataFrame) -> CrossSection:
    """Mean, sample standard deviation and ICIR of a ``daily_ic`` table."""
    ic, rank = daily["ic"], daily["rank_ic"]
    ic_mean, ic_std = float(ic.mean()), float(ic.std(ddof=1))
    rank_mean, rank_std = float(rank.mean()), float(rank.std(ddof=1))
    names = float(daily["names"].mean()) if "names" in daily and len(daily) else math.nan
    return CrossSection(
        forecaster,
        len(daily),
        names,
        ic_mean,
        ic_std,
        _ratio(ic_mean, ic_std),
        rank_mean,
        rank_std,
        _ratio(rank_mean, rank_std),
    )


def information_coefficients(
    frames: Mapping[str, pd.DataFrame], forecasters: Sequence[str]
) -> pd.DataFrame:
    """IC, rank IC and ICIR of each forecaster over the instruments of ``frames``.

    Args:
        frames: instrument -> its forecast file.
        forecasters: the forecast columns to score, in the order of the rows.

    Returns:
        One row per forecaster (index ``forecaster``), the fields of ``CrossSection``.
    """
    rows = []
    for name in forecasters:
        expected, realised = return_panels(frames, name)
        summary = ic_summary(name, daily_ic(expected, realised))
        rows.append(summary.__dict__)
    columns = list(CrossSection.__dataclass_fields__)
    return pd.DataFrame(rows, columns=columns).set_index("forecaster")
