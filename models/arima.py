"""ARIMA on log returns: a statsmodels SARIMAX fit on the training segment, then filtered.

``fit`` estimates the ARIMA(p, d, q) parameters by maximum likelihood on the
training segment's log returns; ``predict`` keeps them fixed and runs the
Kalman filter over the bars it is given, so the forecast made at ``t`` is a
function of ``bars.loc[:t]`` alone. ``tests/test_arima.py`` proves it by
removing and by replacing every bar after a cut date.
"""

from __future__ import annotations

import logging
import warnings
from typing import Annotated, ClassVar, Literal, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from statsmodels.tools.sm_exceptions import ConvergenceWarning, EstimationWarning
from statsmodels.tsa.statespace.sarimax import SARIMAX, SARIMAXResults

from models.base import Forecaster, closes, first_forecast_position

log = logging.getLogger(__name__)

__all__ = ["ArimaConfig", "ArimaForecaster"]

# The model runs on 100 * log returns (percent): variances near 1 instead of
# 1e-4 keep the likelihood optimiser well scaled, and statsmodels' switch to the
# steady-state Kalman gain (an absolute tolerance on the state covariance) does
# not come early. ``params_`` is reported in units of the log return.
_SCALE = 100.0


class ArimaConfig(BaseModel):
    """Parameters of ``ArimaForecaster`` (the keys under ``forecasters.arima``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order: tuple[
        Annotated[StrictInt, Field(ge=0, le=10)],
        Annotated[StrictInt, Field(ge=0, le=2)],
        Annotated[StrictInt, Field(ge=0, le=10)],
    ] = Field(
        (1, 0, 1),
        description="(p, d, q) of the log returns: AR lags (0-10), differences (0-2), "
        "MA lags (0-10)",
    )
    trend: Literal["c", "n"] = Field(
        "c",
        description="'c': a constant term (of the d-times differenced returns); 'n': none",
    )


class ArimaForecaster(Forecaster):
    """ARIMA(p, d, q) on log returns, parameters fixed after ``fit``, Kalman-filtered.

    With ``r[s] = log(close[s] / close[s-1])``, statsmodels ``SARIMAX`` models
    ``phi(L) (1 - L)^d r[s] = c + theta(L) e[s]`` (``c`` with ``trend="c"``).
    ``fit`` estimates the parameters by maximum likelihood on the training
    segment only. ``predict`` keeps them fixed (no re-estimation) and runs the
    Kalman filter (never the smoother) from the first bar it is given, so the
    forecast made at ``t`` is ``close[t] * exp(E[r[t+1] | r[1..t]])``: it sees
    closes up to ``t`` only. That is the conditional median of the next close
    under Gaussian errors.

    Args:
        order: ``(p, d, q)``; default ``(1, 0, 1)``.
        trend: ``"c"`` for a constant (default) or ``"n"`` for none.

    After ``fit``: ``params_`` (Series, statsmodels' names, in units of the log
    return) and ``converged_``.

    >>> ArimaForecaster(order=(1, 0, 0)).min_history
    2
    """

    name: ClassVar[str] = "arima"
    Config: ClassVar[type[BaseModel]] = ArimaConfig
    #: Fewer training bars than this give a meaningless likelihood maximum.
    min_fit_bars: ClassVar[int] = 50

    def __init__(self, order: tuple[int, int, int] = (1, 0, 1), trend: str = "c") -> None:
        config = ArimaConfig(order=tuple(order), trend=trend)
        self.order = config.order
        self.trend = config.trend

    @property
    def min_history(self) -> int:
        # One return needs two closes; each difference needs one return more.
        return self.order[1] + 2

    def required_train_bars(self) -> int:
        """The fewest training bars ``fit`` accepts (``min_fit_bars`` plus one per lag)."""
        p, d, q = self.order
        return max(self.min_fit_bars + p + d + q, self.min_history)

    def _who(self) -> str:
        return f"arima(order={self.order}, trend={self.trend!r})"

    def _model(self, returns: np.ndarray) -> SARIMAX:
        return SARIMAX(_SCALE * returns, order=self.order, trend=self.trend)

    def fit(self, train: pd.DataFrame) -> Self:
        who = self._who()
        close = closes(train, who)
        if len(close) < self.required_train_bars():
            raise ValueError(
                f"{who}: the training segment has {len(close)} bars, needs at least "
                f"{self.required_train_bars()}; lengthen walkforward.train_bars or lower the order"
            )
        model = self._model(np.diff(np.log(close)))
        with warnings.catch_warnings():
            # Non-convergence is read from mle_retvals below and logged with the fold.
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
            # statsmodels falls back to zeros when its own starting values for the
            # AR / MA polynomials are not stationary / invertible: harmless.
            warnings.filterwarnings("ignore", "Non-stationary starting", EstimationWarning)
            warnings.filterwarnings("ignore", "Non-invertible starting", EstimationWarning)
            self.result_: SARIMAXResults = model.fit(disp=False)
        scale = {"intercept": _SCALE, "sigma2": _SCALE**2}
        params = np.asarray(self.result_.params, dtype="float64")
        names = list(model.param_names)
        self.params_ = pd.Series(
            [v / scale.get(n, 1.0) for n, v in zip(names, params, strict=True)], index=names
        )
        self.converged_ = bool(self.result_.mle_retvals.get("converged", True))
        if not self.converged_:
            # The last iterate is still a valid set of parameters; say so and go on.
            log.warning(
                "%s: maximum likelihood did not converge on %d training bars ending %s; "
                "using the last iterate %s",
                who,
                len(train),
                train.index[-1].date(),
                self.params_.to_dict(),
            )
        return self

    def predict(self, bars: pd.DataFrame, start: pd.Timestamp) -> pd.Series:
        who = self._who()
        if not hasattr(self, "result_"):
            raise ValueError(f"{who}: call fit() before predict()")
        close = closes(bars, who)
        first = first_forecast_position(close.index, start, self.min_history, who)
        values = close.to_numpy()
        # Position j of `returns` is r[j+1]; the NaN after the last bar's return
        # stands for the unknown r[len]. The filter's one-step-ahead prediction
        # at position j is E[r[j+1] | r[1..j]], made at bar j: the forecast at t
        # is position t, and the NaN makes the last bar's forecast an ordinary one.
        returns = np.append(np.diff(np.log(values)), np.nan)
        filtered = self.result_.apply(_SCALE * returns, refit=False)
        next_return = np.asarray(filtered.forecasts[0], dtype="float64") / _SCALE
        forecast = values[first:] * np.exp(next_return[first:])
        return pd.Series(forecast, index=close.index[first:], name=self.name)
