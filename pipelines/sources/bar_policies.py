"""What every source shares on its way to bars: header names, the data policies, the contract.

A source (a CSV file, FRED, yfinance) hands over a numeric table indexed by
its timestamps; :func:`finish_bars` applies the policies of data/README.md and
returns bars that keep the contract of :mod:`core.bars`:

- **Null rows** (:func:`drop_null_rows`): ``drop`` with a warning naming the
  dates, or ``error`` naming the line and column.
- **Unsorted rows**: ``sort`` with a warning naming the first, or ``error``;
  a duplicate timestamp is always an error naming both lines.
- **Price series**: ``adjusted`` scales open/high/low/close of each row by
  ``Adj Close / Close`` when the source has that column, ``raw`` keeps them.
- **Missing volume**: volume 0 on every bar, with a warning.

Every problem raises :class:`~pipelines.common.errors.DataError` (what the stages
report as ``error: ...``), never the contract's own ``BarsError``.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.bars import (
    BAR_COLUMNS,
    INDEX_NAME,
    PRICE_COLUMNS,
    BarsError,
    format_timestamp,
    validate_bars,
)
from pipelines.common.errors import DataError

log = logging.getLogger("gatecast.data")

# Header (lower-cased, accents and non-alphanumerics removed) -> canonical column.
# Polish names are Stooq's own (Data, Otwarcie, Najwyzszy, ...); <VOL> etc. its ASCII export.
_ALIASES = {
    "date": "date",
    "datetime": "date",
    "timestamp": "date",
    "data": "date",
    "gmttime": "date",
    "localtime": "date",
    "time": "time",
    "czas": "time",
    "open": "open",
    "otwarcie": "open",
    "high": "high",
    "najwyzszy": "high",
    "low": "low",
    "najnizszy": "low",
    "close": "close",
    "zamkniecie": "close",
    "adjclose": "adj_close",
    "adjustedclose": "adj_close",
    "volume": "volume",
    "vol": "volume",
    "wolumen": "volume",
}
_REQUIRED = ["date", "open", "high", "low", "close"]
EXPECTED_HEADER = "Date,Open,High,Low,Close[,Adj Close][,Volume]"


@dataclass
class LoadInfo:
    """What loading one instrument did, for the summary table and summary.json.

    Args:
        source: the file read, or ``fred:<SERIES>`` / ``yfinance:<TICKER>``.
        rows_read: data rows in the source before any policy.
        null_rows_dropped: rows of nulls dropped under ``null_rows: drop``.
        price_series: which prices the bars carry, in words.
        volume: ``"file"`` or why it is 0.
        sorted_rows: rows that were out of date order and got sorted.
        separator: the CSV field separator found in the header (``,`` or ``;``).
        decimal: the decimal mark of the numbers (``.``, or ``,`` with ``;``).
        long_gaps: gaps longer than ``data.max_gap_days`` between two bars, as
            ``"<first> to <second> (<days> days)"``.
        notes: other logged decisions (time-zone offsets dropped, ...).
    """

    source: str
    rows_read: int = 0
    null_rows_dropped: int = 0
    price_series: str = ""
    volume: str = "file"
    sorted_rows: int = 0
    separator: str = ","
    decimal: str = "."
    long_gaps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_contract(bars: pd.DataFrame, source: str, **options: Any) -> None:
    """:func:`core.bars.validate_bars` (same options), raising DataError instead of BarsError."""
    try:
        validate_bars(bars, source, **options)
    except BarsError as err:
        raise DataError(str(err)) from None


# Column mapping ----------------------------------------------------------------


def _header_key(name: str) -> str:
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", text.lower())


def map_columns(columns: list[str], source: str) -> dict[str, str]:
    """Canonical column -> the source's header for it; raises on missing or repeated columns."""
    found: dict[str, str] = {}
    for col in columns:
        canon = _ALIASES.get(_header_key(col))
        if canon is None:
            continue
        if canon in found:
            raise DataError(
                f"{source}: columns {found[canon]!r} and {col!r} both read as {canon!r}; "
                "keep one of them"
            )
        found[canon] = col
    if "date" not in found and "time" in found:
        found["date"] = found.pop("time")
    # A date index written without a name: pandas calls the empty header "Unnamed: 0".
    first = str(columns[0]) if columns else ""
    if "date" not in found and (first == "" or first.startswith("Unnamed: 0")):
        found["date"] = columns[0]
    missing = [c for c in _REQUIRED if c not in found]
    if missing:
        names = ", ".join(repr(c.capitalize()) for c in missing)
        raise DataError(
            f"{source}: missing required column(s) {names}; found {list(map(str, columns))}. "
            f"Expected a header like {EXPECTED_HEADER} (any letter case)"
        )
    return found


