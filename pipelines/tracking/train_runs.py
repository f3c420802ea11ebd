"""The train stage's MLflow records: one child run per (instrument, forecaster), made from
all its units' results, with what its class declares: the seeds' columns (stochastic),
losses per epoch, gates (introspection) and the registered model (export)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines import tracking
from pipelines.common.errors import DataError
from pipelines.common.strategy_names import is_seed, seed_column
from pipelines.config import Config
from pipelines.execution.units import (
    TrainResult,
    TrainUnit,
)
from pipelines.execution.walkforward import (
    Fold,
    score_forecasts,
)
from pipelines.report.charts import loss_chart
from pipelines.report.gate_charts import gates_chart
from pipelines.tracking import model_registry
from pipelines.tracking.league import log_league

# Results ------------------------------------------------------------------------------


@dataclass
class InstrumentResult:
    """What the train stage produced for one instrument (forecasters in the config's order).

    Args:
        name: The instrument.
        folds: Its walk-forward folds.
        forecasts: Column name -> out-of-sample forecasts (``<name>`` and
            ``<name>_seed<k>`` for a stochastic forecaster).
        metrics: Column name -> forecast metrics on the common dates.
        runs: Forecaster name -> its MLflow child run (the id is read when the
            outputs are written, so training never waits for the store).
        gates: An ``introspection`` forecaster's gate activations over the
            out-of-sample dates (or None).
        model: The registered model (or None).
    """

    name: str
    folds: list[Fold]
    forecasts: dict[str, pd.Series] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    runs: dict[str, tracking.RunHandle] = field(default_factory=dict)
    gates: pd.DataFrame | None = None
    model: model_registry.RegisteredModel | None = None


def _complete(series: pd.Series, folds: Sequence[Fold], bars: pd.DataFrame, name: str) -> None:
    """Every forecaster must cover every out-of-sample date, so all are scored alike."""
    missing = series.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"forecaster {name!r} gave no forecast on {int(missing.sum())} out-of-sample "
            f"date(s) (first {series.index[np.argmax(missing)].date()}); every forecaster "
            "must forecast every test date of every fold"
        )


def fold_dates(bars: pd.DataFrame, fold: Fold) -> pd.DatetimeIndex:
    return bars.index[fold.test_slice]


def _score(bars: pd.DataFrame, name: str, series: pd.Series) -> dict[str, float]:
    return score_forecasts(bars, {name: series})[name]


def _log_scores(
    bars: pd.DataFrame, name: str, series: pd.Series, folds: Sequence[Fold]
) -> dict[str, float]:
    """Whole-period metrics (step 0) and ``fold/<metric>`` (step = fold) of one forecast."""
    metrics = _score(bars, name, series)
    tracking.log_metrics(metrics)
    for fold in folds:
        part = series.loc[fold_dates(bars, fold)]
        if part.notna().sum() >= 2:
            # one fold that is the whole period (a universe's usual set-up) scores the same
            same = part.index.equals(series.index)
            per_fold = metrics if same else _score(bars, name, part)
            tracking.log_metrics({f"fold/{k}": v for k, v in per_fold.items()}, step=fold.number)
    return metrics


def _forecast_frame(bars: pd.DataFrame, columns: Mapping[str, pd.Series], folds) -> pd.DataFrame:
    """The out-of-sample dates with close, realised next close, fold and the forecasts."""
    dates = pd.DatetimeIndex(np.concatenate([fold_dates(bars, f) for f in folds]), name="date")
    frame = pd.DataFrame(index=dates)
    frame["close"] = bars["close"].reindex(dates)
    frame["actual_next_close"] = bars["close"].shift(-1).reindex(dates)
    frame["fold"] = np.concatenate([np.full(f.test_bars, f.number) for f in folds])
    for column, series in columns.items():
        frame[column] = series.reindex(dates)
    return frame


# Recording: one child run per (instrument, forecaster), from its units' results ------


Piece = tuple[TrainUnit, TrainResult]
Key = tuple[str, str]  # (instrument, forecaster)


def _by_fold(pieces: Sequence[Piece]) -> list[TrainResult]:
    return [result for _, result in sorted(pieces, key=lambda piece: piece[0].fold.number)]


def _log_timing(results: Sequence[TrainResult], suffix: str = "") -> None:
    tracking.log_metrics(
        {
            f"fit_seconds{suffix}": sum(r.fit_seconds for r in results),
            f"predict_seconds{suffix}": sum(r.predict_seconds for r in results),
        }
    )


def _record_classic(
    name: str, bars: pd.DataFrame, folds: list[Fold], pieces: Sequence[Piece]
) -> tuple[dict[str, pd.Series], dict[str, dict[str, float]]]:
    """A deterministic forecaster's one column and its metrics."""
    results = _by_fold(pieces)
    series = pd.concat([r.forecasts for r in results]).rename(name)
    _complete(series, folds, bars, name)
    metrics = _log_scores(bars, name, series, folds)
    _log_timing(results)
    return {name: series}, {name: metrics}


def _record_seeds(
    name: str, bars: pd.DataFrame, folds: list[Fold], results: Sequence[Sequence[TrainResult]]
) -> tuple[dict[str, pd.Series], dict[str, dict[str, float]]]:
    """A stochastic forecaster's columns: ``<name>``, the mean of its seeds' forecasts,
    then ``<name>_seed<k>`` each seed's; the mean's metrics logged, each seed's at step k."""
    per_seed = {}
    for k, seed_results in enumerate(results):
        column = seed_column(name, k)
        per_seed[column] = pd.concat([r.forecasts for r in seed_results]).rename(column)
        _complete(per_seed[column], folds, bars, column)
        _log_timing(seed_results, suffix=f"/seed{k}")
    frame = pd.DataFrame(per_seed)
    # the same expression as the exported model's
    # (pipelines.tracking.pyfunc_model.ensemble_forecast)
    columns = {name: frame.mean(axis=1).rename(name)}
    columns.update({c: frame[c].rename(c) for c in frame.columns})
    metrics = {name: _log_scores(bars, name, columns[name], folds)}
    for k, column in enumerate(per_seed):
        metrics[column] = _score(bars, column, columns[column])
        tracking.log_metrics({f"seed/{m}": v for m, v in metrics[column].items()}, step=k)
    return columns, metrics


def _record_histories(
    instrument: str,
    name: str,
    folds: list[Fold],
    results: Sequence[Sequence[TrainResult]],
    charts: bool,
) -> None:
    """Per-epoch losses of a forecaster that trains for epochs, per fold and seed."""
    histories = [[seed_results[f.number].history for seed_results in results] for f in folds]
    for fold, fold_histories in zip(folds, histories, strict=True):
        for k, history in enumerate(fold_histories):
            for key in ("loss", "val_loss"):
                tracking.log_metric_history(f"{key}/fold{fold.number}/seed{k}", history[key])
        tracking.log_metrics(
            {
                "fold/epochs_trained": np.mean([len(h["loss"]) for h in fold_histories]),
                "fold/best_val_loss": np.mean([min(h["val_loss"]) for h in fold_histories]),
            },
            step=fold.number,
        )
    if charts:
        tracking.log_figure(loss_chart(histories, f"{instrument}: {name} loss per epoch"), "loss")


def _record_gates(
    instrument: str,
    name: str,
    bars: pd.DataFrame,
    folds: list[Fold],
    first_seed: Sequence[TrainResult],
    seed: int,
    charts: bool,
) -> pd.DataFrame:
    """The first seed's per-unit internals of each fold, over that fold's test dates."""
    gates = pd.concat([r.gates for r in first_seed], ignore_index=True)
    tracking.log_dataframe(gates, "gates")
    if charts:  # the gates stay as data above; the report draws its own charts
        tracking.log_figure(
            gates_chart(
                gates,
                bars["close"],
                f"{instrument}: {name} gates over the out-of-sample dates (seed {seed})",
                fold_starts=[f.test_start_date for f in folds],
            ),
            "gates",
        )
    return gates


def _register_models(
    cfg: Config,
    key: Key,
    bars: pd.DataFrame,
    folds: Sequence[Fold],
    results: Sequence[Sequence[TrainResult]],
    unit: TrainUnit,
) -> model_registry.RegisteredModel:
    """Log and register the forecaster (every seed) of each fold whose units returned it
    (``tracking.register``: the final fold, or every fold, oldest first); the final
    fold's registration is returned, the one the alias ``newest`` moves to."""
    registered = None
    need = unit.build().min_history  # the seeds' params are the unit's
    for i, fold in enumerate(folds):
        if results[0][i].model is None:
            continue
        seeds = [seed_results[i].model for seed_results in results]
        lo = max(fold.train_start, fold.test_start - need + 1)
        example = bars.iloc[lo : min(fold.test_start + 5, fold.test_end + 1)]
        registered = model_registry.log_model(
            cfg, key[0], key[1], unit.cls, seeds, example, fold=fold.as_dict()
        )
    if registered is None:
        raise DataError(f"no fold of {key[1]} on {key[0]} returned its model to register")
    return registered


def record(
    cfg: Config,
    key: Key,
    bars: pd.DataFrame,
    folds: list[Fold],
    pieces: Sequence[Piece],
) -> InstrumentResult:
    """Record one (instrument, forecaster) from all its units' results in its child run;
    return what it adds to the instrument's result.

    What is recorded follows the forecaster's declared capabilities: its seeds'
    columns (``stochastic``), losses per epoch (a forecaster that reports a
    ``history_``), gates (``introspection``) and the registered model (``export``).
    """
    instrument, name = key
    unit = pieces[0][0]
    cls = unit.cls
    seeds = sorted({piece.seed for piece, _ in pieces})
    tags = {"gatecast.instrument": instrument, "gatecast.forecaster": name}
    part = InstrumentResult(instrument, folds)
    with tracking.child_run(f"{instrument}/{name}", tags=tags) as run:
        part.runs[name] = run
        # results[k][fold number]: seed k's unit of that fold
        results = [_by_fold([p for p in pieces if p[0].seed_index == k]) for k in range(unit.seeds)]
        if cls.stochastic:
            tracking.set_tags(
                {
                    "gatecast.seeds": ",".join(map(str, seeds)),
                    "gatecast.settled_params": json.dumps(dict(unit.params), sort_keys=True),
                }
            )
            columns, metrics = _record_seeds(name, bars, folds, results)
        else:
            columns, metrics = _record_classic(name, bars, folds, pieces)
            tracking.log_dataframe(_forecast_frame(bars, columns, folds), "forecasts")
        if results[0][0].history is not None:
            _record_histories(instrument, name, folds, results, cfg.tracking.charts)
        if cls.stochastic:
            tracking.log_dataframe(_forecast_frame(bars, columns, folds), "forecasts")
        if cls.introspection:
            part.gates = _record_gates(
                instrument, name, bars, folds, results[0], seeds[0], cfg.tracking.charts
            )
        if cls.export and cfg.tracking.register != "none":
            part.model = _register_models(cfg, key, bars, folds, results, unit)
    part.forecasts.update(columns)
    part.metrics.update(metrics)
    return part


def record_league(cfg: Config, summary: Mapping[str, Any]) -> None:
    """The stage's league on its parent run: each forecaster's Theil U2 (its RMSE over the
    random walk's) per instrument, seeds left out (``pipelines.tracking.league``)."""
    rows = [
        {"instrument": instrument, "name": name, "theil_u2": m.get("theil_u2")}
        for instrument, entry in summary["instruments"].items()
        for name, m in entry["metrics"].items()
        if not is_seed(name)
    ]
    if rows:
        note = f"gatecast `train` stage of config `{cfg.name}`"
        frame = pd.DataFrame(rows).astype({"theil_u2": float})
        log_league(frame, "theil_u2", False, "forecaster", note)
