"""The data layer: bars from CSV files, FRED or yfinance, validated, cached; the ``data`` stage.

Bars are a DataFrame with a strictly increasing, tz-naive ``DatetimeIndex`` named
``date`` and float64 columns ``open, high, low, close, volume`` (see
docs/architecture.md). Every bad input raises :class:`~pipelines.errors.DataError`
naming the file, the line (header = line 1) and/or date, and the column.

Policies (documented in data/README.md):

- **Price series.** ``data.price: adjusted`` with an ``Adj Close`` column scales
  open/high/low/close of each row by ``Adj Close / Close`` (volume unchanged);
  without that column the raw prices are used and this is logged. ``raw`` uses the
  file's OHLC as they are.
- **Missing volume** (Stooq index files have none): volume is 0, logged as a warning.
- **Null rows** (Yahoo writes ``null`` on days without prices): ``null_rows: drop``
  drops them with a warning naming the dates; ``error`` raises.
- **Unsorted rows**: ``unsorted_rows: sort`` sorts by date with a warning;
  ``error`` raises. Duplicate timestamps are always an error.
- **Time zones**: an offset on a timestamp (``09:30:00-05:00``) is dropped, keeping
  the exchange's wall-clock time, and logged.

Run the stage with ``python -m pipelines data --config configs/default.yaml``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
import warnings
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.cli import config_from_args, run_stage, setup_logging, stage_parser
from pipelines.config import REPO_ROOT, Config
from pipelines.errors import DataError
from pipelines.outputs import atomic_write

log = logging.getLogger("gatecast.data")

BAR_COLUMNS = ["open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]

# Checked again here although the config restricts names too: a name is never a path.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._^=-]{0,63}$")

# Relative slack for open/close outside [low, high]: sources round each field separately.
PRICE_TOLERANCE = 1e-6

# Consecutive trading days further apart than this count as a calendar gap in the summary.
GAP_DAYS = 4

_NULL_TOKENS = ["", "null", "NULL", "Null", "NaN", "nan", "NA", "N/A", "n/a", "None", "none"]

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
_EXPECTED_HEADER = "Date,Open,High,Low,Close[,Adj Close][,Volume]"

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
        notes: other logged decisions (time-zone offsets dropped, ...).
    """

    source: str
    rows_read: int = 0
    null_rows_dropped: int = 0
    price_series: str = ""
    volume: str = "file"
    sorted_rows: int = 0
    notes: list[str] = field(default_factory=list)


# Paths -------------------------------------------------------------------------


def safe_child(directory: Path, name: str, suffix: str = "") -> Path:
    """``directory / (name + suffix)``, refusing a name that is not a plain ticker.

    The name is matched against the ticker pattern and the joined path is checked
    to stay inside ``directory`` (without following symlinks the user made).
    """
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise DataError(
            f"{name!r} is not a plain instrument or dataset name: use letters, digits and "
            "'.', '_', '-', '^', '=' only (it becomes a file name, never a path)"
        )
    base = Path(os.path.abspath(directory))
    path = Path(os.path.abspath(base / f"{name}{suffix}"))
    if not path.is_relative_to(base) or path == base:
        raise DataError(f"{name!r} would point outside {base}; use a plain instrument name")
    return path


def _shown(path: Path) -> str:
    """A path as written in summaries: relative to the repository when inside it."""
    path = Path(os.path.abspath(path))
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_parquet(tmp, engine="pyarrow"))


def _write_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


# Column mapping ----------------------------------------------------------------


def _header_key(name: str) -> str:
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _map_columns(columns: list[str], source: str) -> dict[str, str]:
    """Canonical column -> the file's header for it; raises on missing or repeated columns."""
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
            f"Expected a header like {_EXPECTED_HEADER} (any letter case)"
        )
    return found


# Dates -------------------------------------------------------------------------


