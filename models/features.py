"""Model inputs built from bars, a train-only scaler, and windowing.

Every feature at row ``t`` is computed from bars up to and including ``t``
(known at ``t``'s close):

- ``log_return``: ``log(close_t / close_{t-1})``;
- ``log_volume_change`` (optional): ``log1p(volume_t) - log1p(volume_{t-1})``,
  ``log1p`` so that a zero-volume bar does not give an infinite value;
- ``log_range`` (optional): ``log(high_t / low_t)``, the bar's high-low range.

The first row has no previous bar, so its features are NaN and the first usable
row is the second bar. The supervised target at ``t`` is the *next* period's
log return ``log(close_{t+1} / close_t)``; it is the only quantity here that
looks one bar ahead, and it is used as a label, never as an input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import pandas as pd

from core.bars import BAR_COLUMNS, validate_bars

RETURN = "log_return"
VOLUME = "log_volume_change"
RANGE = "log_range"

# Bars of history a feature row needs (the previous close for the return).
FEATURE_WARMUP = 1


def feature_columns(*, use_volume: bool = True, use_range: bool = True) -> list[str]:
    """Names of the feature columns, in the order they are built."""
    return [RETURN] + ([VOLUME] if use_volume else []) + ([RANGE] if use_range else [])


def check_bars(bars: pd.DataFrame, what: str = "bars") -> None:
    """Raise ValueError (``core.bars.BarsError``) unless ``bars`` keeps the bars contract.

    Features read every bar column, so every one must be there.
    """
    validate_bars(bars, what, columns=BAR_COLUMNS)


def build_features(
    bars: pd.DataFrame, *, use_volume: bool = True, use_range: bool = True
) -> pd.DataFrame:
    """Feature frame indexed like ``bars``; row ``t`` uses bars up to ``t`` only.

    Args:
        bars: validated bars (``open, high, low, close, volume``).
        use_volume: add ``log_volume_change``.
        use_range: add ``log_range``.

    The first row is NaN (no previous bar).
    """
    check_bars(bars)
    close = bars["close"].to_numpy(dtype=np.float64)
    out = {RETURN: _diff(np.log(close))}
    if use_volume:
        out[VOLUME] = _diff(np.log1p(bars["volume"].to_numpy(dtype=np.float64)))
    if use_range:
        high = bars["high"].to_numpy(dtype=np.float64)
        low = bars["low"].to_numpy(dtype=np.float64)
        out[RANGE] = np.log(high / low)
        out[RANGE][:FEATURE_WARMUP] = np.nan  # same first usable row for every column
    return pd.DataFrame(
        out, index=bars.index, columns=feature_columns(use_volume=use_volume, use_range=use_range)
    )


def next_log_return(bars: pd.DataFrame) -> pd.Series:
    """Target at ``t``: ``log(close_{t+1} / close_t)``; NaN on the last bar."""
    log_close = np.log(bars["close"].to_numpy(dtype=np.float64))
    target = np.full(len(log_close), np.nan)
    target[:-1] = log_close[1:] - log_close[:-1]
    return pd.Series(target, index=bars.index, name="next_log_return")


def _diff(values: np.ndarray) -> np.ndarray:
    out = np.full(len(values), np.nan)
    out[1:] = values[1:] - values[:-1]
    return out


@dataclass(frozen=True)
class StandardScaler:
    """Per-column ``(x - mean) / std`` with statistics from the training segment only.

    Args:
        columns: feature names, in order.
        mean: per-column mean of the training rows.
        std: per-column population standard deviation (``ddof=0``); a column
            that is constant on the training rows gets ``std = 1`` so that it
            scales to zero instead of dividing by zero.
    """

    columns: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: pd.DataFrame) -> Self:
        """Fit on the rows of ``features`` where every column is finite."""
        values = features.to_numpy(dtype=np.float64)
        values = values[np.isfinite(values).all(axis=1)]
        if len(values) == 0:
            raise ValueError("cannot fit the feature scaler: no row with every feature finite")
        mean = values.mean(axis=0)
        std = values.std(axis=0)
        # A column of identical values can come out with a std of a few ulps of
        # its level instead of exactly zero; anything above that is real spread.
        tiny = std <= 64 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
        std = np.where(tiny, 1.0, std)
        return cls(columns=tuple(features.columns), mean=mean, std=std)

    def transform(self, features: pd.DataFrame) -> pd.DataFrame:
        """Scaled copy of ``features`` (columns must match the fitted ones)."""
        if tuple(features.columns) != self.columns:
            raise ValueError(
                f"feature columns {list(features.columns)} differ from the fitted "
                f"{list(self.columns)}"
            )
        values = (features.to_numpy(dtype=np.float64) - self.mean) / self.std
        return pd.DataFrame(values, index=features.index, columns=features.columns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (floats round-trip exactly through ``json``)."""
        return {
            "columns": list(self.columns),
            "mean": [float(x) for x in self.mean],
            "std": [float(x) for x in self.std],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(
            columns=tuple(data["columns"]),
            mean=np.asarray(data["mean"], dtype=np.float64),
            std=np.asarray(data["std"], dtype=np.float64),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StandardScaler):
            return NotImplemented
        return (
            self.columns == other.columns
            and np.array_equal(self.mean, other.mean)
            and np.array_equal(self.std, other.std)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside


def sliding_windows(values: np.ndarray, window: int) -> np.ndarray:
    """All windows of ``window`` consecutive rows: shape ``(n - window + 1, window, f)``.

    Window ``k`` holds rows ``k .. k + window - 1``, so it *ends* at row
    ``k + window - 1`` and contains nothing after it.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D (rows, features) array, got shape {values.shape}")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if len(values) < window:
        raise ValueError(f"{len(values)} rows are fewer than the window of {window}")
    return np.ascontiguousarray(_window_view(values, window))


def _window_view(values: np.ndarray, window: int) -> np.ndarray:
    # sliding_window_view gives (n - window + 1, f, window); callers want
    # (samples, window, features). A read-only view: index it before copying.
    return np.lib.stride_tricks.sliding_window_view(values, window, axis=0).transpose(0, 2, 1)


def windows_ending_at(
    features: pd.DataFrame, window: int, dates: Sequence[pd.Timestamp] | pd.DatetimeIndex
) -> np.ndarray:
    """Windows of ``features`` ending at each date in ``dates`` (rows up to the date only).

    Raises ValueError when a date has fewer than ``window`` feature rows at or
    before it, or when a window holds a non-finite value.
    """
    positions = features.index.get_indexer(pd.DatetimeIndex(dates))
    if (positions < 0).any():
        raise ValueError("every window end date must be a bar date")
    first_valid = FEATURE_WARMUP
    too_early = positions - window + 1 < first_valid
    if too_early.any():
        date = pd.DatetimeIndex(dates)[np.argmax(too_early)]
        raise ValueError(
            f"not enough history for a {window}-bar window ending on {date.date()}: it needs "
            f"{window + FEATURE_WARMUP} bars up to that date"
        )
    out = _window_view(features.to_numpy(dtype=np.float64), window)[positions - window + 1]
    finite = np.isfinite(out).all(axis=(1, 2))
    if not finite.all():
        date = pd.DatetimeIndex(dates)[np.argmin(finite)]
        raise ValueError(f"non-finite feature value in the window ending on {date.date()}")
    return out


def supervised_windows(
    features: pd.DataFrame, target: pd.Series, window: int
) -> tuple[np.ndarray, np.ndarray, pd.DatetimeIndex]:
    """Every (window ending at ``t``, target at ``t``) pair with finite values.

    Args:
        features: feature frame (scaled or not), first rows may be NaN.
        target: the label at ``t`` (here the next log return), same index.
        window: rows per sample.

    Returns ``X`` of shape ``(samples, window, features)``, ``y`` of shape
    ``(samples,)`` and the window end dates, in chronological order.
    """
    if not features.index.equals(target.index):
        raise ValueError("features and target must share one index")
    values = features.to_numpy(dtype=np.float64)
    if len(values) < window:
        empty = np.empty((0, window, values.shape[1]))
        return empty, np.empty(0), pd.DatetimeIndex([], name=features.index.name)
    view = _window_view(values, window)
    ends = np.arange(window - 1, len(values))
    y = target.to_numpy(dtype=np.float64)[ends]
    keep = np.isfinite(y) & np.isfinite(view).all(axis=(1, 2))
    return np.ascontiguousarray(view[keep]), y[keep], features.index[ends[keep]]
