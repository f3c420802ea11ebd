"""The ``train`` stage: walk-forward forecasts of every forecaster, tracked in MLflow.

``python -m pipelines train --config configs/default.yaml`` (``make train``):

1. chooses the device and op determinism (``pipelines.execution.runtime``);
2. reads each instrument's bars from ``build/<name>/data/<INST>.parquet`` (the
   data stage's output) or, when that is missing, through ``pipelines.sources.load``;
3. runs the walk-forward (``pipelines.execution.walkforward``) of every enabled
   forecaster as units of work (``pipelines.execution.units``: one forecaster, one fold,
   and for a stochastic one one seed, ``cfg.seed + k``, each) through the executor of
   the config's ``executor`` section (``pipelines.execution.executors``: in this process,
   a pool of worker processes or Ray tasks; the results are bit-identical).
   This process is the driver: only it talks to MLflow, and it records each
   (instrument, forecaster) as soon as all its units are in. A failed unit
   fails alone: its forecaster's run ends FAILED, the others are recorded, and
   the stage ends with one line naming every failed unit; finished units'
   results are kept (``pipelines.execution.unit_cache``), so a rerun redoes only the
   failed ones. A stochastic forecaster's column (``lstm``) is the mean of its seeds'
   forecasts and ``<name>_seed<k>`` each seed's;
4. scores every forecaster on the same out-of-sample dates
   (``models.metrics``: RMSE, MAE, Theil's U2, MASE, directional accuracy, the
   Diebold-Mariano test against the random walk), whole period and per fold;
5. records it all in MLflow (``pipelines.tracking``): one parent run
   ``train``, one child run ``<INST>/<forecaster>`` each, with forecasts,
   metrics, per-epoch losses, loss and gate plots, and the final model of
   each forecaster that declares ``export`` registered (``model_registry.log_model``,
   alias ``newest``);
6. writes ``build/<name>/forecasts/<INST>.parquet`` (bars + one column per
   forecaster, NaN before the out-of-sample start), ``<INST>.gates.parquet``
   (the per-unit gate activations of an ``introspection`` forecaster, the
   report's candidate where it is one, over the out-of-sample dates, one row
   per date and unit: ``pipelines.execution.units.gates_long``) and, last,
   ``summary.json``. Every file is written atomically and the old
   ``summary.json`` is removed first, so a failed run never leaves a summary
   that make would take for a finished stage.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines import tracking
from pipelines.cli import (
    config_from_args,
    recorded_command,
    run_stage,
    setup_logging,
    stage_parser,
)
from pipelines.common.outputs import atomic_write, json_safe, read_stage_parquet, shown, write_json
from pipelines.common.progress import StageProgress
from pipelines.config import REPO_ROOT, Config
from pipelines.execution import executors, runtime
from pipelines.execution.recorder import Recorder
from pipelines.execution.unit_cache import UnitCache, UnitRunner
from pipelines.execution.units import (
    TrainUnit,
    cache_inputs,
    grows_memory,
    make_units,
    run_train_unit,
)
from pipelines.execution.walkforward import (
    Fold,
    make_folds,
    make_forecaster,
    required_train_bars,
)
from pipelines.sources.load import load_instrument, safe_child
from pipelines.stages.search import chosen_config
from pipelines.tracking import model_registry
from pipelines.tracking import uri as store_uri
from pipelines.tracking.train_runs import (
    InstrumentResult,
    Key,
    Piece,
    fold_dates,
    record,
    record_league,
)

log = logging.getLogger("gatecast.train")

STAGE = "train"


# Inputs -------------------------------------------------------------------------------


def load_bars(cfg: Config) -> tuple[dict[str, pd.DataFrame], dict[str, Path]]:
    """Bars of every instrument, and the data files they came from (for their SHA-256).

    The data stage's ``build/<name>/data/<INST>.parquet`` is used when present
    (listed in its summary.json); otherwise the instrument is loaded from its
    source through ``pipelines.sources.load``.
    """
    data_dir = cfg.stage_directory("data")
    listed: dict[str, Any] = {}
    summary_path = data_dir / "summary.json"
    if summary_path.is_file():
        listed = json.loads(summary_path.read_text()).get("instruments", {})
    bars: dict[str, pd.DataFrame] = {}
    inputs: dict[str, Path] = {}
    for name in cfg.data.instruments:
        parquet = safe_child(data_dir, name, ".parquet")
        if name in listed and parquet.is_file():
            bars[name] = read_stage_parquet(parquet, "data")
            inputs[parquet.name] = parquet
            log.info("%s: bars from %s (data stage)", name, shown(parquet))
            source = REPO_ROOT / str(listed[name].get("source", ""))
        else:
            bars[name] = load_instrument(cfg, name)
            source = cfg.resolve(cfg.data.directory) / f"{name}.csv"
        if cfg.data.source == "csv" and source.is_file():
            inputs[source.name] = source
    return bars, inputs


# Driving the units ----------------------------------------------------------------------


def _min_history(cfg: Config) -> int:
    return max(required_train_bars(make_forecaster(n, cfg)) for n in cfg.forecasters.enabled())


def _record_failure(key: Key, failure: executors.UnitFailure) -> None:
    """Open and end the child run of ``key``'s forecaster FAILED, naming the failed unit."""
    tags = {"gatecast.instrument": key[0], "gatecast.forecaster": key[1]}
    tracking.failed_child_run(f"{key[0]}/{key[1]}", tags, str(failure))


