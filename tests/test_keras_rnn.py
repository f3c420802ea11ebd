"""Keras's own LSTM and GRU forecasters: registry-only components on the LSTM's loop.

``keras_lstm`` and ``gru`` come into a config only through their entry points;
they forecast, train and save as the hand-built ``lstm`` does, with
``keras.layers.LSTM`` / ``keras.layers.GRU`` as the recurrent layer. Every model
here is tiny (window 8, 4 units, 1 epoch).
"""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from core import registry
from models.base import BuildContext, Forecaster
from models.gate_lstm import GateLSTM
from models.gru import GruForecaster
from models.keras_lstm import KerasLstmForecaster
from models.lstm import LstmConfig, LstmForecaster
from pipelines.config import load_config
from pipelines.sources.load import read_csv_bars
from tests.conftest import REPO_ROOT, SAMPLE_DIR
from tests.lookahead import assert_no_lookahead

TRAIN = 300  # bars in the training segment of these tests
CUTS = (TRAIN, 345, 410, 479)  # positions of cut dates: bars after them are changed
SMALL = dict(window=8, units=[4], epochs=1, batch_size=32, validation_fraction=0.2)

# each forecaster with the Keras layer its network must be made of
KINDS = {
    "keras_lstm": (KerasLstmForecaster, keras.layers.LSTM),
    "gru": (GruForecaster, keras.layers.GRU),
}


@pytest.fixture(scope="module", autouse=True)
def _op_determinism():
    # Bit-identical reruns on CPU need TensorFlow's deterministic ops, as the pipeline sets.
    tf.config.experimental.enable_op_determinism()


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return read_csv_bars(SAMPLE_DIR / "GSPC.csv").iloc[:500]


@pytest.fixture(scope="module", params=list(KINDS))
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def fitted(kind, bars) -> KerasLstmForecaster:
    cls, _ = KINDS[kind]
    return cls(**SMALL, seed=3).fit(bars.iloc[:TRAIN])


# Fit, predict, no look-ahead -------------------------------------------------------------


def test_fit_and_predict_on_the_sample(kind, fitted, bars):
    out = fitted.predict(bars, bars.index[TRAIN])
    assert isinstance(fitted, Forecaster)
    assert out.name == kind
    assert out.dtype == np.float64
    assert out.index.equals(bars.index[TRAIN:])
    assert np.isfinite(out.to_numpy()).all()
    # A one-step return forecast is small next to a day's moves.
    assert (np.abs(np.log(out / bars["close"].iloc[TRAIN:])) < 0.05).all()
    assert fitted.epochs_trained_ == 1 and len(fitted.history_["val_loss"]) == 1


def test_no_forecast_at_or_before_a_cut_changes(fitted, bars):
    assert_no_lookahead(fitted, bars, TRAIN, CUTS)


class _Misaligned:
    """Deliberately wrong: the forecast made at t+1 dated t, so it sees close[t+1]."""

    def __init__(self, forecaster: Forecaster) -> None:
        self.forecaster = forecaster

    def predict(self, bars, start):
        return self.forecaster.predict(bars, start).shift(-1).ffill()


def test_the_check_catches_a_misaligned_forecast(fitted, bars):
    with pytest.raises(AssertionError):
        assert_no_lookahead(_Misaligned(fitted), bars, TRAIN, CUTS)


# The network: Keras's layers here, GateLSTM in the hand-built lstm -----------------------


def test_the_network_is_made_of_keras_layers(kind, fitted):
    _, layer_class = KINDS[kind]
    recurrent = [layer for layer in fitted.model_.layers if isinstance(layer, keras.layers.RNN)]
    assert [type(layer) for layer in recurrent] == [layer_class]
    assert not any(isinstance(layer, GateLSTM) for layer in fitted.model_.layers)
    assert recurrent[0].units == 4 and recurrent[0].cell.seed == 3
    assert fitted.model_.name == f"{kind}_forecaster"


def test_stacked_layers_return_sequences_but_the_last(kind):
    cls, layer_class = KINDS[kind]
    model = cls(**(SMALL | {"units": [4, 3]}), dropout=0.1, seed=5)._build_model(3)
    recurrent = [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]
    assert [type(layer) for layer in recurrent] == [layer_class, layer_class]
    assert [layer.return_sequences for layer in recurrent] == [True, False]
    assert [layer.cell.seed for layer in recurrent] == [5, 6]
    assert [layer.dropout for layer in recurrent] == [0.1, 0.1]


def test_the_hand_built_lstm_still_builds_gate_lstm_layers():
    model = LstmForecaster(**(SMALL | {"units": [4, 3]}), seed=5)._build_model(3)
    recurrent = [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]
    assert [type(layer) for layer in recurrent] == [GateLSTM, GateLSTM]
    assert [layer.name for layer in recurrent] == ["gate_lstm_0", "gate_lstm_1"]
    assert model.name == "lstm_forecaster"


