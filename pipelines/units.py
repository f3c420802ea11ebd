"""The train stage's units of work: one forecaster fit on one fold of one instrument.

A ``TrainUnit`` holds everything its result depends on: the config, the
instrument's bars from the fold's training start to its test end (nothing
later, so a unit cannot look ahead and needs no shared filesystem), the fold,
the LSTM's seed and its ``batch_shards`` (the row blocks a training batch is
cut into, which changes the last bits of the weight gradients; the driver
resolves it once, so every process trains the same model), and the
TensorFlow device. ``run_train_unit(unit)`` is a plain function of it: it seeds
the random generators itself, does not read or write files, MLflow or global
state of the driver, and returns a picklable ``TrainResult``. So the same units
give bit-identical results run one after another in the driver or spread over
worker processes (``pipelines.executors``); TensorFlow's op determinism, which
``pipelines.runtime.configure`` switches on in every process, does the rest.

The LSTM runs as one unit per seed and fold; the first seed's units also return
the gate activations of every unit of the last layer over the fold's test dates
(``gates_long``: one row per date and unit), and the final fold's units
return the fitted forecaster as bytes (``LstmForecaster.to_bytes``), which the
driver registers. The Keras session is cleared after every ``CLEAR_KERAS_EVERY``
LSTM units, so a long-lived worker's memory stays bounded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipelines import runtime
from pipelines.config import Config
from pipelines.errors import ConfigError
from pipelines.walkforward import Fold, make_forecaster, walk_forward

LSTM = "lstm"


@dataclass(frozen=True, eq=False)
class TrainUnit:
    """One forecaster (for the LSTM: one seed) on one fold of one instrument.

    Args:
        cfg: The resolved experiment config (builds the forecaster).
        instrument: The instrument's name.
        forecaster: The forecaster's name (``cfg.forecasters.<name>``).
        fold: The fold, positions in the instrument's whole series.
        bars: The instrument's bars from ``fold.train_start`` to ``fold.test_end``.
        device: Where TensorFlow runs (the LSTM only).
        seed_index: The LSTM seed's number k (0 for the others).
        seed: The LSTM's seed, ``cfg.seed + k`` (``cfg.seed`` for the others).
        batch_shards: The LSTM's ``batch_shards``, the same in every unit.
        gates: Also return the gate activations over the test dates (LSTM).
        export: Also return the fitted forecaster as bytes (LSTM, final fold).
    """

    cfg: Config
    instrument: str
    forecaster: str
    fold: Fold
    bars: pd.DataFrame
    device: runtime.DeviceInfo
    seed_index: int = 0
    seed: int = 0
    batch_shards: int | None = None
    gates: bool = False
    export: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """``(instrument, forecaster)``: the child run the unit's result goes to."""
        return self.instrument, self.forecaster

    def __str__(self) -> str:
        seed = f" seed {self.seed_index}" if self.forecaster == LSTM else ""
        return f"{self.instrument}/{self.forecaster} fold {self.fold.number}{seed}"


@dataclass(eq=False)
class TrainResult:
    """What one unit returns.

    Args:
        forecasts: Next-close forecasts on the fold's test dates (float64).
        fit_seconds, predict_seconds: Wall time of the fit and of the forecasts.
        history: The LSTM's per-epoch ``loss`` and ``val_loss``.
        gates: The LSTM's per-unit gate activations on the test dates (when asked), in
            the long form of ``gates_long``.
        model: The fitted LSTM as ``LstmForecaster.to_bytes`` (when asked).
    """

    forecasts: pd.Series
    fit_seconds: float
    predict_seconds: float
    history: dict[str, list[float]] | None = None
    gates: pd.DataFrame | None = None
    model: bytes | None = None