def run_units(
    cfg: Config,
    bars: Mapping[str, pd.DataFrame],
    folds: Mapping[str, list[Fold]],
    units: Sequence[TrainUnit],
    executor: executors.Executor,
    bar: StageProgress,
    cache: UnitCache | None = None,
) -> dict[Key, InstrumentResult]:
    """Run ``units`` through ``executor``; record each (instrument, forecaster) once all
    its units are in.

    Units whose result ``cache`` keeps from an earlier run are not run again
    (``pipelines.execution.unit_cache``). The records are made beside the units
    (``pipelines.execution.recorder``: in a background thread when the units run
    in other processes), in the units' order of (instrument, forecaster),
    whichever finished first. A unit that raises ends the child run of its
    forecaster FAILED (opened for the purpose) and the others go on; once all
    are done, ``UnitsFailed`` names every failed unit. An error of the
    driver's own (recording) ends the run it was recording FAILED, and an
    interruption the run of the first forecaster not yet recorded KILLED,
    before the exception goes on; the forecasters recorded keep their FINISHED
    runs, and those not started get none.
    """
    order = list(dict.fromkeys(unit.key for unit in units))
    expected = Counter(unit.key for unit in units)
    arrived: dict[Key, list[Piece]] = defaultdict(list)
    failed: dict[Key, executors.UnitFailure] = {}
    futures: dict[Key, Future[InstrumentResult]] = {}
    submitted = 0  # order[:submitted] are with the recorder
    runner = UnitRunner(STAGE, cache)
    recorder = Recorder(background=not getattr(executor, "in_process", False))
    try:
        with recorder:
            for unit, outcome in runner.run(executor, run_train_unit, units):
                bar.set_description(f"train {unit.instrument}", refresh=False)
                bar.set_postfix_str(str(unit), refresh=False)
                bar.update(unit.instrument)
                if unit.key in failed:
                    continue
                if isinstance(outcome, Exception):
                    failed[unit.key] = runner.failures[-1][1]
                else:
                    arrived[unit.key].append((unit, outcome))
                # hand over, in order, every forecaster whose units are all in
                while submitted < len(order):
                    key = order[submitted]
                    if key in failed:
                        arrived.pop(key, None)
                        recorder.submit(_record_failure, key, failed[key])
                    elif len(arrived[key]) == expected[key]:
                        instrument, pieces = key[0], arrived.pop(key)
                        futures[key] = recorder.submit(
                            record, cfg, key, bars[instrument], folds[instrument], pieces
                        )
                    else:
                        break
                    submitted += 1
    except BaseException as err:
        # an interruption, or an error of the driver's: the first forecaster not yet
        # recorded gets a run that says so (a record that failed has its own)
        key = next((k for k in order[submitted:] if k not in failed), None)
        if key is not None and err is not recorder.error:
            tags = {"gatecast.instrument": key[0], "gatecast.forecaster": key[1]}
            with tracking.child_run(f"{key[0]}/{key[1]}", tags=tags):
                raise
        raise
    finally:
        log.info(
            "recording: %.1f s, of which the driver waited %.1f s",
            recorder.busy_seconds,
            recorder.waited_seconds,
        )
    runner.finish()
    return {key: future.result() for key, future in futures.items()}


# Outputs ------------------------------------------------------------------------------


def _instrument_result(
    cfg: Config, instrument: str, folds: list[Fold], recorded: Mapping[Key, InstrumentResult]
) -> InstrumentResult:
    """One instrument's forecasters, in the config's order whatever order they finished in."""
    result = InstrumentResult(instrument, folds)
    for name in cfg.forecasters.enabled():
        part = recorded[instrument, name]
        result.runs.update(part.runs)
        result.forecasts.update(part.forecasts)
        result.metrics.update(part.metrics)
        # one gates file per instrument: the report's candidate's, else the first forecaster's
        if part.gates is not None and (result.gates is None or name == cfg.report.candidate):
            result.gates = part.gates
        if part.model is not None:
            result.model = part.model
    return result


def forecasts_directory(cfg: Config) -> Path:
    return cfg.stage_directory("train")


