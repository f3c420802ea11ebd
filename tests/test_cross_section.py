"""IC and rank IC against a direct pandas computation (Qlib's groupby by date); no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.report.cross_section import (
    MIN_INSTRUMENTS,
    daily_ic,
    information_coefficients,
    return_panels,
)

DATES = pd.bdate_range("2024-01-01", periods=30, name="date")
NAMES = ["AAA", "BBB", "CCC", "DDD", "EEE"]


def panel(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Five instruments of random-walk closes with a noisy but informative forecast.

    The forecast of the next close peeks at it on purpose (a synthetic forecaster
    with skill) and has NaN at the start, as before an out-of-sample period.
    """
    rng = np.random.default_rng(seed)
    frames = {}
    for i, name in enumerate(NAMES):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(DATES))))
        nxt = np.append(close[1:], np.nan)
        good = close * (1 + 0.5 * (nxt / close - 1) + rng.normal(0, 0.004, len(DATES)))
        frame = pd.DataFrame({"close": close, "good": good, "flat": close}, index=DATES)
        frame.iloc[: 3 + i, 1] = np.nan  # instruments start forecasting on different dates
        frames[name] = frame
    return frames


def reference(frames: dict[str, pd.DataFrame], column: str) -> pd.DataFrame:
    """Qlib's way: a long table (date, instrument), grouped by date, ``Series.corr``."""
    long = []
    for name, f in frames.items():
        long.append(
            pd.DataFrame(
                {
                    "date": f.index.to_numpy(),
                    "instrument": name,
                    "pred": f[column] / f["close"] - 1,
                    "label": f["close"].shift(-1) / f["close"] - 1,
                }
            )
        )
    data = pd.concat(long, ignore_index=True).dropna()
    rows = {}
    for date, g in data.groupby("date"):
        if len(g) < 3 or g["pred"].nunique() < 2:  # no spread: no correlation
            continue
        rows[date] = (
            g["pred"].corr(g["label"]),
            g["pred"].corr(g["label"], method="spearman"),
            float(len(g)),
        )
    columns = ["ic", "rank_ic", "names"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).dropna()


def test_ic_and_rank_ic_equal_a_direct_pandas_computation():
    frames = panel()
    expected, realised = return_panels(frames, "good")
    daily = daily_ic(expected, realised)
    ref = reference(frames, "good")
    # dates with fewer than 3 forecasts (t0..t4: 0..2 instruments) and the last date are dropped
    assert daily.index[0] == DATES[MIN_INSTRUMENTS + 2] and daily.index[-1] == DATES[-2]
    pd.testing.assert_frame_equal(daily, ref, check_freq=False, check_names=False, atol=1e-12)
    table = information_coefficients(frames, ["good", "flat"])
    row = table.loc["good"]
    assert row["dates"] == len(ref)
    assert row["names_per_date"] == pytest.approx(ref["names"].mean(), abs=1e-12)
    assert row["ic_mean"] == pytest.approx(ref["ic"].mean(), abs=1e-12)
    assert row["ic_std"] == pytest.approx(ref["ic"].std(), abs=1e-12)
    assert row["icir"] == pytest.approx(ref["ic"].mean() / ref["ic"].std(), abs=1e-12)
    assert row["rank_icir"] == pytest.approx(ref["rank_ic"].mean() / ref["rank_ic"].std())
    assert row["ic_mean"] > 0.5  # the synthetic forecaster has skill
    # a forecast of "no change" has no cross-sectional spread: no IC at all
    assert table.loc["flat", "dates"] == 0 and np.isnan(table.loc["flat", "ic_mean"])


def test_ties_take_average_ranks_like_spearman():
    frames = panel(1)
    for f in frames.values():
        f["coarse"] = f["close"] * (1 + np.sign(f["good"] / f["close"] - 1) * 0.01)
    daily = daily_ic(*return_panels(frames, "coarse"))
    ref = reference(frames, "coarse")
    pd.testing.assert_series_equal(
        daily["rank_ic"], ref["rank_ic"], check_freq=False, check_names=False, atol=1e-12
    )


def test_no_look_ahead_changing_bars_after_t_plus_1_moves_nothing_up_to_t():
    frames = panel(2)
    before = daily_ic(*return_panels(frames, "good"))
    t = 15
    changed = {}
    for name, f in frames.items():
        g = f.copy()
        g.iloc[t + 2 :, :] *= 1.7  # every bar after t + 1 (closes and forecasts)
        changed[name] = g
    after = daily_ic(*return_panels(changed, "good"))
    cut = DATES[t]
    pd.testing.assert_frame_equal(after.loc[:cut], before.loc[:cut])
    assert not after.loc[DATES[t + 1] :].equals(before.loc[DATES[t + 1] :])


def test_two_instruments_give_no_cross_section():
    frames = {k: v for k, v in panel().items() if k in NAMES[:2]}
    assert daily_ic(*return_panels(frames, "good")).empty
