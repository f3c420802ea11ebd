"""The ``search`` stage: hyperparameter search of one forecaster with Optuna, tracked in MLflow.

The forecaster searched is ``search.forecaster`` (default ``lstm``); the space
``search.space`` names the settings it tunes, each of them a parameter of that
forecaster (``window`` is ``features.window``; ``units`` and ``layers`` make a
``units`` list).

``python -m pipelines search --config FILE`` (``make search``), between the
data and train stages:

1. with ``search.trials: 0`` (the default) it searches nothing: it writes a
   ``summary.json`` whose chosen configuration is the config's own
   (``forecasters.<searched>``, ``features.window``), opens no MLflow run (there is
   nothing to record, and a stage that did nothing should not add a run to the
   experiment) and imports neither TensorFlow nor MLflow;
2. otherwise it reads the data stage's bars and asks an Optuna TPE sampler,
   seeded with ``search.seed`` (null: ``seed``), for configurations of the
   space ``search.space`` (``pipelines.config.SearchSpace``), in batches of
   the executor's workers (``executor``). Each is a unit of work
   (``pipelines.execution.search_unit.TrialUnit``), scored by ``search.metric`` on
   validation slices inside the first walk-forward fold's training segment,
   never on a test fold (``pipelines.execution.search_unit``). Results are told to the
   sampler in the order the trials were asked, whatever order they finish in,
   so a seed gives the same trials with any executor. TensorFlow is started only
   where the searched forecaster declares ``device``, and on the CPU only in the
   processes that run trials (``pipelines.execution.runtime.configure_stage``);
3. records (this process is the driver: only it talks to MLflow): one parent
   run ``search`` with the config's params, ``best_score``,
   ``trials_completed`` and ``trials_failed`` metrics and the best
   configuration as ``best.<setting>`` params; one child run
   ``trial/<number>`` per trial with its configuration as ``trial.<setting>``
   params (and the config params it changes), its score (``score`` and the
   metric's name, per instrument ``<metric>/<INST>``), ended FAILED when the
   trial raised. A failed trial is told to Optuna as failed and the search
   goes on; a search whose every trial failed fails;
4. writes ``build/<name>/search/summary.json``: the chosen configuration, the
   best score, every trial, and a fingerprint of the settings the search
   depends on. The train stage reads the chosen configuration from this file
   (``chosen_config``) and the report counts the trials in the deflated
   Sharpe ratio (``pipelines.report.inputs.search_trials``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from models.base import BuildContext
from pipelines.cli import (
    config_from_args,
    recorded_command,
    run_stage,
    setup_logging,
    stage_parser,
)
from pipelines.common.errors import ConfigError, DataError
from pipelines.common.outputs import (
    json_safe,
    read_stage_parquet,
    read_stage_summary,
    shown,
    write_json,
)
from pipelines.config import Config
from pipelines.config.sections import SearchSpace
from pipelines.execution import search_unit
from pipelines.execution.executors import Executor
from pipelines.execution.runtime import DeviceInfo
from pipelines.execution.search_unit import (
    TrialResult,
    TrialUnit,
    apply_params,
    searched_params,
)
from pipelines.execution.walkforward import Fold, required_train_bars
from pipelines.sources.load import load_instrument, safe_child
from pipelines.tracking import provenance
from pipelines.tracking import uri as store_uri

log = logging.getLogger("gatecast.search")

STAGE = "search"
DIRECTION = "minimize"  # both metrics: lower is better


def summary_path(cfg: Config) -> Path:
    """``build/<name>/search/summary.json``."""
    return cfg.run_directory / STAGE / "summary.json"


def fingerprint(cfg: Config) -> str:
    """SHA-256 of the settings a search's result depends on (to spot a stale summary)."""
    dump = cfg.model_dump(mode="json")
    keys = ("seed", "device", "deterministic", "data", "features", "walkforward", "search")
    part = {k: dump[k] for k in keys}
    part["searched"] = dump["forecasters"].get(cfg.search.forecaster)
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()


def check(cfg: Config) -> None:
    """What the config sections cannot check alone: a searched forecaster that has every
    setting of the space, and known instruments."""
    name = cfg.search.forecaster
    if cfg.search.trials and cfg.forecasters.get(name) is None:
        raise ConfigError(
            f"search.trials is {cfg.search.trials} but search.forecaster {name!r} is not an "
            f"enabled forecaster: enable forecasters.{name}, name another in "
            "search.forecaster, or set search.trials: 0"
        )
    if cfg.search.trials:
        has = set(searched_params(cfg))
        for setting, bounds in cfg.search.space.model_dump().items():
            wanted = "units" if setting == "layers" else setting
            if bounds is not None and wanted not in has:
                raise ConfigError(
                    f"search.space.{setting}: the searched forecaster {name!r} has no "
                    f"parameter {wanted!r}; set search.space.{setting}: null"
                )
    unknown = [n for n in cfg.search.instruments or [] if n not in cfg.data.instruments]
    if unknown:
        raise ConfigError(
            f"search.instruments: {unknown} not in data.instruments {cfg.data.instruments}"
        )


