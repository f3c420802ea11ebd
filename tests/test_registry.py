"""Forecasters as registered components: entry points, ``kind``, variants, a user's class.

A forecaster comes into a config through the registry only: its registered
name (an entry point of ``gatecast.forecasters``) or ``package.module:Class``;
the config's key is a name of the user's choosing and ``kind`` defaults to it.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from core import registry
from models.baselines import SmaForecaster
from pipelines.common.errors import ConfigError
from pipelines.config import load_config
from pipelines.execution.walkforward import make_folds, make_forecaster, walk_forward
from pipelines.sources.load import read_csv_bars
from pipelines.tracking import store as tracking_store
from tests.conftest import SAMPLE_DIR

BUILT_INS = {"random_walk", "sma", "ema", "kalman", "ols", "lstm"}


def _smoke(forecasters: dict) -> object:
    return load_config("configs/smoke.yaml", overrides={"forecasters": forecasters})


def test_the_built_ins_are_entry_points():
    assert set(registry.names(registry.FORECASTERS)) >= BUILT_INS
    assert registry.load(registry.FORECASTERS, "sma") is SmaForecaster


def test_todays_configs_keep_their_names_and_order():
    cfg = load_config("configs/default.yaml")
    specs = cfg.forecasters.enabled()
    assert list(specs) == ["random_walk", "sma", "ema", "kalman", "ols", "lstm"]
    assert all(spec.kind == name for name, spec in specs.items())
    assert specs["lstm"].seeds == 2 and specs["sma"].seeds == 1
    assert cfg.forecasters.with_capability("stochastic").keys() == {"lstm"}


def test_variants_of_one_kind_run_side_by_side():
    cfg = _smoke(
        {"sma_50": {"kind": "sma", "window": 50}, "sma_200": {"kind": "sma", "window": 200}}
    )
    fifty, two_hundred = make_forecaster("sma_50", cfg), make_forecaster("sma_200", cfg)
    assert (type(fifty), fifty.window) == (SmaForecaster, 50)
    assert (type(two_hundred), two_hundred.window) == (SmaForecaster, 200)
    bars = read_csv_bars(SAMPLE_DIR / "GSPC.csv")
    folds = make_folds(bars.index, cfg.walkforward)[:1]
    walked = walk_forward(bars, lambda: make_forecaster("sma_50", cfg), folds, name="sma_50")
    assert walked.forecasts.name == "sma_50"


def test_a_config_round_trips_through_its_dump():
    cfg = _smoke({"sma_200": {"kind": "sma", "window": 200}})
    again = load_config(
        "configs/smoke.yaml", overrides={"forecasters": cfg.model_dump()["forecasters"]}
    )
    assert again.forecasters == cfg.forecasters
    assert cfg.model_dump()["forecasters"]["sma_200"] == {"kind": "sma", "window": 200}


@pytest.mark.parametrize(
    ("forecasters", "message"),
    [
        (
            {"ema_5": {"kind": "emma"}},
            r"forecasters\.ema_5\.kind: unknown kind 'emma': did you mean 'ema'",
        ),
        ({"smaa": {}}, r"forecasters\.smaa: unknown kind 'smaa': did you mean 'sma'"),
        (
            {"sma_9": {"kind": "sma", "window": 0}},
            r"forecasters\.sma_9\.window: .*greater than or equal to 1",
        ),
        ({"sma": {"windo": 5}}, r"unknown key 'forecasters\.sma\.windo'; did you mean 'window'"),
        ({"sma": {"seeds": 3}}, r"forecasters\.sma\.seeds: sma is deterministic"),
        ({"lstm": {"seeds": 0}}, r"forecasters\.lstm\.seeds: an integer from 1 to 50"),
        (
            {"x": {"kind": "no_such_module:Thing"}},
            r"forecasters\.x\.kind: .*module 'no_such_module' not found",
        ),
        ({"sma": 5}, r"forecasters\.sma: expected a mapping of its parameters"),
    ],
)
def test_bad_sections_are_one_line_naming_the_full_key(forecasters, message):
    with pytest.raises(ConfigError, match=message):
        _smoke(forecasters)


USER_FORECASTER = '''
    from models.base import Forecaster


    class Drift(Forecaster):
        """A plain subclass: no Config model, its constructor's keywords are its parameters."""

        name = "drift"

        def __init__(self, lookback: int = 20, scale: float = 1.0, seed: int = 0):
            self.lookback, self.scale, self.seed = lookback, scale, seed

        @property
        def min_history(self):
            return self.lookback + 1

        def fit(self, train):
            return self

        def predict(self, bars, start):
            close = bars["close"]
            drift = (close / close.shift(self.lookback)) ** (1 / self.lookback)
            return (close * drift ** self.scale).loc[start:].rename(self.name)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_drift.py").write_text(textwrap.dedent(USER_FORECASTER))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_drift:Drift"
    sys.modules.pop("my_drift", None)


def test_a_users_class_by_module_path_takes_its_constructors_keywords(user_module):
    cfg = _smoke({"drift": {"kind": user_module, "lookback": 10}})
    forecaster = make_forecaster("drift", cfg, seed=7)
    assert (forecaster.lookback, forecaster.scale, forecaster.seed) == (10, 1.0, 7)
    with pytest.raises(ConfigError, match=r"unknown key 'forecasters\.drift\.lookbak'"):
        _smoke({"drift": {"kind": user_module, "lookbak": 10}})
    with pytest.raises(ConfigError, match=r"forecasters\.drift\.lookback: .*valid integer"):
        _smoke({"drift": {"kind": user_module, "lookback": "ten"}})


