"""Backtrader data feed for bars plus a forecast line, and the checks on its input.

A forecast crosses into Backtrader as data, never as a model call: the value
on the line at bar ``t`` is the forecast of the close of bar ``t + 1`` made at
the close of bar ``t`` (``models.base.Forecaster`` indexes forecasts by the
date they are made), so a strategy reads it in ``next()`` at ``t`` and its
market order fills at the open of ``t + 1``.
"""

from __future__ import annotations

import datetime as _dt
import math

import backtrader as bt
import numpy as np
import pandas as pd

from core import bars as core_bars
from core.bars import PRICE_COLUMNS

_ORDINAL_1970 = _dt.date(1970, 1, 1).toordinal()


def _show(dates: pd.Index, limit: int = 5) -> str:
    shown = ", ".join(str(pd.Timestamp(d).date()) for d in dates[:limit])
    more = f" and {len(dates) - limit} more" if len(dates) > limit else ""
    return shown + more


def validate_bars(bars: pd.DataFrame) -> None:
    """Raise ValueError (``core.bars.BarsError``) unless ``bars`` can feed a backtest.

    The bars contract of ``core.bars`` for the columns a feed reads (open, high,
    low, close; volume is optional and 0 when absent), and at least two bars.
    """
    core_bars.validate_bars(bars, "bars", columns=PRICE_COLUMNS)
    if len(bars) < 2:
        raise core_bars.BarsError(f"bars need at least 2 rows to backtest, got {len(bars)}")


def align_forecast(bars: pd.DataFrame, forecast: pd.Series) -> pd.Series:
    """Check that ``forecast`` has exactly the dates of ``bars``; return it as float.

    A forecast on other dates than the prices would silently pair a forecast
    with the wrong close, so both missing and extra dates are errors.

    Args:
        bars: the price bars (already validated).
        forecast: next-close forecasts indexed by the date they are made;
            NaN where no forecast exists (e.g. before the out-of-sample start).
    """
    if not isinstance(forecast, pd.Series):
        raise ValueError(f"forecast must be a pandas Series, got {type(forecast).__name__}")
    name = forecast.name if forecast.name is not None else "forecast"
    if not isinstance(forecast.index, pd.DatetimeIndex):
        raise ValueError(f"forecast {name!r} must be indexed by date like the bars")
    if forecast.index.has_duplicates:
        dup = forecast.index[forecast.index.duplicated()]
        raise ValueError(f"forecast {name!r} repeats dates: {_show(dup)}")
    if not forecast.index.equals(bars.index):
        missing = bars.index.difference(forecast.index)
        extra = forecast.index.difference(bars.index)
        parts = []
        if len(missing):
            parts.append(f"missing for {len(missing)} bar date(s): {_show(missing)}")
        if len(extra):
            parts.append(f"extra date(s) with no bar: {_show(extra)}")
        if not parts:
            parts.append("same dates in a different order")
        raise ValueError(
            f"forecast {name!r} does not line up with the price bars ({'; '.join(parts)}); "
            "reindex it to the bars' dates (NaN where there is no forecast)"
        )
    values = forecast.astype(float)
    if np.isinf(values.to_numpy()).any():
        raise ValueError(
            f"forecast {name!r} has infinite values on {_show(values.index[np.isinf(values)])}"
        )
    return values


