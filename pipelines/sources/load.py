"""Every instrument of a config loaded and validated: what the stages read bars through.

Bars come from ``data.source``: CSV files (:mod:`pipelines.sources.csv_bars`), FRED or
yfinance (:mod:`pipelines.sources.online`), through the policies of
:mod:`pipelines.sources.bar_policies` (documented in data/README.md), and keep the
contract of :mod:`core.bars`: a strictly increasing, tz-naive ``DatetimeIndex``
named ``date`` and float64 columns ``open, high, low, close, volume``. Every bad
input raises :class:`~pipelines.common.errors.DataError` naming the file, the line
(header = line 1) and/or date, and the column.

This module loads instruments per config (:func:`load_instrument`,
:func:`load_universe`) and gives the risk-free rate on bar dates
(:func:`load_risk_free`); the data stage (:mod:`pipelines.stages.data`) writes
them to files. It also re-exports what the stages import from here:
``read_csv_bars``, ``validate_bars``, ``fred_series``, ``fred_bars``,
``safe_child``, ``DataError``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from core.bars import format_timestamp
from core.periods import DAYS_PER_YEAR, bar_interval, is_daily_equity, periods_per_year
from pipelines.common.errors import ConfigError, DataError
from pipelines.common.outputs import safe_child
from pipelines.config import Config
from pipelines.sources.bar_policies import LoadInfo, check_contract
from pipelines.sources.csv_bars import read_csv_bars, read_csv_file
from pipelines.sources.online import fred_bars, fred_series, yfinance_bars

__all__ = [
    "DataError",
    "LoadInfo",
    "bars_per_year",
    "check_one_interval",
    "fred_bars",
    "fred_series",
    "load_instrument",
    "load_risk_free",
    "load_universe",
    "min_bars_required",
    "read_csv_bars",
    "safe_child",
    "validate_bars",
]

log = logging.getLogger("gatecast.data")

# Consecutive trading days further apart than this count as a calendar gap in the summary.
GAP_DAYS = 4


def validate_bars(df: pd.DataFrame, source: str) -> None:
    """Raise DataError unless ``df`` is bars in the stored form of :mod:`core.bars`.

    Checks the index (tz-naive, strictly increasing DatetimeIndex named ``date``),
    the columns (exactly ``open..volume``, float64), missing values and prices. Use
    it on bars that did not come through :func:`read_csv_bars`, e.g. read back from
    Parquet.
    """
    check_contract(df, source, exact=True)


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


def load_with_info(cfg: Config, name: str) -> tuple[pd.DataFrame, LoadInfo]:
    d = cfg.data
    if d.source == "csv":
        path = _instrument_file(cfg.resolve(d.directory), name)
        bars, info = read_csv_file(
            path,
            price=d.price,
            date_format=d.date_format,
            null_rows=d.null_rows,
            unsorted_rows=d.unsorted_rows,
        )
    elif d.source == "yfinance":
        bars, info = yfinance_bars(cfg, name)
    elif d.source == "fred":
        bars, info = fred_bars(name, d.start, d.end, cfg.resolve(d.cache_directory))
    else:  # the config's Literal should make this unreachable
        raise DataError(f"data.source {d.source!r} is not supported")
    full_range = f"{format_timestamp(bars.index[0])} to {format_timestamp(bars.index[-1])}"
    bars = _slice(bars, d.start, d.end)
    span = (
        f" between {d.start or 'the first bar'} and {d.end or 'the last bar'} (data.start/end)"
        if d.start or d.end
        else ""
    )
    if bars.empty:
        raise DataError(f"{info.source}: no bars{span}; the data covers {full_range}")
    _check_gaps(bars, cfg, info)
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


def _check_gaps(bars: pd.DataFrame, cfg: Config, info: LoadInfo) -> None:
    """Gaps longer than ``data.max_gap_days`` between two bars: warned (named) or refused."""
    limit = cfg.data.max_gap_days
    days = np.diff(bars.index.asi8) / 86_400e9
    where = np.flatnonzero(days > limit)
    if not len(where):
        return
    info.long_gaps = [
        f"{format_timestamp(bars.index[k])} to {format_timestamp(bars.index[k + 1])} "
        f"({days[k]:.0f} days)"
        for k in where
    ]
    shown_gaps = "; ".join(info.long_gaps[:3]) + (
        f"; and {len(where) - 3} more" if len(where) > 3 else ""
    )
    message = (
        f"{info.source}: {len(where)} gap(s) of more than {limit} days between bars: {shown_gaps}"
    )
    if cfg.data.long_gaps == "error":
        raise DataError(
            f"{message}; fill the missing bars, narrow data.start/end, or set data.long_gaps: "
            "warn (or a larger data.max_gap_days) to accept them"
        )
    log.warning("%s (data.long_gaps: error refuses such files)", message)


def check_one_interval(bars: Mapping[str, pd.DataFrame]) -> str:
    """The one bar interval of a run's instruments; ConfigError naming them if they differ.

    Annualised figures and pooled statistics need every instrument on the same
    clock: a run mixing hourly and daily bars would pool returns of different
    frequencies.
    """
    intervals = {name: bar_interval(frame.index) for name, frame in bars.items()}
    if len(set(intervals.values())) > 1:
        listed = ", ".join(f"{name} {interval}" for name, interval in intervals.items())
        raise ConfigError(
            f"data.instruments: bars of different intervals in one run ({listed}); put "
            "instruments of each interval in a config of their own"
        )
    return next(iter(intervals.values()), "-")


def bars_per_year(cfg: Config, bars: Mapping[str, pd.DataFrame]) -> float:
    """The run's bars per year, used by every annualised figure (see :mod:`core.periods`).

    ``data.periods_per_year`` when set; 252 when every instrument has daily
    equity bars; otherwise measured over all instruments together: their bars
    less one each, over their spans in years. Instruments of different
    intervals are refused (:func:`check_one_interval`).
    """
    check_one_interval(bars)
    if cfg.data.periods_per_year is not None:
        return float(cfg.data.periods_per_year)
    frames = list(bars.values())
    if frames and all(is_daily_equity(f.index) for f in frames):
        return periods_per_year(frames[0].index)
    steps = sum(len(f) - 1 for f in frames)
    years = sum((f.index[-1] - f.index[0]) / pd.Timedelta(days=DAYS_PER_YEAR) for f in frames)
    if steps < 1 or years <= 0:
        raise ConfigError(
            "data.periods_per_year: too few bars to measure bars per year; set it in the config"
        )
    return steps / years


def load_instrument(cfg: Config, instrument: str) -> pd.DataFrame:
    """Validated bars of one instrument from ``data.source``, with data.start/end applied."""
    return load_with_info(cfg, instrument)[0]


def load_universe(cfg: Config) -> dict[str, pd.DataFrame]:
    """Validated bars of every instrument in ``data.instruments``, in config order.

    Instruments of different bar intervals are refused (:func:`check_one_interval`).
    """
    bars = {name: load_instrument(cfg, name) for name in cfg.data.instruments}
    check_one_interval(bars)
    return bars


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
        missing = index[int(np.flatnonzero(pos < 0)[0])] if len(values) else index[0]
        first = format_timestamp(missing)
        raise DataError(
            f"risk-free series {rf.series!r} has no observation on or before {first}; use a "
            "later data.start or data.risk_free.source: constant"
        )
    return pd.Series(values.to_numpy()[pos], index=index, name="risk_free")
