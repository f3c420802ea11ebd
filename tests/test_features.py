"""Features, scaler and windowing: reference twins and no look-ahead."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pandas as pd
import pytest

from models.features import (
    RANGE,
    RETURN,
    VOLUME,
    StandardScaler,
    build_features,
    check_bars,
    feature_columns,
    next_log_return,
    sliding_windows,
    supervised_windows,
    windows_ending_at,
)


def make_bars(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0.0, 0.005, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.01, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.01, n)))
    volume = rng.integers(0, 5_000_000, n).astype(float)
    volume[5] = 0.0  # a zero-volume bar must not give an infinite feature
    index = pd.bdate_range("2015-01-02", periods=n, name="date")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


def perturb_after(bars: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
    out = bars.copy()
    out.loc[out.index > cut] *= 10.0
    return out


def test_features_by_hand():
    bars = pd.DataFrame(
        {
            "open": [100.0, 108.0, 100.0],
            "high": [101.0, 112.0, 110.0],
            "low": [99.0, 105.0, 98.0],
            "close": [100.0, 110.0, 99.0],
            "volume": [0.0, 100.0, 100.0],
        },
        index=pd.DatetimeIndex(["2020-01-02", "2020-01-03", "2020-01-06"], name="date"),
    )
    f = build_features(bars)
    assert list(f.columns) == [RETURN, VOLUME, RANGE]
    assert f.iloc[0].isna().all()
    np.testing.assert_allclose(f[RETURN].iloc[1:], [np.log(1.1), np.log(0.9)], rtol=1e-14)
    np.testing.assert_allclose(f[VOLUME].iloc[1:], [np.log(101.0), 0.0], rtol=1e-14, atol=0)
    np.testing.assert_allclose(f[RANGE].iloc[1:], [np.log(112 / 105), np.log(110 / 98)])
    target = next_log_return(bars)
    np.testing.assert_allclose(target.iloc[:2], [np.log(1.1), np.log(0.9)], rtol=1e-14)
    assert np.isnan(target.iloc[-1])


def test_features_match_pandas():
    bars = make_bars()
    f = build_features(bars)
    np.testing.assert_allclose(f[RETURN], np.log(bars["close"]).diff(), rtol=1e-12)
    np.testing.assert_allclose(f[VOLUME], np.log1p(bars["volume"]).diff(), rtol=1e-12)
    np.testing.assert_allclose(f[RANGE].iloc[1:], np.log(bars["high"] / bars["low"]).iloc[1:])
    assert np.isfinite(f.iloc[1:].to_numpy()).all()
    np.testing.assert_allclose(
        next_log_return(bars), np.log(bars["close"]).diff().shift(-1), rtol=1e-12
    )


def test_feature_flags():
    bars = make_bars()
    assert list(build_features(bars, use_volume=False, use_range=False).columns) == [RETURN]
    assert list(build_features(bars, use_volume=False).columns) == [RETURN, RANGE]
    assert feature_columns(use_range=False) == [RETURN, VOLUME]


def test_features_and_scaler_do_not_look_ahead():
    bars = make_bars()
    cut = bars.index[70]
    changed = perturb_after(bars, cut)
    before, after = build_features(bars), build_features(changed)
    pd.testing.assert_frame_equal(before.loc[:cut], after.loc[:cut], check_exact=True)
    assert not np.allclose(before.loc[cut:].iloc[1:2], after.loc[cut:].iloc[1:2])
    # The scaler sees the training segment only, so it cannot move either.
    assert StandardScaler.fit(before.loc[:cut]) == StandardScaler.fit(after.loc[:cut])
    x1 = windows_ending_at(before, 5, bars.index[10:71])
    x2 = windows_ending_at(after, 5, bars.index[10:71])
    np.testing.assert_array_equal(x1, x2)


def test_scaler_matches_numpy_and_statistics():
    bars = make_bars()
    f = build_features(bars)
    scaler = StandardScaler.fit(f)
    rows = f.iloc[1:].to_numpy()
    np.testing.assert_allclose(scaler.mean, rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scaler.std, rows.std(axis=0, ddof=0), rtol=1e-12)
    scaled = scaler.transform(f)
    np.testing.assert_allclose(scaled.iloc[1:], (rows - rows.mean(0)) / rows.std(0), rtol=1e-10)
    assert scaled.iloc[0].isna().all()
    np.testing.assert_allclose(scaled.iloc[1:].mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(scaled.iloc[1:].std(ddof=0), 1.0, rtol=1e-12)


def test_scaler_awkward_columns():
    rng = np.random.default_rng(1)
    offset = 1e9 + rng.normal(0.0, 1e-3, 200)  # tiny spread on a huge level
    frame = pd.DataFrame({"big": offset, "flat": np.full(200, 3.7)})
    scaler = StandardScaler.fit(frame)
    assert scaler.mean[0] == pytest.approx(statistics.fmean(offset), rel=1e-15)
    assert scaler.std[0] == pytest.approx(statistics.pstdev(offset), rel=1e-5)
    # A constant column scales to zero instead of dividing by zero.
    assert scaler.std[1] == 1.0
    np.testing.assert_allclose(scaler.transform(frame)["flat"], 0.0, atol=1e-12)


def test_scaler_round_trips_through_json():
    scaler = StandardScaler.fit(build_features(make_bars()))
    again = StandardScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert again == scaler
    with pytest.raises(ValueError, match="differ from the fitted"):
        scaler.transform(build_features(make_bars(), use_volume=False))
    with pytest.raises(ValueError, match="no row with every feature finite"):
        StandardScaler.fit(pd.DataFrame({"a": [np.nan, np.nan]}))


def test_sliding_windows_match_a_loop():
    values = np.arange(30.0).reshape(10, 3)
    windows = sliding_windows(values, 4)
    assert windows.shape == (7, 4, 3)
    for k in range(7):
        np.testing.assert_array_equal(windows[k], values[k : k + 4])
    with pytest.raises(ValueError, match="fewer than the window"):
        sliding_windows(values, 11)


def test_windows_end_at_their_date():
    bars = make_bars(40)
    f = build_features(bars)
    dates = bars.index[[5, 20, 39]]
    x = windows_ending_at(f, 5, dates)
    for k, date in enumerate(dates):
        np.testing.assert_array_equal(x[k], f.loc[:date].iloc[-5:].to_numpy())
    with pytest.raises(ValueError, match="needs 6 bars up to that date"):
        windows_ending_at(f, 5, bars.index[[4]])


def test_supervised_windows_pair_each_window_with_the_next_return():
    bars = make_bars(40)
    f = build_features(bars)
    target = next_log_return(bars)
    x, y, ends = supervised_windows(f, target, 6)
    # First window ends at row 6 (rows 1..6 finite); the last bar has no target.
    assert ends[0] == bars.index[6] and ends[-1] == bars.index[-2]
    assert len(x) == len(y) == len(ends) == 40 - 1 - 6
    for k in (0, 10, len(x) - 1):
        np.testing.assert_array_equal(x[k], f.loc[: ends[k]].iloc[-6:].to_numpy())
        assert y[k] == target.loc[ends[k]]
        assert y[k] == pytest.approx(np.log(bars["close"].shift(-1) / bars["close"]).loc[ends[k]])


def test_bad_bars_are_named():
    bars = make_bars(20)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['volume'\]"):
        check_bars(bars.drop(columns="volume"))
    broken = bars.copy()
    broken.iloc[7, broken.columns.get_loc("low")] = 0.0
    with pytest.raises(ValueError, match=str(bars.index[7].date())):
        build_features(broken)
    with pytest.raises(ValueError, match="strictly increasing"):
        check_bars(bars.iloc[::-1])