class ForecastData(bt.feeds.PandasData):
    """OHLCV bars plus a ``forecast`` line: the next-close forecast made at each bar's close.

    Rows are read from NumPy arrays prepared once in ``start`` instead of
    ``DataFrame.iloc`` per field and row, and a preloaded feed (Backtrader's
    default) takes each column into its line in one step instead of bar by
    bar; the values on every line are the same as PandasData's.

    Args:
        dataname: frame with columns open, high, low, close, volume and
            optionally forecast (see ``make_feed``), indexed by date.
    """

    lines = ("forecast",)
    params = (("forecast", -1), ("openinterest", None))

    def start(self):
        super().start()
        frame = self.p.dataname
        self._columns = []
        for field in self.getlinealiases():
            if field == "datetime":
                continue
            column = self._colmapping.get(field)
            if column is None:
                continue
            values = frame.iloc[:, column].to_numpy(dtype=float)
            self._columns.append((getattr(self.lines, field), values))
        self._datenums = date_numbers(frame.index)
        self._rows = len(frame)

    def preload(self):
        # Backtrader's preload calls load() once a bar to run filters, time zones and date
        # bounds; with none of them every row is kept as it is, so the lines take the columns.
        if (
            self._filters
            or self._ffilters
            or self._tzinput
            or self.fromdate != -math.inf
            or self.todate != math.inf
        ):
            return super().preload()
        first = self._idx + 1
        rows = self._rows - first
        columns = {id(line): values for line, values in self._columns}
        columns[id(self.lines.datetime)] = self._datenums
        for line in self.lines.lines:
            values = columns.get(id(line))
            # lines with no column (openinterest) stay NaN, as forward() leaves them
            block = np.full(rows, np.nan) if values is None else values[first:]
            line.array.frombytes(np.ascontiguousarray(block, dtype=np.float64).tobytes())
            line.idx += rows
            line.lencount += rows
        self._idx += rows
        self._last()
        self.home()

    def _load(self):
        self._idx += 1
        i = self._idx
        if i >= self._rows:
            return False
        for line, values in self._columns:
            line[0] = values[i]
        self.lines.datetime[0] = float(self._datenums[i])
        return True


def make_feed(
    bars: pd.DataFrame, forecast: pd.Series | None = None, name: str = "", first: int = 0
) -> ForecastData:
    """A ``ForecastData`` feed for ``bars``; the forecast line is NaN when none is given.

    Args:
        bars: price bars (see ``validate_bars``); a ``forecast`` column is used
            when ``forecast`` is None.
        forecast: next-close forecasts on exactly the bars' dates.
        name: feed name shown on charts.
        first: position of the first bar fed to Backtrader; the bars before it
            (and their forecasts) are checked like the rest but not fed.
    """
    validate_bars(bars)
    frame = pd.DataFrame(index=bars.index)
    for column in PRICE_COLUMNS:
        frame[column] = bars[column].astype(float)
    frame["volume"] = bars["volume"].astype(float) if "volume" in bars.columns else 0.0
    if forecast is None and "forecast" in bars.columns:
        forecast = bars["forecast"]
    frame["forecast"] = np.nan if forecast is None else align_forecast(bars, forecast)
    if not 0 <= first < len(frame):
        raise ValueError(f"first bar to feed must be in [0, {len(frame)}), got {first!r}")
    return ForecastData(dataname=frame.iloc[first:], name=name)


def date_numbers(index: pd.DatetimeIndex) -> np.ndarray:
    """``bt.date2num`` of every date in ``index``, as float64, computed in one pass.

    Daily bars sit at midnight, where Backtrader's float date is the
    proleptic ordinal of the day exactly; other times go through
    ``bt.date2num`` one by one so that the floats are the same bit for bit.
    """
    if len(index) and (index == index.normalize()).all():
        days = index.to_numpy(dtype="datetime64[D]").astype(np.int64)
        return (days + _ORDINAL_1970).astype(np.float64)
    return np.array([bt.date2num(ts) for ts in index.to_pydatetime()], dtype=np.float64)


def date_number(when: _dt.date | str | pd.Timestamp | None) -> float:
    """Backtrader's float date of ``when`` (-inf for None), as ``ForecastData`` stores bar dates.

    A bar is on or after ``when`` exactly when its datetime line is
    ``>= date_number(when)``, so ``next()`` compares two floats.
    """
    if when is None:
        return float("-inf")
    return bt.date2num(pd.Timestamp(when).to_pydatetime())