# Policies ----------------------------------------------------------------------


def drop_null_rows(
    df: pd.DataFrame,
    labels: pd.Series,
    source: str,
    null_rows: str,
    info: LoadInfo,
    lines: np.ndarray | None = None,
    names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Apply the null-row policy to rows with a missing price or volume.

    Args:
        labels: each row's date as the source writes it, for messages.
        lines: each row's file line, for messages; ``names``: the source's headers.
    """
    isna = df.isna().to_numpy()
    nulls = isna.any(axis=1)
    if not nulls.any():
        return df
    where = labels[nulls].tolist()
    listed = ", ".join(map(str, where[:5])) + (", ..." if len(where) > 5 else "")
    if null_rows == "error":
        pos = int(np.flatnonzero(nulls)[0])
        col = str(df.columns[int(np.flatnonzero(isna[pos])[0])])
        at = f"line {lines[pos]} ({where[0]})" if lines is not None else str(where[0])
        raise DataError(
            f"{source}: {at}: null or missing value in column {(names or {}).get(col, col)!r} "
            f"({len(where)} such row(s): {listed}); remove them or set data.null_rows: drop"
        )
    log.warning(
        "%s: dropped %d row(s) with null values (data.null_rows: drop): %s",
        source,
        len(where),
        listed,
    )
    info.null_rows_dropped = len(where)
    return df[~nulls]


def _order_and_dedupe(
    df: pd.DataFrame, source: str, lines: np.ndarray | None, unsorted_rows: str, info: LoadInfo
) -> tuple[pd.DataFrame, np.ndarray | None]:
    idx = df.index
    if not idx.is_monotonic_increasing:
        ts = idx.asi8
        back = np.flatnonzero(ts[1:] < ts[:-1]) + 1
        pos = int(back[0])
        where = f"line {lines[pos]}" if lines is not None else "row"
        first = f"{where} ({format_timestamp(idx[pos])} after {format_timestamp(idx[pos - 1])})"
        if unsorted_rows == "error":
            raise DataError(
                f"{source}: rows are not in date order: {first}; sort the file by date or set "
                "data.unsorted_rows: sort"
            )
        order = np.argsort(ts, kind="stable")
        df = df.iloc[order]
        lines = lines[order] if lines is not None else None
        info.sorted_rows = len(back)
        log.warning(
            "%s: %d row(s) out of date order, first at %s; sorted by date "
            "(data.unsorted_rows: sort)",
            source,
            len(back),
            first,
        )
    dup = df.index.duplicated(keep="first")
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        prev = int(np.flatnonzero(df.index == df.index[pos])[0])
        ts = format_timestamp(df.index[pos])
        where = f"lines {lines[prev]} and {lines[pos]}" if lines is not None else "two rows"
        raise DataError(
            f"{source}: {where}: duplicate timestamp {ts} ({int(dup.sum())} duplicate(s) in all); "
            "keep one row per bar"
        )
    return df, lines


def finish_bars(
    df: pd.DataFrame,
    source: str,
    *,
    price: str,
    unsorted_rows: str,
    info: LoadInfo,
    lines: np.ndarray | None = None,
    names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """A source's numeric table with a DatetimeIndex -> bars, under the data policies.

    ``df`` has the canonical columns open..close, optionally adj_close and volume,
    and no null rows left; ``lines`` and ``names`` locate a bad cell in its file.
    """
    df, lines = _order_and_dedupe(df, source, lines, unsorted_rows, info)
    check_contract(df, source, columns=PRICE_COLUMNS, lines=lines, names=names)
    out = df[list(PRICE_COLUMNS)].astype("float64")
    if price == "adjusted" and "adj_close" in df.columns:
        factor = df["adj_close"].to_numpy(dtype="float64") / df["close"].to_numpy(dtype="float64")
        out = out.mul(factor, axis=0)
        info.price_series = "adjusted (OHLC x Adj Close / Close)"
    elif price == "adjusted":
        info.price_series = "raw (no Adj Close column)"
        log.info("%s: no Adj Close column, so the raw prices are used", source)
    else:
        info.price_series = "raw (data.price: raw)"
    if "volume" in df.columns:
        out["volume"] = df["volume"].astype("float64")
    else:
        out["volume"] = 0.0
        info.volume = "no Volume column: set to 0"
        log.warning("%s: no Volume column; volume set to 0 for every bar", source)
    out.index = pd.DatetimeIndex(out.index, name=INDEX_NAME).as_unit("ns")
    return out[list(BAR_COLUMNS)]
