"""The bars contract: what every layer may assume about a frame of price bars.

Bars are a ``pandas.DataFrame`` with

- a ``DatetimeIndex`` named ``date``: tz-naive (the exchange's wall-clock time),
  strictly increasing (sorted, no repeated timestamp);
- float64 columns ``open, high, low, close, volume``, in that order;
- finite values; prices (open, high, low, close) > 0; volume >= 0;
- ``low <= high``, and ``open`` and ``close`` inside ``[low, high]`` up to a
  relative :data:`PRICE_TOLERANCE` (sources round each field separately).

:func:`validate_bars` checks it and raises :class:`BarsError` naming the
source, the row (its date, and its file line when known) and the column. The
data stage checks every source it reads and writes the *exact* form (column
order, dtypes, index name); the Backtrader feed, the features and the
baselines call the same function on what they are given, naming only the
columns they need: every bar column present is checked by the same rules.

A hand-written check rather than a pandera schema: the messages name a file's
line and its own header spelling (``line 5 (2020-01-07): column 'Close'``),
which pandera's failure-case tables do not, and the checks are a handful of
vectorised comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

INDEX_NAME = "date"
PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_COLUMNS = (*PRICE_COLUMNS, "volume")
BAR_DTYPE = np.dtype("float64")

# Relative slack for open/close outside [low, high]: sources round each field separately.
PRICE_TOLERANCE = 1e-6

# A source's adjusted close, before the data stage folds it into OHLC: checked like a price.
_SOURCE_PRICES = (*PRICE_COLUMNS, "adj_close")


class BarsError(ValueError):
    """Bars break the contract; the message names the source, the row and the column."""


def format_timestamp(ts: pd.Timestamp) -> str:
    """A bar's timestamp as messages and summaries write it: the date, plus the time if any."""
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M:%S")


def validate_bars(
    bars: pd.DataFrame,
    source: str = "bars",
    *,
    columns: Sequence[str] = BAR_COLUMNS,
    exact: bool = False,
    lines: np.ndarray | None = None,
    names: Mapping[str, str] | None = None,
) -> None:
    """Raise :class:`BarsError` unless ``bars`` keeps the bars contract (module docstring).

    Args:
        bars: the frame to check.
        source: what the bars are (a file, ``yfinance:SPY``, a forecaster), first in messages.
        columns: the bar columns the caller needs; each must be present. Every bar
            column present is checked, needed or not.
        exact: also require the stored form: exactly ``BAR_COLUMNS`` in order, float64,
            index named ``date`` (what the data stage writes).
        lines: the file line of each row (header = line 1), named in messages; the
            first offending row is the first in the file.
        names: bar column -> the source's own header for it, used in messages.
    """
    _check_frame(bars, source, columns, exact)
    _check_index(bars.index, source)
    _check_values(bars, _Rows(source, bars.index, lines, names or {}))


def _check_frame(bars: pd.DataFrame, source: str, columns: Sequence[str], exact: bool) -> None:
    if not isinstance(bars, pd.DataFrame):
        raise BarsError(f"{source}: expected a DataFrame of bars, got {type(bars).__name__}")
    if len(bars) == 0:
        raise BarsError(f"{source}: no bars")
    index = bars.index
    if not isinstance(index, pd.DatetimeIndex):
        raise BarsError(
            f"{source}: the index must be dates (a DatetimeIndex), got {type(index).__name__}; "
            "use bars.set_index(pd.to_datetime(bars['date']))"
        )
    if index.tz is not None:
        raise BarsError(
            f"{source}: the index must be tz-naive, got time zone {index.tz}; "
            "use bars.tz_localize(None)"
        )
    missing = [c for c in columns if c not in bars.columns]
    if missing:
        raise BarsError(f"{source}: missing column(s) {missing}; bars need {list(columns)}")
    if exact:
        if index.name != INDEX_NAME:
            raise BarsError(f"{source}: the index must be named {INDEX_NAME!r}, got {index.name!r}")
        if list(bars.columns) != list(BAR_COLUMNS):
            raise BarsError(
                f"{source}: columns must be exactly {list(BAR_COLUMNS)}, got {list(bars.columns)}"
            )
    for col in (c for c in (*_SOURCE_PRICES, "volume") if c in bars.columns):
        dtype = bars[col].dtype
        if exact and dtype != BAR_DTYPE:
            raise BarsError(f"{source}: column {col!r} must be float64, got {dtype}")
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            raise BarsError(f"{source}: column {col!r} must be numbers, got dtype {dtype}")


