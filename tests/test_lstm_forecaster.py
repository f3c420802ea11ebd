"""LstmForecaster: no look-ahead, seeded reruns, training, persistence, gate values, errors.

Every model here is tiny (window 8, a few units, 3 epochs) and shares one input
shape, so GateLSTM compiles its loop once for the whole file.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from models import gate_lstm_xla
from models.features import StandardScaler, build_features, next_log_return, supervised_windows
from models.gate_lstm import GateLSTM
from models.lstm import LstmForecaster, _whole_batches

WINDOW = 8
TRAIN = 240  # bars in the training segment
SMALL = dict(window=WINDOW, epochs=3, batch_size=32, patience=3, validation_fraction=0.2)


@pytest.fixture(scope="module", autouse=True)
def _op_determinism():
    # Bit-identical reruns on CPU need TensorFlow's deterministic ops, as the pipeline sets.
    tf.config.experimental.enable_op_determinism()


def make_bars(n: int = 360, seed: int = 0) -> pd.DataFrame:
    """Prices whose log returns follow an AR(1) with coefficient 0.6: something to learn."""
    rng = np.random.default_rng(seed)
    returns = np.zeros(n)
    for t in range(1, n):
        returns[t] = 0.6 * returns[t - 1] + rng.normal(0.0, 0.01)
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = close * np.exp(rng.normal(0.0, 0.003, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.005, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.005, n)))
    volume = rng.uniform(1e6, 3e6, n)
    index = pd.bdate_range("2018-01-01", periods=n, name="date")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return make_bars()


@pytest.fixture(scope="module")
def fitted(bars: pd.DataFrame) -> LstmForecaster:
    return LstmForecaster(units=[6], seed=3, **SMALL).fit(bars.iloc[:TRAIN])


@pytest.fixture(scope="module")
def stacked(bars: pd.DataFrame) -> LstmForecaster:
    return LstmForecaster(units=[6, 4], dropout=0.1, seed=5, **SMALL).fit(bars.iloc[:TRAIN])


def test_forecasts_do_not_look_ahead(bars, fitted):
    start = bars.index[TRAIN]
    cut = bars.index[TRAIN + 60]
    changed = bars.copy()
    changed.loc[changed.index > cut] *= 10.0
    before = fitted.predict(bars, start)
    after = fitted.predict(changed, start)
    assert before.name == "lstm" and before.index[0] == start and before.index[-1] == bars.index[-1]
    np.testing.assert_array_equal(before.loc[:cut].to_numpy(), after.loc[:cut].to_numpy())
    # The perturbation is visible after the cut, so the comparison above can fail.
    assert not np.allclose(before.loc[cut:].iloc[1:], after.loc[cut:].iloc[1:])
    # Dropping every bar after the cut changes nothing at or before it either.
    truncated = fitted.predict(bars.loc[:cut], start)
    np.testing.assert_array_equal(truncated.to_numpy(), before.loc[:cut].to_numpy())


def test_training_sees_the_training_segment_only(bars, fitted):
    train = bars.iloc[:TRAIN]
    changed = bars.copy()
    changed.iloc[TRAIN:] *= 10.0
    a = fitted
    b = LstmForecaster(units=[6], seed=3, **SMALL).fit(changed.iloc[:TRAIN])
    assert a.scaler_ == b.scaler_
    rows = build_features(train).iloc[1:].to_numpy()
    np.testing.assert_allclose(a.scaler_.mean, rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(a.scaler_.std, rows.std(axis=0), rtol=1e-12)
    # Validation slice = the last 20% of the training windows, in time order.
    assert a.n_validation_samples_ == round(0.2 * (TRAIN - 1 - WINDOW))
    assert a.validation_start_ == train.index[-2 - a.n_validation_samples_ + 1]


def test_same_seed_same_forecasts(bars, stacked):
    again = LstmForecaster(units=[6, 4], dropout=0.1, seed=5, **SMALL).fit(bars.iloc[:TRAIN])
    assert again.history_ == stacked.history_
    start = bars.index[TRAIN]
    pd.testing.assert_series_equal(again.predict(bars, start), stacked.predict(bars, start))
    other = LstmForecaster(units=[6, 4], dropout=0.1, seed=6, **SMALL).fit(bars.iloc[:TRAIN])
    assert not np.allclose(other.predict(bars, start), stacked.predict(bars, start))


def test_training_lowers_the_loss_and_keeps_the_best_epoch(bars):
    model = LstmForecaster(units=[6], seed=3, **{**SMALL, "epochs": 6}, learning_rate=0.02)
    model.fit(bars.iloc[:TRAIN])
    loss, val_loss = model.history_["loss"], model.history_["val_loss"]
    assert len(loss) == len(val_loss) == model.epochs_trained_ <= 6
    assert loss[-1] < loss[0]
    assert min(val_loss) < val_loss[0]
    # Early stopping restored the weights of the best validation epoch.
    train = bars.iloc[:TRAIN]
    scaled = model.scaler_.transform(build_features(train))
    target = (next_log_return(train) - model.scaler_.mean[0]) / model.scaler_.std[0]
    x, y, _ = supervised_windows(scaled, target, WINDOW)
    n_val = model.n_validation_samples_
    # The AR(1) returns are learnable: on the validation slice the model beats
    # the training-mean forecast (0 in scaled units) by a clear margin.
    assert min(val_loss) < 0.9 * np.mean(y[-n_val:] ** 2)
    val = model.model_.evaluate(x[-n_val:], y[-n_val:], batch_size=32, verbose=0, return_dict=True)
    assert val["loss"] == pytest.approx(min(val_loss), rel=1e-5)
    assert model.best_epoch_ == int(np.argmin(val_loss))


def test_training_batches_are_whole_with_zero_weight_padding():
    x = np.arange(45 * WINDOW * 2, dtype=np.float64).reshape(45, WINDOW, 2) + 1.0
    y = np.arange(45, dtype=np.float64) + 1.0
    data = _whole_batches(x, y, 16, shuffle_seed=1)
    # Static shapes: the model is traced, and each GateLSTM program compiled, for
    # exactly one batch shape, not once per shape met at run time.
    assert [tuple(spec.shape) for spec in data.element_spec] == [(16, WINDOW, 2), (16,), (16,)]
    epochs = [[tuple(t.numpy() for t in batch) for batch in data] for _ in range(2)]
    for batches in epochs:
        assert [b[0].shape for b in batches] == [(16, WINDOW, 2)] * 3
        assert all(b[0].dtype == b[1].dtype == b[2].dtype == np.float32 for b in batches)
        weight = np.concatenate([b[2] for b in batches])
        np.testing.assert_array_equal(weight, [1.0] * 45 + [0.0] * 3)
        real_y = np.concatenate([b[1] for b in batches])[:45]
        real_x = np.concatenate([b[0] for b in batches])[:45]
        # Every sample once per epoch, x still paired with its y; padding is zeros.
        np.testing.assert_array_equal(np.sort(real_y), y)
        np.testing.assert_array_equal(real_x, x[real_y.astype(int) - 1])
        assert not batches[-1][0][13:].any() and not batches[-1][1][13:].any()
    # Reshuffled every epoch, and the same epochs again from the same seed.
    assert not np.array_equal(epochs[0][0][1], epochs[1][0][1])
    again = [tuple(t.numpy() for t in batch) for batch in _whole_batches(x, y, 16, shuffle_seed=1)]
    np.testing.assert_array_equal(again[0][1], epochs[0][0][1])
    # Without a seed (the validation slice) the order is kept.
    ordered = np.concatenate([b[1].numpy() for b in _whole_batches(x, y, 16)])
    np.testing.assert_array_equal(ordered[:45], y)


def test_padding_changes_neither_the_loss_nor_the_gradients(fitted):
    model = fitted.model_
    rng = np.random.default_rng(9)
    n_features = len(fitted.feature_columns)
    x = rng.normal(size=(20, WINDOW, n_features)).astype(np.float32)
    y = rng.normal(size=20).astype(np.float32)
    # Far-off values in the padded rows: only their zero weight may hide them.
    x_pad = np.concatenate([x, 50 * rng.normal(size=(12, WINDOW, n_features))]).astype(np.float32)
    y_pad = np.concatenate([y, 50 * rng.normal(size=12)]).astype(np.float32)
    weight = np.array([1.0] * 20 + [0.0] * 12, dtype=np.float32)

    def loss_and_gradients(x, y, sample_weight):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
        return [loss.numpy(), *(g.numpy() for g in tape.gradient(loss, model.trainable_weights))]

    padded = loss_and_gradients(x_pad, y_pad, weight)
    plain = loss_and_gradients(x, y, None)
    assert plain[0] == pytest.approx(np.mean((model(x)[:, 0].numpy() - y) ** 2), rel=1e-5)
    for a, b in zip(padded, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_training_on_padded_batches_equals_training_on_a_partial_batch(bars):
    forecaster = LstmForecaster(units=[6], seed=3, **SMALL)
    train = bars.iloc[:TRAIN]
    scaler = StandardScaler.fit(build_features(train))
    target = (next_log_return(train) - scaler.mean[0]) / scaler.std[0]
    x, y, _ = supervised_windows(scaler.transform(build_features(train)), target, WINDOW)
    x, y = x[:75].astype(np.float32), y[:75].astype(np.float32)  # 75 = 2 * 32 + 11

    def trained(dataset: Callable[[], tf.data.Dataset]) -> list[np.ndarray]:
        # as fit does: the global seed first, so the shuffle's seeds do not depend on
        # whatever an earlier test left as the global seed
        keras.utils.set_random_seed(3)
        data = dataset()
        model = forecaster._compiled_model(x.shape[-1])
        model.fit(data, epochs=2, shuffle=False, verbose=0)
        return model.get_weights()

    padded = trained(lambda: _whole_batches(x, y, 32, shuffle_seed=3))
    # The same shuffled batches with the last one left at 11 rows, as fit(x, y) would.
    plain = trained(
        lambda: (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(75, seed=3, reshuffle_each_iteration=True)
            .batch(32)
        )
    )
    for a, b in zip(padded, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    keras.utils.set_random_seed(3)
    initial = forecaster._compiled_model(x.shape[-1]).get_weights()
    assert max(np.max(np.abs(a - b)) for a, b in zip(padded, initial, strict=True)) > 1e-3


def test_a_refit_on_another_segment_length_compiles_nothing_new(bars, fitted):
    # Each walk-forward fold fits a fresh model on a longer training segment; with
    # whole batches every fit presents the shapes the first one compiled for.
    traced = gate_lstm_xla.trace_count()
    longer = LstmForecaster(units=[6], seed=4, **SMALL).fit(bars.iloc[: TRAIN + 37])
    batch = SMALL["batch_size"]
    assert longer.n_fit_samples_ % batch != fitted.n_fit_samples_ % batch
    assert gate_lstm_xla.trace_count() == traced


def test_save_and_load_reproduce_forecasts(bars, fitted, tmp_path):
    fitted.save(tmp_path / "lstm")
    loaded = LstmForecaster.load(tmp_path / "lstm")
    assert loaded.get_params() == fitted.get_params()
    assert loaded.scaler_ == fitted.scaler_
    assert loaded.history_ == fitted.history_
    start = bars.index[TRAIN]
    expected = fitted.predict(bars, start)
    pd.testing.assert_series_equal(loaded.predict(bars, start), expected, check_exact=True)

    # A fresh process (as an MLflow pyfunc loader would be) gives the same numbers.
    bars.to_parquet(tmp_path / "bars.parquet")
    script = textwrap.dedent(
        f"""
        import pandas as pd
        from models.lstm import LstmForecaster
        bars = pd.read_parquet({str(tmp_path / "bars.parquet")!r})
        forecaster = LstmForecaster.load({str(tmp_path / "lstm")!r})
        forecaster.predict(bars, bars.index[{TRAIN}]).to_frame().to_parquet(
            {str(tmp_path / "out.parquet")!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = pd.read_parquet(tmp_path / "out.parquet")["lstm"]
    np.testing.assert_array_equal(fresh.to_numpy(), expected.to_numpy())
    assert fresh.index.equals(expected.index)


def test_bytes_round_trip_reproduces_forecasts_and_pins_the_row_blocks(bars):
    # What a worker process hands back to the driver: the fitted forecaster as bytes.
    fitted = LstmForecaster(units=[6], seed=3, batch_shards=2, **SMALL).fit(bars.iloc[:TRAIN])
    layers = [layer for layer in fitted.model_.layers if isinstance(layer, GateLSTM)]
    assert [layer.batch_shards for layer in layers] == [2]
    data = pickle.loads(pickle.dumps(fitted.to_bytes()))
    loaded = LstmForecaster.from_bytes(data)
    assert loaded.get_params() == fitted.get_params()
    assert loaded.get_params()["batch_shards"] == 2
    assert loaded.scaler_ == fitted.scaler_
    assert loaded.history_ == fitted.history_
    assert loaded.validation_start_ == fitted.validation_start_
    start = bars.index[TRAIN]
    pd.testing.assert_series_equal(
        loaded.predict(bars, start), fitted.predict(bars, start), check_exact=True
    )


def test_save_bytes_writes_the_files_save_writes(bars, fitted, tmp_path):
    # The driver registers a model from its units' bytes without rebuilding it.
    data = fitted.to_bytes()
    LstmForecaster.save_bytes(data, tmp_path / "from_bytes")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # save's files (model.keras holds times)
        assert sorted(archive.namelist()) == sorted(
            p.name for p in (tmp_path / "from_bytes").iterdir()
        )
        for file in archive.namelist():
            assert (tmp_path / "from_bytes" / file).read_bytes() == archive.read(file)
    fitted.save(tmp_path / "saved")
    assert (tmp_path / "from_bytes" / "forecaster.json").read_text() == (
        tmp_path / "saved" / "forecaster.json"
    ).read_text()
    loaded = LstmForecaster.load(tmp_path / "from_bytes")
    start = bars.index[TRAIN]
    pd.testing.assert_series_equal(
        loaded.predict(bars, start), fitted.predict(bars, start), check_exact=True
    )


def test_from_bytes_refuses_what_to_bytes_did_not_make():
    with pytest.raises(ValueError, match="not an archive made by to_bytes"):
        LstmForecaster.from_bytes(b"not a zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("forecaster.json", "{}")
    with pytest.raises(ValueError, match="lacks model.keras"):
        LstmForecaster.from_bytes(buffer.getvalue())


def test_gate_activations(bars, fitted, stacked):
    start = bars.index[TRAIN]
    gates = fitted.gate_activations(bars, start)
    assert list(gates.columns) == ["forget", "input", "output", "cell"]
    assert gates.index.equals(fitted.predict(bars, start).index)
    sigmoids = gates[["forget", "input", "output"]].to_numpy()
    assert ((sigmoids > 0) & (sigmoids < 1)).all()
    assert np.isfinite(gates["cell"]).all()

    # The gates belong to the forecast: h = o * tanh(C) at the window's last
    # step, through the Dense head, gives the model's scaled next return.
    per_unit = fitted.gate_activations_per_unit(bars, start)
    assert per_unit["forget"].shape == (len(gates), 6)
    pd.testing.assert_series_equal(
        per_unit["input"].mean(axis=1), gates["input"], check_names=False
    )
    h = per_unit["output"].to_numpy() * np.tanh(per_unit["cell"].to_numpy())
    kernel, bias = fitted.model_.get_layer("next_log_return").get_weights()
    r_hat = (h @ kernel + bias)[:, 0] * fitted.scaler_.std[0] + fitted.scaler_.mean[0]
    close = bars["close"].loc[start:]
    np.testing.assert_allclose(
        close * np.exp(r_hat), fitted.predict(bars, start), rtol=1e-5, atol=0
    )

    # With stacked layers the values come from the last one.
    last = stacked.gate_activations_per_unit(bars, start)
    assert last["output"].shape == (len(gates), 4)
    values = np.stack([last[k].to_numpy() for k in ("forget", "input", "output")])
    assert ((values > 0) & (values < 1)).all()


def test_too_short_training_segment_is_a_clear_error(bars):
    model = LstmForecaster(units=[6], seed=3, **SMALL)
    needed = model.required_train_bars()
    with pytest.raises(ValueError, match=f"needs at least {needed}") as err:
        model.fit(bars.iloc[: needed - 1])
    for key in (
        "features.window",
        "forecasters.lstm.validation_fraction",
        "walkforward.train_bars",
    ):
        assert key in str(err.value)
    fit_samples, val_samples = model._split(needed - 1 - WINDOW)
    assert fit_samples >= 8 and val_samples >= 1


def test_forecast_errors(bars, fitted):
    with pytest.raises(ValueError, match="call fit"):
        LstmForecaster(units=[6], **SMALL).predict(bars, bars.index[100])
    with pytest.raises(ValueError, match=f"needs {WINDOW + 1} bars up to that date"):
        fitted.predict(bars, bars.index[WINDOW - 1])
    # The first date with enough history works, as does start=None.
    assert fitted.predict(bars, bars.index[WINDOW]).index[0] == bars.index[WINDOW]
    assert fitted.predict(bars).index[0] == bars.index[WINDOW]
    assert fitted.predict(bars, bars.index[-1] + pd.Timedelta(days=1)).empty


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"units": []}, "at least one layer"),
        ({"units": [0]}, "units must be an integer >= 1"),
        ({"window": 0}, "window must be"),
        ({"validation_fraction": 0.0}, "validation_fraction must be in"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"learning_rate": 0.0}, "learning_rate must be in"),
        ({"batch_shards": 0}, "batch_shards must be an integer >= 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LstmForecaster(**kwargs)
