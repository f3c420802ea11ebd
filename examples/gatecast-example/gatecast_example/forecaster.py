"""A drift forecaster: the next close is the last close grown by the recent mean log return."""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from models.base import Forecaster, closes, first_forecast_position


class DriftConfig(BaseModel):
    """The parameters of ``forecasters.<name>`` for a drift forecaster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: StrictInt = Field(20, ge=1, description="log returns averaged, up to and including t")


class DriftForecaster(Forecaster):
    """Random walk with drift: ``forecast[t] = close[t] * exp(mean(r[t-window+1..t]))``.

    ``r[s] = log(close[s] / close[s-1])``. The mean of the last ``window`` log
    returns telescopes to ``(log close[t] - log close[t-window]) / window``, so
    the forecast is computed from two closes and carries no running-sum error.
    At ``t`` it sees ``close[t-window]`` to ``close[t]`` only; the first
    forecast needs ``window + 1`` bars up to and including it. ``fit`` only
    checks that the training segment holds that many bars: nothing is estimated.

    Args:
        window: number of log returns averaged (>= 1).
    """

    name: ClassVar[str] = "drift"
    label: ClassVar[str | None] = "Drift"
    Config: ClassVar[type[BaseModel]] = DriftConfig

    def __init__(self, window: int = 20) -> None:
        if isinstance(window, bool) or int(window) != window or window < 1:
            raise ValueError(f"drift: window must be a positive integer, got {window!r}")
        self.window = int(window)

    @property
    def min_history(self) -> int:
        # window returns need one close more than returns
        return self.window + 1

    def required_train_bars(self) -> int:
        """The fewest training bars ``fit`` accepts: one full window of returns."""
        return self.min_history

    def _who(self) -> str:
        return f"drift(window={self.window})"

    def fit(self, train: pd.DataFrame) -> Self:
        close = closes(train, self._who())
        if len(close) < self.required_train_bars():
            raise ValueError(
                f"{self._who()}: the training segment has {len(close)} bars, needs at least "
                f"{self.required_train_bars()}; lengthen walkforward.train_bars or shorten "
                "the window"
            )
        return self

    def predict(self, bars: pd.DataFrame, start: pd.Timestamp) -> pd.Series:
        who = self._who()
        close = closes(bars, who)
        first = first_forecast_position(close.index, start, self.min_history, who)
        values = close.to_numpy()
        log_close = np.log(values)
        now = log_close[first:]
        then = log_close[first - self.window : len(log_close) - self.window]
        forecast = values[first:] * np.exp((now - then) / self.window)
        return pd.Series(forecast, index=close.index[first:], name=self.name, dtype="float64")