# Sampling -----------------------------------------------------------------------------


def suggest(trial: Any, space: SearchSpace, base: Mapping[str, Any]) -> dict[str, Any]:
    """One configuration (keys of ``search_unit.SETTINGS``) from an Optuna trial.

    Settings whose range is null keep ``base`` (the config's). ``units`` and
    ``layers`` make the ``units`` list: ``layers`` layers of ``units`` each.
    """
    width = trial.suggest_int("units", *space.units) if space.units else None
    layers = trial.suggest_int("layers", *space.layers) if space.layers else None
    params = dict(base)
    if width is not None or layers is not None:
        params["units"] = [width or base["units"][0]] * (layers or len(base["units"]))
    if space.window:
        params["window"] = trial.suggest_int("window", *space.window)
    if space.dropout:
        params["dropout"] = trial.suggest_float("dropout", *space.dropout)
    if space.learning_rate:
        params["learning_rate"] = trial.suggest_float(
            "learning_rate", *space.learning_rate, log=True
        )
    if space.batch_size:
        params["batch_size"] = trial.suggest_categorical("batch_size", space.batch_size)
    if space.epochs:
        params["epochs"] = trial.suggest_int("epochs", *space.epochs)
    return params


def make_study(cfg: Config) -> Any:
    """An in-memory Optuna study with a TPE sampler seeded from the config."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the stage logs each trial itself
    seed = cfg.seed if cfg.search.seed is None else cfg.search.seed
    sampler = optuna.samplers.TPESampler(seed=seed)
    return optuna.create_study(direction=DIRECTION, sampler=sampler)


# Inputs -------------------------------------------------------------------------------


def load_bars(cfg: Config, names: Sequence[str]) -> tuple[dict[str, pd.DataFrame], dict[str, Path]]:
    """The data stage's bars of ``names`` (from its source when the stage has not run),
    and the files read."""
    data_dir = cfg.stage_directory("data")
    listed_in = data_dir / "summary.json"
    listed = json.loads(listed_in.read_text()).get("instruments", {}) if listed_in.is_file() else {}
    bars: dict[str, pd.DataFrame] = {}
    inputs: dict[str, Path] = {}
    for name in names:
        parquet = safe_child(data_dir, name, ".parquet")
        if name in listed and parquet.is_file():
            bars[name] = read_stage_parquet(parquet, "data")
            inputs[parquet.name] = parquet
        else:
            bars[name] = load_instrument(cfg, name)
    return bars, inputs


# Recording ----------------------------------------------------------------------------


def _param_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list) else str(value)


def record_trial(
    unit: TrialUnit,
    trial_cfg: Config,
    outcome: TrialResult | Exception,
    parent_params: Mapping[str, str],
) -> dict[str, Any]:
    """The child run of one trial (FAILED when it raised); returns its entry of the summary.
    Its params are those of ``trial_cfg`` (the trial's config) that differ from the parent's."""
    from pipelines import tracking

    metric = unit.metric
    entry: dict[str, Any] = {"number": unit.number, "params": unit.params}
    changed = {
        k: v for k, v in provenance.flatten_config(trial_cfg).items() if parent_params.get(k) != v
    }
    try:
        with tracking.child_run(f"trial/{unit.number}", tags={"gatecast.trial": unit.number}):
            # the run's params go in one batch when it ends: these replace the inherited values
            tracking.log_params(
                {**changed, **{f"trial.{k}": _param_text(v) for k, v in unit.params.items()}}
            )
            if isinstance(outcome, Exception):
                raise outcome
            tracking.log_metrics(
                {
                    "score": outcome.score,
                    metric: outcome.score,
                    **{f"{metric}/{name}": s for name, s in outcome.scores.items()},
                    "epochs_trained": outcome.epochs,
                    "trial_seconds": outcome.seconds,
                }
            )
    except Exception as err:
        if err is not outcome:
            raise
        log.warning("trial %d failed: %s: %s", unit.number, type(err).__name__, err)
        return {**entry, "state": "FAIL", "error": f"{type(err).__name__}: {err}"}
    log.info("trial %d: %s = %.5f  %s", unit.number, metric, outcome.score, unit.params)
    return {**entry, "state": "COMPLETE", "score": outcome.score, "scores": outcome.scores}


def check_lengths(cfg: Config, folds: Mapping[str, Sequence[Fold]]) -> None:
    """Every validation slice must leave the widest searched window enough bars to train on."""
    name = cfg.search.forecaster
    spec = cfg.forecasters[name]
    window = cfg.search.space.window[1] if cfg.search.space.window else cfg.features.window
    features = {**cfg.features.model_dump(), "window": window}
    need = required_train_bars(
        spec.cls.from_config(spec.arguments(), BuildContext(cfg.seed, features))
    )
    for instrument, slices in folds.items():
        if slices[0].train_bars < need:
            raise ConfigError(
                f"search: {instrument}'s first validation slice trains on "
                f"{slices[0].train_bars} bars, fewer than the {need} {name} with window "
                f"{window} needs; lower search.validation.fraction or search.space.window, "
                "or raise walkforward.train_bars"
            )


def run_trials(
    cfg: Config,
    segments: Mapping[str, pd.DataFrame],
    folds: Mapping[str, list[Fold]],
    device: DeviceInfo,
    executor: Executor,
    parent_params: Mapping[str, str],
) -> list[dict[str, Any]]:
    """Ask, run (on ``executor``, already entered), record and tell every trial, in
    batches of the executor's workers; return the summary's trial entries, in the order
    asked."""
    import optuna
    from tqdm import tqdm

    base, study = searched_params(cfg), make_study(cfg)
    log.info("%d trial(s); executor: %s", cfg.search.trials, executor.describe())
    entries: list[dict[str, Any]] = []
    total = cfg.search.trials
    bar = tqdm(total=total, desc="search", unit="trial", disable=None, file=sys.stderr)
    with bar:
        while len(entries) < total:
            asked = [study.ask() for _ in range(min(executor.workers, total - len(entries)))]
            units, configs = [], {}
            for trial in asked:
                params = suggest(trial, cfg.search.space, base)
                configs[trial.number] = apply_params(cfg, params)
                units.append(
                    search_unit.make_trial(
                        trial.number,
                        params,
                        configs[trial.number],
                        segments,
                        folds,
                        device,
                        cfg.seed,
                    )
                )
            outcomes = {
                unit.number: outcome for unit, outcome in executor.run(search_unit.run_trial, units)
            }
            for trial, unit in zip(asked, units, strict=True):  # told in the order asked
                entry = record_trial(
                    unit, configs[unit.number], outcomes[unit.number], parent_params
                )
                if entry["state"] == "COMPLETE":
                    study.tell(trial, entry["score"])
                else:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                entries.append(entry)
                bar.update()
    return entries


def _best(entries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    done = [e for e in entries if e["state"] == "COMPLETE"]
    if not done:
        errors = "; ".join(f"trial {e['number']}: {e['error']}" for e in entries[:3])
        raise RuntimeError(f"every search trial failed ({errors})")
    return min(done, key=lambda e: (e["score"], e["number"]))


# The stage ----------------------------------------------------------------------------


def search(
    cfg: Config, *, command: str | None = None, bars: Mapping[str, pd.DataFrame] | None = None
) -> dict[str, Any]:
    """Run the search stage for ``cfg``; return the summary written to summary.json.

    ``bars`` (instrument -> bars) replaces the data stage's files (tests).
    """
    check(cfg)
    out = summary_path(cfg)
    out.unlink(missing_ok=True)
    header: dict[str, Any] = {
        "config": cfg.name,
        "stage": STAGE,
        "fingerprint": fingerprint(cfg),
        "trials": cfg.search.trials,
        "metric": cfg.search.metric,
        "direction": DIRECTION,
    }
    if not cfg.search.trials:
        enabled = cfg.forecasters.get(cfg.search.forecaster) is not None
        chosen = searched_params(cfg) if enabled else None
        summary = {**header, "source": "config", "trials_completed": 0, "trials_failed": 0}
        summary.update(chosen=chosen, instruments={})
        write_json(out, json_safe(summary))
        return summary
    return _search(cfg, header, command, bars)


def _search(
    cfg: Config,
    header: dict[str, Any],
    command: str | None,
    bars: Mapping[str, pd.DataFrame] | None,
) -> dict[str, Any]:
    from pipelines import tracking
    from pipelines.execution import executors, runtime

    started = time.perf_counter()
    names = cfg.search.instruments or cfg.data.instruments
    inputs: dict[str, Path] = {}
    if bars is None:
        bars, inputs = load_bars(cfg, names)
    segments, folds = search_unit.trial_inputs(cfg, {n: bars[n] for n in names})
    check_lengths(cfg, folds)
    # As in the train stage, the executor starts first, so that its workers start (and
    # import TensorFlow, where the searched forecaster computes with it) while this
    # process opens its MLflow run; this process starts TensorFlow only where it must.
    needed = runtime.uses_device(cfg, [cfg.search.forecaster])
    executor = executors.executor_for(
        cfg.executor,
        setup=functools.partial(runtime.configure_worker, cfg) if needed else None,
    )
    with executor:
        device = runtime.configure_stage(cfg, getattr(executor, "in_process", False), needed)
        with tracking.pipeline_run(
            cfg, STAGE, inputs=inputs, tags=device.tags(), command=command
        ) as parent:
            entries = run_trials(
                cfg, segments, folds, device, executor, provenance.flatten_config(cfg)
            )
            best = _best(entries)
            completed = sum(e["state"] == "COMPLETE" for e in entries)
            summary = {
                **header,
                "source": "search",
                "seed": cfg.seed if cfg.search.seed is None else cfg.search.seed,
                "sampler": "TPESampler",
                "trials_completed": completed,
                "trials_failed": len(entries) - completed,
                "chosen": best["params"],
                "best_trial": best["number"],
                "best_score": best["score"],
                "instruments": {n: {"validation": [f.as_dict() for f in folds[n]]} for n in names},
                "trial_list": entries,
                "experiment": cfg.experiment_name,
                "experiment_id": parent.experiment_id,
                "parent_run_id": parent.run_id,
                "tracking_uri": store_uri.display_uri(parent.tracking_uri),
            }
            summary = json_safe(summary)
            tracking.log_params({f"best.{k}": _param_text(v) for k, v in best["params"].items()})
            tracking.set_tags({"gatecast.search.best_trial": best["number"]})
            tracking.log_metrics(
                {
                    "best_score": best["score"],
                    "trials_completed": completed,
                    "trials_failed": len(entries) - completed,
                    "wall_seconds": time.perf_counter() - started,
                }
            )
            tracking.log_dict(summary, "summary.json")
            write_json(summary_path(cfg), summary)
    return summary


# What the train stage reads -----------------------------------------------------------


def chosen_config(cfg: Config) -> tuple[Config, dict[str, str]]:
    """The config the train stage runs, and tags saying where the searched forecaster's
    settings came from.

    With ``search.trials: 0`` (or the searched forecaster off) that is ``cfg`` itself, and
    no tags. Otherwise the search stage's ``summary.json`` must exist and have been
    written for these settings (its fingerprint); its chosen configuration replaces the
    forecaster's settings, so the train run's params are the chosen values, and the tags
    (``gatecast.search.source: search``, ``gatecast.search.run_id``, ...) name the search.
    """
    if cfg.forecasters.get(cfg.search.forecaster) is None or not cfg.search.trials:
        return cfg, {}
    path = summary_path(cfg)
    summary = read_stage_summary(path, STAGE)
    if summary.get("fingerprint") != fingerprint(cfg):
        raise DataError(
            f"{shown(path)} was written for other search, data, walk-forward or forecaster "
            "settings: "
            f"rerun the search stage (`python -m pipelines {STAGE} --config ...` or `make search`)"
        )
    chosen = summary.get("chosen")
    if not isinstance(chosen, dict) or set(chosen) != set(searched_params(cfg)):
        raise DataError(f"{shown(path)}: no valid 'chosen' configuration; rerun the search stage")
    tags = {
        "gatecast.search.source": "search",
        "gatecast.search.forecaster": cfg.search.forecaster,
        "gatecast.search.run_id": str(summary.get("parent_run_id")),
        "gatecast.search.trials": str(summary.get("trials_completed")),
        "gatecast.search.best_trial": str(summary.get("best_trial")),
        "gatecast.search.best_score": str(summary.get("best_score")),
    }
    return apply_params(cfg, chosen), tags


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines search``: hyperparameter search of ``search.forecaster``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = stage_parser(
        STAGE,
        "Hyperparameter search of search.forecaster, the LSTM by default (search.trials "
        "configurations, scored inside the "
        "first fold's training bars), tracked in MLflow; writes build/<name>/search/summary.json.",
    )
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    command = recorded_command(args, STAGE)

    def body() -> int:
        cfg = config_from_args(args)
        summary = search(cfg, command=command)
        if summary["source"] == "config":
            print(
                "search.trials is 0: no search; the train stage uses the config's settings "
                f"of {cfg.search.forecaster}"
            )
        else:
            print(
                f"{summary['trials_completed']} trial(s) scored, {summary['trials_failed']} "
                f"failed; best: trial {summary['best_trial']}, {summary['metric']} "
                f"{summary['best_score']:.5f}"
            )
            print(f"chosen: {summary['chosen']}")
            print(f"MLflow: run {summary['parent_run_id']} at {summary['tracking_uri']}")
        print(f"wrote {shown(summary_path(cfg))}")
        return 0

    return run_stage(body, STAGE, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
