"""Classic next-close forecasters: random walk, SMA, EMA, Kalman filter, OLS.

Every forecaster follows ``models.base.Forecaster``: ``fit`` sees the training
segment only, and ``predict(bars, start)`` returns, for every ``t >= start``,
the forecast of ``close[t+1]`` computed from ``bars.loc[:t]`` only, indexed by
``t``. ``bars`` may run past ``t`` (the walk-forward passes the whole test
segment at once); each method below is causal by construction, and
``tests/test_baselines.py`` proves it by changing every bar after a cut date.

Every forecaster checks its bars against the contract of ``core.bars`` (finite,
positive prices on strictly increasing dates); the Kalman and OLS forecasters
rely on it, working on log prices / log returns.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import ClassVar, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator
from scipy.signal import lfilter
from statsmodels.regression.linear_model import OLS
from statsmodels.regression.rolling import RollingOLS
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.statespace.structural import UnobservedComponents

from models.base import Forecaster, closes, first_forecast_position

log = logging.getLogger(__name__)

# The state-space model runs on 100 * log(close): daily variances near 1e-4
# instead of 1e-8 keep the likelihood optimiser well scaled (on raw log prices
# it stops short of convergence on some long training segments).
_LOG_SCALE = 100.0

__all__ = [
    "EmaForecaster",
    "KalmanForecaster",
    "OlsForecaster",
    "RandomWalkForecaster",
    "SmaForecaster",
]


# Shared input checks -----------------------------------------------------------


def _check_train(train: pd.DataFrame, need: int, who: str) -> None:
    close = closes(train, who)
    if len(close) < need:
        raise ValueError(
            f"{who}: the training segment has {len(close)} bars, needs at least {need}; "
            "lengthen walkforward.train_bars or shorten the forecaster's window"
        )


def _series(values: np.ndarray, index: pd.Index, name: str) -> pd.Series:
    return pd.Series(np.asarray(values, dtype="float64"), index=index, name=name)


# Parameters (the keys under forecasters.<name> in a config) ---------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RandomWalkConfig(_Params):
    pass


class SmaConfig(_Params):
    window: StrictInt = Field(20, ge=1)


class EmaConfig(_Params):
    span: StrictInt = Field(20, ge=1)


class KalmanConfig(_Params):
    trend: StrictBool = False


class OlsConfig(_Params):
    lags: StrictInt = Field(5, ge=1, le=100)
    window: StrictInt | None = Field(
        None, ge=10, description="rolling window in bars; null = expanding"
    )

    @model_validator(mode="after")
    def _window_holds_the_regression(self) -> OlsConfig:
        if self.window is not None and self.window <= self.lags + 1:
            raise ValueError(
                f"window ({self.window}) must be greater than lags + 1 ({self.lags + 1}): a "
                "rolling regression on the lags and a constant needs more pairs than unknowns"
            )
        return self


# Forecasters ---------------------------------------------------------------------


class RandomWalkForecaster(Forecaster):
    """Tomorrow's close is today's: ``forecast[t] = close[t]``.

    The baseline every other forecast is judged against (Theil's U2, the
    Diebold-Mariano test). At time ``t`` it sees ``close[t]`` only. ``fit``
    only validates the training bars.
    """

    name: ClassVar[str] = "random_walk"
    Config: ClassVar[type[BaseModel]] = RandomWalkConfig

    def required_train_bars(self) -> int:
        """The fewest training bars ``fit`` accepts."""
        return 1

    def fit(self, train: pd.DataFrame) -> Self:
        _check_train(train, self.required_train_bars(), self.name)
        return self

    def predict(self, bars: pd.DataFrame, start: pd.Timestamp) -> pd.Series:
        close = closes(bars, self.name)
        first = first_forecast_position(close.index, start, self.min_history, self.name)
        return _series(close.to_numpy()[first:], close.index[first:], self.name)


class SmaForecaster(Forecaster):
    """Simple moving average as a price forecast.

    ``forecast[t] = mean(close[t-window+1], ..., close[t])``: the last
    ``window`` closes up to and including ``t``, nothing later. The first
    forecast needs ``window`` bars of history. ``fit`` only validates that the
    training segment holds at least one window.

    Args:
        window: number of closes averaged (>= 1).
    """

    name: ClassVar[str] = "sma"
    Config: ClassVar[type[BaseModel]] = SmaConfig

    def __init__(self, window: int = 20) -> None:
        if int(window) != window or window < 1:
            raise ValueError(f"sma: window must be a positive integer, got {window!r}")
        self.window = int(window)

    @property
    def min_history(self) -> int:
        return self.window

    def required_train_bars(self) -> int:
        """The fewest training bars ``fit`` accepts: one full window."""
        return self.window

    def fit(self, train: pd.DataFrame) -> Self:
        _check_train(train, self.required_train_bars(), f"sma(window={self.window})")
        return self

    def predict(self, bars: pd.DataFrame, start: pd.Timestamp) -> pd.Series:
        who = f"sma(window={self.window})"
        close = closes(bars, who)
        first = first_forecast_position(close.index, start, self.min_history, who)
        values = close.to_numpy()[first - self.window + 1 :]
        # Each window is averaged on its own (no running sum), so a long
        # series at a large price level accumulates no rounding drift.
        means = np.lib.stride_tricks.sliding_window_view(values, self.window).mean(axis=1)
        return _series(means, close.index[first:], self.name)


class EmaForecaster(Forecaster):
    """Exponential moving average as a price forecast (``adjust=False`` recursion).

    With ``alpha = 2 / (span + 1)``: ``ema[0] = close[0]`` (the first bar passed
    to ``predict``) and ``ema[t] = alpha * close[t] + (1 - alpha) * ema[t-1]``;
    ``forecast[t] = ema[t]``, which uses closes up to ``t`` only. This is
    pandas' ``ewm(span=span, adjust=False).mean()``. Because the recursion
    starts at the first bar passed, the first forecast needs ``span`` bars of
    warm-up (the seed's weight has then decayed to ``(1 - alpha)**span``, about
    e^-2). ``fit`` only validates the training segment's length.

    Args:
        span: EMA span in bars (>= 1); ``span=1`` is the random walk.
    """

    name: ClassVar[str] = "ema"
    Config: ClassVar[type[BaseModel]] = EmaConfig

    def __init__(self, span: int = 20) -> None:
        if int(span) != span or span < 1:
            raise ValueError(f"ema: span must be a positive integer, got {span!r}")
        self.span = int(span)

    @property
    def min_history(self) -> int:
        return self.span

    def required_train_bars(self) -> int:
        """The fewest training bars ``fit`` accepts: one span of warm-up."""
        return self.span

    def fit(self, train: pd.DataFrame) -> Self:
        _check_train(train, self.required_train_bars(), f"ema(span={self.span})")
        return self

    def predict(self, bars: pd.DataFrame, start: pd.Timestamp) -> pd.Series:
        who = f"ema(span={self.span})"
        close = closes(bars, who)
        first = first_forecast_position(close.index, start, self.min_history, who)
        x = close.to_numpy()
        alpha = 2.0 / (self.span + 1.0)
        # ema[t] - (1-alpha) ema[t-1] = alpha x[t], started from ema[0] = x[0].
        ema = np.empty_like(x)
        ema[0] = x[0]
        if len(x) > 1:
            ema[1:], _ = lfilter([alpha], [1.0, -(1.0 - alpha)], x[1:], zi=[(1.0 - alpha) * x[0]])
        return _series(ema[first:], close.index[first:], self.name)


class KalmanForecaster(Forecaster):
    """Local-level (or local-linear-trend) state-space model of the log close.

    Model (statsmodels ``UnobservedComponents``, exact diffuse initialisation),
    on ``y[t] = log(close[t])``::

        y[t]      = mu[t] + eps[t],                  eps ~ N(0, sigma2.irregular)
        mu[t+1]   = mu[t] (+ beta[t]) + eta[t],      eta ~ N(0, sigma2.level)
        beta[t+1] = beta[t] + zeta[t]  (trend only), zeta ~ N(0, sigma2.trend)

    ``fit`` estimates the variances by maximum likelihood on the training
    segment only. ``predict`` keeps them fixed and runs the Kalman *filter*
    (never the smoother) over the bars passed; the forecast made at ``t`` is
    the one-step-ahead prediction ``E[y[t+1] | y[0..t]] = mu[t|t] (+ beta[t|t])``,
    so it sees closes up to ``t`` only. The price forecast is
    ``exp(E[y[t+1] | y[0..t]])``, the conditional median of the next close
    (the mean would add a factor ``exp(var/2)``, about 1 + 1e-4 on daily data).
    Working in logs makes the noise scale-free across instruments and
    keeps the forecast positive; variances are reported in units of the log
    close (internally the model runs on ``100 * log(close)`` for a well-scaled
    optimiser).

    Args:
        trend: add a stochastic slope (local linear trend); default local level.
        variances: fix the variances instead of estimating them, keyed by
            statsmodels' names (``sigma2.irregular``, ``sigma2.level`` and,
            with ``trend``, ``sigma2.trend``); ``fit`` then only validates.

    After ``fit``: ``params_`` (Series of the variances used), ``converged_``.
    """

    name: ClassVar[str] = "kalman"
    Config: ClassVar[type[BaseModel]] = KalmanConfig
    #: Fewer bars than this give a meaningless likelihood maximum.
    min_fit_bars: ClassVar[int] = 30

    def __init__(self, trend: bool = False, variances: Mapping[str, float] | None = None) -> None:
        self.trend = bool(trend)
        self.variances = dict(variances) if variances is not None else None
        if self.variances is not None:
            want = self._param_names()
            if sorted(self.variances) != sorted(want):
                raise ValueError(
                    f"kalman: variances must have exactly the keys {want}, "
                    f"got {sorted(self.variances)}"
                )
            if any(not np.isfinite(v) or v < 0 for v in self.variances.values()):
                raise ValueError(f"kalman: variances must be finite and >= 0, got {self.variances}")

    @property
    def min_history(self) -> int:
        # A slope needs two observations before it is identified.
        return 2 if self.trend else 1

    def _param_names(self) -> list[str]:
        names = ["sigma2.irregular", "sigma2.level"]
        return [*names, "sigma2.trend"] if self.trend else names

    def _model(self, close: np.ndarray) -> UnobservedComponents:
        return UnobservedComponents(
            _LOG_SCALE * np.log(close),
            level="lltrend" if self.trend else "llevel",
            use_exact_diffuse=True,
        )

    def required_train_bars(self) -> int:
        """The fewest training bars ``fit`` accepts (``min_fit_bars`` for the MLE)."""
        return self.min_fit_bars if self.variances is None else self.min_history

    def fit(self, train: pd.DataFrame) -> Self:
        who = f"kalman(trend={self.trend})"
        _check_train(train, self.required_train_bars(), who)
        model = self._model(train["close"].to_numpy(dtype="float64"))
        if self.variances is not None:
            self.params_ = pd.Series(
                [self.variances[n] for n in model.param_names], index=model.param_names
            )
            self.converged_ = True
            return self
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            result = model.fit(disp=False)
        self.params_ = pd.Series(np.asarray(result.params) / _LOG_SCALE**2, index=model.param_names)
        self.converged_ = bool(result.mle_retvals.get("converged", True)) and not any(
            issubclass(w.category, ConvergenceWarning) for w in caught
        )
        if not self.converged_:
            # The last iterate is still a valid set of variances; say so and go on.
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
        who = f"kalman(trend={self.trend})"
        if not hasattr(self, "params_"):
            raise ValueError(f"{who}: call fit() before predict()")
        close = closes(bars, who)
        first = first_forecast_position(close.index, start, self.min_history, who)
        model = self._model(close.to_numpy())
        result = model.filter(self.params_.to_numpy() * _LOG_SCALE**2)
        # predicted_state[:, t+1] is the state at t+1 given y[0..t] (filter only).
        design = np.asarray(model.ssm["design"]).reshape(1, -1)  # time-invariant Z
        next_log = (design @ result.predicted_state[:, 1:])[0] / _LOG_SCALE
        return _series(np.exp(next_log[first:]), close.index[first:], self.name)


class OlsForecaster(Forecaster):
    """Rolling or expanding least squares of the next log return on lagged log returns.

    With ``r[s] = log(close[s] / close[s-1])``, the regression
    ``r[s+1] = b0 + b1 r[s] + ... + b_lags r[s-lags+1] + e`` is re-estimated at
    every ``t`` (statsmodels ``RollingOLS``) from the pairs whose target is
    already known, ``s + 1 <= t``: the last ``window`` of them (rolling) or all
    since the first bar passed (expanding, ``window=None``). The forecast made
    at ``t`` is ``close[t] * exp(b(t) . [1, r[t], ..., r[t-lags+1]])``, so it
    sees closes up to ``t`` only.

    Re-estimating inside ``predict`` is what "rolling window OLS" means to its
    users: coefficients follow the data through the test period, each from the
    past alone. ``fit`` therefore only checks that the training segment holds
    enough pairs and records the coefficients in force at its end
    (``params_``, for logging); it does not change the forecasts. A rolling
    fit needs ``window`` pairs; an expanding fit needs
    ``max(20, 2 * (lags + 1))``. Where the lagged returns are exactly
    collinear (e.g. a run of unchanged closes) the minimum-norm least-squares
    solution is used.

    Args:
        lags: number of lagged log returns (>= 1); a constant is always added.
        window: rolling window in pairs (> lags + 1), or ``None`` for expanding.
    """

    name: ClassVar[str] = "ols"
    Config: ClassVar[type[BaseModel]] = OlsConfig

    def __init__(self, lags: int = 5, window: int | None = None) -> None:
        if int(lags) != lags or lags < 1:
            raise ValueError(f"ols: lags must be a positive integer, got {lags!r}")
        self.lags = int(lags)
        if window is not None and (int(window) != window or window <= self.lags + 1):
            raise ValueError(
                f"ols: window ({window!r}) must be an integer larger than lags + 1 "
                f"({self.lags + 1} coefficients), or None for an expanding window"
            )
        self.window = None if window is None else int(window)

    @property
    def min_pairs(self) -> int:
        """Regression pairs needed before the first estimate."""
        return self.window if self.window is not None else max(20, 2 * (self.lags + 1))

    @property
    def min_history(self) -> int:
        # Bar 0 has no return and a pair's features need `lags` earlier returns.
        return self.min_pairs + self.lags + 1

    def _who(self) -> str:
        return f"ols(lags={self.lags}, window={self.window})"

    def _design(self, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log returns ``r`` and the feature rows ``X[t] = [1, r[t], ..., r[t-lags+1]]``."""
        r = np.full(len(close), np.nan)
        r[1:] = np.diff(np.log(close))
        features = np.full((len(close), self.lags + 1), np.nan)
        features[:, 0] = 1.0
        for j in range(self.lags):
            features[j + 1 :, j + 1] = r[1 : len(close) - j]
        return r, features

    def _coefficients(self, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``b[t]`` from pairs with target date <= t (NaN rows before enough pairs)."""
        r, features = self._design(close)
        # Pair u: target r[u], features X[u-1]; valid from u = lags + 1 on.
        first_target = self.lags + 1
        y = r[first_target:]
        x = features[first_target - 1 : -1]
        coef = np.full((len(close), self.lags + 1), np.nan)
        if len(y) < self.min_pairs:
            return coef, features
        window = self.window if self.window is not None else len(y)
        rolling = RollingOLS(y, x, window=window, min_nobs=self.min_pairs, expanding=True)
        # "inv" updates X'X incrementally (fast); `reset` recomputes it from
        # scratch every window so subtracting old rows cannot drift.
        params = rolling.fit(method="inv", params_only=True, reset=window).params
        params = np.asarray(params, dtype="float64")
        singular = np.flatnonzero(np.isnan(params).any(axis=1))
        for i in singular[singular >= self.min_pairs - 1]:
            lo = max(0, i + 1 - window)
            params[i] = np.linalg.lstsq(x[lo : i + 1], y[lo : i + 1], rcond=None)[0]
        coef[first_target:] = params
        return coef, features

    def required_train_bars(self) -> int:
        """The fewest training bars ``fit`` accepts: ``min_pairs`` regression pairs."""
        return self.min_history

    def fit(self, train: pd.DataFrame) -> Self:
        _check_train(train, self.required_train_bars(), self._who())
        close = train["close"].to_numpy(dtype="float64")
        r, features = self._design(close)
        y = r[self.lags + 1 :]
        x = features[self.lags : -1]
        if self.window is not None:
            y, x = y[-self.window :], x[-self.window :]
        names = ["const", *(f"r_lag{j}" for j in range(1, self.lags + 1))]
        result = OLS(y, x).fit(method="pinv")
        self.params_ = pd.Series(np.asarray(result.params), index=names)
        return self

    def predict(self, bars: pd.DataFrame, start: pd.Timestamp) -> pd.Series:
        who = self._who()
        close = closes(bars, who)
        first = first_forecast_position(close.index, start, self.min_history, who)
        values = close.to_numpy()
        coef, features = self._coefficients(values)
        predicted_return = np.einsum("ij,ij->i", coef[first:], features[first:])
        forecast = values[first:] * np.exp(predicted_return)
        return _series(forecast, close.index[first:], self.name)
