"""The train stage's units of work: one forecaster fit on one fold of one instrument.

A ``TrainUnit`` holds exactly what its result depends on: the forecaster's
class and its settled parameters (``Forecaster.settle``, called once by the
driver, so a setting that depends on the machine is the same in every
process), the experiment's ``features``, the instrument's bars from the fold's
training start to its test end (nothing later, so a unit cannot look ahead and
needs no shared filesystem), the fold, the seed and the device. No config
travels with it, so its fields are its cache key (``cache_inputs``).
``run_train_unit(unit)`` is a plain function of it: it seeds the random
generators itself, does not read or write files, MLflow or global state of the
driver, and returns a picklable ``TrainResult``. So the same units give
bit-identical results run one after another in the driver or spread over
worker processes (``pipelines.execution.executors``); TensorFlow's op determinism, which
``pipelines.execution.runtime.configure`` switches on in every process, does the rest.

What a unit returns beyond its forecasts follows from what its forecaster's
class declares (``models.base.Forecaster``): a ``stochastic`` one runs as one
unit per seed and fold; the first seed's units of an ``introspection`` one also
return its per-unit internals over the fold's test dates (``gates_long``: one
row per date and unit), and the final fold's units of an ``export`` one return
the fitted forecaster as bytes (``to_bytes``), which the driver registers. The
Keras session is cleared after every ``CLEAR_KERAS_EVERY`` units of a
``device`` forecaster, so a long-lived worker's memory stays bounded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from models.base import BuildContext, Forecaster
from pipelines.config import Config
from pipelines.execution import runtime
from pipelines.execution.walkforward import Fold, walk_forward


@dataclass(frozen=True, eq=False)
class TrainUnit:
    """One forecaster (one seed of a stochastic one) on one fold of one instrument.

    Args:
        instrument: The instrument's name.
        forecaster: The forecaster's name (its key under ``forecasters:``).
        cls: Its registered class.
        params: Its parameters, settled by the driver (``Forecaster.settle``).
        features: The experiment's ``features`` section.
        fold: The fold, positions in the instrument's whole series.
        bars: The instrument's bars from ``fold.train_start`` to ``fold.test_end``.
        device: Where TensorFlow runs (a forecaster that declares ``device``).
        seed_index: The seed's number k (0 for a deterministic forecaster).
        seed: The seed, the experiment's ``seed + k``.
        seeds: How many seeds the forecaster runs (1 for a deterministic one).
        gates: Also return the per-unit internals over the test dates (``introspection``).
        export: Also return the fitted forecaster as bytes (an ``export`` forecaster's
            fold whose model ``tracking.register`` keeps: the final fold by default).
        gpus: GPUs the unit asks an executor for (``runtime.unit_gpus`` for a ``device``
            forecaster on a GPU device; None: CPUs only), decided once by the driver.
    """

    instrument: str
    forecaster: str
    cls: type[Forecaster]
    params: Mapping[str, Any]
    features: Mapping[str, Any]
    fold: Fold
    bars: pd.DataFrame
    device: runtime.DeviceInfo
    seed_index: int = 0
    seed: int = 0
    seeds: int = 1
    gates: bool = False
    export: bool = False
    gpus: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        """``(instrument, forecaster)``: the child run the unit's result goes to."""
        return self.instrument, self.forecaster

    def __str__(self) -> str:
        seed = f" seed {self.seed_index}" if self.cls.stochastic else ""
        return f"{self.instrument}/{self.forecaster} fold {self.fold.number}{seed}"

    def build(self) -> Forecaster:
        """A fresh, unfitted forecaster of this unit."""
        context = BuildContext(seed=self.seed, features=self.features)
        return self.cls.from_config(self.params, context)


@dataclass(eq=False)
class TrainResult:
    """What one unit returns.

    Args:
        forecasts: Next-close forecasts on the fold's test dates (float64).
        fit_seconds, predict_seconds: Wall time of the fit and of the forecasts.
        history: Per-epoch ``loss`` and ``val_loss`` of a forecaster that trains
            for epochs (its ``history_``), else None.
        gates: Per-unit internals on the test dates (when asked), in the long
            form of ``gates_long``.
        model: The fitted forecaster's ``to_bytes`` (when asked).
    """

    forecasts: pd.Series
    fit_seconds: float
    predict_seconds: float
    history: dict[str, list[float]] | None = None
    gates: pd.DataFrame | None = None
    model: bytes | None = None


