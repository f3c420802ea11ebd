"""What the report reads: the train and backtest stages' files, checked and in memory.

The report stage only reads stage outputs (``<run>/forecasts/`` and
``<run>/backtests/``, listed by each stage's ``summary.json``); it runs no
backtest and loads no risk-free series: each backtest's equity file carries
the annual risk-free rate of its dates, and the backtest stage's cost sweep
is read from its ``*_cost_sweep.parquet`` files. A missing or stale file is a
``DataError`` that names it and the stage to rerun. When the config asks for a
hyperparameter search, the search stage's ``<run>/search/summary.json`` gives
the number of configurations it scored (``search_trials``), which the
deflated Sharpe ratio counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.common.errors import DataError
from pipelines.common.outputs import read_stage_parquet, read_stage_summary
from pipelines.common.strategy_names import SEED_COLUMN, cost_label, is_seed, seed_columns
from pipelines.config import Config

# bp -> instrument -> strategy -> (annualised Sharpe ratio, daily returns) at that commission
CostSweep = dict[float, dict[str, dict[str, tuple[float, pd.Series]]]]


@dataclass
class StrategyRun:
    """One backtest as the report sees it.

    Args:
        metrics: the backtest's metrics dict.
        equity: broker value by date from the out-of-sample start.
        returns: daily simple returns of ``equity`` (from the second date).
        trades_pnl: net profit of every trade (for pooled win rate and profit factor).
        risk_free: annual risk-free rate, a constant or a Series by date
            (the backtest's; excess returns are formed with it).
    """

    metrics: dict[str, float]
    equity: pd.Series
    returns: pd.Series
    trades_pnl: np.ndarray = field(default_factory=lambda: np.array([]))
    risk_free: float | pd.Series = 0.0


@dataclass
class InstrumentData:
    """Everything the report needs about one instrument.

    Args:
        name: the instrument.
        frame: bars plus one column per forecaster (the forecast file).
        oos_start, oos_end: the out-of-sample period.
        forecast_metrics: forecaster column -> forecast metrics (train stage).
        runs: strategy name -> its backtest, seeds (``<name>_seed<k>``) included.
        gates: the gate activations of the instrument's gates file, or None.
        fold_starts: first out-of-sample date of each walk-forward fold.
    """

    name: str
    frame: pd.DataFrame
    oos_start: pd.Timestamp
    oos_end: pd.Timestamp
    forecast_metrics: dict[str, dict[str, float]]
    runs: dict[str, StrategyRun]
    gates: pd.DataFrame | None = None
    fold_starts: list[pd.Timestamp] = field(default_factory=list)


def _entry(summary: Mapping[str, Any], instrument: str, path: Path, stage: str) -> dict[str, Any]:
    entry = summary["instruments"].get(instrument)
    if not isinstance(entry, dict):
        raise DataError(
            f"{path}: no entry for instrument {instrument!r} (data.instruments in the config); "
            f"rerun the {stage} stage for this config"
        )
    return entry


def _float_dict(raw: Mapping[str, Any]) -> dict[str, float]:
    return {k: (float("nan") if v is None else float(v)) for k, v in raw.items()}


def _read_run(directory: Path, files: Mapping[str, str], metrics: Mapping[str, Any]) -> StrategyRun:
    path = directory / files["equity"]
    if not path.is_file():
        raise DataError(f"{path} not found: rerun the backtest stage")
    frame = read_stage_parquet(path, "backtest")
    for column in ("equity", "risk_free"):
        if column not in frame:
            raise DataError(f"{path}: no {column!r} column; rerun the backtest stage")
    equity = frame["equity"].astype(float)
    returns = equity.pct_change().iloc[1:]
    pnl = np.array([])
    trades_file = files.get("trades")
    if trades_file and (directory / trades_file).is_file():
        trades = read_stage_parquet(directory / trades_file, "backtest")
        if "pnl_net" in trades:
            pnl = trades["pnl_net"].to_numpy(dtype=float)
    risk_free = frame["risk_free"].astype(float)
    return StrategyRun(_float_dict(metrics), equity, returns, pnl, risk_free)


def _read_instrument(
    cfg: Config, name: str, f_summary: Mapping[str, Any], b_summary: Mapping[str, Any]
) -> InstrumentData:
    forecasts_dir = cfg.stage_directory("train")
    backtests_dir = cfg.stage_directory("backtest")
    f_entry = _entry(f_summary, name, forecasts_dir / "summary.json", "train")
    b_entry = _entry(b_summary, name, backtests_dir / "summary.json", "backtest")
    parquet = forecasts_dir / f"{name}.parquet"
    if not parquet.is_file():
        raise DataError(f"{parquet} not found: rerun the train stage")
    runs = {
        strategy: _read_run(backtests_dir, item["files"], item["metrics"])
        for strategy, item in b_entry["strategies"].items()
    }
    gates_path = forecasts_dir / f"{name}.gates.parquet"
    gates = read_stage_parquet(gates_path, "train") if gates_path.is_file() else None
    # the train stage writes walkforward.Fold.as_dict(): dates under "test_start"
    fold_starts = [pd.Timestamp(f["test_start"]) for f in f_entry.get("folds") or []]
    return InstrumentData(
        name=name,
        frame=read_stage_parquet(parquet, "train"),
        oos_start=pd.Timestamp(f_entry["oos_start"]),
        oos_end=pd.Timestamp(f_entry["oos_end"]),
        forecast_metrics={k: _float_dict(v) for k, v in (f_entry.get("metrics") or {}).items()},
        runs=runs,
        gates=gates,
        fold_starts=fold_starts,
    )


def load_instruments(cfg: Config) -> list[InstrumentData]:
    """Read the train and backtest stages' files for every configured instrument."""
    f_summary = read_stage_summary(cfg.stage_directory("train") / "summary.json", "train")
    b_summary = read_stage_summary(cfg.stage_directory("backtest") / "summary.json", "backtest")
    return [_read_instrument(cfg, name, f_summary, b_summary) for name in cfg.data.instruments]


def check_seeds(instruments: Sequence[InstrumentData]) -> None:
    """Raise DataError unless the backtest stage backtested every seed's own forecasts.

    The stage runs ``<name>_seed<k>`` like every strategy (same execution, dates
    and bars as ``<name>``) for each stochastic forecaster; the report only reads them.
    """
    for inst in instruments:
        missing = [
            c
            for c in seed_columns(inst.frame.columns)
            if c not in inst.runs and SEED_COLUMN.fullmatch(c).group(1) in inst.runs
        ]
        if missing:
            raise DataError(
                f"backtests of {inst.name} lack the seed(s) {', '.join(missing)} that its "
                "forecast file has: rerun `python -m pipelines backtest --config ...`"
            )


def _swept_points(summary: Mapping[str, Any], path: Path, cfg: Config) -> list[float]:
    points = sorted({float(bp) for bp in cfg.report.cost_sweep_bp})
    swept = summary.get("cost_sweep_bp")
    if swept is None or sorted(float(bp) for bp in swept) != points:
        raise DataError(
            f"{path}: the backtests were swept over {swept} bp, the config asks for "
            f"report.cost_sweep_bp {points}: rerun `python -m pipelines backtest --config ...`"
        )
    return points


def load_cost_sweep(cfg: Config, instruments: Sequence[InstrumentData]) -> CostSweep:
    """The backtest stage's cost sweep: ``{bp: {instrument: {strategy: (sharpe, returns)}}}``.

    Every strategy but the seeds, at every point of ``report.cost_sweep_bp``,
    in the stage's order.
    """
    directory = cfg.stage_directory("backtest")
    path = directory / "summary.json"
    summary = read_stage_summary(path, "backtest")
    points = _swept_points(summary, path, cfg)
    out: CostSweep = {bp: {} for bp in points}
    for inst in instruments:
        strategies = _entry(summary, inst.name, path, "backtest")["strategies"]
        for bp in points:
            out[bp][inst.name] = {}
        for name, item in strategies.items():
            if is_seed(name):
                continue
            sharpe = item.get("cost_sweep") or {}
            file = (item.get("files") or {}).get("cost_sweep")
            if not file or not (directory / file).is_file():
                raise DataError(
                    f"{path}: no cost sweep file for {inst.name}/{name}; rerun the backtest stage"
                )
            returns = read_stage_parquet(directory / file, "backtest")
            for bp in points:
                label = cost_label(bp)
                if label not in returns or label not in sharpe:
                    raise DataError(
                        f"{directory / file}: no {label} bp point; rerun the backtest stage"
                    )
                value = math.nan if sharpe[label] is None else float(sharpe[label])
                out[bp][inst.name][name] = (value, returns[label])
    return out


def bars_per_year(cfg: Config) -> tuple[float, str]:
    """The run's bars per year and bar interval, as the backtest stage recorded them."""
    path = cfg.stage_directory("backtest") / "summary.json"
    summary = read_stage_summary(path, "backtest")
    per_year = summary.get("periods_per_year")
    if not isinstance(per_year, int | float) or not per_year > 0:
        raise DataError(
            f"{path}: no periods_per_year (an older backtest); rerun the backtest stage"
        )
    return float(per_year), str(summary.get("interval", "-"))


@dataclass(frozen=True)
class SearchTrials:
    """The configurations a hyperparameter search scored, as the report counts them.

    Args:
        count: Trials scored (a failed trial gave no result to choose from and
            does not count); 0 when ``search.trials`` is 0.
        run_id: The search's MLflow run (None without a search).
    """

    count: int = 0
    run_id: str | None = None


def search_trials(cfg: Config) -> SearchTrials:
    """The search stage's trial count, from its summary.json (0 when ``search.trials`` is 0).

    The summary must be the search this config asks for (same ``search.trials``):
    make reruns the search before the train stage whenever the config changes.
    """
    if not cfg.search.trials:
        return SearchTrials()
    path = cfg.stage_directory("search") / "summary.json"
    summary = read_stage_summary(path, "search")
    count = summary.get("trials_completed")
    if summary.get("trials") != cfg.search.trials or not isinstance(count, int) or count < 0:
        raise DataError(
            f"{path}: not the search of search.trials={cfg.search.trials} (it ran "
            f"{summary.get('trials')!r}); rerun the search stage and those after it"
        )
    run_id = summary.get("parent_run_id")
    return SearchTrials(count, str(run_id) if run_id else None)
