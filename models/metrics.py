"""Forecast accuracy on out-of-sample dates, and the Diebold-Mariano test.

Conventions shared by both functions:

- A forecast made at ``t`` is of ``close[t+1]``; its error is
  ``forecast[t] - close[t+1]``. ``random_walk[t]`` is ``close[t]``.
- Diebold-Mariano sign: the loss differential is ``d = L(e_a) - L(e_b)``, so a
  **negative statistic means the first forecaster (a) is more accurate**.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["diebold_mariano", "forecast_metrics", "theil_u2"]

ArrayLike = np.ndarray | pd.Series | Sequence[float]


def _as_float_array(values: ArrayLike, what: str) -> np.ndarray:
    array = np.asarray(values, dtype="float64")
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {array.shape}")
    return array


def diebold_mariano(
    errors_a: ArrayLike,
    errors_b: ArrayLike,
    h: int = 1,
    loss: Literal["squared", "absolute"] = "squared",
) -> tuple[float, float]:
    """Diebold-Mariano test of equal accuracy, with the Harvey-Leybourne-Newbold correction.

    With ``d[t] = L(e_a[t]) - L(e_b[t])`` (``L`` squared or absolute error),
    ``n`` pairs and ``dbar = mean(d)``::

        gamma_k = (1/n) * sum_{t=k+1..n} (d[t] - dbar) * (d[t-k] - dbar)
        V       = (gamma_0 + 2 * sum_{k=1..h-1} gamma_k) / n        # long-run var of dbar
        DM      = dbar / sqrt(V)
        DM_hln  = DM * sqrt((n + 1 - 2h + h(h-1)/n) / n)            # HLN (1997)
        p       = 2 * P(T_{n-1} > |DM_hln|)                          # Student-t, n-1 df

    Sign: negative means ``a`` has the smaller loss (``a`` more accurate).

    Degenerate cases, by design: when every ``d[t]`` is zero (identical
    losses, e.g. identical forecasts) the result is ``(0.0, 1.0)``; when ``d``
    is a non-zero constant (V = 0) it is ``(+-inf, 0.0)``. When ``h > 1``
    gives a non-positive V, the test is redone with ``h = 1`` and a
    ``RuntimeWarning`` says so (as R's ``forecast::dm.test`` does).

    Args:
        errors_a: forecast errors of the first forecaster.
        errors_b: forecast errors of the second, on the same dates.
        h: forecast horizon (autocovariances up to lag ``h - 1`` enter V).
        loss: ``"squared"`` or ``"absolute"``.

    Returns:
        ``(statistic, p_value)``, both floats.
    """
    if (
        isinstance(errors_a, pd.Series)
        and isinstance(errors_b, pd.Series)
        and not errors_a.index.equals(errors_b.index)
    ):
        raise ValueError("diebold_mariano: errors_a and errors_b must share the same dates")
    a = _as_float_array(errors_a, "errors_a")
    b = _as_float_array(errors_b, "errors_b")
    if a.shape != b.shape:
        raise ValueError(f"diebold_mariano: {len(a)} errors_a but {len(b)} errors_b")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("diebold_mariano: errors must be finite (drop dates without a forecast)")
    if loss == "squared":
        d = a**2 - b**2
    elif loss == "absolute":
        d = np.abs(a) - np.abs(b)
    else:
        raise ValueError(f"diebold_mariano: loss must be 'squared' or 'absolute', got {loss!r}")
    n = len(d)
    if int(h) != h or h < 1:
        raise ValueError(f"diebold_mariano: h must be a positive integer, got {h!r}")
    if n < 2 or h >= n:
        raise ValueError(f"diebold_mariano: need at least 2 and more than h={h} pairs, got {n}")
    if not d.any():
        return 0.0, 1.0

    dbar = float(d.mean())
    dev = d - dbar
    gammas = [float(dev[k:] @ dev[: n - k]) / n for k in range(h)]
    variance = (gammas[0] + 2.0 * sum(gammas[1:])) / n
    if variance <= 0.0 and h > 1:
        warnings.warn(
            f"diebold_mariano: long-run variance with h={h} is not positive ({variance:.3g}); "
            "using h=1",
            RuntimeWarning,
            stacklevel=2,
        )
        return diebold_mariano(a, b, h=1, loss=loss)
    if variance <= 0.0:
        return math.copysign(math.inf, dbar), 0.0
    correction = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    statistic = correction * dbar / math.sqrt(variance)
    p_value = float(2.0 * stats.t.sf(abs(statistic), df=n - 1))
    return float(statistic), p_value


def theil_u2(errors: ArrayLike, random_walk_errors: ArrayLike) -> float:
    """Theil's U2: ``rmse(errors) / rmse(random_walk_errors)``; < 1 beats the random walk.

    NaN when the random walk's RMSE is 0 (nothing to compare with). The errors
    are on the same dates; their scale cancels, so errors divided by any one
    positive number (e.g. the random walk's RMSE, to pool instruments) give
    the same ratio.
    """
    e = _as_float_array(errors, "errors")
    e_rw = _as_float_array(random_walk_errors, "random_walk_errors")
    rmse, rmse_rw = float(np.sqrt(np.mean(e**2))), float(np.sqrt(np.mean(e_rw**2)))
    return rmse / rmse_rw if rmse_rw > 0 else math.nan


def forecast_metrics(
    actual: pd.Series,
    forecast: pd.Series,
    random_walk: pd.Series,
    train_close: pd.Series | None = None,
) -> dict[str, float]:
    """Accuracy of one next-close forecast on its out-of-sample dates.

    All three Series are indexed by the date ``t`` the forecast is made and
    must share the same dates: ``actual[t] = close[t+1]`` (the realised next
    close), ``forecast[t]``, and ``random_walk[t] = close[t]``. Dates where
    ``actual`` is NaN (the last bar has no next close) are dropped; a NaN
    forecast on any other date is an error, so every forecaster compared is
    scored on exactly the same dates.

    Returns a dict of floats:

    - ``n``: dates scored; ``rmse``, ``mae`` of ``forecast - actual``.
    - ``theil_u2``: ``rmse / rmse(random_walk)`` (< 1 beats the random walk).
    - ``mase``: ``mae / mean(|diff(train_close)|)``, the in-sample MAE of the
      naive one-step forecast on the training closes (Hyndman & Koehler
      2006); NaN without ``train_close``.
    - ``directional_accuracy``: share of dates where ``sign(forecast - close[t])``
      equals ``sign(actual - close[t])``, counted over ``directional_n`` dates
      on which *both* moves are non-zero (a flat forecast, like the random
      walk's, or an unchanged close says nothing about direction and is left
      out); ``directional_p_value``: two-sided exact binomial test against 50%
      (scipy ``binomtest``). NaN when no date counts.
    - ``dm_statistic``, ``dm_p_value``: ``diebold_mariano`` of this forecast's
      errors against the random walk's (squared loss, h=1); negative means
      this forecast is more accurate than the random walk.
    """
    y, f, rw = _scored_values(actual, forecast, random_walk)
    errors = f - y
    rw_errors = rw - y
    rmse = float(np.sqrt(np.mean(errors**2)))
    mae = float(np.mean(np.abs(errors)))
    mase = _mase(mae, train_close)
    accuracy, directional_n, p_direction = _directional_accuracy(f, y, rw)
    dm_stat, dm_p = diebold_mariano(errors, rw_errors) if len(y) >= 2 else (math.nan, math.nan)
    return {
        "n": len(y),
        "rmse": rmse,
        "mae": mae,
        "theil_u2": theil_u2(errors, rw_errors),
        "mase": mase,
        "directional_accuracy": accuracy,
        "directional_n": directional_n,
        "directional_p_value": p_direction,
        "dm_statistic": dm_stat,
        "dm_p_value": dm_p,
    }


def _scored_values(
    actual: pd.Series, forecast: pd.Series, random_walk: pd.Series
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``actual``, ``forecast`` and ``random_walk`` as arrays on the dates that are scored.

    Those are the dates with a realised next close; every forecaster compared
    must cover them all, so that all are scored on the same dates.
    """
    for what, series in (("forecast", forecast), ("random_walk", random_walk)):
        if not series.index.equals(actual.index):
            raise ValueError(
                f"forecast_metrics: {what} and actual must share the same dates "
                f"({len(series)} vs {len(actual)} dates); align them first"
            )
    keep = actual.notna().to_numpy()
    y = actual.to_numpy(dtype="float64")[keep]
    f = forecast.to_numpy(dtype="float64")[keep]
    rw = random_walk.to_numpy(dtype="float64")[keep]
    if len(y) == 0:
        raise ValueError("forecast_metrics: no dates with a realised next close")
    for what, values, series in (("forecast", f, forecast), ("random_walk", rw, random_walk)):
        bad = ~np.isfinite(values)
        if bad.any():
            date = series.index[keep][np.argmax(bad)]
            raise ValueError(
                f"forecast_metrics: {what} {series.name!r} is missing on {int(bad.sum())} scored "
                f"dates (first {date}); score every forecaster on dates they all cover"
            )
    return y, f, rw


def _mase(mae: float, train_close: pd.Series | None) -> float:
    """``mae`` over the in-sample MAE of the naive one-step forecast on ``train_close``.

    NaN without ``train_close`` or when the training closes never move.
    """
    if train_close is None:
        return math.nan
    train = _as_float_array(train_close, "train_close")
    train = train[np.isfinite(train)]
    if len(train) < 2:
        raise ValueError("forecast_metrics: train_close needs at least 2 closes for MASE")
    scale = float(np.mean(np.abs(np.diff(train))))
    return mae / scale if scale > 0 else math.nan


def _directional_accuracy(f: np.ndarray, y: np.ndarray, rw: np.ndarray) -> tuple[float, int, float]:
    """Share of right directions, the dates counted, and the binomial p-value against 50%.

    Only dates on which both the forecast and the actual close move from
    ``rw`` (the close at ``t``) count; (NaN, 0, NaN) when none does.
    """
    forecast_move = np.sign(f - rw)
    actual_move = np.sign(y - rw)
    counted = (forecast_move != 0) & (actual_move != 0)
    directional_n = int(counted.sum())
    if not directional_n:
        return math.nan, 0, math.nan
    hits = int((forecast_move[counted] == actual_move[counted]).sum())
    p_direction = float(stats.binomtest(hits, directional_n, 0.5).pvalue)
    return hits / directional_n, directional_n, p_direction
