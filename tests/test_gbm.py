"""Gradient-boosting forecaster: no look-ahead, a hand-built regressor as the twin, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.ensemble import HistGradientBoostingRegressor

from models.base import BuildContext, Forecaster
from models.gbm import GbmConfig, GbmForecaster
from pipelines.sources.load import read_csv_bars
from tests.conftest import SAMPLE_DIR
from tests.lookahead import assert_no_lookahead

TRAIN = 300  # bars in the training segment of these tests
CUTS = (TRAIN, 345, 410, 479)  # positions of cut dates: bars after them are changed
SMALL = {"max_iter": 30, "min_samples_leaf": 20}  # a quick model that still splits


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return read_csv_bars(SAMPLE_DIR / "GSPC.csv").iloc[:500]


# No look-ahead -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params", [{"lags": 1}, {"lags": 10}, {"lags": 5, "use_range": True, "use_volume": True}]
)
def test_no_forecast_at_or_before_a_cut_changes(params, bars):
    forecaster = GbmForecaster(**params, **SMALL).fit(bars.iloc[:TRAIN])
    assert_no_lookahead(forecaster, bars, TRAIN, CUTS)


def test_the_last_training_bar_is_the_last_target(bars):
    train = bars.iloc[:TRAIN]
    start = bars.index[TRAIN]
    fitted = GbmForecaster(**SMALL).fit(train).predict(bars, start)
    moved = train.copy()
    moved.iloc[-1, :4] *= 1.05  # open, high, low, close of the last training bar
    refitted = GbmForecaster(**SMALL).fit(moved).predict(bars, start)
    # Only the last sample's target moved (the last bar is no sample's features), and
    # the trees with it; the forecasts are made from the same unmoved bars.
    assert not np.array_equal(refitted.to_numpy(), fitted.to_numpy())


class _MisalignedGbm(GbmForecaster):
    """Deliberately wrong: the forecast made at t+1 dated t, so it sees close[t+1]."""

    def predict(self, bars, start):
        return super().predict(bars, start).shift(-1).ffill()


def test_the_check_catches_a_misaligned_forecast(bars):
    with pytest.raises(AssertionError):
        assert_no_lookahead(_MisalignedGbm(**SMALL).fit(bars.iloc[:TRAIN]), bars, TRAIN, CUTS)


# Reference twin: a regressor fit by hand on a lag matrix built with pandas shift -------


def lag_matrix(bars: pd.DataFrame, lags: int, use_range: bool, use_volume: bool) -> pd.DataFrame:
    """Row t: the last ``lags`` log returns, then volume changes, then ranges (if used)."""
    columns = {"r": np.log(bars["close"]).diff()}
    if use_volume:
        columns["v"] = np.log1p(bars["volume"]).diff()
    if use_range:
        columns["hl"] = np.log(bars["high"] / bars["low"])
    return pd.concat(
        {
            f"{name}{lag}": series.shift(lag)
            for name, series in columns.items()
            for lag in range(lags)
        },
        axis=1,
    )


@pytest.mark.parametrize(
    "params",
    [
        {"lags": 3},
        {"lags": 10, "max_depth": None, "max_leaf_nodes": 7, "learning_rate": 0.2},
        {"lags": 4, "use_range": True, "use_volume": True, "l2_regularization": 0.0},
    ],
)
def test_forecasts_match_a_regressor_fit_by_hand(params, bars):
    params = SMALL | params
    lags = params["lags"]
    use_range = params.get("use_range", False)
    use_volume = params.get("use_volume", False)
    forecaster = GbmForecaster(**params, seed=7).fit(bars.iloc[:TRAIN])
    out = forecaster.predict(bars, bars.index[TRAIN])

    train = bars.iloc[:TRAIN]
    x_train = lag_matrix(train, lags, use_range, use_volume)
    # Targets come from the training bars alone: the last one is the last training bar.
    y_train = np.log(train["close"]).diff().shift(-1)
    usable = x_train.notna().all(axis=1) & y_train.notna()
    assert usable.sum() == TRAIN - lags - 1
    regressor_params = {
        k: v for k, v in params.items() if k not in ("lags", "use_range", "use_volume")
    }
    reference = HistGradientBoostingRegressor(
        **(
            {"learning_rate": 0.05, "max_depth": 3, "max_leaf_nodes": 31, "l2_regularization": 1.0}
            | regressor_params
        ),
        early_stopping=False,
        random_state=7,
    ).fit(x_train[usable].to_numpy(), y_train[usable].to_numpy())
    x_all = lag_matrix(bars, lags, use_range, use_volume).iloc[TRAIN:]
    expected = bars["close"].iloc[TRAIN:] * np.exp(reference.predict(x_all.to_numpy()))
    np.testing.assert_allclose(out.to_numpy(), expected.to_numpy(), rtol=1e-14, atol=0)
    assert forecaster.model_.n_features_in_ == x_all.shape[1]
    assert forecaster.model_.n_iter_ == params["max_iter"]  # no early stopping


def test_the_seed_is_the_experiments_and_does_not_change_the_forecasts(bars):
    built = GbmForecaster.from_config({"lags": 5, **SMALL}, BuildContext(seed=123))
    assert built.seed == 123
    assert not GbmForecaster.stochastic
    start = bars.index[TRAIN]
    out = built.fit(bars.iloc[:TRAIN]).predict(bars, start)
    assert built.model_.random_state == 123
    other = GbmForecaster(lags=5, **SMALL, seed=0).fit(bars.iloc[:TRAIN]).predict(bars, start)
    np.testing.assert_array_equal(out.to_numpy(), other.to_numpy())


# Config, errors, the interface ----------------------------------------------------------


def test_config_defaults():
    assert GbmConfig().model_dump() == {
        "lags": 10,
        "use_range": False,
        "use_volume": False,
        "max_iter": 100,
        "learning_rate": 0.05,
        "max_depth": 3,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 50,
        "l2_regularization": 1.0,
    }
    assert GbmConfig.model_validate({"max_depth": None, "max_leaf_nodes": None}).max_depth is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lags": -1}, r"lags\n.*greater than or equal to 1"),
        ({"lags": 2.5}, r"lags\n.*valid integer"),
        ({"max_iter": 0}, r"max_iter\n.*greater than or equal to 1"),
        ({"learning_rate": 0}, r"learning_rate\n.*greater than 0"),
        ({"learning_rate": float("nan")}, r"learning_rate\n.*finite number"),
        ({"max_leaf_nodes": 1}, r"max_leaf_nodes\n.*greater than or equal to 2"),
        ({"min_samples_leaf": 0}, r"min_samples_leaf\n.*greater than or equal to 1"),
        ({"l2_regularization": -0.1}, r"l2_regularization\n.*greater than or equal to 0"),
        ({"use_range": "yes"}, r"use_range\n.*valid boolean"),
        ({"seed": 3}, r"seed\n.*Extra inputs are not permitted"),
    ],
)
def test_bad_config_values_are_rejected_naming_the_key(params, message):
    with pytest.raises(ValidationError, match=message):
        GbmConfig.model_validate(params)


def test_the_constructor_checks_its_arguments_with_the_config():
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        GbmForecaster(lags=0)


def test_clear_errors(bars):
    forecaster = GbmForecaster(lags=10)
    assert forecaster.min_history == 11
    assert forecaster.required_train_bars() == 61
    with pytest.raises(ValueError, match=r"training segment has 60 bars, needs at least 61"):
        forecaster.fit(bars.iloc[:60])
    with pytest.raises(ValueError, match="call fit"):
        forecaster.predict(bars, bars.index[TRAIN])
    forecaster.fit(bars.iloc[:TRAIN])
    with pytest.raises(ValueError, match="no bars on or after start"):
        forecaster.predict(bars, bars.index[-1] + pd.Timedelta(days=1))
    with pytest.raises(ValueError, match=r"needs 11 bars up to and including it, got 10"):
        forecaster.predict(bars, bars.index[9])
    broken = bars.copy()
    broken.iloc[TRAIN + 3, 3] = -1.0
    with pytest.raises(ValueError, match="column 'close' has non-positive price"):
        forecaster.predict(broken, bars.index[TRAIN])


# The bundled sample data ----------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(SAMPLE_DIR.glob("*.csv")), ids=lambda p: p.stem)
def test_it_runs_on_the_sample_data_with_finite_forecasts(path):
    data = read_csv_bars(path).iloc[:1000]
    forecaster = GbmForecaster(use_range=True, use_volume=True).fit(data.iloc[:750])
    out = forecaster.predict(data, data.index[750])
    assert isinstance(forecaster, Forecaster)
    assert out.name == "gbm"
    assert out.dtype == np.float64
    assert out.index.equals(data.index[750:])
    assert np.isfinite(out.to_numpy()).all()
    assert (out > 0).all()
    # A one-step return forecast is small next to a day's moves.
    assert (np.abs(np.log(out / data["close"].iloc[750:])) < 0.05).all()
