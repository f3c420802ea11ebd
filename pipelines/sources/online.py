"""Online sources: FRED (pandas-datareader) and yfinance, each download cached as Parquet.

A download is kept under ``data.cache_directory`` (``fred/<SERIES>.parquet``,
``yfinance/<TICKER>_<start>_<end>.parquet``) and any later call, online or not,
reads that file and makes no network request; delete it to refresh. Offline
without a cached copy is a :class:`~pipelines.common.errors.DataError` that says so.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core.bars import INDEX_NAME, PRICE_COLUMNS, format_timestamp
from pipelines.common.errors import DataError
from pipelines.common.outputs import safe_child, write_parquet
from pipelines.config import Config
from pipelines.sources.bar_policies import LoadInfo, drop_null_rows, finish_bars, map_columns

log = logging.getLogger("gatecast.data")

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
        values.index = pd.DatetimeIndex(values.index, name=INDEX_NAME)
        values.name = series
        write_parquet(path, values.to_frame())
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
    bars = finish_bars(frame, info.source, price="raw", unsorted_rows="sort", info=info)
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
    cols = map_columns(["Date", *map(str, got.columns)], f"yfinance:{name}")
    frame = pd.DataFrame(
        {c: got[cols[c]].to_numpy(dtype="float64") for c in cols if c not in ("date", "time")}
    )
    index = pd.DatetimeIndex(got.index)
    if index.tz is not None:  # keep the exchange's wall-clock dates
        index = index.tz_localize(None)
    frame.index = pd.DatetimeIndex(index, name=INDEX_NAME)
    write_parquet(path, frame)
    log.info("yfinance %s downloaded (%d rows), cached at %s", name, len(frame), path)
    return frame


def yfinance_bars(cfg: Config, name: str) -> tuple[pd.DataFrame, LoadInfo]:
    """Bars of ticker ``name`` from yfinance for data.start..end, under the config's policies."""
    d = cfg.data
    source = f"yfinance:{name}"
    raw = _yfinance_raw(name, d.start, d.end, cfg.resolve(d.cache_directory))
    info = LoadInfo(source=source, rows_read=len(raw))
    labels = pd.Series([format_timestamp(t) for t in raw.index])
    frame = drop_null_rows(raw, labels, source, d.null_rows, info)
    bars = finish_bars(frame, source, price=d.price, unsorted_rows=d.unsorted_rows, info=info)
    return bars, info