def _fmt_ts(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M:%S")


def _strptime_ok(value: str, fmt: str) -> bool:
    try:
        datetime.strptime(value, fmt)
    except ValueError:
        return False
    return True


def _parse_dates(
    text: pd.Series, lines: np.ndarray, date_format: str | None, source: str, column: str
) -> tuple[pd.DatetimeIndex, list[str]]:
    """Parse date strings; detect the format when none is given. Returns (dates, notes)."""
    notes: list[str] = []
    text = text.fillna("").astype(str)
    if len(text) == 0:
        return pd.DatetimeIndex([]), notes
    probe = pd.concat([text.head(3), text.iloc[[len(text) // 2]], text.tail(3)]).tolist()
    if any(v != v.strip() for v in probe):
        text = text.str.strip()

    def drop_offsets(text: pd.Series) -> pd.Series:
        notes.append("time-zone offsets dropped (exchange wall-clock time kept)")
        log.info("%s: time-zone offsets dropped; timestamps keep their wall-clock time", source)
        return text.str.replace(_TZ_SUFFIX, r"\1", regex=True)

    # The regex runs per element, so only when a sample shows offsets; offsets on some
    # rows only are caught after the ISO parse below.
    if any(_TZ_SUFFIX.search(v.strip()) for v in probe):
        text = drop_offsets(text)

    def unparseable(parsed: pd.Series, hint: str) -> DataError:
        pos = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        bad = int(parsed.isna().sum())
        more = f" ({bad} rows in all)" if bad > 1 else ""
        return DataError(
            f"{source}: line {lines[pos]}: unparseable date {text.iloc[pos]!r} in column "
            f"{column!r}{more}; {hint}"
        )

    if date_format:
        try:
            parsed = pd.to_datetime(text, format=date_format, errors="coerce")
        except ValueError as err:
            raise DataError(
                f"{source}: data.date_format {date_format!r} is invalid: {err}"
            ) from None
        if parsed.isna().any():
            raise unparseable(parsed, f"it does not match data.date_format {date_format!r}")
        return pd.DatetimeIndex(parsed), notes

    epoch = any(_EPOCH_SECONDS.match(v) or _EPOCH_MILLIS.match(v) for v in probe[:1])
    if epoch and (text.str.match(_EPOCH_SECONDS).all() or text.str.match(_EPOCH_MILLIS).all()):
        unit = "s" if len(text.iloc[0]) <= 10 else "ms"
        notes.append(f"Unix timestamps ({unit})")
        return pd.DatetimeIndex(pd.to_datetime(text.astype("int64"), unit=unit)), notes

    # ISO 8601 (YYYY-MM-DD, optionally with a time) is never ambiguous: take it when it fits.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # mixed offsets, handled just below
        iso = pd.to_datetime(text, format="ISO8601", errors="coerce")
    if not pd.api.types.is_datetime64_dtype(iso):
        text = drop_offsets(text)
        iso = pd.to_datetime(text, format="ISO8601", errors="coerce")
    if iso.notna().all():
        return pd.DatetimeIndex(iso), notes

    probe = [v.strip() for v in probe]
    candidates = [f for f in _DATE_FORMATS if any(_strptime_ok(v, f) for v in probe)]
    results = {f: pd.to_datetime(text, format=f, errors="coerce") for f in candidates}
    complete = [f for f, r in results.items() if r.notna().all()]
    distinct: list[str] = []
    for f in complete:
        if not any(results[f].equals(results[g]) for g in distinct):
            distinct.append(f)
    if len(distinct) > 1:
        a, b = distinct[:2]
        pos = int(np.flatnonzero((results[a] != results[b]).to_numpy())[0])
        raise DataError(
            f"{source}: column {column!r}: dates are ambiguous: {text.iloc[pos]!r} (line "
            f"{lines[pos]}) reads as {_fmt_ts(results[a].iloc[pos])} with {a!r} or as "
            f"{_fmt_ts(results[b].iloc[pos])} with {b!r}; set data.date_format to the format "
            f"the file uses, e.g. date_format: {b!r}"
        )
    if distinct:
        notes.append(f"date format {distinct[0]!r} detected")
        log.debug("%s: date format %r detected", source, distinct[0])
        return pd.DatetimeIndex(results[distinct[0]]), notes

    results["ISO8601"] = iso
    best = max(results, key=lambda f: int(results[f].notna().sum()))
    if results[best].notna().any():
        hint = f"the other dates read as {best!r}; fix that row or set data.date_format"
    else:
        hint = "set data.date_format to the file's strftime format, e.g. date_format: '%d/%m/%Y'"
    raise unparseable(results[best], hint)


# Checks ------------------------------------------------------------------------


def _where(source: str, index: pd.DatetimeIndex, pos: int, lines: np.ndarray | None) -> str:
    when = _fmt_ts(index[pos])
    return f"{source}: line {lines[pos]} ({when})" if lines is not None else f"{source}: {when}"


def _first(mask: np.ndarray, lines: np.ndarray | None) -> tuple[int, str]:
    """Position of the first offending row (in file order) and a 'N rows' note."""
    hits = np.flatnonzero(mask)
    pos = int(hits[np.argmin(lines[hits])]) if lines is not None else int(hits[0])
    return pos, (f" ({len(hits)} rows have this problem)" if len(hits) > 1 else "")


def _check_prices(
    df: pd.DataFrame,
    source: str,
    lines: np.ndarray | None = None,
    names: dict[str, str] | None = None,
) -> None:
    """Raise DataError for the first non-positive price, high < low, or open/close out of range."""
    names = names or {}

    def name(col: str) -> str:
        return names.get(col, col)

    price_cols = [c for c in [*PRICE_COLUMNS, "adj_close"] if c in df.columns]
    values = {c: df[c].to_numpy(dtype="float64") for c in [*price_cols, "volume"] if c in df}
    for col in price_cols:
        bad = ~(values[col] > 0)
        if bad.any():
            pos, more = _first(bad, lines)
            raise DataError(
                f"{_where(source, df.index, pos, lines)}: column {name(col)!r} has non-positive "
                f"price {float(values[col][pos])!r}{more}; prices must be > 0"
            )
    if "volume" in values:
        bad = values["volume"] < 0
        if bad.any():
            pos, more = _first(bad, lines)
            raise DataError(
                f"{_where(source, df.index, pos, lines)}: column {name('volume')!r} is negative "
                f"({float(values['volume'][pos])!r}){more}; volume must be >= 0"
            )
    high, low = values["high"], values["low"]
    lo_name, hi_name = name("low"), name("high")
    bad = high < low
    if bad.any():
        pos, more = _first(bad, lines)
        raise DataError(
            f"{_where(source, df.index, pos, lines)}: column {hi_name!r} ({float(high[pos])!r}) "
            f"is below column {lo_name!r} ({float(low[pos])!r}){more}"
        )
    lo, hi = low * (1 - PRICE_TOLERANCE), high * (1 + PRICE_TOLERANCE)
    for col in ("close", "open"):
        v = values[col]
        bad = (v < lo) | (v > hi)
        if bad.any():
            pos, more = _first(bad, lines)
            raise DataError(
                f"{_where(source, df.index, pos, lines)}: column {name(col)!r} ({float(v[pos])!r}) "
                f"is outside [{lo_name}, {hi_name}] = [{float(low[pos])!r}, {float(high[pos])!r}]"
                f"{more}"
            )


def _order_and_dedupe(
    df: pd.DataFrame, source: str, lines: np.ndarray | None, unsorted_rows: str, info: LoadInfo
) -> tuple[pd.DataFrame, np.ndarray | None]:
    idx = df.index
    if not idx.is_monotonic_increasing:
        ts = idx.asi8
        back = np.flatnonzero(ts[1:] < ts[:-1]) + 1
        pos = int(back[0])
        where = f"line {lines[pos]}" if lines is not None else "row"
        first = f"{where} ({_fmt_ts(idx[pos])} after {_fmt_ts(idx[pos - 1])})"
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
        ts = _fmt_ts(df.index[pos])
        where = f"lines {lines[prev]} and {lines[pos]}" if lines is not None else "two rows"
        raise DataError(
            f"{source}: {where}: duplicate timestamp {ts} ({int(dup.sum())} duplicate(s) in all); "
            "keep one row per bar"
        )
    return df, lines


def _drop_null_rows(
    df: pd.DataFrame,
    labels: pd.Series,
    source: str,
    null_rows: str,
    info: LoadInfo,
    lines: np.ndarray | None = None,
    names: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Apply the null-row policy to rows with a missing price or volume."""
    isna = df.isna().to_numpy()
    nulls = isna.any(axis=1)
    if not nulls.any():
        return df
    where = labels[nulls].tolist()
    shown = ", ".join(map(str, where[:5])) + (", ..." if len(where) > 5 else "")
    if null_rows == "error":
        pos = int(np.flatnonzero(nulls)[0])
        col = str(df.columns[int(np.flatnonzero(isna[pos])[0])])
        at = f"line {lines[pos]} ({where[0]})" if lines is not None else str(where[0])
        raise DataError(
            f"{source}: {at}: null or missing value in column {(names or {}).get(col, col)!r} "
            f"({len(where)} such row(s): {shown}); remove them or set data.null_rows: drop"
        )
    log.warning(
        "%s: dropped %d row(s) with null values (data.null_rows: drop): %s",
        source,
        len(where),
        shown,
    )
    info.null_rows_dropped = len(where)
    return df[~nulls]


def _finish(
    df: pd.DataFrame,
    source: str,
    *,
    price: str,
    unsorted_rows: str,
    info: LoadInfo,
    lines: np.ndarray | None = None,
    names: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Numeric frame with a DatetimeIndex -> validated bars under the price policy."""
    df, lines = _order_and_dedupe(df, source, lines, unsorted_rows, info)
    _check_prices(df, source, lines, names)
    out = df[PRICE_COLUMNS].astype("float64")
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
    out.index = pd.DatetimeIndex(out.index, name="date").as_unit("ns")
    return out[BAR_COLUMNS]


# CSV ---------------------------------------------------------------------------


def _read_csv(
    path: str | Path,
    *,
    price: str = "adjusted",
    date_format: str | None = None,
    null_rows: str = "drop",
    unsorted_rows: str = "sort",
) -> tuple[pd.DataFrame, LoadInfo]:
    path = Path(path)
    source = _shown(path)
    info = LoadInfo(source=source)
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
            f"{source}: empty file (no header, no rows); expected a header like {_EXPECTED_HEADER}"
        ) from None
    cols = _map_columns(columns, source)
    text_cols = {cols[c]: str for c in ("date", "time") if c in cols}
    try:
        # Prices are parsed by the C reader; a column with a stray token comes back as
        # text and is checked cell by cell below to name the bad one.
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
    lines_all = np.arange(len(raw)) + 2
    blank = raw.isna().all(axis=1).to_numpy()
    if blank.any():
        log.debug("%s: %d blank line(s) ignored", source, int(blank.sum()))
    raw, lines = raw[~blank], lines_all[~blank]
    if raw.empty:
        raise DataError(f"{source}: empty file: a header but no data rows")
    info.rows_read = len(raw)

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
    frame = pd.DataFrame(numeric)

    date_text = raw[cols["date"]].fillna("").astype(str)
    if "time" in cols:
        date_text = date_text + " " + raw[cols["time"]].fillna("").astype(str)
    labels = pd.Series(raw[cols["date"]].fillna("").to_numpy())
    keep = ~frame.isna().any(axis=1).to_numpy()
    frame = _drop_null_rows(frame, labels, source, null_rows, info, lines, cols)
    date_text, lines = date_text[keep], lines[keep]

    dates, notes = _parse_dates(date_text, lines, date_format, source, cols["date"])
    info.notes.extend(notes)
    frame.index = dates
    bars = _finish(
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
    return _read_csv(
        path, price=price, date_format=date_format, null_rows=null_rows, unsorted_rows=unsorted_rows
    )[0]


def validate_bars(df: pd.DataFrame, source: str) -> None:
    """Raise DataError unless ``df`` is valid bars (the contract in docs/architecture.md).

    Checks the index (tz-naive, strictly increasing DatetimeIndex), the columns
    ``open..volume``, missing values and prices. Use it on bars that did not come
    through :func:`read_csv_bars`, e.g. read back from Parquet.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{source}: expected a DataFrame of bars, got {type(df).__name__}")
    if df.empty:
        raise DataError(f"{source}: no bars")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(f"{source}: the index must be dates (DatetimeIndex)")
    if df.index.tz is not None:
        raise DataError(f"{source}: the index must be tz-naive, got time zone {df.index.tz}")
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; bars need {BAR_COLUMNS}")
    nulls = df[BAR_COLUMNS].isna().to_numpy()
    if nulls.any():
        row, col = (int(v[0]) for v in np.nonzero(nulls))
        raise DataError(
            f"{source}: {_fmt_ts(df.index[row])}: column {BAR_COLUMNS[col]!r} is missing (NaN)"
        )
    if df.index.has_duplicates:
        ts = df.index[df.index.duplicated()][0]
        raise DataError(f"{source}: duplicate timestamp {_fmt_ts(ts)}; keep one row per bar")
    if not df.index.is_monotonic_increasing:
        pos = int(np.flatnonzero(np.diff(df.index.asi8) < 0)[0]) + 1
        raise DataError(
            f"{source}: dates are not increasing: {_fmt_ts(df.index[pos])} comes after "
            f"{_fmt_ts(df.index[pos - 1])}"
        )
    _check_prices(df, source)


# Online sources ----------------------------------------------------------------

_FRED_FIRST = datetime(1900, 1, 1)


def _as_ts(value: Any) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(value)


def fred_series(
    series: str, start: Any = None, end: Any = None, cache_dir: str | Path = "data/cache"
) -> pd.Series:
    """One FRED series (values as published, e.g. percent for DTB3), cached as Parquet.

    The whole series is downloaded once through pandas-datareader and kept in
    ``<cache_dir>/fred/<SERIES>.parquet``; any later call, online or not, reads that
    file and makes no network request (delete it to refresh). Missing observations
    (FRED's ``.`` on holidays) are dropped. Returns the values from ``start`` to
    ``end`` inclusive, indexed by ``date``.
    """
    path = safe_child(Path(cache_dir) / "fred", series, ".parquet")
    if path.is_file():
        values = pd.read_parquet(path).iloc[:, 0]
        log.debug("FRED %s from cache %s", series, path)
    else:
        from pandas_datareader.fred import FredReader  # lazy: only needed online

        try:
            frame = FredReader(
                series, start=_FRED_FIRST, end=datetime.now(), retry_count=1, pause=0.2
            ).read()
        except Exception as err:  # requests/pandas-datareader raise many kinds when offline
            raise DataError(
                f"could not download FRED series {series!r} ({type(err).__name__}: {err}); "
                f"no cached copy at {path}. Connect once to fill the cache, or use "
                "data.risk_free.source: constant"
            ) from None
        if frame.empty or frame.shape[1] != 1:
            raise DataError(f"FRED returned no data for series {series!r}; check the series id")
        values = frame.iloc[:, 0].astype("float64")
        values.index = pd.DatetimeIndex(values.index, name="date")
        values.name = series
        _write_parquet(values.to_frame(), path)
        log.info("FRED %s downloaded (%d observations), cached at %s", series, len(values), path)
    values = values.dropna()
    values.name = series
    last = values.index.max()
    end_ts = _as_ts(end)
    if end_ts is not None and pd.notna(last) and end_ts - last > pd.Timedelta(days=10):
        log.info("FRED %s: cache ends %s, before %s; delete %s to refresh", series, last, end, path)
    return values.loc[_as_ts(start) : end_ts]


def fred_bars(
    series: str, start: Any = None, end: Any = None, cache_dir: str | Path = "data/cache"
) -> tuple[pd.DataFrame, LoadInfo]:
    """A close-only FRED series (SP500, NASDAQCOM, ...) as bars: open = high = low = close.

    FRED publishes one value per day, so the bars have no range and no volume (0);
    a backtest filling at the next open fills at the next close. Logged once.
    """
    values = fred_series(series, start, end, cache_dir)
    info = LoadInfo(source=f"fred:{series}", rows_read=len(values))
    if values.empty:
        raise DataError(f"FRED series {series!r} has no observations between {start} and {end}")
    frame = pd.DataFrame({c: values.to_numpy() for c in PRICE_COLUMNS}, index=values.index)
    frame["volume"] = 0.0
    log.info("%s: close-only series: open = high = low = close, volume 0", info.source)
    bars = _finish(frame, info.source, price="raw", unsorted_rows="sort", info=info)
    info.price_series = "close only (FRED)"
    info.volume = "close-only series: set to 0"
    return bars, info


def _yfinance_raw(name: str, start: Any, end: Any, cache_dir: Path) -> pd.DataFrame:
    """Daily OHLCV with Adj Close from yfinance, cached per (ticker, start, end)."""
    tag = f"{name}_{start or 'first'}_{end or 'last'}"
    path = safe_child(cache_dir / "yfinance", tag, ".parquet")
    if path.is_file():
        log.debug("yfinance %s from cache %s", name, path)
        return pd.read_parquet(path)
    try:
        import yfinance as yf  # optional extra: pip install 'gatecast[online]'
    except ImportError:
        raise DataError(
            "data.source: yfinance needs the optional yfinance package: "
            "pip install -e '.[online]' (or use data.source: csv with files in data.directory)"
        ) from None
    end_excl = None if end is None else pd.Timestamp(end) + pd.Timedelta(days=1)
    try:
        got = yf.Ticker(name).history(
            start=start, end=end_excl, interval="1d", auto_adjust=False, actions=False
        )
    except Exception as err:  # yfinance wraps network errors in many types
        raise DataError(
            f"yfinance: could not download {name!r} ({type(err).__name__}: {err}); no cached "
            f"copy at {path}"
        ) from None
    if got is None or got.empty:
        raise DataError(f"yfinance returned no bars for {name!r}; check the ticker and dates")
    cols = _map_columns(["Date", *map(str, got.columns)], f"yfinance:{name}")
    frame = pd.DataFrame(
        {c: got[cols[c]].to_numpy(dtype="float64") for c in cols if c not in ("date", "time")}
    )
    index = pd.DatetimeIndex(got.index)
    if index.tz is not None:  # keep the exchange's wall-clock dates
        index = index.tz_localize(None)
    frame.index = pd.DatetimeIndex(index, name="date")
    _write_parquet(frame, path)
    log.info("yfinance %s downloaded (%d rows), cached at %s", name, len(frame), path)
    return frame


def _yfinance_bars(cfg: Config, name: str) -> tuple[pd.DataFrame, LoadInfo]:
    d = cfg.data
    source = f"yfinance:{name}"
    raw = _yfinance_raw(name, d.start, d.end, cfg.resolve(d.cache_directory))
    info = LoadInfo(source=source, rows_read=len(raw))
    labels = pd.Series([_fmt_ts(t) for t in raw.index])
    frame = _drop_null_rows(raw, labels, source, d.null_rows, info)
    bars = _finish(frame, source, price=d.price, unsorted_rows=d.unsorted_rows, info=info)
    return bars, info


# Instruments -------------------------------------------------------------------


def min_bars_required(cfg: Config) -> int:
    """Bars an instrument needs for one walk-forward fold.

    ``features.window`` bars of history for the first sample, then
    ``walkforward.train_bars`` to train on, ``walkforward.embargo`` dropped, and
    ``walkforward.test_bars`` out of sample.
    """
    wf = cfg.walkforward
    return cfg.features.window + wf.train_bars + wf.embargo + wf.test_bars


def _instrument_file(directory: Path, name: str) -> Path:
    path = safe_child(directory, name, ".csv")
    if path.is_file():
        return path
    if directory.is_dir():
        # Same name in another letter case, or Stooq's .txt downloads.
        for candidate in sorted(directory.iterdir()):
            if (
                candidate.suffix.lower() in (".csv", ".txt")
                and candidate.stem.lower() == name.lower()
            ):
                return safe_child(directory, candidate.stem, candidate.suffix)
        available = sorted(
            p.stem for p in directory.iterdir() if p.suffix.lower() in (".csv", ".txt")
        )
        listed = ", ".join(available) if available else "none"
        raise DataError(
            f"instrument {name!r}: no file {path.name} in {directory}; available: {listed}. "
            "Check data.instruments and data.directory"
        )
    raise DataError(f"instrument {name!r}: data.directory {directory} does not exist")


def _slice(bars: pd.DataFrame, start: date | None, end: date | None) -> pd.DataFrame:
    mask = np.ones(len(bars), dtype=bool)
    if start is not None:
        mask &= bars.index >= pd.Timestamp(start)
    if end is not None:  # end is a whole day, intraday bars included
        mask &= bars.index < pd.Timestamp(end) + pd.Timedelta(days=1)
    return bars[mask]


def _load(cfg: Config, name: str) -> tuple[pd.DataFrame, LoadInfo]:
    d = cfg.data
    if d.source == "csv":
        path = _instrument_file(cfg.resolve(d.directory), name)
        bars, info = _read_csv(
            path,
            price=d.price,
            date_format=d.date_format,
            null_rows=d.null_rows,
            unsorted_rows=d.unsorted_rows,
        )
    elif d.source == "yfinance":
        bars, info = _yfinance_bars(cfg, name)
    elif d.source == "fred":
        bars, info = fred_bars(name, d.start, d.end, cfg.resolve(d.cache_directory))
    else:  # the config's Literal should make this unreachable
        raise DataError(f"data.source {d.source!r} is not supported")
    full_range = f"{_fmt_ts(bars.index[0])} to {_fmt_ts(bars.index[-1])}"
    bars = _slice(bars, d.start, d.end)
    span = (
        f" between {d.start or 'the first bar'} and {d.end or 'the last bar'} (data.start/end)"
        if d.start or d.end
        else ""
    )
    if bars.empty:
        raise DataError(f"{info.source}: no bars{span}; the data covers {full_range}")
    need = min_bars_required(cfg)
    if len(bars) < need:
        wf = cfg.walkforward
        raise DataError(
            f"{info.source}: {len(bars)} bars{span}, but the configured windows need at least "
            f"{need} (features.window {cfg.features.window} + walkforward.train_bars "
            f"{wf.train_bars} + walkforward.embargo {wf.embargo} + walkforward.test_bars "
            f"{wf.test_bars}); widen the date range or shorten those windows"
        )
    return bars, info


def load_instrument(cfg: Config, instrument: str) -> pd.DataFrame:
    """Validated bars of one instrument from ``data.source``, with data.start/end applied."""
    return _load(cfg, instrument)[0]


def load_universe(cfg: Config) -> dict[str, pd.DataFrame]:
    """Validated bars of every instrument in ``data.instruments``, in config order."""
    return {name: load_instrument(cfg, name) for name in cfg.data.instruments}


def load_risk_free(cfg: Config, index: pd.DatetimeIndex) -> pd.Series:
    """Annual risk-free rate (decimal, 0.05 = 5%) for each date of ``index``.

    ``risk_free.source: constant`` repeats ``risk_free.rate``. ``fred`` reads the
    series (percent, e.g. DTB3) and divides by 100; each date takes the latest
    observation dated on or before it, never a later one, so a date before the
    series starts is an error rather than a value from the future.
    """
    rf = cfg.data.risk_free
    index = pd.DatetimeIndex(index)
    if rf.source == "constant":
        return pd.Series(float(rf.rate), index=index, name="risk_free")
    if len(index) == 0:
        return pd.Series([], index=index, dtype="float64", name="risk_free")
    # A month of look-back so the first date has a past observation to carry forward.
    start = index.min().normalize() - pd.Timedelta(days=31)
    values = fred_series(rf.series, start, index.max(), cfg.resolve(cfg.data.cache_directory))
    values = values / 100.0
    pos = values.index.searchsorted(index, side="right") - 1
    if len(values) == 0 or (pos < 0).any():
        first = (
            _fmt_ts(index[int(np.flatnonzero(pos < 0)[0])]) if len(values) else _fmt_ts(index[0])
        )
        raise DataError(
            f"risk-free series {rf.series!r} has no observation on or before {first}; use a "
            "later data.start or data.risk_free.source: constant"
        )
    return pd.Series(values.to_numpy()[pos], index=index, name="risk_free")


# The data stage ----------------------------------------------------------------


def _interval(index: pd.DatetimeIndex) -> str:
    if len(index) < 2:
        return "-"
    if (index == index.normalize()).all():
        return "daily"
    step = pd.Series(index).diff().median()
    minutes = int(step.total_seconds() // 60)
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}min"


def describe(bars: pd.DataFrame, info: LoadInfo) -> dict[str, Any]:
    """Summary of one instrument's bars: size, date range, interval and calendar gaps."""
    days = bars.index.normalize().unique()
    gaps = np.diff(days.asi8) / 86_400e9 if len(days) > 1 else np.array([])
    return {
        "bars": len(bars),
        "first": _fmt_ts(bars.index[0]),
        "last": _fmt_ts(bars.index[-1]),
        "interval": _interval(bars.index),
        f"gaps_over_{GAP_DAYS}_days": int((gaps > GAP_DAYS).sum()),
        "largest_gap_days": int(gaps.max()) if len(gaps) else 0,
        **asdict(info),
    }


def _table(rows: dict[str, dict[str, Any]]) -> str:
    table = pd.DataFrame(
        {
            "instrument": list(rows),
            "bars": [r["bars"] for r in rows.values()],
            "first": [r["first"] for r in rows.values()],
            "last": [r["last"] for r in rows.values()],
            "interval": [r["interval"] for r in rows.values()],
            f"gaps>{GAP_DAYS}d": [r[f"gaps_over_{GAP_DAYS}_days"] for r in rows.values()],
            "max gap (d)": [r["largest_gap_days"] for r in rows.values()],
            "dropped": [r["null_rows_dropped"] for r in rows.values()],
            "prices": [r["price_series"] for r in rows.values()],
        }
    )
    return table.to_string(index=False)


def run(cfg: Config) -> dict[str, Any]:
    """Load and validate every instrument, then write the Parquet files and summary.json.

    Nothing is written until every instrument has loaded, and each file is written
    atomically, so a failed run leaves no half-written outputs.
    """
    loaded = {name: _load(cfg, name) for name in cfg.data.instruments}
    rf = cfg.data.risk_free
    risk_free: dict[str, Any] = {"source": rf.source}
    if rf.source == "constant":
        risk_free["rate"] = rf.rate
    else:
        for bars, _ in loaded.values():  # fails early if the series misses a date
            load_risk_free(cfg, bars.index)
        cached = fred_series(rf.series, cache_dir=cfg.resolve(cfg.data.cache_directory))
        risk_free.update(
            series=rf.series, first=_fmt_ts(cached.index[0]), last=_fmt_ts(cached.index[-1])
        )
    out_dir = cfg.run_directory / "data"
    rows = {}
    for name, (bars, info) in loaded.items():
        path = safe_child(out_dir, name, ".parquet")
        _write_parquet(bars, path)
        rows[name] = {**describe(bars, info), "parquet": _shown(path)}
    summary = {
        "config": cfg.name,
        "min_bars_required": min_bars_required(cfg),
        "instruments": rows,
        "risk_free": risk_free,
    }
    _write_json(summary, out_dir / "summary.json")
    print(_table(rows))
    print(f"wrote {len(rows)} instrument(s) and summary.json to {out_dir}")
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines data``: load, validate and cache the bars; print a summary."""
    parser = stage_parser(
        "data",
        "Load, validate and cache the bars of every instrument in the config; write "
        "build/<name>/data/<INSTRUMENT>.parquet and summary.json and print a summary table.",
    )
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        run(config_from_args(args))
        return 0

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
