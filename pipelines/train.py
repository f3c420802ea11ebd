"""The ``train`` stage: walk-forward forecasts of every forecaster, tracked in MLflow.

``python -m pipelines train --config configs/default.yaml`` (``make train``):

1. chooses the device and op determinism (``pipelines.runtime``);
2. reads each instrument's bars from ``build/<name>/data/<INST>.parquet`` (the
   data stage's output) or, when that is missing, through ``pipelines.data``;
3. runs the walk-forward (``pipelines.walkforward``) of every enabled
   forecaster; the LSTM once per seed (seed ``cfg.seed + k``), its ``lstm``
   column being the mean of the seeds' forecasts and ``lstm_seed<k>`` each
   seed's;
4. scores every forecaster on the same out-of-sample dates
   (``models.metrics``: RMSE, MAE, Theil's U2, MASE, directional accuracy, the
   Diebold-Mariano test against the random walk), whole period and per fold;
5. records it all in MLflow (``pipelines.tracking``): one parent run
   ``train``, one child run ``<INST>/<forecaster>`` each, with forecasts,
   metrics, per-epoch losses, loss and gate plots, and the final LSTM
   registered as ``<tracking.registered_model>-<INST>`` (alias ``newest``);
6. writes ``build/<name>/forecasts/<INST>.parquet`` (bars + one column per
   forecaster, NaN before the out-of-sample start), ``<INST>.gates.parquet``
   (the LSTM's gate activations over the out-of-sample dates) and, last,
   ``summary.json``. Every file is written atomically and the old
   ``summary.json`` is removed first, so a failed run never leaves a summary
   that make would take for a finished stage.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tqdm import tqdm

from pipelines import runtime, tracking
from pipelines.charts import gates_chart
from pipelines.cli import config_from_args, run_stage, setup_logging, stage_parser
from pipelines.config import REPO_ROOT, Config
from pipelines.data import load_instrument, safe_child
from pipelines.errors import DataError
from pipelines.outputs import atomic_write
from pipelines.walkforward import (
    Fold,
    WalkForwardResult,
    make_folds,
    make_forecaster,
    required_train_bars,
    score_forecasts,
    walk_forward,
)

log = logging.getLogger("gatecast.train")

STAGE = "train"
LSTM = "lstm"


# Inputs -------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    path = Path(os.path.abspath(path))
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def load_bars(cfg: Config) -> tuple[dict[str, pd.DataFrame], dict[str, Path]]:
    """Bars of every instrument, and the data files they came from (for their SHA-256).

    The data stage's ``build/<name>/data/<INST>.parquet`` is used when present
    (listed in its summary.json); otherwise the instrument is loaded from its
    source through ``pipelines.data``.
    """
    data_dir = cfg.run_directory / "data"
    listed: dict[str, Any] = {}
    summary_path = data_dir / "summary.json"
    if summary_path.is_file():
        listed = json.loads(summary_path.read_text()).get("instruments", {})
    bars: dict[str, pd.DataFrame] = {}
    inputs: dict[str, Path] = {}
    for name in cfg.data.instruments:
        parquet = safe_child(data_dir, name, ".parquet")
        if name in listed and parquet.is_file():
            bars[name] = pd.read_parquet(parquet)
            inputs[parquet.name] = parquet
            log.info("%s: bars from %s (data stage)", name, _shown(parquet))
            source = REPO_ROOT / str(listed[name].get("source", ""))
        else:
            bars[name] = load_instrument(cfg, name)
            source = cfg.resolve(cfg.data.directory) / f"{name}.csv"
        if cfg.data.source == "csv" and source.is_file():
            inputs[source.name] = source
    return bars, inputs


# Results ------------------------------------------------------------------------------


@dataclass
class InstrumentResult:
    """What the train stage produced for one instrument.

    Args:
        name: The instrument.
        folds: Its walk-forward folds.
        forecasts: Column name -> out-of-sample forecasts (``lstm`` and
            ``lstm_seed<k>`` for the LSTM).
        metrics: Column name -> forecast metrics on the common dates.
        runs: Forecaster name -> its MLflow child run (the id is read when the
            outputs are written, so training never waits for the store).
        gates: The LSTM's gate activations over the out-of-sample dates (or None).
        model: The registered LSTM (or None).
    """

    name: str
    folds: list[Fold]
    forecasts: dict[str, pd.Series] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    runs: dict[str, tracking.RunHandle] = field(default_factory=dict)
    gates: pd.DataFrame | None = None
    model: tracking.RegisteredModel | None = None


def _complete(series: pd.Series, folds: Sequence[Fold], bars: pd.DataFrame, name: str) -> None:
    """Every forecaster must cover every out-of-sample date, so all are scored alike."""
    missing = series.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"forecaster {name!r} gave no forecast on {int(missing.sum())} out-of-sample "
            f"date(s) (first {series.index[np.argmax(missing)].date()}); every forecaster "
            "must forecast every test date of every fold"
        )


def _fold_dates(bars: pd.DataFrame, fold: Fold) -> pd.DatetimeIndex:
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
        part = series.loc[_fold_dates(bars, fold)]
        if part.notna().sum() >= 2:
            per_fold = _score(bars, name, part)
            tracking.log_metrics({f"fold/{k}": v for k, v in per_fold.items()}, step=fold.number)
    return metrics


def _forecast_frame(bars: pd.DataFrame, columns: Mapping[str, pd.Series], folds) -> pd.DataFrame:
    """The out-of-sample dates with close, realised next close, fold and the forecasts."""
    dates = pd.DatetimeIndex(np.concatenate([_fold_dates(bars, f) for f in folds]), name="date")
    frame = pd.DataFrame(index=dates)
    frame["close"] = bars["close"].reindex(dates)
    frame["actual_next_close"] = bars["close"].shift(-1).reindex(dates)
    frame["fold"] = np.concatenate([np.full(f.test_bars, f.number) for f in folds])
    for column, series in columns.items():
        frame[column] = series.reindex(dates)
    return frame


# Plots --------------------------------------------------------------------------------


def loss_chart(histories: Sequence[Sequence[Mapping[str, list[float]]]], title: str) -> Figure:
    """Training and validation loss per epoch: one panel per fold, one line pair per seed.

    Args:
        histories: ``histories[fold][seed]`` = ``{"loss": [...], "val_loss": [...]}``.
        title: Figure title.
    """
    folds = len(histories)
    width, height = 3.2 * folds + 1, 3.4
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins (inches) rather than constrained layout, which costs more
    # than drawing the lines: this chart is rendered once per instrument.
    fig.subplots_adjust(
        left=0.75 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.65 / height
    )
    axes = np.atleast_1d(fig.subplots(1, folds, sharey=True, gridspec_kw={"wspace": 0.06}))
    for number, (ax, seeds) in enumerate(zip(axes, histories, strict=True)):
        for k, history in enumerate(seeds):
            epochs = np.arange(1, len(history["loss"]) + 1)
            ax.plot(epochs, history["loss"], color=f"C{k}", label=f"seed {k} train")
            ax.plot(
                epochs, history["val_loss"], color=f"C{k}", linestyle="--", label=f"seed {k} val"
            )
        ax.set_title(f"fold {number}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("MSE (scaled returns)")
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(title)
    return fig


# Forecasters --------------------------------------------------------------------------


Tick = Callable[[Fold, Any], None]


def _run_classic(
    cfg: Config, name: str, bars: pd.DataFrame, folds: list[Fold], tick: Tick
) -> tuple[dict[str, pd.Series], dict[str, dict[str, float]]]:
    result = walk_forward(bars, lambda: make_forecaster(name, cfg), folds, progress=tick)
    series = result.forecasts.rename(name)
    _complete(series, folds, bars, name)
    metrics = _log_scores(bars, name, series, folds)
    _log_timing(result)
    tracking.log_dataframe(_forecast_frame(bars, {name: series}, folds), "forecasts")
    return {name: series}, {name: metrics}


def _log_timing(result: WalkForwardResult, suffix: str = "") -> None:
    tracking.log_metrics(
        {
            f"fit_seconds{suffix}": sum(result.fit_seconds),
            f"predict_seconds{suffix}": sum(result.predict_seconds),
        }
    )


def _run_lstm(
    cfg: Config, instrument: str, bars: pd.DataFrame, folds: list[Fold], tick: Tick
) -> tuple[dict[str, pd.Series], dict[str, dict[str, float]], pd.DataFrame, Any]:
    assert cfg.forecasters.lstm is not None
    seeds = [cfg.seed + k for k in range(cfg.forecasters.lstm.seeds)]
    tracking.set_tags({"gatecast.seeds": ",".join(map(str, seeds))})
    results: list[WalkForwardResult] = []
    for k, seed in enumerate(seeds):
        runtime.seed_everything(seed)
        result = walk_forward(
            bars, lambda seed=seed: make_forecaster(LSTM, cfg, seed=seed), folds, progress=tick
        )
        _complete(result.forecasts, folds, bars, f"{LSTM}_seed{k}")
        results.append(result)
        for fold, forecaster in zip(folds, result.forecasters, strict=True):
            for key in ("loss", "val_loss"):
                tracking.log_metric_history(
                    f"{key}/fold{fold.number}/seed{k}", forecaster.history_[key]
                )
        _log_timing(result, suffix=f"/seed{k}")

    per_seed = pd.DataFrame({f"{LSTM}_seed{k}": r.forecasts for k, r in enumerate(results)})
    # the same expression as tracking.ensemble_forecast, which the logged model runs
    columns = {LSTM: per_seed.mean(axis=1).rename(LSTM)}
    columns.update({c: per_seed[c].rename(c) for c in per_seed.columns})

    metrics = {LSTM: _log_scores(bars, LSTM, columns[LSTM], folds)}
    for k in range(len(seeds)):
        column = f"{LSTM}_seed{k}"
        metrics[column] = _score(bars, column, columns[column])
        tracking.log_metrics({f"seed/{m}": v for m, v in metrics[column].items()}, step=k)
    for fold in folds:
        histories = [r.forecasters[fold.number].history_ for r in results]
        tracking.log_metrics(
            {
                "fold/epochs_trained": np.mean([len(h["loss"]) for h in histories]),
                "fold/best_val_loss": np.mean([min(h["val_loss"]) for h in histories]),
            },
            step=fold.number,
        )

    # Gates of the first seed's model of each fold, over that fold's test dates.
    gates = pd.concat(
        [
            forecaster.gate_activations(
                bars.iloc[fold.train_start : fold.test_end + 1], fold.test_start_date
            )
            for fold, forecaster in zip(folds, results[0].forecasters, strict=True)
        ]
    ).rename_axis("date")

    tracking.log_dataframe(_forecast_frame(bars, columns, folds), "forecasts")
    tracking.log_dataframe(gates, "gates")
    histories = [[r.forecasters[f.number].history_ for r in results] for f in folds]
    tracking.log_figure(loss_chart(histories, f"{instrument}: LSTM loss per epoch"), "loss")
    tracking.log_figure(
        gates_chart(
            gates,
            bars["close"],
            f"{instrument}: LSTM gates over the out-of-sample dates (seed {seeds[0]})",
            fold_starts=[f.test_start_date for f in folds],
        ),
        "gates",
    )

    last = folds[-1]
    final = [r.forecasters[-1] for r in results]
    need = max(f.min_history for f in final)
    lo = max(last.train_start, last.test_start - need + 1)
    example = bars.iloc[lo : min(last.test_start + 5, last.test_end + 1)]
    model = tracking.log_lstm_model(cfg, instrument, final, example)
    return columns, metrics, gates, model


def _min_history(cfg: Config) -> int:
    return max(required_train_bars(make_forecaster(n, cfg)) for n in cfg.forecasters.enabled())


def train_instrument(
    cfg: Config, instrument: str, bars: pd.DataFrame, folds: list[Fold], tick: Tick
) -> InstrumentResult:
    """Every enabled forecaster on one instrument, one MLflow child run each."""
    result = InstrumentResult(instrument, folds)
    for name in cfg.forecasters.enabled():
        tags = {"gatecast.instrument": instrument, "gatecast.forecaster": name}
        with tracking.child_run(f"{instrument}/{name}", tags=tags) as run:
            result.runs[name] = run
            if name == LSTM:
                columns, metrics, gates, model = _run_lstm(cfg, instrument, bars, folds, tick)
                result.gates, result.model = gates, model
            else:
                columns, metrics = _run_classic(cfg, name, bars, folds, tick)
            result.forecasts.update(columns)
            result.metrics.update(metrics)
    return result


# Outputs ------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def forecasts_directory(cfg: Config) -> Path:
    return cfg.run_directory / "forecasts"


def write_outputs(
    cfg: Config,
    bars: Mapping[str, pd.DataFrame],
    results: Sequence[InstrumentResult],
    header: Mapping[str, Any],
) -> dict[str, Any]:
    """Write the per-instrument Parquet files, then summary.json; return the summary."""
    out = forecasts_directory(cfg)
    instruments: dict[str, Any] = {}
    for result in results:
        frame = bars[result.name].copy()
        for column, series in result.forecasts.items():
            frame[column] = series.reindex(frame.index).astype("float64")
        path = safe_child(out, result.name, ".parquet")
        atomic_write(path, lambda tmp, frame=frame: frame.to_parquet(tmp))
        gates_path = None
        if result.gates is not None:
            gates_path = safe_child(out, result.name, ".gates.parquet")
            atomic_write(gates_path, lambda tmp, g=result.gates: g.to_parquet(tmp))
        oos = pd.DatetimeIndex(
            np.concatenate([_fold_dates(bars[result.name], f) for f in result.folds])
        )
        instruments[result.name] = {
            "oos_start": oos[0].isoformat(),
            "oos_end": oos[-1].isoformat(),
            "oos_bars": len(oos),
            "forecasts": _shown(path),
            "gates": _shown(gates_path) if gates_path else None,
            "columns": list(result.forecasts),
            "folds": [f.as_dict() for f in result.folds],
            "metrics": result.metrics,
            "runs": {name: run.run_id for name, run in result.runs.items()},
            "model": (
                {
                    "name": result.model.name,
                    "version": result.model.version,
                    "alias": result.model.alias,
                    "uri": result.model.model_uri,
                }
                if result.model
                else None
            ),
        }
    summary = _json_safe({**header, "instruments": instruments})
    atomic_write(
        out / "summary.json",
        lambda tmp: tmp.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n"),
    )
    return summary


def _table(summary: Mapping[str, Any]) -> str:
    rows = []
    for instrument, entry in summary["instruments"].items():
        for column, m in entry["metrics"].items():
            rows.append(
                {
                    "instrument": instrument,
                    "forecaster": column,
                    "rmse": m["rmse"],
                    "theil_u2": m["theil_u2"],
                    "dir_acc": m["directional_accuracy"],
                    "dm_p": m["dm_p_value"],
                }
            )
    return pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}")


# The stage ----------------------------------------------------------------------------


def train(cfg: Config, *, command: str | None = None) -> dict[str, Any]:
    """Run the train stage for ``cfg`` and return the summary written to summary.json."""
    started = time.perf_counter()
    out = forecasts_directory(cfg)
    (out / "summary.json").unlink(missing_ok=True)
    device = runtime.configure(cfg)
    bars, inputs = load_bars(cfg)
    min_history = _min_history(cfg)
    folds = {name: make_folds(b.index, cfg.walkforward, min_history) for name, b in bars.items()}
    per_fold = sum(
        (cfg.forecasters.lstm.seeds if n == LSTM and cfg.forecasters.lstm else 1)
        for n in cfg.forecasters.enabled()
    )
    total = per_fold * sum(len(f) for f in folds.values())

    with (
        tracking.pipeline_run(
            cfg, STAGE, inputs=inputs, tags=device.tags(), command=command
        ) as parent,
        runtime.device_scope(device),
        tqdm(total=total, desc="train", unit="fit", disable=None, file=sys.stderr) as bar,
    ):

        def tick(fold: Fold, forecaster: Any) -> None:
            bar.set_postfix_str(f"{forecaster.name} fold {fold.number}", refresh=False)
            bar.update()

        results = []
        for instrument, instrument_bars in bars.items():
            bar.set_description(f"train {instrument}")
            results.append(
                train_instrument(cfg, instrument, instrument_bars, folds[instrument], tick)
            )
        header = {
            "config": cfg.name,
            "stage": STAGE,
            "experiment": cfg.experiment_name,
            "experiment_id": parent.experiment_id,
            "parent_run_id": parent.run_id,
            "tracking_uri": tracking.display_uri(parent.tracking_uri),
            "device": {"kind": device.kind, "name": device.name, "requested": device.requested},
            "deterministic": device.deterministic,
            "seeds": (
                [cfg.seed + k for k in range(cfg.forecasters.lstm.seeds)]
                if cfg.forecasters.lstm
                else []
            ),
        }
        summary = write_outputs(cfg, bars, results, header)
        tracking.log_metrics({"wall_seconds": time.perf_counter() - started})
        tracking.log_dict(summary, "summary.json")
    return summary


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let a SIGTERM (e.g. a stopped make job) end the runs KILLED, like Ctrl-C."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines train``: walk-forward forecasts, tracked in MLflow."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = stage_parser(
        STAGE,
        "Walk-forward forecasts of every forecaster for every instrument in the config, "
        "tracked in MLflow; writes build/<name>/forecasts/<INSTRUMENT>.parquet and summary.json.",
    )
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    command = shlex.join(["python", "-m", "pipelines", STAGE, *argv])

    def body() -> int:
        cfg = config_from_args(args)
        # run_stage turns a failure into one line; the MLflow note on the
        # exception (from tracking.pipeline_run) says how the runs ended and where.
        with _sigterm_as_interrupt():
            summary = train(cfg, command=command)
        print(_table(summary))
        out = forecasts_directory(cfg)
        print(
            f"wrote {len(summary['instruments'])} instrument(s) and summary.json to {_shown(out)}"
        )
        print(
            f"MLflow: experiment {summary['experiment']} (id {summary['experiment_id']}), "
            f"run {summary['parent_run_id']} at {summary['tracking_uri']} (browse: make ui)"
        )
        return 0

    return run_stage(body, STAGE, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