def test_a_second_lstm_runs_beside_the_first_with_its_own_seeds():
    # a variant of a stochastic kind is a forecaster of its own, seeds and all
    from pipelines.execution.runtime import DeviceInfo
    from pipelines.execution.units import make_units

    cfg = _smoke({"lstm_4": {"kind": "lstm", "units": [4], "seeds": 2}})
    assert make_forecaster("lstm_4", cfg).units == [4]
    bars = {"GSPC": read_csv_bars(SAMPLE_DIR / "GSPC.csv")}
    folds = {"GSPC": make_folds(bars["GSPC"].index, cfg.walkforward)}
    cpu = DeviceInfo("cpu", "cpu", "test", "/CPU:0", True)
    units = make_units(cfg, bars, folds, device=cpu)
    assert {u.forecaster for u in units} >= {"lstm", "lstm_4"}
    four = [u for u in units if u.forecaster == "lstm_4"]
    assert sorted({(u.seed_index, u.seed) for u in four}) == [(0, cfg.seed), (1, cfg.seed + 1)]
    assert all(u.params["units"] == [4] for u in four)


STOCHASTIC_FORECASTER = '''
    import numpy as np

    from models.base import Forecaster


    class Noisy(Forecaster):
        """Last close times a seeded factor near 1: stochastic, so it runs ``seeds``."""

        name = "noisy"
        stochastic = True

        def __init__(self, spread: float = 0.001, seed: int = 0):
            self.spread, self.seed = spread, seed

        def fit(self, train):
            self.factor_ = 1.0 + np.random.default_rng(self.seed).normal(0.0, self.spread)
            return self

        def predict(self, bars, start):
            return (bars["close"] * self.factor_).loc[start:].rename(self.name)
'''


def test_any_stochastic_forecaster_runs_its_seeds_through_train_and_backtest(tmp_path, monkeypatch):
    # seeds follow the declared capability, not the name: a user's stochastic class gets a
    # column per seed, their mean as its own column, and a backtest of each seed
    import json

    import pandas as pd

    from pipelines.stages import backtest, train

    (tmp_path / "my_noisy.py").write_text(textwrap.dedent(STOCHASTIC_FORECASTER))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    sets = [
        f"output_directory={tmp_path / 'build'}",
        "data.instruments=[GSPC]",
        "forecasters.lstm=null",
        "forecasters.noisy={kind: 'my_noisy:Noisy', spread: 0.01, seeds: 2}",
        "tracking.experiment=gatecast-test-seeds",
    ]
    argv = ["--config", "configs/smoke.yaml", *[a for s in sets for a in ("--set", s)]]
    try:
        assert train.main(argv) == 0
        assert backtest.main(argv) == 0
    finally:
        sys.modules.pop("my_noisy", None)
    out = tmp_path / "build" / "smoke"
    frame = pd.read_parquet(out / "forecasts" / "GSPC.parquet")
    seeds = frame[["noisy_seed0", "noisy_seed1"]].dropna()
    assert len(seeds) > 100 and not seeds["noisy_seed0"].equals(seeds["noisy_seed1"])
    pd.testing.assert_series_equal(frame["noisy"].dropna(), seeds.mean(axis=1), check_names=False)
    summary = json.loads((out / "forecasts" / "summary.json").read_text())
    assert summary["seeds"] == {"noisy": [7, 8]}
    backtests = json.loads((out / "backtests" / "summary.json").read_text())
    assert {"noisy", "noisy_seed0", "noisy_seed1"} <= set(
        backtests["instruments"]["GSPC"]["strategies"]
    )


def test_registered_forecasters_go_through_train_and_backtest(tmp_path, monkeypatch):
    # arima and gbm come in through their entry points alone: the stages name neither
    import json

    import pandas as pd

    from pipelines.stages import backtest, train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    sets = [
        f"output_directory={tmp_path / 'build'}",
        "data.instruments=[GSPC]",
        "forecasters.lstm=null",
        "forecasters.arima={order: [1, 0, 0]}",
        "forecasters.gbm_5={kind: gbm, lags: 5, max_iter: 20}",
        "tracking.experiment=gatecast-test-registry",
    ]
    argv = ["--config", "configs/smoke.yaml", *[a for s in sets for a in ("--set", s)]]
    assert train.main(argv) == 0
    frame = pd.read_parquet(tmp_path / "build" / "smoke" / "forecasts" / "GSPC.parquet")
    assert {"arima", "gbm_5"} <= set(frame.columns)
    assert frame[["arima", "gbm_5"]].dropna().shape[0] > 100
    runs = {r.info.run_name for r in tracking_store.find_runs("gatecast-test-registry")}
    assert {"train/GSPC/arima", "train/GSPC/gbm_5"} <= runs
    assert backtest.main(argv) == 0
    summary = json.loads((tmp_path / "build" / "smoke" / "backtests" / "summary.json").read_text())
    strategies = summary["instruments"]["GSPC"]["strategies"]
    assert {"arima", "gbm_5"} <= set(strategies)  # each trades its forecast