def make_units(
    cfg: Config,
    bars: Mapping[str, pd.DataFrame],
    folds: Mapping[str, Sequence[Fold]],
    device: runtime.DeviceInfo,
) -> list[TrainUnit]:
    """Every unit of the stage, in the order a sequential run records them.

    Instruments in the config's order, then forecasters in the config's order,
    then seeds, then folds, oldest first.
    """
    features = cfg.features.model_dump()
    gpus = runtime.unit_gpus(cfg, device)
    register = cfg.tracking.register

    def kept(fold: Fold, instrument_folds: Sequence[Fold]) -> bool:
        """Whether the fold's fitted forecaster comes back to be registered."""
        return register == "all" or (register == "final" and fold is instrument_folds[-1])

    specs = {
        name: (spec, spec.cls.settle(spec.arguments()))
        for name, spec in cfg.forecasters.enabled().items()
    }
    units = []
    for instrument, instrument_bars in bars.items():
        # one window per fold, shared by its units (an executor ships each once)
        windows = {
            f.number: instrument_bars.iloc[f.train_start : f.test_end + 1]
            for f in folds[instrument]
        }
        for name, (spec, params) in specs.items():
            for k in range(spec.seeds):
                for fold in folds[instrument]:
                    units.append(
                        TrainUnit(
                            instrument=instrument,
                            forecaster=name,
                            cls=spec.cls,
                            params=params,
                            features=features,
                            fold=fold,
                            bars=windows[fold.number],
                            device=device,
                            seed_index=k,
                            seed=cfg.seed + k,
                            seeds=spec.seeds,
                            gates=spec.cls.introspection and k == 0,
                            export=spec.cls.export and kept(fold, folds[instrument]),
                            gpus=gpus if spec.cls.device else None,
                        )
                    )
    return units


def cache_inputs(unit: TrainUnit) -> dict[str, Any]:
    """What ``run_train_unit``'s result depends on, for ``pipelines.execution.unit_cache``'s key:
    every field of the unit, the class by its import path (its code is hashed apart)."""
    fields = {f.name: getattr(unit, f.name) for f in dataclasses.fields(unit)}
    fields["cls"] = f"{unit.cls.__module__}:{unit.cls.__qualname__}"
    return fields


def run_train_unit(unit: TrainUnit) -> TrainResult:
    """Fit ``unit``'s forecaster on its fold's training bars and forecast its test dates."""
    fold = unit.fold.rebased(unit.fold.train_start)
    runtime.seed_everything(unit.seed, backend=unit.cls.device)
    if not unit.cls.device:
        return _result(unit, fold)
    try:
        with runtime.device_scope(unit.device):
            return _result(unit, fold)
    finally:
        _after_device_unit()


def grows_memory(unit: TrainUnit) -> bool:
    """Whether ``unit`` leaves memory behind in its process: a ``device`` forecaster's unit
    (TensorFlow keeps some of every model, cleared session or not); a Ray worker is
    recycled after ``pipelines.execution.ray_executor.UNITS_PER_WORKER`` of them."""
    return unit.cls.device


# Keras keeps every model a process builds until its session is cleared, and clearing it
# also drops compiled training loops, which the next fit compiles again: clearing every
# CLEAR_KERAS_EVERY units bounds a long-lived worker's memory at a small part of the cost
# of clearing after each (docs/benchmarks.md); no result depends on it.
CLEAR_KERAS_EVERY = 16
_device_units_since_clear = 0


def _after_device_unit() -> None:
    global _device_units_since_clear
    _device_units_since_clear += 1
    if _device_units_since_clear >= CLEAR_KERAS_EVERY:
        import keras

        keras.backend.clear_session()
        _device_units_since_clear = 0


GATES_COLUMNS = ("date", "fold", "unit", "forget", "input", "output", "cell")


def gates_long(per_unit: Mapping[str, pd.DataFrame], fold: int) -> pd.DataFrame:
    """Per-unit gate activations as one tidy frame, the layout of ``<INST>.gates.parquet``.

    Args:
        per_unit: ``gate_activations_per_unit`` of an ``introspection`` forecaster:
            gate -> frame of dates x units (columns ``unit_<k>``).
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
    walked = walk_forward(unit.bars, unit.build, [fold], name=unit.forecaster)
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