def write_outputs(
    cfg: Config,
    bars: Mapping[str, pd.DataFrame],
    results: Sequence[InstrumentResult],
    header: Mapping[str, Any],
) -> dict[str, Any]:
    """Write the per-instrument Parquet files, then summary.json; return the summary.

    The registered models' alias ``newest`` moves between the two: only a stage
    whose forecasts are all written moves it, and summary.json (what make takes
    for a finished stage) comes last.
    """
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
            np.concatenate([fold_dates(bars[result.name], f) for f in result.folds])
        )
        instruments[result.name] = {
            "oos_start": oos[0].isoformat(),
            "oos_end": oos[-1].isoformat(),
            "oos_bars": len(oos),
            "forecasts": shown(path),
            "gates": shown(gates_path) if gates_path else None,
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
    model_registry.move_newest([r.model for r in results if r.model is not None])
    summary = json_safe({**header, "instruments": instruments})
    write_json(out / "summary.json", summary)
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


def train(cfg: Config, *, command: str | None = None, reuse: bool = True) -> dict[str, Any]:
    """Run the train stage for ``cfg`` and return the summary written to summary.json.

    ``reuse``: take finished units' results from ``forecasts/.units`` and keep
    them there (``pipelines.execution.unit_cache``); False runs every unit and keeps none.

    The LSTM's settings are the search stage's chosen configuration when
    ``search.trials`` is above 0 (read from its summary.json, ``pipelines.stages.search``);
    the run's params show them and its tags say where they came from.
    """
    started = time.perf_counter()
    cfg, search_tags = chosen_config(cfg)
    out = forecasts_directory(cfg)
    (out / "summary.json").unlink(missing_ok=True)
    bars, inputs = load_bars(cfg)
    # The executor starts first: its workers start (and import TensorFlow) while this
    # process does the same and opens its MLflow run (pipelines.execution.executors).
    # Without a forecaster that computes with TensorFlow no process starts it.
    needed = runtime.uses_device(cfg)
    executor = executors.executor_for(
        cfg.executor,
        setup=functools.partial(runtime.configure_worker, cfg) if needed else None,
        recycles=grows_memory,
    )
    log.info("executor: %s", executor.describe())

    in_process = getattr(executor, "in_process", False)
    with executor:
        # imports TensorFlow where this process needs it, quietly: before anything else
        device = runtime.configure_stage(cfg, in_process, needed)
        min_history = _min_history(cfg)  # builds the forecasters
        folds = {n: make_folds(b.index, cfg.walkforward, min_history) for n, b in bars.items()}
        units = make_units(cfg, bars, folds, device)
        log.info("%d units of work", len(units))
        cache = UnitCache(out, "pipelines.execution.units", cache_inputs) if reuse else None
        with (
            tracking.pipeline_run(
                cfg, STAGE, inputs=inputs, tags={**device.tags(), **search_tags}, command=command
            ) as parent,
            runtime.device_scope(device) if in_process else contextlib.nullcontext(),
            StageProgress(STAGE, [u.key for u in units], "forecasters", unit="fit") as bar,
        ):
            recorded = run_units(cfg, bars, folds, units, executor, bar, cache)
            results = [_instrument_result(cfg, name, f, recorded) for name, f in folds.items()]
            header = {
                "config": cfg.name,
                "stage": STAGE,
                "experiment": cfg.experiment_name,
                "experiment_id": parent.experiment_id,
                "parent_run_id": parent.run_id,
                "tracking_uri": store_uri.display_uri(parent.tracking_uri),
                "device": {"kind": device.kind, "name": device.name, "requested": device.requested},
                "deterministic": device.deterministic,
                "seeds": {
                    name: [cfg.seed + k for k in range(spec.seeds)]
                    for name, spec in cfg.forecasters.with_capability("stochastic").items()
                },
            }
            summary = write_outputs(cfg, bars, results, header)
            record_league(cfg, summary)
            tracking.log_metrics({"wall_seconds": time.perf_counter() - started})
            tracking.log_dict(summary, "summary.json")
    return summary


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
    command = recorded_command(args, STAGE)

    def body() -> int:
        cfg = config_from_args(args)
        # run_stage turns a failure into one line; the MLflow note on the
        # exception (from tracking.pipeline_run) says how the runs ended and where.
        summary = train(cfg, command=command)  # SIGTERM ends its runs KILLED (tracking)
        print(_table(summary))
        out = forecasts_directory(cfg)
        print(f"wrote {len(summary['instruments'])} instrument(s) and summary.json to {shown(out)}")
        print(
            f"MLflow: experiment {summary['experiment']} (id {summary['experiment_id']}), "
            f"run {summary['parent_run_id']} at {summary['tracking_uri']} (browse: make ui)"
        )
        return 0

    return run_stage(body, STAGE, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
