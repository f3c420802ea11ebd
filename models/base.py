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

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import pandas as pd
from pydantic import BaseModel

from core.bars import BAR_COLUMNS, validate_bars

__all__ = ["BAR_COLUMNS", "BuildContext", "Forecaster", "closes", "first_forecast_position"]


@dataclass(frozen=True)
class BuildContext:
    """What a config gives every forecaster beside its own parameters.

    Attributes:
        seed: The seed of this fit (a stochastic forecaster's run of ``seeds``
            gets one each); deterministic forecasters ignore it.
        features: The experiment's ``features`` section (``window``,
            ``use_volume``, ``use_range``), for forecasters built on windows of
            bar features.
    """

    seed: int = 42
    features: Mapping[str, Any] = field(default_factory=dict)


class Forecaster(ABC):
    """Fit on a training segment, then forecast next closes without look-ahead.

    Subclasses set ``name`` and implement ``fit`` and ``predict``. What a
    pipeline does with a forecaster follows from what its class declares, never
    from its name:

    - ``Config``: a pydantic model of its parameters (the keys under
      ``forecasters.<name>`` in a config); None takes the constructor's keyword
      arguments, checked against its signature.
    - ``stochastic``: a seed reaches it, so it runs ``seeds`` times and is
      reported as mean ± std.
    - ``introspection``: it has per-unit internals the report can draw
      (``gate_activations_per_unit(bars, start)``, gate name -> dates x units: the
      LSTM's gates).
    - ``export``: it can be saved as an MLflow pyfunc model and registered; it
      implements ``save(directory)``, ``load(directory)`` (a classmethod),
      ``to_bytes()`` and ``from_bytes(data)`` (a classmethod), which round-trip
      a fitted forecaster with identical forecasts; ``save_bytes(data,
      directory)`` writes what ``save`` would from ``to_bytes``' data (the
      default rebuilds the forecaster first; a class whose bytes hold ``save``'s
      files overrides it to write them straight, as the LSTM does).
    - ``device``: it computes with Keras/TensorFlow, on a GPU where the config's
      ``device`` allows; Keras is seeded before each fit. Where no forecaster of a
      config declares it, no process of the stage starts TensorFlow.
    """

    name: ClassVar[str]
    label: ClassVar[str | None] = None  # how a report calls it ("LSTM"); None: its name
    Config: ClassVar[type[BaseModel] | None] = None
    stochastic: ClassVar[bool] = False
    introspection: ClassVar[bool] = False
    export: ClassVar[bool] = False
    device: ClassVar[bool] = False

    @classmethod
    def from_config(cls, params: Mapping[str, Any], context: BuildContext) -> Self:
        """A fresh forecaster from its validated parameters and the experiment's context.

        The default passes ``params`` as keyword arguments, and ``seed`` too where
        the constructor takes one; a forecaster that reads ``features`` overrides it.
        """
        kwargs = dict(params)
        if "seed" in inspect.signature(cls).parameters and "seed" not in kwargs:
            kwargs["seed"] = context.seed
        return cls(**kwargs)

    @classmethod
    def settle(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with every setting a process would choose for itself fixed.

        A pipeline calls this once, in its driver, and builds every fit of the
        forecaster, in whatever process, from the result, so a setting that
        depends on the machine (a thread or core count) is the same everywhere and
        every process trains the same model. The default changes nothing.
        """
        return dict(params)

    @classmethod
    def save_bytes(cls, data: bytes, directory: str | Path) -> None:
        """Write to ``directory`` what ``save`` writes, from the bytes ``to_bytes`` made
        (an ``export`` forecaster's; the driver registers models from its units' bytes)."""
        cls.from_bytes(data).save(directory)  # type: ignore[attr-defined]

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


# Input checks every forecaster's predict makes ---------------------------------------


def closes(bars: pd.DataFrame, who: str) -> pd.Series:
    """The ``close`` column of ``bars`` as float64, after the bars contract's checks.

    Only ``close`` must be there; every bar column present is checked (``core.bars``).
    """
    validate_bars(bars, who, columns=("close",))
    return bars["close"].astype("float64")


def first_forecast_position(
    index: pd.DatetimeIndex, start: pd.Timestamp, min_history: int, who: str
) -> int:
    """Position of the first ``t >= start`` in ``index``, checked to have enough history."""
    first = int(index.searchsorted(pd.Timestamp(start)))
    if first >= len(index):
        last = index[-1].date() if len(index) else "no bars"
        raise ValueError(
            f"{who}: no bars on or after start {pd.Timestamp(start).date()} (last bar: {last})"
        )
    if first + 1 < min_history:
        raise ValueError(
            f"{who}: the first forecast ({index[first].date()}) needs {min_history} bars "
            f"up to and including it, got {first + 1}; pass more warm-up bars before start "
            "or shorten the forecaster's window"
        )
    return first