def batch_shards(cfg: Config) -> int | None:
    """The LSTM's row blocks per batch, resolved once here and given to every unit.

    What ``GateLSTM(batch_shards=None)`` would choose for a training batch in
    this process (one block per core, none under ``MIN_AUTO_SHARD_ROWS`` rows),
    so a worker with fewer threads still trains the driver's model.
    """
    if cfg.forecasters.get(LSTM) is None:
        return None
    from models.gate_lstm_xla import MIN_AUTO_SHARD_ROWS, default_batch_shards

    rows = cfg.forecasters[LSTM].params.batch_size
    return max(1, min(default_batch_shards(), rows // MIN_AUTO_SHARD_ROWS))


def gpus_wanted(unit: TrainUnit) -> float | None:
    """GPUs a unit asks an executor for: an LSTM unit on a GPU device, else None (CPUs only).

    Decided by the unit alone (its config and device), so an executor can be
    started before the driver has chosen its own device.
    """
    wants = unit.cfg.forecasters[unit.forecaster].cls.device
    return runtime.lstm_gpus(unit.cfg, unit.device) if wants else None


def make_units(
    cfg: Config,
    bars: Mapping[str, pd.DataFrame],
    folds: Mapping[str, Sequence[Fold]],
    device: runtime.DeviceInfo,
    batch_shards: int | None,
) -> list[TrainUnit]:
    """Every unit of the stage, in the order a sequential run records them.

    Instruments in the config's order, then forecasters in the config's order,
    then (LSTM) seeds, then folds, oldest first.
    """
    units = []
    for instrument, instrument_bars in bars.items():
        # one window per fold, shared by its units (an executor ships each once)
        windows = {
            f.number: instrument_bars.iloc[f.train_start : f.test_end + 1]
            for f in folds[instrument]
        }
        for name, spec in cfg.forecasters.enabled().items():
            if spec.seeds > 1 and name != LSTM:
                # the train stage averages seeds into one column for `lstm` only, so far
                raise ConfigError(
                    f"forecasters.{name}.seeds: {spec.seeds} seeds are recorded for the "
                    f"forecaster named {LSTM!r} only; give {name} seeds: 1 or run it as {LSTM!r}"
                )
            seeds = range(spec.seeds)
            for k in seeds:
                for fold in folds[instrument]:
                    units.append(
                        TrainUnit(
                            cfg=cfg,
                            instrument=instrument,
                            forecaster=name,
                            fold=fold,
                            bars=windows[fold.number],
                            device=device,
                            seed_index=k,
                            seed=cfg.seed + k,
                            batch_shards=batch_shards,
                            gates=spec.cls.introspection and k == 0,
                            export=spec.cls.export and fold is folds[instrument][-1],
                        )
                    )
    return units


# Config sections a train unit never reads (the others are part of its cache key).
_NOT_READ = {"name", "output_directory", "data", "backtest", "report", "tracking", "executor"}


def cache_inputs(unit: TrainUnit) -> dict[str, Any]:
    """What ``run_train_unit``'s result depends on, for ``pipelines.unit_cache``'s key.

    Every field of the unit, with the config narrowed to what can change the
    numbers: every section but those listed in ``_NOT_READ`` (a new section
    counts until it is listed), and of ``forecasters`` only the unit's own.
    The bars are the unit's own (its fold's window, read by the driver from the
    data stage's files), so a changed data file changes the key.
    """
    config = unit.cfg.model_dump(mode="json", exclude=_NOT_READ)
    config["forecasters"] = {unit.forecaster: config["forecasters"][unit.forecaster]}
    fields = {f.name: getattr(unit, f.name) for f in dataclasses.fields(unit)}
    return {**fields, "cfg": config}


def run_train_unit(unit: TrainUnit) -> TrainResult:
    """Fit ``unit``'s forecaster on its fold's training bars and forecast its test dates."""
    fold = unit.fold.rebased(unit.fold.train_start)
    runtime.seed_everything(unit.seed)
    if not unit.cfg.forecasters[unit.forecaster].cls.device:
        return _result(unit, fold)
    try:
        with runtime.device_scope(unit.device):
            return _result(unit, fold)
    finally:
        _after_lstm_unit()


def grows_memory(unit: TrainUnit) -> bool:
    """Whether ``unit`` leaves memory behind in its process: an LSTM unit (TensorFlow keeps
    some of every model, 6 to 14 MiB a unit measured on the smoke config's models, cleared
    session or not);
    a Ray worker is recycled after ``pipelines.ray_executor.UNITS_PER_WORKER`` of them."""
    return unit.cfg.forecasters[unit.forecaster].cls.device


# Keras keeps every model a process builds until its session is cleared, and clearing it
# also drops the compiled GateLSTM loop, which the next fit then compiles again: clearing
# after every unit made the default train stage 14% slower (121 s against 106 s, the
# forecasts identical). Clearing after every CLEAR_KERAS_EVERY LSTM units bounds a
# long-lived worker's memory at a small part of that cost; no result depends on it.
CLEAR_KERAS_EVERY = 16
_lstm_units_since_clear = 0


def _after_lstm_unit() -> None:
    global _lstm_units_since_clear
    _lstm_units_since_clear += 1
    if _lstm_units_since_clear >= CLEAR_KERAS_EVERY:
        import keras

        keras.backend.clear_session()
        _lstm_units_since_clear = 0


GATES_COLUMNS = ("date", "fold", "unit", "forget", "input", "output", "cell")


def gates_long(per_unit: Mapping[str, pd.DataFrame], fold: int) -> pd.DataFrame:
    """Per-unit gate activations as one tidy frame, the layout of ``<INST>.gates.parquet``.

    Args:
        per_unit: ``LstmForecaster.gate_activations_per_unit``: gate -> frame of dates x
            units (columns ``unit_<k>``).
        fold: the walk-forward fold these dates belong to (its model made them).

    Returns:
        Columns ``GATES_COLUMNS``: one row per date and unit (date-major, units in order),
        ``forget``, ``input`` and ``output`` the sigmoid gates in [0, 1] and ``cell``
        the cell state, at the last step of the window ending at ``date``.
    """
    first = next(iter(per_unit.values()))
    units = len(first.columns)
    frame = pd.DataFrame(
        {
            "date": first.index.repeat(units),
            "fold": fold,
            "unit": list(range(units)) * len(first.index),
        }
    )
    for gate in GATES_COLUMNS[3:]:
        frame[gate] = per_unit[gate].to_numpy().reshape(-1)
    return frame


def _result(unit: TrainUnit, fold: Fold) -> TrainResult:
    walked = walk_forward(
        unit.bars,
        lambda: make_forecaster(
            unit.forecaster, unit.cfg, seed=unit.seed, batch_shards=unit.batch_shards
        ),
        [fold],
        name=unit.forecaster,
    )
    forecaster = walked.last_forecaster
    result = TrainResult(
        forecasts=walked.forecasts,
        fit_seconds=walked.fit_seconds[0],
        predict_seconds=walked.predict_seconds[0],
    )
    result.history = getattr(forecaster, "history_", None)
    if unit.gates:
        result.gates = gates_long(
            forecaster.gate_activations_per_unit(unit.bars, fold.test_start_date), fold.number
        )
    if unit.export:
        result.model = forecaster.to_bytes()
    return result