def _check_index(index: pd.DatetimeIndex, source: str) -> None:
    if index.has_duplicates:
        dup = index.duplicated()
        raise BarsError(
            f"{source}: duplicate timestamp {format_timestamp(index[dup][0])} "
            f"({int(dup.sum())} in all); bar dates must be strictly increasing, keep one row "
            "per bar"
        )
    if not index.is_monotonic_increasing:
        pos = int(np.flatnonzero(np.diff(index.asi8) < 0)[0]) + 1
        raise BarsError(
            f"{source}: dates are not strictly increasing: {format_timestamp(index[pos])} comes "
            f"after {format_timestamp(index[pos - 1])}"
        )


@dataclass(frozen=True)
class _Rows:
    """Where a row-level problem is, in the words of the source: file line, date, header."""

    source: str
    index: pd.DatetimeIndex
    lines: np.ndarray | None
    names: Mapping[str, str]

    def name(self, col: str) -> str:
        return self.names.get(col, col)

    def first(self, mask: np.ndarray) -> tuple[str, int, str]:
        """Where the first offending row (in file order) is, its position, a 'N rows' note."""
        hits = np.flatnonzero(mask)
        lines = self.lines
        pos = int(hits[np.argmin(lines[hits])]) if lines is not None else int(hits[0])
        when = format_timestamp(self.index[pos])
        where = f"line {lines[pos]} ({when})" if lines is not None else when
        more = f" ({len(hits)} rows have this problem)" if len(hits) > 1 else ""
        return where, pos, more


def _check_values(bars: pd.DataFrame, rows: _Rows) -> None:
    """The per-row rules, each raising at the first offending row in file order."""
    src, name = rows.source, rows.name
    prices = [c for c in _SOURCE_PRICES if c in bars.columns]
    values = {c: bars[c].to_numpy(dtype="float64") for c in [*prices, "volume"] if c in bars}
    for col, v in values.items():
        bad = ~np.isfinite(v)
        if bad.any():
            where, pos, more = rows.first(bad)
            kind = "volume" if col == "volume" else "prices"
            raise BarsError(
                f"{src}: missing or infinite {kind} on {where}: column {name(col)!r} "
                f"is {float(v[pos])!r}{more}"
            )
    for col in prices:
        bad = ~(values[col] > 0)
        if bad.any():
            where, pos, more = rows.first(bad)
            raise BarsError(
                f"{src}: {where}: column {name(col)!r} has non-positive price "
                f"{float(values[col][pos])!r}{more}; prices must be > 0"
            )
    if "volume" in values:
        bad = values["volume"] < 0
        if bad.any():
            where, pos, more = rows.first(bad)
            raise BarsError(
                f"{src}: {where}: column {name('volume')!r} is negative "
                f"({float(values['volume'][pos])!r}){more}; volume must be >= 0"
            )
    if "high" in values and "low" in values:
        _check_range(values, rows)


def _check_range(values: dict[str, np.ndarray], rows: _Rows) -> None:
    """``low <= high`` and ``open``/``close`` inside ``[low, high]`` (with the tolerance)."""
    src = rows.source
    high, low = values["high"], values["low"]
    lo_name, hi_name = rows.name("low"), rows.name("high")
    bad = high < low
    if bad.any():
        where, pos, more = rows.first(bad)
        raise BarsError(
            f"{src}: {where}: column {hi_name!r} ({float(high[pos])!r}) is below column "
            f"{lo_name!r} ({float(low[pos])!r}){more}"
        )
    lo, hi = low * (1 - PRICE_TOLERANCE), high * (1 + PRICE_TOLERANCE)
    for col in (c for c in ("close", "open") if c in values):
        v = values[col]
        bad = (v < lo) | (v > hi)
        if bad.any():
            where, pos, more = rows.first(bad)
            raise BarsError(
                f"{src}: {where}: column {rows.name(col)!r} ({float(v[pos])!r}) is outside "
                f"[{lo_name}, {hi_name}] = [{float(low[pos])!r}, {float(high[pos])!r}]{more}"
            )
