"""Gradient-boosted trees on lagged bar features: scikit-learn's HistGradientBoostingRegressor.

``fit`` learns the next log return from the last ``lags`` log returns (and,
optionally, log ranges and log volume changes) on the training segment only;
``predict`` applies the fitted trees row by row, each row built from bars up
to its date. ``tests/test_gbm.py`` proves it by removing and by replacing
every bar after a cut date.
"""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from sklearn.ensemble import HistGradientBoostingRegressor

from models.base import Forecaster, first_forecast_position
from models.features import build_features, next_log_return

__all__ = ["GbmConfig", "GbmForecaster"]


class GbmConfig(BaseModel):
    """Parameters of ``GbmForecaster`` (the keys under ``forecasters.gbm``).

    The seed is not one of them: the experiment's seed reaches the constructor.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lags: StrictInt = Field(10, ge=1, le=100, description="bars of each feature per sample")
    use_range: StrictBool = Field(False, description="add the last lags log(high / low)")
    use_volume: StrictBool = Field(False, description="add the last lags log volume changes")
    max_iter: StrictInt = Field(100, ge=1, le=10_000, description="boosting iterations (trees)")
    learning_rate: float = Field(
        0.05, gt=0, le=1, allow_inf_nan=False, description="shrinkage of each tree"
    )
    max_depth: StrictInt | None = Field(3, ge=1, description="depth of each tree; null = no limit")
    max_leaf_nodes: StrictInt | None = Field(
        31, ge=2, description="leaves of each tree; null = no limit"
    )
    min_samples_leaf: StrictInt = Field(50, ge=1, description="training samples in every leaf")
    l2_regularization: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="L2 penalty on the leaf values"
    )


class GbmForecaster(Forecaster):
    """Histogram gradient boosting of the next log return on lagged bar features.

    With ``r[s] = log(close[s] / close[s-1])``, the sample made at bar ``t`` has
    the features ``r[t], r[t-1], ..., r[t-lags+1]`` (then, if enabled, the same
    lags of ``log1p(volume)`` changes and of ``log(high / low)``, as
    ``models.features`` builds them) and the target ``r[t+1]``. ``fit`` trains
    scikit-learn's ``HistGradientBoostingRegressor`` (squared error) on the
    training segment's samples whose target is a training bar: the last one
    targets the segment's last bar. The forecast made at ``t`` is
    ``close[t] * exp(prediction(features[t]))``: it sees bars up to ``t`` only.

    Deterministic: early stopping is off, so no validation split is drawn, and
    the seed (the experiment's, as ``random_state``) only matters for the bin
    thresholds when a training segment exceeds 200 000 samples. Hence
    ``stochastic = False``: one run per experiment, not ``seeds`` runs.

    Args:
        lags: bars of each feature per sample (>= 1).
        use_range: add the last ``lags`` log high/low ranges.
        use_volume: add the last ``lags`` log volume changes.
        max_iter, learning_rate, max_depth, max_leaf_nodes, min_samples_leaf,
            l2_regularization: the regressor's parameters of the same names.
        seed: the regressor's ``random_state``.

    After ``fit``: ``model_`` (the fitted regressor) and ``feature_names_``.

    >>> GbmForecaster(lags=5).min_history
    6
    """

    name: ClassVar[str] = "gbm"
    Config: ClassVar[type[BaseModel]] = GbmConfig
    stochastic: ClassVar[bool] = False
    #: Fewer training samples than this give trees of a handful of leaves.
    min_fit_samples: ClassVar[int] = 50

    def __init__(
        self,
        lags: int = 10,
        use_range: bool = False,
        use_volume: bool = False,
        max_iter: int = 100,
        learning_rate: float = 0.05,
        max_depth: int | None = 3,
        max_leaf_nodes: int | None = 31,
        min_samples_leaf: int = 50,
        l2_regularization: float = 1.0,
        seed: int = 42,
    ) -> None:
        config = GbmConfig(
            lags=lags,
            use_range=use_range,
            use_volume=use_volume,
            max_iter=max_iter,
            learning_rate=learning_rate,
            max_depth=max_depth,
            max_leaf_nodes=max_leaf_nodes,
            min_samples_leaf=min_samples_leaf,
            l2_regularization=l2_regularization,
        )
        self.lags = config.lags
        self.use_range = config.use_range
        self.use_volume = config.use_volume
        self.max_iter = config.max_iter
        self.learning_rate = config.learning_rate
        self.max_depth = config.max_depth
        self.max_leaf_nodes = config.max_leaf_nodes
        self.min_samples_leaf = config.min_samples_leaf
        self.l2_regularization = config.l2_regularization
        self.seed = int(seed)

    @property
    def min_history(self) -> int:
        # Bar 0 has no return; the sample at t needs the returns of bars t-lags+1..t.
        return self.lags + 1

    def required_train_bars(self) -> int:
        """The fewest training bars ``fit`` accepts: ``min_fit_samples`` samples."""
        return self.min_history + self.min_fit_samples

    def _who(self) -> str:
        return f"gbm(lags={self.lags})"

    def _features(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Row ``t``: each feature at ``t, t-1, ..., t-lags+1``; NaN before ``min_history``."""
        base = build_features(bars, use_volume=self.use_volume, use_range=self.use_range)
        columns = {
            f"{column}_lag{lag}": base[column].shift(lag)
            for column in base.columns
            for lag in range(self.lags)
        }
        return pd.DataFrame(columns, index=bars.index)

    def fit(self, train: pd.DataFrame) -> Self:
        who = self._who()
        if len(train) < self.required_train_bars():
            raise ValueError(
                f"{who}: the training segment has {len(train)} bars, needs at least "
                f"{self.required_train_bars()}; lengthen walkforward.train_bars or lower lags"
            )
        features = self._features(train)
        # Samples from the first full row; the last bar's target lies past the segment.
        x = features.to_numpy()[self.min_history - 1 : -1]
        y = next_log_return(train).to_numpy()[self.min_history - 1 : -1]
        self.model_ = HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=False,
            random_state=self.seed,
        ).fit(x, y)
        self.feature_names_ = list(features.columns)
        return self

    def predict(self, bars: pd.DataFrame, start: pd.Timestamp) -> pd.Series:
        who = self._who()
        if not hasattr(self, "model_"):
            raise ValueError(f"{who}: call fit() before predict()")
        features = self._features(bars)
        first = first_forecast_position(bars.index, start, self.min_history, who)
        close = bars["close"].to_numpy(dtype="float64")[first:]
        next_return = self.model_.predict(features.to_numpy()[first:])
        forecast = close * np.exp(next_return)
        return pd.Series(forecast, index=bars.index[first:], name=self.name, dtype="float64")
