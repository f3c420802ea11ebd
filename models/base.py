"""The one small interface every forecaster implements.

A forecaster is fit on a training history, then produces, for every bar ``t``
of a period, the forecast of the *next* bar's close made with bars up to and
including ``t`` only. Forecasts are indexed by the date they are made on
(``t``), not by the date they forecast (``t+1``), so a strategy can read the
forecast on the same bar at whose close it becomes known and trade on the next
bar's open.

Bars are a ``pandas.DataFrame`` with a strictly increasing, tz-naive
``DatetimeIndex`` named ``date`` and float columns ``open``, ``high``, ``low``,
``close``, ``volume``: the contract of ``core.bars``, which checks it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Self

import pandas as pd

from core.bars import BAR_COLUMNS

__all__ = ["BAR_COLUMNS", "Forecaster"]


class Forecaster(ABC):
    """Fit on a training segment, then forecast next closes without look-ahead.

    Subclasses set ``name`` and implement ``fit`` and ``predict``.
    """

    name: ClassVar[str]

    @property
    def min_history(self) -> int:
        """Bars of history needed before the first forecast can be made."""
        return 1

    def required_train_bars(self) -> int:
        """Bars a training segment needs for ``fit`` (at least ``min_history``)."""
        return self.min_history

    @abstractmethod
    def fit(self, train: pd.DataFrame) -> Self:
        """Estimate parameters on ``train`` (the training segment only)."""

    @abstractmethod
    def predict(self, bars: pd.DataFrame, start: pd.Timestamp) -> pd.Series:
        """Next-close forecasts for every ``t`` in ``bars.index`` with ``t >= start``.

        ``bars`` holds the history before ``start`` (for warm-up) followed by
        the bars of the forecast period; the value at ``t`` may use
        ``bars.loc[:t]`` only. Returns a float Series indexed by ``t``, named
        after the forecaster.
        """

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"
