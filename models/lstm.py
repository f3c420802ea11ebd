"""The LSTM forecaster: GateLSTM layers on windows of features, next log return -> next close.

Training (``fit``) sees the training segment only: features are built from
its bars, the scaler is fit on all of its feature rows (the validation slice
included; both lie before any forecast date), and the validation slice for
early stopping is the *last* ``validation_fraction`` of its samples, kept in
time order; shuffling happens within the rest. Forecasting (``predict``) uses,
for each date ``t``, the window of features ending at ``t`` (bars up to ``t``
only).
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from models.base import BuildContext, Forecaster
from models.features import (
    FEATURE_WARMUP,
    RETURN,
    StandardScaler,
    build_features,
    check_bars,
    feature_columns,
    next_log_return,
    supervised_windows,
    windows_ending_at,
)

if TYPE_CHECKING:  # Keras and TensorFlow load when a model is built, not on import
    import keras
    import tensorflow as tf

# Below this many training samples (after the validation slice is set aside)
# the network has next to nothing to learn from: say so instead of training.
MIN_FIT_SAMPLES = 8

# Forecasts are computed in fixed-size, zero-padded chunks: one input shape
# whatever the number of dates (GateLSTM compiles its loop once per shape), and
# a date's forecast does not depend on how many other dates share the call.
PREDICT_CHUNK = 256

# Training and validation batches all hold ``batch_size`` rows: the last, partial
# batch is filled up with zero-weight rows. One input shape per model size means
# the compiled GateLSTM loop (and XLA's compilation of it) is reused by every fit
# in the process, whatever the length of each walk-forward fold's training segment.
_MSE = "mse"

MODEL_FILE = "model.keras"
STATE_FILE = "forecaster.json"
FORMAT_VERSION = 1

GATE_COLUMNS = {"forget": "f", "input": "i", "output": "o", "cell": "c"}


class LstmConfig(BaseModel):
    """The LSTM's parameters under ``forecasters.<name>``; ``window`` and the features
    come from the config's ``features`` section, the seed from ``seed``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    units: list[StrictInt] = Field(default_factory=lambda: [32], min_length=1)
    epochs: StrictInt = Field(20, ge=1)
    batch_size: StrictInt = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    patience: StrictInt = Field(3, ge=1)
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)

    @field_validator("units")
    @classmethod
    def _positive_units(cls, units: list[int]) -> list[int]:
        if any(u < 1 for u in units):
            raise ValueError(f"every layer needs at least 1 unit, got {units}")
        return units


