"""Reading bars from CSV files: layout sniffing, dates, numbers, each bad cell located.

:func:`read_csv_bars` reads Yahoo, Stooq and similar layouts (data/README.md):
the separator (``,`` or ``;`` with decimal commas), the header in any spelling
(:func:`~pipelines.sources.bar_policies.map_columns`), the date column's format
(detected, or ``data.date_format``), UTC offsets dropped, then the policies of
:mod:`pipelines.sources.bar_policies`. Every bad input raises
:class:`~pipelines.common.errors.DataError` naming the file, the line (header = line 1)
and/or date, and the column.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.bars import format_timestamp
from pipelines.common.errors import DataError
from pipelines.common.outputs import shown
from pipelines.sources.bar_policies import (
    EXPECTED_HEADER,
    LoadInfo,
    drop_null_rows,
    finish_bars,
    map_columns,
)

log = logging.getLogger("gatecast.data")

_NULL_TOKENS = ["", "null", "NULL", "Null", "NaN", "nan", "NA", "N/A", "n/a", "None", "none"]

_DATE_PARTS = [
    "%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d",
    "%m/%d/%Y", "%d/%m/%Y", "%m-%d-%Y", "%d-%m-%Y", "%d.%m.%Y",
    "%m/%d/%y", "%d/%m/%y", "%d.%m.%y",
    "%d-%b-%Y", "%d %b %Y", "%b %d, %Y", "%b %d %Y", "%d-%b-%y",
]  # fmt: skip
_TIME_PARTS = [
    "", " %H:%M", " %H:%M:%S", " %H:%M:%S.%f", " %H%M%S", " %H%M",
    " %I:%M %p", " %I:%M:%S %p", "T%H:%M", "T%H:%M:%S",
]  # fmt: skip
_DATE_FORMATS = [d + t for d in _DATE_PARTS for t in _TIME_PARTS]

# A UTC offset after a clock time: "09:30:00-05:00", "09:30Z", "09:30:00 UTC".
_TZ_SUFFIX = re.compile(r"(\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:Z|UTC|GMT|[+-]\d{2}:?\d{2})$")
_EPOCH_SECONDS = re.compile(r"^\d{9,10}$")
_EPOCH_MILLIS = re.compile(r"^\d{12,13}$")


# Dates -------------------------------------------------------------------------


def _strptime_ok(value: str, fmt: str) -> bool:
    try:
        datetime.strptime(value, fmt)
    except ValueError:
        return False
    return True


@dataclass
class _DateColumn:
    """A file's date strings and where each row is: parses them with one format or another."""

    text: pd.Series
    lines: np.ndarray
    source: str
    column: str
    notes: list[str] = field(default_factory=list)

    def drop_offsets(self) -> None:
        self.notes.append("time-zone offsets dropped (exchange wall-clock time kept)")
        log.info(
            "%s: time-zone offsets dropped; timestamps keep their wall-clock time", self.source
        )
        self.text = self.text.str.replace(_TZ_SUFFIX, r"\1", regex=True)

    def unparseable(self, parsed: pd.Series, hint: str) -> DataError:
        pos = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        bad = int(parsed.isna().sum())
        more = f" ({bad} rows in all)" if bad > 1 else ""
        return DataError(
            f"{self.source}: line {self.lines[pos]}: unparseable date {self.text.iloc[pos]!r} "
            f"in column {self.column!r}{more}; {hint}"
        )

    def with_format(self, date_format: str) -> pd.DatetimeIndex:
        """Every date in ``data.date_format``, or an error naming the first that is not."""
        try:
            parsed = pd.to_datetime(self.text, format=date_format, errors="coerce")
        except ValueError as err:
            raise DataError(
                f"{self.source}: data.date_format {date_format!r} is invalid: {err}"
            ) from None
        if parsed.isna().any():
            raise self.unparseable(parsed, f"it does not match data.date_format {date_format!r}")
        return pd.DatetimeIndex(parsed)

    def epoch(self, probe: list[str]) -> pd.DatetimeIndex | None:
        """Unix seconds or milliseconds when every row is one of them, else None."""
        text = self.text
        if not any(_EPOCH_SECONDS.match(v) or _EPOCH_MILLIS.match(v) for v in probe[:1]):
            return None
        if not (text.str.match(_EPOCH_SECONDS).all() or text.str.match(_EPOCH_MILLIS).all()):
            return None
        unit = "s" if len(text.iloc[0]) <= 10 else "ms"
        self.notes.append(f"Unix timestamps ({unit})")
        return pd.DatetimeIndex(pd.to_datetime(text.astype("int64"), unit=unit))

    def iso(self) -> pd.Series:
        """ISO 8601 parse (NaT where a row is not ISO); offsets on some rows only dropped."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # mixed offsets, handled just below
            iso = pd.to_datetime(self.text, format="ISO8601", errors="coerce")
        if not pd.api.types.is_datetime64_dtype(iso):
            self.drop_offsets()
            iso = pd.to_datetime(self.text, format="ISO8601", errors="coerce")
        return iso

    def detect(self, probe: list[str], iso: pd.Series) -> pd.DatetimeIndex:
        """The one known format that reads every row; an error when two read them differently."""
        probe = [v.strip() for v in probe]
        candidates = [f for f in _DATE_FORMATS if any(_strptime_ok(v, f) for v in probe)]
        results = {f: pd.to_datetime(self.text, format=f, errors="coerce") for f in candidates}
        distinct: list[str] = []
        for f in (f for f, r in results.items() if r.notna().all()):
            if not any(results[f].equals(results[g]) for g in distinct):
                distinct.append(f)
        if len(distinct) > 1:
            a, b = distinct[:2]
            pos = int(np.flatnonzero((results[a] != results[b]).to_numpy())[0])
            raise DataError(
                f"{self.source}: column {self.column!r}: dates are ambiguous: "
                f"{self.text.iloc[pos]!r} (line {self.lines[pos]}) reads as "
                f"{format_timestamp(results[a].iloc[pos])} with {a!r} or as "
                f"{format_timestamp(results[b].iloc[pos])} with {b!r}; set data.date_format to "
                f"the format the file uses, e.g. date_format: {b!r}"
            )
        if distinct:
            self.notes.append(f"date format {distinct[0]!r} detected")
            log.debug("%s: date format %r detected", self.source, distinct[0])
            return pd.DatetimeIndex(results[distinct[0]])
        results["ISO8601"] = iso
        best = max(results, key=lambda f: int(results[f].notna().sum()))
        if results[best].notna().any():
            hint = f"the other dates read as {best!r}; fix that row or set data.date_format"
        else:
            hint = (
                "set data.date_format to the file's strftime format, e.g. date_format: '%d/%m/%Y'"
            )
        raise self.unparseable(results[best], hint)


def _parse_dates(
    text: pd.Series, lines: np.ndarray, date_format: str | None, source: str, column: str
) -> tuple[pd.DatetimeIndex, list[str]]:
    """Parse date strings; detect the format when none is given. Returns (dates, notes)."""
    text = text.fillna("").astype(str)
    if len(text) == 0:
        return pd.DatetimeIndex([]), []
    probe = pd.concat([text.head(3), text.iloc[[len(text) // 2]], text.tail(3)]).tolist()
    if any(v != v.strip() for v in probe):
        text = text.str.strip()
    dates = _DateColumn(text, lines, source, column)
    # The regex runs per element, so only when a sample shows offsets; offsets on some
    # rows only are caught after the ISO parse.
    if any(_TZ_SUFFIX.search(v.strip()) for v in probe):
        dates.drop_offsets()
    if date_format:
        return dates.with_format(date_format), dates.notes
    parsed = dates.epoch(probe)
    if parsed is None:
        # ISO 8601 (YYYY-MM-DD, optionally with a time) is never ambiguous: take it when it fits.
        iso = dates.iso()
        parsed = pd.DatetimeIndex(iso) if iso.notna().all() else dates.detect(probe, iso)
    return parsed, dates.notes


# CSV ---------------------------------------------------------------------------


def _read_table(path: Path, source: str) -> tuple[pd.DataFrame, np.ndarray, dict[str, str], str]:
    """The file's rows as pandas reads them, their line numbers, the column map, the separator."""
    if not path.is_file():
        raise DataError(f"{source}: file not found")
    with path.open("r", encoding="utf-8-sig", errors="replace") as fh:
        header = fh.readline()
    # European exports separate with ';' and write decimals with ','.
    sep = ";" if header.count(";") > header.count(",") else ","
    options: dict[str, Any] = {
        "sep": sep,
        "skipinitialspace": True,
        "encoding": "utf-8-sig",
        "encoding_errors": "replace",
    }
    try:
        columns = list(pd.read_csv(path, nrows=0, **options).columns)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{source}: empty file (no header, no rows); expected a header like {EXPECTED_HEADER}"
        ) from None
    cols = map_columns(columns, source)
    text_cols = {cols[c]: str for c in ("date", "time") if c in cols}
    try:
        # Prices are parsed by the C reader; a column with a stray token comes back as
        # text and is checked cell by cell in _numbers to name the bad one.
        raw = pd.read_csv(
            path,
            dtype=text_cols,
            keep_default_na=False,
            na_values=_NULL_TOKENS,
            skip_blank_lines=False,
            decimal="," if sep == ";" else ".",
            **options,
        )
    except pd.errors.ParserError as err:
        raise DataError(f"{source}: not a readable CSV file: {err}") from None
    # pandas drops blank lines only when told to; keeping them keeps line numbers exact.
    lines = np.arange(len(raw)) + 2
    blank = raw.isna().all(axis=1).to_numpy()
    if blank.any():
        log.debug("%s: %d blank line(s) ignored", source, int(blank.sum()))
    raw, lines = raw[~blank], lines[~blank]
    if raw.empty:
        raise DataError(f"{source}: empty file: a header but no data rows")
    return raw, lines, cols, sep


