"""ARIMA forecaster: no look-ahead, statsmodels as the reference twin, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from statsmodels.tsa.statespace.sarimax import SARIMAX

from models.arima import ArimaConfig, ArimaForecaster
from models.base import BuildContext, Forecaster
from pipelines.sources.load import read_csv_bars
from tests.conftest import SAMPLE_DIR
from tests.lookahead import assert_no_lookahead, synthetic_bars

TRAIN = 300  # bars in the training segment of these tests
CUTS = (TRAIN, 345, 410, 479)  # positions of cut dates: bars after them are changed


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return read_csv_bars(SAMPLE_DIR / "GSPC.csv").iloc[:500]


@pytest.fixture(scope="module")
def fitted(bars) -> ArimaForecaster:
    return ArimaForecaster().fit(bars.iloc[:TRAIN])


# No look-ahead -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order", "trend"), [((1, 0, 1), "c"), ((2, 0, 0), "n"), ((0, 1, 1), "n"), ((1, 1, 1), "c")]
)
def test_no_forecast_at_or_before_a_cut_changes(order, trend, bars):
    forecaster = ArimaForecaster(order=order, trend=trend).fit(bars.iloc[:TRAIN])
    assert_no_lookahead(forecaster, bars, TRAIN, CUTS)


class _MisalignedArima(ArimaForecaster):
    """Deliberately wrong: the forecast made at t+1 dated t (statsmodels' in-sample
    prediction taken without the shift), so it sees close[t+1]."""

    def predict(self, bars, start):
        return super().predict(bars, start).shift(-1).ffill()


def test_the_check_catches_a_misaligned_forecast(bars):
    with pytest.raises(AssertionError):
        assert_no_lookahead(_MisalignedArima().fit(bars.iloc[:TRAIN]), bars, TRAIN, CUTS)


# Reference twins: statsmodels' own filter and forecast(1), a simulated AR(1) ----------


def statsmodels_forecast(close: np.ndarray, t: int, forecaster: ArimaForecaster) -> float:
    """Forecast made at position t: filter r[1..t] with the fitted params, forecast(1)."""
    returns = np.diff(np.log(close[: t + 1]))
    model = SARIMAX(returns, order=forecaster.order, trend=forecaster.trend)
    # statsmodels switches to the steady-state gain once the state covariance moves by
    # less than an absolute 1e-19; on unscaled returns (variances near 1e-4) that comes
    # early enough to shift the forecast by 1e-7, so the reference runs the exact filter.
    model.ssm.tolerance = 0.0
    next_return = model.filter(forecaster.params_.to_numpy()).forecast(1)[0]
    return float(close[t] * np.exp(next_return))


@pytest.mark.parametrize(("order", "trend"), [((1, 0, 1), "c"), ((2, 0, 1), "n")])
def test_forecasts_match_statsmodels_filter_then_forecast(order, trend, bars):
    forecaster = ArimaForecaster(order=order, trend=trend).fit(bars.iloc[:TRAIN])
    assert list(forecaster.params_.index) == list(
        SARIMAX(np.zeros(10), order=order, trend=trend).param_names
    )
    # The warm-up starts at bar 0: the filter runs over every bar passed.
    out = forecaster.predict(bars, bars.index[TRAIN])
    close = bars["close"].to_numpy()
    for t in (TRAIN, TRAIN + 1, 377, len(bars) - 1):
        assert out.iloc[t - TRAIN] == pytest.approx(
            statsmodels_forecast(close, t, forecaster), rel=1e-10
        )


def test_the_params_are_statsmodels_fit_in_log_return_units(fitted, bars):
    returns = np.diff(np.log(bars["close"].to_numpy()[:TRAIN]))
    reference = SARIMAX(returns, order=(1, 0, 1), trend="c")
    # The forecaster's maximum is a maximum of the unscaled likelihood too.
    at_fit = reference.loglike(fitted.params_.to_numpy())
    rng = np.random.default_rng(5)
    for _ in range(5):
        nearby = fitted.params_.to_numpy() * (1.0 + rng.normal(0.0, 1e-3, 4))
        assert reference.loglike(nearby) <= at_fit
    assert fitted.converged_


def ar1_bars(phi: float, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    returns = np.zeros(n)
    shocks = rng.normal(0.0, 0.01, n)
    for s in range(1, n):
        returns[s] = phi * returns[s - 1] + shocks[s]
    return synthetic_bars(50.0 * np.exp(np.cumsum(returns)))


def test_an_ar1_fit_recovers_the_coefficient_and_forecasts_phi_times_the_last_return():
    data = ar1_bars(phi=0.5, n=1500, seed=1)
    forecaster = ArimaForecaster(order=(1, 0, 0), trend="n").fit(data.iloc[:1200])
    assert forecaster.params_["ar.L1"] == pytest.approx(0.5, abs=0.06)
    assert forecaster.params_["sigma2"] == pytest.approx(1e-4, rel=0.1)
    # An AR(1) filter is exact after one observation: E[r[t+1] | past] = phi r[t].
    out = forecaster.predict(data, data.index[1200])
    close = data["close"].to_numpy()
    last_return = np.log(close[1200:] / close[1199:-1])
    expected = close[1200:] * np.exp(forecaster.params_["ar.L1"] * last_return)
    np.testing.assert_allclose(out.to_numpy(), expected, rtol=1e-12)


def test_a_constant_is_the_mean_return_when_there_are_no_lags():
    # Awkward: a price level of 1e9 moving by parts in 1e7, the returns near 1e-7.
    rng = np.random.default_rng(3)
    data = synthetic_bars(1e9 * np.exp(np.cumsum(rng.normal(1e-7, 1e-7, 400))))
    forecaster = ArimaForecaster(order=(0, 0, 0), trend="c").fit(data.iloc[:300])
    returns = np.diff(np.log(data["close"].to_numpy()[:300]))
    assert forecaster.params_["intercept"] == pytest.approx(returns.mean(), rel=1e-3)
    out = forecaster.predict(data, data.index[300])
    expected = data["close"].iloc[300:] * np.exp(forecaster.params_["intercept"])
    np.testing.assert_allclose(out.to_numpy(), expected.to_numpy(), rtol=1e-12)


# Config, errors, the interface ----------------------------------------------------------


def test_config_defaults_and_a_yaml_list_for_the_order():
    assert ArimaConfig() == ArimaConfig(order=(1, 0, 1), trend="c")
    config = ArimaConfig.model_validate({"order": [2, 1, 0], "trend": "n"})
    assert config.order == (2, 1, 0)
    assert config.model_dump(mode="json") == {"order": [2, 1, 0], "trend": "n"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"order": [1, -1, 1]}, r"order\.1\n.*greater than or equal to 0"),
        ({"order": [11, 0, 0]}, r"order\.0\n.*less than or equal to 10"),
        ({"order": [1, 0]}, r"order\.2\n.*Field required"),
        ({"order": [1.5, 0, 1]}, r"order\.0\n.*valid integer"),
        ({"trend": "ct"}, r"trend\n.*Input should be 'c' or 'n'"),
        ({"lags": 3}, r"lags\n.*Extra inputs are not permitted"),
    ],
)
def test_bad_config_values_are_rejected_naming_the_key(params, message):
    with pytest.raises(ValidationError, match=message):
        ArimaConfig.model_validate(params)


def test_the_constructor_checks_its_arguments_with_the_config():
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        ArimaForecaster(order=(1, 0, -1))


def test_from_config_builds_it(fitted):
    forecaster = ArimaForecaster.from_config({"order": (2, 0, 1), "trend": "n"}, BuildContext())
    assert (forecaster.order, forecaster.trend) == ((2, 0, 1), "n")
    assert not ArimaForecaster.stochastic
    assert isinstance(fitted, Forecaster)
    assert fitted.name == "arima"


def test_clear_errors(bars, fitted):
    with pytest.raises(ValueError, match=r"training segment has 40 bars, needs at least 52"):
        ArimaForecaster().fit(bars.iloc[:40])
    with pytest.raises(ValueError, match="call fit"):
        ArimaForecaster().predict(bars, bars.index[TRAIN])
    with pytest.raises(ValueError, match="no bars on or after start"):
        fitted.predict(bars, bars.index[-1] + pd.Timedelta(days=1))
    with pytest.raises(ValueError, match=r"needs 3 bars up to and including it, got 2"):
        ArimaForecaster(order=(0, 1, 1)).fit(bars.iloc[:TRAIN]).predict(bars, bars.index[1])


# The bundled sample data ----------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(SAMPLE_DIR.glob("*.csv")), ids=lambda p: p.stem)
def test_it_runs_on_the_sample_data_with_finite_forecasts(path):
    data = read_csv_bars(path).iloc[:1000]
    forecaster = ArimaForecaster().fit(data.iloc[:750])
    out = forecaster.predict(data, data.index[750])
    assert out.name == "arima"
    assert out.dtype == np.float64
    assert out.index.equals(data.index[750:])
    assert np.isfinite(out.to_numpy()).all()
    assert (out > 0).all()
    # A one-step return forecast is small next to a day's moves.
    assert (np.abs(np.log(out / data["close"].iloc[750:])) < 0.05).all()
