"""Shared helpers of the forecasters' no-look-ahead tests: made-up bars, noise, the check."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.base import Forecaster


def synthetic_bars(close: np.ndarray, start: str = "2001-01-01") -> pd.DataFrame:
    """Bars of business days from ``start`` around the given closes (1% high/low spread)."""
    close = np.asarray(close, dtype="float64")
    index = pd.bdate_range(start, periods=len(close), name="date")
    return pd.DataFrame(
        {
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": np.full(len(close), 1e6),
        },
        index=index,
    )


def noised(bars: pd.DataFrame, cut: pd.Timestamp, seed: int = 0) -> pd.DataFrame:
    """Every bar after ``cut`` replaced by random (contract-keeping) noise."""
    out = bars.copy()
    later = out.index > cut
    rng = np.random.default_rng(seed)
    close = out["close"].iloc[0] * np.exp(rng.normal(0.0, 0.2, later.sum()))
    spread = np.exp(rng.uniform(0.0, 0.05, (2, later.sum())))
    out.loc[later, ["open", "close"]] = close[:, None]
    out.loc[later, "high"] = close * spread[0]
    out.loc[later, "low"] = close / spread[1]
    out.loc[later, "volume"] = rng.uniform(0.0, 1e10, later.sum())
    return out


def assert_no_lookahead(
    forecaster: Forecaster, bars: pd.DataFrame, train: int, cuts: Sequence[int]
) -> None:
    """Forecasts from position ``train`` on, dated up to each cut, neither move when later
    bars are removed nor when they are replaced by noise; the noise does move the later
    forecasts."""
    start = bars.index[train]
    full = forecaster.predict(bars, start)
    assert full.index.equals(bars.index[train:])
    for cut in bars.index[list(cuts)]:
        truncated = forecaster.predict(bars.loc[:cut], start)
        # Bit-identical: every computation at t must be a function of bars[:t] alone.
        np.testing.assert_array_equal(truncated.to_numpy(), full.loc[:cut].to_numpy())
        perturbed = forecaster.predict(noised(bars, cut), start)
        assert perturbed.index.equals(full.index)
        np.testing.assert_array_equal(perturbed.loc[:cut].to_numpy(), full.loc[:cut].to_numpy())
        # ...and the noise is visible, so the comparison above is not vacuous.
        assert (perturbed.loc[cut:].iloc[1:] != full.loc[cut:].iloc[1:]).all()
