"""A search trial as a unit of work: one configuration of the searched forecaster
(``search.forecaster``, the LSTM by default) scored inside the training data.

The search stage (``pipelines.stages.search``) asks Optuna for configurations and
hands each to its executor as a ``TrialUnit``; ``run_trial(unit)`` is a plain
function of it, like the train stage's units (``pipelines.execution.units``): it seeds
the random generators itself, reads and writes no file, MLflow or driver
state, and returns a picklable ``TrialResult``. So a trial gives the same
score in the driver or in a worker process.

No look-ahead, by construction. A unit carries, per instrument, only the
bars of the *first* walk-forward fold's training segment (before any test
date, less the embargo): ``trial_inputs`` cuts them, and the validation slices
(``validation_folds``) lie at its end. Every later fold's training segment
holds earlier folds' test bars, on which the chosen configuration is then
judged, so none of them is used. For each slice a fresh forecaster is fit on the
segment's bars before it (less ``walkforward.embargo`` bars) and forecasts
the slice from bars up to each date (``pipelines.execution.walkforward.walk_forward``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.base import BuildContext
from pipelines.common.errors import ConfigError
from pipelines.config import Config
from pipelines.config.sections import SearchValidation
from pipelines.execution import runtime
from pipelines.execution.walkforward import Fold, make_folds, score_forecasts, walk_forward

#: The settings a search can choose, as a trial's params hold them (``units`` per layer;
#: ``window`` is ``features.window``, the others parameters of the searched forecaster).
SETTINGS = ("units", "window", "dropout", "learning_rate", "batch_size", "epochs")


def searched_params(cfg: Config) -> dict[str, Any]:
    """The config's own values of the settings the searched forecaster
    (``search.forecaster``) has: what a search of no trials chooses."""
    name = cfg.search.forecaster
    spec = cfg.forecasters.get(name)
    if spec is None:
        raise ConfigError(
            f"search.forecaster: {name!r} is not an enabled forecaster of this config; "
            f"give one of {', '.join(cfg.forecasters.enabled())}"
        )
    own = spec.arguments()
    params = {k: own[k] for k in SETTINGS if k in own}
    params["window"] = cfg.features.window
    return {k: params[k] for k in SETTINGS if k in params}


def apply_params(cfg: Config, params: Mapping[str, Any]) -> Config:
    """``cfg`` with the settings of ``params`` (keys of ``SETTINGS``), validated again.

    ``window`` goes to ``features.window``, the others to the searched forecaster's section.
    """
    unknown = sorted(set(params) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"search: unknown setting(s) {unknown}; known: {SETTINGS}")
    # Only the keys the config set: a default stays a default (a validator checks
    # ``report.candidate`` only where it was chosen, for example).
    raw = cfg.model_dump(exclude_unset=True)
    raw["forecasters"] = cfg.forecasters.dump()
    name = cfg.search.forecaster
    own = {k: v for k, v in params.items() if k != "window"}
    raw["forecasters"][name] = {**raw["forecasters"][name], **own}
    if "window" in params:
        raw["features"] = {**raw.get("features", {}), "window": params["window"]}
    return Config.model_validate(raw)


# Where a trial is scored ---------------------------------------------------------------


def validation_folds(
    index: pd.DatetimeIndex, validation: SearchValidation, embargo: int = 0
) -> list[Fold]:
    """The validation slices of one training segment (positions within it), oldest first.

    The last ``validation.fraction`` of the segment's bars, cut into
    ``validation.folds`` slices of equal length (the segment's last bar ends the
    last one); each trains on the bars before it, less ``embargo`` bars.
    """
    n = len(index)
    size = round(validation.fraction * n) // validation.folds
    if size < 2:
        raise ConfigError(
            f"search.validation: fraction {validation.fraction} of the first training "
            f"segment's {n} bars in {validation.folds} slice(s) leaves {size} bar(s) per "
            "slice; raise search.validation.fraction or lower search.validation.folds"
        )
    folds = []
    for k in range(validation.folds):
        test_start = n - (validation.folds - k) * size
        train_end = test_start - embargo - 1
        if train_end < 1:
            raise ConfigError(
                f"search.validation: the slices take the whole first training segment ({n} "
                "bars); lower search.validation.fraction"
            )
        test_end = test_start + size - 1
        folds.append(
            Fold(
                k, 0, train_end, test_start, test_end, *index[[0, train_end, test_start, test_end]]
            )
        )
    return folds


def trial_inputs(
    cfg: Config, bars: Mapping[str, pd.DataFrame]
) -> tuple[dict[str, pd.DataFrame], dict[str, list[Fold]]]:
    """Each searched instrument's first training segment, and its validation slices.

    Args:
        cfg: The experiment config (``walkforward``, ``search``).
        bars: Every instrument's bars; only ``search.instruments`` (null: all) are used.
    """
    names = cfg.search.instruments or list(bars)
    segments: dict[str, pd.DataFrame] = {}
    folds: dict[str, list[Fold]] = {}
    for name in names:
        first = make_folds(bars[name].index, cfg.walkforward)[0]
        segments[name] = bars[name].iloc[first.train_start : first.train_end + 1]
        folds[name] = validation_folds(
            segments[name].index, cfg.search.validation, cfg.walkforward.embargo
        )
    return segments, folds


# The unit ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrialUnit:
    """One configuration of the searched forecaster, to be scored on the validation slices.

    Made by ``make_trial``; it carries only what ``run_trial`` reads.

    Args:
        number: The Optuna trial's number.
        params: The configuration (keys of ``SETTINGS``).
        forecaster: The searched forecaster's name (``search.forecaster``).
        cls: Its class.
        settled: Its parameters with ``params`` applied, settled by the driver
            (``Forecaster.settle``), so every process trains the same model.
        features: The ``features`` section with ``params`` applied.
        metric: What scores the trial (``search.metric``).
        segments: Instrument -> the bars of its first training segment (nothing later).
        folds: Instrument -> its validation slices (positions in the segment).
        device: Where TensorFlow runs.
        seed: The forecaster's seed (the config's, the same for every trial).
        gpus: GPUs the trial asks an executor for (those of one fit, ``runtime.unit_gpus``).
    """

    number: int
    params: dict[str, Any]
    forecaster: str
    cls: type
    settled: dict[str, Any]
    features: dict[str, Any]
    metric: str
    segments: dict[str, pd.DataFrame]
    folds: dict[str, list[Fold]]
    device: runtime.DeviceInfo
    seed: int
    gpus: float | None = None

    def __str__(self) -> str:
        return f"trial {self.number}"


def make_trial(
    number: int,
    params: dict[str, Any],
    trial_cfg: Config,
    segments: Mapping[str, pd.DataFrame],
    folds: Mapping[str, list[Fold]],
    device: runtime.DeviceInfo,
    seed: int,
) -> TrialUnit:
    """The unit of one trial from its config (``apply_params``), taking what it reads."""
    name = trial_cfg.search.forecaster
    spec = trial_cfg.forecasters[name]
    return TrialUnit(
        number=number,
        params=params,
        forecaster=name,
        cls=spec.cls,
        settled=spec.cls.settle(spec.arguments()),
        features=trial_cfg.features.model_dump(),
        metric=trial_cfg.search.metric,
        segments=dict(segments),
        folds=dict(folds),
        device=device,
        seed=seed,
        gpus=runtime.unit_gpus(trial_cfg, device),
    )


@dataclass
class TrialResult:
    """What one trial returns.

    Args:
        score: The mean of ``scores`` (lower is better).
        scores: Instrument -> the metric on its validation slices.
        epochs: Mean epochs trained (early stopping) over the fits.
        seconds: Wall time of the trial.
    """

    score: float
    scores: dict[str, float] = field(default_factory=dict)
    epochs: float = math.nan
    seconds: float = 0.0


def _instrument_score(
    unit: TrialUnit, segment: pd.DataFrame, folds: Sequence[Fold]
) -> tuple[float, list[int]]:
    name = unit.forecaster
    context = BuildContext(seed=unit.seed, features=unit.features)
    walked = walk_forward(segment, lambda: unit.cls.from_config(unit.settled, context), folds)
    histories = [getattr(f, "history_", None) for f in walked.forecasters]
    epochs = [len(h["loss"]) for h in histories if h]
    if unit.metric == "val_loss":
        if not all(h and h.get("val_loss") for h in histories):
            raise ConfigError(
                f"search.metric: val_loss needs a forecaster that reports a validation loss "
                f"per epoch (a history_), and {name} does not; use theil_u2"
            )
        return float(np.mean([min(h["val_loss"]) for h in histories])), epochs
    return score_forecasts(segment, {name: walked.forecasts})[name]["theil_u2"], epochs


def run_trial(unit: TrialUnit) -> TrialResult:
    """Fit and score ``unit``'s configuration on every instrument's validation slices.

    Raises:
        ValueError: the score is not a finite number (e.g. the loss diverged).
    """
    started = time.perf_counter()
    backend = unit.cls.device  # a forecaster that computes without Keras leaves it unstarted
    runtime.seed_everything(unit.seed, backend=backend)
    scores: dict[str, float] = {}
    epochs: list[int] = []
    try:
        with runtime.device_scope(unit.device):
            for name, segment in unit.segments.items():
                scores[name], trained = _instrument_score(unit, segment, unit.folds[name])
                epochs.extend(trained)
    finally:
        if backend:  # every trial builds a model of another shape: nothing compiled is reused
            import keras

            keras.backend.clear_session()
    score = float(np.mean(list(scores.values())))
    trained = float(np.mean(epochs)) if epochs else math.nan
    if not math.isfinite(score):
        raise ValueError(f"{unit}: the {unit.metric} is not finite ({scores})")
    return TrialResult(score, scores, trained, time.perf_counter() - started)
