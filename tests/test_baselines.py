"""Classic forecasters: no look-ahead, reference twins, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.base import Forecaster
from models.baselines import (
    EmaForecaster,
    KalmanForecaster,
    OlsForecaster,
    RandomWalkForecaster,
    SmaForecaster,
)
from pipelines.sources.load import read_csv_bars
from tests.conftest import SAMPLE_DIR
from tests.lookahead import synthetic_bars

TRAIN = 250  # bars in the training segment of these tests
CUT = 330  # position of the cut date: bars after it are changed


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return read_csv_bars(SAMPLE_DIR / "GSPC.csv").iloc[:420]


def shocked(bars: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
    """Every bar after ``cut`` multiplied by 10 (prices and volume)."""
    out = bars.copy()
    out.loc[out.index > cut] *= 10.0
    return out


def assert_no_lookahead(forecaster_factory, bars: pd.DataFrame, cut_pos: int = CUT) -> None:
    """Forecasts dated at or before the cut must not move when later bars change."""
    cut = bars.index[cut_pos]
    start = bars.index[TRAIN]
    train = bars.iloc[:TRAIN]
    before = forecaster_factory().fit(train).predict(bars, start)
    after = forecaster_factory().fit(train).predict(shocked(bars, cut), start)
    assert before.index.equals(bars.index[TRAIN:])
    assert after.index.equals(before.index)
    # Bit-identical: every computation at t must be a function of bars[:t] alone.
    np.testing.assert_array_equal(after.loc[:cut].to_numpy(), before.loc[:cut].to_numpy())
    # ...and the shock is visible, so the comparison above is not vacuous.
    assert not np.allclose(
        after.loc[cut:].iloc[1:].to_numpy(), before.loc[cut:].iloc[1:].to_numpy()
    )


FORECASTERS = {
    "random_walk": RandomWalkForecaster,
    "sma": lambda: SmaForecaster(20),
    "ema": lambda: EmaForecaster(20),
    "kalman": lambda: KalmanForecaster(),
    "kalman_trend": lambda: KalmanForecaster(trend=True),
    "ols_expanding": lambda: OlsForecaster(lags=3),
    "ols_rolling": lambda: OlsForecaster(lags=3, window=60),
}


@pytest.mark.parametrize("name", list(FORECASTERS))
def test_no_forecast_at_or_before_the_cut_changes(name, bars):
    assert_no_lookahead(FORECASTERS[name], bars)


class _PeekingForecaster(RandomWalkForecaster):
    """Deliberately wrong: forecasts with the next close itself."""

    def predict(self, bars, start):
        return bars["close"].shift(-1).ffill().loc[start:].rename(self.name)


class _FullSampleForecaster(RandomWalkForecaster):
    """Deliberately wrong: a subtle leak, demeaning with a full-sample statistic."""

    def predict(self, bars, start):
        close = bars["close"]
        return (close - 0.01 * (close - close.mean())).loc[start:].rename(self.name)


@pytest.mark.parametrize("leaky", [_PeekingForecaster, _FullSampleForecaster])
def test_truncation_check_catches_a_leaky_forecaster(leaky, bars):
    with pytest.raises(AssertionError):
        assert_no_lookahead(leaky, bars)


def test_all_forecasters_share_the_interface(bars):
    for make in FORECASTERS.values():
        forecaster = make()
        assert isinstance(forecaster, Forecaster)
        out = forecaster.fit(bars.iloc[:TRAIN]).predict(bars, bars.index[TRAIN])
        assert out.name == forecaster.name
        assert out.dtype == np.float64
        assert np.isfinite(out.to_numpy()).all()
        assert forecaster.required_train_bars() >= 1


# Reference twins: random walk, SMA, EMA -------------------------------------------------


def test_random_walk_is_todays_close(bars):
    out = RandomWalkForecaster().fit(bars).predict(bars, bars.index[10])
    np.testing.assert_array_equal(out.to_numpy(), bars["close"].iloc[10:].to_numpy())


# A numerically awkward series: a price level of 1e9 moving by parts in 1e9,
# where a running sum would lose the digits that carry the moves.
AWKWARD = 1e9 + np.cumsum(np.random.default_rng(3).normal(0.0, 1.0, 400))


@pytest.mark.parametrize("window", [1, 5, 20, 120])
@pytest.mark.parametrize("series", ["gspc", "awkward"])
def test_sma_matches_pandas_rolling(window, series, bars):
    data = bars if series == "gspc" else synthetic_bars(AWKWARD)
    start = data.index[150]
    out = SmaForecaster(window).fit(data.iloc[:150]).predict(data, start)
    reference = data["close"].rolling(window).mean().loc[start:]
    np.testing.assert_allclose(out.to_numpy(), reference.to_numpy(), rtol=1e-13, atol=0)


@pytest.mark.parametrize("span", [1, 5, 20, 120])
@pytest.mark.parametrize("series", ["gspc", "awkward"])
def test_ema_matches_pandas_ewm_without_adjustment(span, series, bars):
    data = bars if series == "gspc" else synthetic_bars(AWKWARD)
    start = data.index[150]
    out = EmaForecaster(span).fit(data.iloc[:150]).predict(data, start)
    reference = data["close"].ewm(span=span, adjust=False).mean().loc[start:]
    np.testing.assert_allclose(out.to_numpy(), reference.to_numpy(), rtol=1e-13, atol=0)


# Reference twin: OLS against numpy.linalg.lstsq ---------------------------------------


def lstsq_forecast(close: np.ndarray, t: int, lags: int, window: int | None) -> float:
    """Forecast made at position t, regression rebuilt from scratch with lstsq."""
    r = np.diff(np.log(close[: t + 1]))  # r[k] is the return into bar k+1
    rows, targets = [], []
    for target in range(lags, len(r)):  # target return r[target], lags before it
        rows.append([1.0, *r[target - lags : target][::-1]])
        targets.append(r[target])
    x, y = np.array(rows), np.array(targets)
    if window is not None:
        x, y = x[-window:], y[-window:]
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    latest = np.array([1.0, *r[len(r) - lags :][::-1]])
    return float(close[t] * np.exp(latest @ beta))


@pytest.mark.parametrize(("lags", "window"), [(1, None), (3, None), (5, 60), (2, 30)])
def test_ols_matches_lstsq_at_several_dates(lags, window, bars):
    forecaster = OlsForecaster(lags=lags, window=window)
    start = bars.index[TRAIN]
    out = forecaster.fit(bars.iloc[:TRAIN]).predict(bars, start)
    close = bars["close"].to_numpy()
    for t in (TRAIN, TRAIN + 1, 300, 377, len(bars) - 1):
        expected = lstsq_forecast(close, t, lags, window)
        assert out.iloc[t - TRAIN] == pytest.approx(expected, rel=1e-12)


def test_ols_with_unchanged_closes_uses_the_minimum_norm_solution():
    # Awkward: 80 identical closes make every lagged return zero, so the
    # normal equations are exactly singular until moves enter every lag.
    rng = np.random.default_rng(11)
    close = np.concatenate([np.full(80, 50.0), 50.0 * np.exp(np.cumsum(rng.normal(0, 0.01, 80)))])
    data = synthetic_bars(close)
    forecaster = OlsForecaster(lags=2)
    start_pos = forecaster.min_history - 1
    out = forecaster.fit(data).predict(data, data.index[start_pos])
    assert np.isfinite(out.to_numpy()).all()
    for t in (start_pos, 79, 80, 81, 82, 120, 159):
        assert out.iloc[t - start_pos] == pytest.approx(
            lstsq_forecast(close, t, 2, None), rel=1e-12
        )


def test_ols_fit_records_the_end_of_training_coefficients(bars):
    forecaster = OlsForecaster(lags=2, window=50).fit(bars.iloc[:TRAIN])
    r = np.diff(np.log(bars["close"].to_numpy()[:TRAIN]))
    x = np.column_stack([np.ones(len(r) - 2), r[1:-1], r[:-2]])[-50:]
    expected = np.linalg.lstsq(x, r[2:][-50:], rcond=None)[0]
    np.testing.assert_allclose(forecaster.params_.to_numpy(), expected, rtol=1e-10)
    assert list(forecaster.params_.index) == ["const", "r_lag1", "r_lag2"]


# Reference twins: Kalman ----------------------------------------------------------------


def reference_local_level(y: np.ndarray, s_eps: float, s_eta: float) -> np.ndarray:
    """Ten-line local-level filter; entry t is E[y[t+1] | y[0..t]] (= filtered level)."""
    level, var = y[0], s_eps  # after the first observation under a diffuse prior
    out = [level]
    for obs in y[1:]:
        var_pred = var + s_eta
        gain = var_pred / (var_pred + s_eps)
        level = level + gain * (obs - level)
        var = (1.0 - gain) * var_pred
        out.append(level)
    return np.array(out)


def test_kalman_without_process_noise_is_the_expanding_geometric_mean(bars):
    forecaster = KalmanForecaster(variances={"sigma2.irregular": 1e-3, "sigma2.level": 0.0})
    out = forecaster.fit(bars.iloc[:TRAIN]).predict(bars, bars.index[0])
    log_close = np.log(bars["close"].to_numpy())
    expanding_mean = np.cumsum(log_close) / np.arange(1, len(log_close) + 1)
    np.testing.assert_allclose(out.to_numpy(), np.exp(expanding_mean), rtol=1e-12)


@pytest.mark.parametrize(
    ("s_eps", "s_eta"),
    [
        (1e-4, 2e-4),
        (2e-5, 1.3e-4),  # roughly what the MLE finds on GSPC
        (0.0, 1.7e-4),  # the MLE's usual boundary: no observation noise -> random walk
        (1.0, 1e-12),  # awkward: signal-to-noise ratio of 1e-12
    ],
)
def test_kalman_matches_the_reference_filter(s_eps, s_eta, bars):
    forecaster = KalmanForecaster(variances={"sigma2.irregular": s_eps, "sigma2.level": s_eta})
    out = forecaster.fit(bars.iloc[:TRAIN]).predict(bars, bars.index[0])
    reference = np.exp(reference_local_level(np.log(bars["close"].to_numpy()), s_eps, s_eta))
    np.testing.assert_allclose(out.to_numpy(), reference, rtol=1e-11)
    if s_eps == 0.0:
        np.testing.assert_allclose(out.to_numpy(), bars["close"].to_numpy(), rtol=1e-12)


def test_kalman_on_prices_spanning_ten_orders_of_magnitude():
    # Awkward: a penny stock that becomes a giant; in logs this is a plain trend.
    close = np.exp(np.linspace(np.log(1e-4), np.log(1e6), 300))
    close *= np.exp(np.random.default_rng(5).normal(0.0, 0.02, 300))
    data = synthetic_bars(close)
    variances = {"sigma2.irregular": 1e-4, "sigma2.level": 5e-3}
    out = KalmanForecaster(variances=variances).fit(data).predict(data, data.index[0])
    reference = np.exp(reference_local_level(np.log(close), 1e-4, 5e-3))
    np.testing.assert_allclose(out.to_numpy(), reference, rtol=1e-11)


def test_kalman_trend_without_noise_extrapolates_the_least_squares_line(bars):
    # With no level/slope noise the local linear trend is a fixed line, and the
    # filter at t is the least-squares line through y[0..t], one step ahead.
    variances = {"sigma2.irregular": 1e-3, "sigma2.level": 0.0, "sigma2.trend": 0.0}
    forecaster = KalmanForecaster(trend=True, variances=variances)
    out = forecaster.fit(bars.iloc[:TRAIN]).predict(bars, bars.index[1])
    log_close = np.log(bars["close"].to_numpy())
    for t in (1, 2, 10, 200, len(bars) - 1):
        slope, intercept = np.polyfit(np.arange(t + 1), log_close[: t + 1], 1)
        expected = np.exp(intercept + slope * (t + 1))
        assert out.loc[bars.index[t]] == pytest.approx(expected, rel=1e-9)


def test_kalman_variances_come_from_fit_and_stay_fixed_in_predict(bars):
    forecaster = KalmanForecaster().fit(bars.iloc[:TRAIN])
    fitted = forecaster.params_.copy()
    forecaster.predict(shocked(bars, bars.index[TRAIN]), bars.index[TRAIN])
    pd.testing.assert_series_equal(forecaster.params_, fitted)
    assert forecaster.converged_
    assert (forecaster.params_ >= 0).all()
    assert forecaster.params_["sigma2.level"] > 0
    # a daily log-price level variance of about (1%)^2, not something absurd
    assert 1e-6 < forecaster.params_["sigma2.level"] < 1e-2


# Clear errors -------------------------------------------------------------------------


def test_window_longer_than_the_data_is_a_clear_error(bars):
    short = bars.iloc[:15]
    with pytest.raises(ValueError, match=r"training segment has 15 bars, needs at least 20"):
        SmaForecaster(20).fit(short)
    with pytest.raises(ValueError, match=r"needs 20 bars up to and including it, got 15"):
        SmaForecaster(20).predict(short, short.index[-1])
    with pytest.raises(ValueError, match=r"needs at least 30"):
        KalmanForecaster().fit(short)
    ols = OlsForecaster(lags=5, window=100)
    with pytest.raises(ValueError, match=rf"needs {ols.min_history} bars up to and including"):
        ols.predict(bars.iloc[:200], bars.index[50])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SmaForecaster(0), "window must be a positive integer"),
        (lambda: EmaForecaster(2.5), "span must be a positive integer"),
        (lambda: OlsForecaster(lags=0), "lags must be a positive integer"),
        (lambda: OlsForecaster(lags=5, window=6), r"larger than lags \+ 1"),
        (lambda: KalmanForecaster(variances={"sigma2.level": 1.0}), "exactly the keys"),
    ],
)
def test_bad_parameters_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_closes_are_clear_errors(bars):
    broken = bars.copy()
    broken.iloc[40, broken.columns.get_loc("close")] = np.nan
    day = f"{bars.index[40]:%Y-%m-%d}"
    with pytest.raises(ValueError, match=rf"prices on {day}: column 'close' is nan"):
        SmaForecaster(5).predict(broken, broken.index[100])
    negative = bars.copy()
    negative.iloc[40, negative.columns.get_loc("close")] = -1.0
    with pytest.raises(ValueError, match=rf"{day}: column 'close' has non-positive price -1.0"):
        OlsForecaster(lags=2).fit(negative)
    with pytest.raises(ValueError, match=rf"{day}: column 'close' has non-positive price -1.0"):
        SmaForecaster(5).predict(negative, negative.index[100])  # one contract for every baseline
    closes_only = bars[["close"]]
    pd.testing.assert_series_equal(  # a baseline needs no more than the closes
        RandomWalkForecaster().fit(closes_only).predict(closes_only, bars.index[100]),
        RandomWalkForecaster().fit(bars).predict(bars, bars.index[100]),
    )
    with pytest.raises(ValueError, match="no bars on or after start"):
        RandomWalkForecaster().predict(bars, bars.index[-1] + pd.Timedelta(days=5))
    with pytest.raises(ValueError, match="call fit"):
        KalmanForecaster().predict(bars, bars.index[100])