class LstmForecaster(Forecaster):
    """GateLSTM network forecasting the next close from a window of bar features.

    At every date ``t`` the model reads the ``window`` feature rows ending at
    ``t`` (log return, and optionally log volume change and log high/low range;
    see ``models.features``), each standardised with the training segment's
    mean and std, and outputs the scaled next log return ``r_hat``. The
    forecast of the next close is ``close_t * exp(r_hat)``. The target is
    scaled with the statistics of the training segment's log-return column, so
    the squared-error loss is in units of the training return variance
    (about 1 for a model that predicts the mean return).

    Network: ``Input(window, n_features) -> GateLSTM(units[0]) -> ... ->
    GateLSTM(units[-1]) -> Dense(1)``, every GateLSTM but the last returning
    sequences. Trained with Adam on the mean squared error, early stopping on
    the validation loss with the best epoch's weights restored. Seeded with
    ``keras.utils.set_random_seed(seed)``; bit-identical reruns on CPU also
    need TensorFlow's op determinism, which the pipeline switches on.

    Args:
        window: Feature rows per sample (``features.window``).
        units: Units of each GateLSTM layer, first to last.
        epochs: Maximum training epochs.
        batch_size: Samples per gradient step.
        learning_rate: Adam learning rate.
        dropout: Input dropout of every GateLSTM layer while training.
        patience: Epochs without a lower validation loss before stopping.
        validation_fraction: Share of the training samples, taken from the end
            of the training segment, used for early stopping.
        use_volume: Add the log volume change feature.
        use_range: Add the log high/low range feature.
        seed: Seed for weight initialisation, shuffling and dropout.
        batch_shards: ``GateLSTM(batch_shards=...)`` of every layer: the row blocks
            a batch is cut into on the CPU. The blocks' weight gradients are summed,
            so the count changes the last bits of training; None (one block per
            core of the process) is fine on one machine, while a pipeline that
            fits in worker processes passes one count to all of them so every
            process trains the same model (``pipelines.execution.units``).

    A fitted forecaster travels between processes as bytes: ``to_bytes`` packs
    what ``save`` writes into one zip archive and ``from_bytes`` reads it back.
    """

    name: ClassVar[str] = "lstm"
    label: ClassVar[str] = "LSTM"
    Config: ClassVar[type[BaseModel]] = LstmConfig
    stochastic: ClassVar[bool] = True
    introspection: ClassVar[bool] = True
    export: ClassVar[bool] = True
    device: ClassVar[bool] = True

    @classmethod
    def from_config(cls, params: Mapping[str, Any], context: BuildContext) -> Self:
        """The network of ``params`` on the windows of ``context.features``, seeded."""
        features = context.features
        return cls(
            window=features.get("window", 30),
            use_volume=features.get("use_volume", True),
            use_range=features.get("use_range", True),
            seed=context.seed,
            **params,
        )

    @classmethod
    def settle(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with ``batch_shards`` fixed: what ``GateLSTM(batch_shards=None)`` would
        choose for a training batch in this process (one block per core, none under
        ``MIN_AUTO_SHARD_ROWS`` rows), so a worker with fewer threads trains the same model."""
        settled = dict(params)
        if settled.get("batch_shards") is None:
            from models.row_blocks import MIN_AUTO_SHARD_ROWS, default_batch_shards

            rows = int(settled.get("batch_size", 64))
            settled["batch_shards"] = max(
                1, min(default_batch_shards(), rows // MIN_AUTO_SHARD_ROWS)
            )
        return settled

    def __init__(
        self,
        window: int = 30,
        units: list[int] | tuple[int, ...] = (32,),
        epochs: int = 20,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        dropout: float = 0.0,
        patience: int = 3,
        validation_fraction: float = 0.1,
        use_volume: bool = True,
        use_range: bool = True,
        seed: int = 42,
        batch_shards: int | None = None,
    ) -> None:
        _check_int("window", window, 1)
        units = list(units)
        if not units:
            raise ValueError("units: give at least one layer, e.g. units=[32]")
        for u in units:
            _check_int("units", u, 1)
        _check_int("epochs", epochs, 1)
        _check_int("batch_size", batch_size, 1)
        _check_int("patience", patience, 1)
        _check_int("seed", seed, 0)
        if batch_shards is not None:
            _check_int("batch_shards", batch_shards, 1)
        if not 0.0 < learning_rate < 1.0:
            raise ValueError(f"learning_rate must be in (0, 1), got {learning_rate!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in (0, 1) (early stopping needs a validation "
                f"slice), got {validation_fraction!r}"
            )
        self.window = int(window)
        self.units = [int(u) for u in units]
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.dropout = float(dropout)
        self.patience = int(patience)
        self.validation_fraction = float(validation_fraction)
        self.use_volume = bool(use_volume)
        self.use_range = bool(use_range)
        self.seed = int(seed)
        self.batch_shards = None if batch_shards is None else int(batch_shards)

    # Sizes ----------------------------------------------------------------------

    @property
    def min_history(self) -> int:
        """Bars up to and including ``t`` needed for a forecast at ``t``."""
        return self.window + FEATURE_WARMUP

    @property
    def feature_columns(self) -> list[str]:
        return feature_columns(use_volume=self.use_volume, use_range=self.use_range)

    def _split(self, samples: int) -> tuple[int, int]:
        """(fit, validation) sample counts for ``samples`` training windows."""
        n_val = max(1, round(self.validation_fraction * samples))
        return samples - n_val, n_val

    def _samples(self, train_bars: int) -> int:
        # A window ending at t needs FEATURE_WARMUP earlier bars, and its target
        # the bar after t, which must still lie in the training segment.
        return max(0, train_bars - FEATURE_WARMUP - self.window)

    def required_train_bars(self) -> int:
        """The fewest training bars ``fit`` accepts with this window and validation share."""
        n = self.window + FEATURE_WARMUP + 1
        while self._split(self._samples(n))[0] < MIN_FIT_SAMPLES:
            n += 1
        return n

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-safe)."""
        return {
            "window": self.window,
            "units": list(self.units),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "dropout": self.dropout,
            "patience": self.patience,
            "validation_fraction": self.validation_fraction,
            "use_volume": self.use_volume,
            "use_range": self.use_range,
            "seed": self.seed,
            "batch_shards": self.batch_shards,
        }

    # Training -------------------------------------------------------------------

    def fit(self, train: pd.DataFrame) -> Self:
        """Train on the bars of ``train`` only (features, scaler, validation slice)."""
        check_bars(train, "training bars")
        needed = self.required_train_bars()
        if len(train) < needed:
            raise ValueError(
                f"the {self.label} training segment has {len(train)} bars "
                f"({train.index[0].date() if len(train) else '-'} .. "
                f"{train.index[-1].date() if len(train) else '-'}), but window={self.window} "
                f"with validation_fraction={self.validation_fraction} needs at least {needed} "
                f"({self.window + FEATURE_WARMUP + 1} for the first window and its target, then "
                f"{MIN_FIT_SAMPLES} training samples plus the validation slice). Lower "
                f"features.window or forecasters.{self.name}.validation_fraction, or raise "
                "walkforward.train_bars."
            )
        features = build_features(train, use_volume=self.use_volume, use_range=self.use_range)
        scaler = StandardScaler.fit(features)
        scaled = scaler.transform(features)
        target = (next_log_return(train) - scaler.mean[0]) / scaler.std[0]
        x, y, ends = supervised_windows(scaled, target, self.window)
        n_fit, n_val = self._split(len(x))

        import keras

        keras.utils.set_random_seed(self.seed)
        model = self._compiled_model(len(self.feature_columns))
        stop = keras.callbacks.EarlyStopping(
            monitor=f"val_{_MSE}", patience=self.patience, restore_best_weights=True
        )
        history = model.fit(
            # Shuffled within the fit slice only; the validation slice stays apart.
            _whole_batches(x[:n_fit], y[:n_fit], self.batch_size, shuffle_seed=self.seed),
            validation_data=_whole_batches(x[n_fit:], y[n_fit:], self.batch_size),
            epochs=self.epochs,
            shuffle=False,  # the dataset reshuffles itself
            callbacks=[stop],
            verbose=0,
        )
        self.model_ = model
        self.scaler_ = scaler
        self.history_ = {
            "loss": [float(v) for v in history.history[_MSE]],
            "val_loss": [float(v) for v in history.history[f"val_{_MSE}"]],
        }
        self.epochs_trained_ = len(self.history_["loss"])
        self.best_epoch_ = int(np.argmin(self.history_["val_loss"]))
        self.validation_start_ = ends[n_fit]
        self.n_fit_samples_ = n_fit
        self.n_validation_samples_ = n_val
        return self

    def _compiled_model(self, n_features: int) -> keras.Model:
        """The network of ``_build_model``, compiled for training on ``_whole_batches``."""
        import keras

        model = self._build_model(n_features)
        model.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            # Divided by the sum of the sample weights, not the batch size: the
            # zero-weight padding of a partial batch changes neither loss nor gradient.
            loss=keras.losses.MeanSquaredError(reduction="mean_with_sample_weight"),
            # Keras weights each batch's loss by its padded size in the epoch mean;
            # this metric is the mean over the real samples, padding excluded.
            weighted_metrics=[keras.metrics.MeanSquaredError(name=_MSE)],
        )
        return model

    def _build_model(self, n_features: int) -> keras.Model:
        import keras

        inputs = keras.Input(shape=(self.window, n_features), name="features")
        x = inputs
        last = len(self.units) - 1
        for k, units in enumerate(self.units):
            x = self._recurrent_layer(k, units, return_sequences=k < last)(x)
        outputs = keras.layers.Dense(1, name="next_log_return")(x)
        return keras.Model(inputs, outputs, name=f"{self.name}_forecaster")

    def _recurrent_layer(self, k: int, units: int, return_sequences: bool) -> keras.Layer:
        """The ``k``-th recurrent layer of the network: the one thing a subclass that
        forecasts the same way with another layer changes (``models.keras_lstm``)."""
        from models.gate_lstm import GateLSTM

        return GateLSTM(
            units,
            return_sequences=return_sequences,
            dropout=self.dropout,
            seed=self.seed + k,
            batch_shards=self.batch_shards,
            name=f"gate_lstm_{k}",
        )

    # Forecasting ----------------------------------------------------------------

    def predict(self, bars: pd.DataFrame, start: pd.Timestamp | None = None) -> pd.Series:
        """Next-close forecasts for every ``t >= start`` (every date with enough history
        when ``start`` is None), batched; the value at ``t`` uses ``bars.loc[:t]`` only."""
        dates, x = self._inputs(bars, start)
        if len(dates) == 0:
            return pd.Series([], index=dates, name=self.name, dtype=np.float64)
        scaled = _in_chunks(lambda chunk: self.model_(chunk, training=False), x)
        r_hat = scaled[:, 0].astype(np.float64) * self.scaler_.std[0] + self.scaler_.mean[0]
        close = bars["close"].to_numpy(dtype=np.float64)[bars.index.get_indexer(dates)]
        return pd.Series(close * np.exp(r_hat), index=dates, name=self.name)

    def _inputs(
        self, bars: pd.DataFrame, start: pd.Timestamp | None
    ) -> tuple[pd.DatetimeIndex, np.ndarray]:
        """Forecast dates and their scaled (dates, window, features) float32 windows."""
        if not hasattr(self, "model_"):
            raise ValueError(f"{type(self).__name__}: call fit() (or load()) before forecasting")
        check_bars(bars)
        if start is None:
            dates = bars.index[self.min_history - 1 :]
        else:
            dates = bars.index[bars.index >= pd.Timestamp(start)]
        if len(dates) and bars.index.get_loc(dates[0]) < self.min_history - 1:
            raise ValueError(
                f"{type(self).__name__}: a forecast on {dates[0].date()} needs "
                f"{self.min_history} bars up to that date (window={self.window} + "
                f"{FEATURE_WARMUP}), but bars has {bars.index.get_loc(dates[0]) + 1}; "
                "pass more history before start"
            )
        if len(dates) == 0:
            return dates, np.empty((0, self.window, len(self.feature_columns)), np.float32)
        features = build_features(bars, use_volume=self.use_volume, use_range=self.use_range)
        x = windows_ending_at(self.scaler_.transform(features), self.window, dates)
        return dates, x.astype(np.float32)

    def gate_activations_per_unit(
        self, bars: pd.DataFrame, start: pd.Timestamp | None = None
    ) -> dict[str, pd.DataFrame]:
        """Per-unit gate values of the last GateLSTM layer, at the last step of each window.

        Returns frames (dates x units) keyed ``forget``, ``input``, ``output``
        (the sigmoid gates) and ``cell`` (the cell state ``C_t``), computed by
        ``GateLSTM.gate_activations``, indexed by the date ``t`` the window ends.
        """
        dates, x = self._inputs(bars, start)
        from models.gate_lstm import GateLSTM

        layers = [layer for layer in self.model_.layers if isinstance(layer, GateLSTM)]

        def last_step_gates(chunk: np.ndarray) -> np.ndarray:
            hidden = chunk
            for layer in layers[:-1]:
                hidden = layer(hidden, training=False)
            gates = layers[-1].gate_activations(hidden)
            return np.stack([gates[key][:, -1, :] for key in GATE_COLUMNS.values()], axis=1)

        units = layers[-1].units
        values = _in_chunks(last_step_gates, x, (len(GATE_COLUMNS), units))
        columns = [f"unit_{k}" for k in range(units)]
        return {
            name: pd.DataFrame(values[:, g, :].astype(np.float64), index=dates, columns=columns)
            for g, name in enumerate(GATE_COLUMNS)
        }

    def gate_activations(
        self, bars: pd.DataFrame, start: pd.Timestamp | None = None
    ) -> pd.DataFrame:
        """Gate values of the last GateLSTM layer at the last step of the window ending at
        each ``t``, averaged over units: columns ``forget``, ``input``, ``output``, ``cell``."""
        per_unit = self.gate_activations_per_unit(bars, start)
        return pd.DataFrame({column: frame.mean(axis=1) for column, frame in per_unit.items()})

    # Persistence ----------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``model.keras`` and ``forecaster.json`` (params, scaler, history) to
        ``directory``; ``LstmForecaster.load`` reads them back."""
        if not hasattr(self, "model_"):
            raise ValueError(f"{type(self).__name__}: nothing to save, call fit() first")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model_.save(directory / MODEL_FILE)
        state = {
            "format": FORMAT_VERSION,
            "name": self.name,
            "params": self.get_params(),
            "scaler": self.scaler_.to_dict(),
            "history": self.history_,
            "epochs_trained": self.epochs_trained_,
            "best_epoch": self.best_epoch_,
            "validation_start": self.validation_start_.isoformat(),
            "n_fit_samples": self.n_fit_samples_,
            "n_validation_samples": self.n_validation_samples_,
        }
        (directory / STATE_FILE).write_text(json.dumps(state, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """A fitted forecaster from a directory written by ``save``."""
        directory = Path(directory)
        for file in (MODEL_FILE, STATE_FILE):
            if not (directory / file).is_file():
                raise ValueError(
                    f"{directory / file} not found: not a directory written by {cls.__name__}.save"
                )
        state = json.loads((directory / STATE_FILE).read_text())
        if state.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{directory / STATE_FILE}: format {state.get('format')!r} is not the supported "
                f"{FORMAT_VERSION}; retrain and save with this version of gatecast"
            )
        if state.get("name", cls.name) != cls.name:
            # the subclasses share this format: a file of one would load as another
            raise ValueError(
                f"{directory / STATE_FILE}: saved by the {state['name']!r} forecaster, "
                f"not {cls.name!r}; load it with the class registered as {state['name']!r}"
            )
        forecaster = cls(**state["params"])
        forecaster.scaler_ = StandardScaler.from_dict(state["scaler"])
        if forecaster.scaler_.columns[0] != RETURN:
            raise ValueError(f"{directory / STATE_FILE}: the first scaled column must be {RETURN}")
        import keras

        import models.gate_lstm  # noqa: F401 -- registers GateLSTM for deserialisation

        forecaster.model_ = keras.saving.load_model(directory / MODEL_FILE, compile=False)
        forecaster.history_ = state["history"]
        forecaster.epochs_trained_ = state["epochs_trained"]
        forecaster.best_epoch_ = state["best_epoch"]
        forecaster.validation_start_ = pd.Timestamp(state["validation_start"])
        forecaster.n_fit_samples_ = state["n_fit_samples"]
        forecaster.n_validation_samples_ = state["n_validation_samples"]
        return forecaster

    def to_bytes(self) -> bytes:
        """The files ``save`` writes, as one zip archive (to pass between processes)."""
        with tempfile.TemporaryDirectory(prefix="gatecast-lstm-") as tmp:
            self.save(tmp)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
                for file in (MODEL_FILE, STATE_FILE):
                    archive.write(Path(tmp) / file, file)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """A fitted forecaster from the archive ``to_bytes`` made."""
        with tempfile.TemporaryDirectory(prefix="gatecast-lstm-") as tmp:
            cls.save_bytes(data, tmp)
            return cls.load(tmp)

    @classmethod
    def save_bytes(cls, data: bytes, directory: str | Path) -> None:
        """Write the files of the archive ``to_bytes`` made to ``directory``, as ``save``
        would have (no model is rebuilt)."""
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as err:
            raise ValueError(f"{cls.__name__}: not an archive made by to_bytes ({err})") from None
        with archive:
            missing = {MODEL_FILE, STATE_FILE} - set(archive.namelist())
            if missing:
                raise ValueError(
                    f"{cls.__name__}: the archive lacks {', '.join(sorted(missing))}; "
                    "not one made by to_bytes"
                )
            directory = Path(directory)
            directory.mkdir(parents=True, exist_ok=True)
            for file in (MODEL_FILE, STATE_FILE):
                (directory / file).write_bytes(archive.read(file))


def _to_numpy(tensor: Any) -> np.ndarray:
    import keras

    return keras.ops.convert_to_numpy(tensor)


def _in_chunks(fn: Any, x: np.ndarray, out_shape: tuple[int, ...] = (1,)) -> np.ndarray:
    """``fn`` applied to ``x`` in zero-padded chunks of ``PREDICT_CHUNK`` rows."""
    out = np.empty((len(x), *out_shape), dtype=np.float32)
    for begin in range(0, len(x), PREDICT_CHUNK):
        chunk = x[begin : begin + PREDICT_CHUNK]
        rows = len(chunk)
        if rows < PREDICT_CHUNK:
            pad = np.zeros((PREDICT_CHUNK - rows, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        out[begin : begin + rows] = _to_numpy(fn(chunk))[:rows]
    return out


def _whole_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    """``(x, y, sample_weight)`` batches of exactly ``batch_size`` rows, float32.

    The real samples are batched as ``fit(x, y, batch_size)`` would (reshuffled
    every epoch when ``shuffle_seed`` is given), then the last, partial batch is
    padded with zero rows of weight 0; real rows have weight 1.
    """
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y.astype(np.float32)))
    if shuffle_seed is not None:
        data = data.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)

    def pad(x_batch: tf.Tensor, y_batch: tf.Tensor) -> tuple[tf.Tensor, ...]:
        rows = tf.shape(x_batch)[0]
        missing = batch_size - rows
        weight = tf.concat([tf.ones([rows]), tf.zeros([missing])], axis=0)
        return (
            *(
                tf.ensure_shape(
                    tf.pad(batch, [[0, missing]] + [[0, 0]] * (batch.shape.rank - 1)),
                    (batch_size, *batch.shape[1:]),
                )
                for batch in (x_batch, y_batch)
            ),
            tf.ensure_shape(weight, (batch_size,)),
        )

    return data.batch(batch_size).map(pad)


def _check_int(key: str, value: Any, lowest: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lowest:
        raise ValueError(f"{key} must be an integer >= {lowest}, got {value!r}")