# Seeds, capabilities, what is not theirs --------------------------------------------------


def test_the_seed_reaches_keras_layers_and_reruns_are_identical(bars):
    start = bars.index[TRAIN]

    def forecasts(seed: int) -> np.ndarray:
        fit = KerasLstmForecaster(**SMALL, seed=seed).fit(bars.iloc[:TRAIN])
        return fit.predict(bars, start).to_numpy()

    first = forecasts(11)
    np.testing.assert_array_equal(forecasts(11), first)
    assert not np.array_equal(forecasts(12), first)


@pytest.mark.parametrize("kind", list(KINDS))
def test_capabilities_and_what_belongs_to_gate_lstm(kind, bars):
    cls, _ = KINDS[kind]
    assert (cls.stochastic, cls.device, cls.export, cls.introspection) == (
        True,
        True,
        True,
        False,
    )
    assert cls.Config is LstmConfig
    assert cls.label == {"keras_lstm": "Keras LSTM", "gru": "GRU"}[kind]
    # batch_shards is GateLSTM's: settle adds none, the constructor refuses one
    assert "batch_shards" not in cls.settle({"units": [4], "batch_size": 64})
    assert "batch_shards" in LstmForecaster.settle({"units": [4], "batch_size": 64})
    with pytest.raises(ValueError, match="batch_shards is GateLSTM's"):
        cls(**SMALL, batch_shards=2)
    forecaster = cls(**SMALL)
    with pytest.raises(NotImplementedError, match="has no gate values"):
        forecaster.gate_activations_per_unit(bars, bars.index[TRAIN])
    with pytest.raises(NotImplementedError, match="has no gate values"):
        forecaster.gate_activations(bars, bars.index[TRAIN])


def test_importing_them_does_not_import_keras():
    script = (
        "import sys\n"
        "import models.gru, models.keras_lstm\n"
        "loaded = {'keras', 'tensorflow'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]


# Through the registry and a config --------------------------------------------------------


def test_the_registry_finds_them_by_kind():
    assert {"keras_lstm", "gru", "lstm"} <= set(registry.names(registry.FORECASTERS))
    assert registry.load(registry.FORECASTERS, "keras_lstm") is KerasLstmForecaster
    assert registry.load(registry.FORECASTERS, "gru") is GruForecaster


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_config_section_validates_and_builds_the_forecaster(kind):
    cls, _ = KINDS[kind]
    cfg = load_config(
        "configs/smoke.yaml",
        overrides={"forecasters": {kind: {"units": [4], "epochs": 1}, "my_rnn": {"kind": kind}}},
    )
    spec = cfg.forecasters.enabled()[kind]
    assert (spec.kind, spec.cls, spec.seeds) == (kind, cls, 1)
    assert cfg.forecasters.enabled()["my_rnn"].cls is cls
    params = spec.cls.settle(spec.arguments())
    context = BuildContext(seed=cfg.seed + 1, features=cfg.features.model_dump())
    built = spec.cls.from_config(params, context)
    assert type(built) is cls
    assert (built.units, built.epochs, built.seed) == ([4], 1, cfg.seed + 1)
    assert built.window == cfg.features.window and built.batch_shards is None


def test_the_zoo_runs_them_beside_the_lstm_with_its_settings():
    specs = load_config("configs/zoo.yaml").forecasters.enabled()
    assert {"keras_lstm", "gru", "lstm", "arima", "gbm"} <= specs.keys()
    for kind in KINDS:
        assert specs[kind].cls is KINDS[kind][0]
        assert specs[kind].arguments() == specs["lstm"].arguments()
        assert specs[kind].seeds == specs["lstm"].seeds


# Export: save / load and bytes ------------------------------------------------------------


def test_save_load_and_bytes_reproduce_forecasts(kind, fitted, bars, tmp_path):
    cls, layer_class = KINDS[kind]
    start = bars.index[TRAIN]
    expected = fitted.predict(bars, start)
    fitted.save(tmp_path / kind)
    for loaded in (cls.load(tmp_path / kind), cls.from_bytes(fitted.to_bytes())):
        assert type(loaded) is cls
        assert loaded.get_params() == fitted.get_params()
        assert loaded.history_ == fitted.history_
        assert any(type(layer) is layer_class for layer in loaded.model_.layers)
        pd.testing.assert_series_equal(loaded.predict(bars, start), expected, check_exact=True)
    # The shared file format names its forecaster: another class does not take it.
    with pytest.raises(ValueError, match=f"saved by the '{kind}' forecaster, not 'lstm'"):
        LstmForecaster.load(tmp_path / kind)