def _numbers(
    raw: pd.DataFrame, cols: dict[str, str], sep: str, lines: np.ndarray, source: str
) -> pd.DataFrame:
    """The price and volume columns as float64 (NaN for a null token); a bad cell is named."""
    numeric = {}
    for canon in ["open", "high", "low", "close", "adj_close", "volume"]:
        if canon not in cols:
            continue
        column = raw[cols[canon]]
        if pd.api.types.is_numeric_dtype(column):
            values = column.to_numpy(dtype="float64")
            bad = np.isinf(values)
        else:
            text = column.astype("object")
            if sep == ";":
                text = text.str.replace(",", ".", regex=False)
            values = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64")
            bad = (np.isnan(values) & text.notna().to_numpy()) | np.isinf(values)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{source}: line {lines[pos]} ({raw[cols['date']].iloc[pos]}): column "
                f"{cols[canon]!r}: {str(column.iloc[pos])!r} is not a number"
            )
        numeric[canon] = values
    return pd.DataFrame(numeric)


def read_csv_file(
    path: str | Path,
    *,
    price: str = "adjusted",
    date_format: str | None = None,
    null_rows: str = "drop",
    unsorted_rows: str = "sort",
) -> tuple[pd.DataFrame, LoadInfo]:
    """:func:`read_csv_bars`, also returning what the load did (for the stage's summary)."""
    path = Path(path)
    source = shown(path)
    info = LoadInfo(source=source)
    raw, lines, cols, sep = _read_table(path, source)
    info.rows_read = len(raw)
    if sep == ";":
        info.separator, info.decimal = ";", ","
        note = "';' separators and decimal commas (read as a European export)"
        log.info("%s: %s", source, note)
        info.notes.append(note)
    frame = _numbers(raw, cols, sep, lines, source)

    date_text = raw[cols["date"]].fillna("").astype(str)
    if "time" in cols:
        date_text = date_text + " " + raw[cols["time"]].fillna("").astype(str)
    labels = pd.Series(raw[cols["date"]].fillna("").to_numpy())
    keep = ~frame.isna().any(axis=1).to_numpy()
    frame = drop_null_rows(frame, labels, source, null_rows, info, lines, cols)
    date_text, lines = date_text[keep], lines[keep]

    dates, notes = _parse_dates(date_text, lines, date_format, source, cols["date"])
    info.notes.extend(notes)
    frame.index = dates
    bars = finish_bars(
        frame, source, price=price, unsorted_rows=unsorted_rows, info=info, lines=lines, names=cols
    )
    return bars, info


def read_csv_bars(
    path: str | Path,
    *,
    price: str = "adjusted",
    date_format: str | None = None,
    null_rows: str = "drop",
    unsorted_rows: str = "sort",
) -> pd.DataFrame:
    """Read one CSV of OHLC bars (Yahoo, Stooq and similar layouts) into validated bars.

    Args:
        path: the CSV file.
        price: ``"adjusted"`` (scale OHLC by ``Adj Close / Close`` when that column exists)
            or ``"raw"``.
        date_format: strftime format of the date column; ``None`` detects it (ISO 8601,
            ``MM/DD/YYYY``, ``DD.MM.YYYY``, ``YYYYMMDD``, with or without a time, ...) and
            raises when day and month cannot be told apart.
        null_rows: ``"drop"`` (logged) or ``"error"`` for rows with null values.
        unsorted_rows: ``"sort"`` (logged) or ``"error"`` for rows out of date order.
    """
    return read_csv_file(
        path, price=price, date_format=date_format, null_rows=null_rows, unsorted_rows=unsorted_rows
    )[0]
