"""Stage ``report``: the comparison, its statistics and the HTML report.

Reads what the earlier stages wrote under ``<output_directory>/<name>/``
(``forecasts/`` from train, ``backtests/`` from backtest; see
docs/architecture.md) and writes ``<report.directory>/<name>/``:

- ``index.html``: one self-contained page (charts embedded as base64 PNG, no
  script, font or stylesheet from the network);
- ``*.png``: the same charts as files;
- ``league.csv`` and ``league.json``: the league table (one row per
  instrument x strategy, plus the pooled rows), ``cost_sweep.csv``,
  ``seeds.csv``.

The directory is built in a temporary sibling and renamed into place, so a
failure leaves the previous report (or none), never half of one. The report
is logged to MLflow as a ``report`` run with one child run per instrument x
strategy carrying the league table's row as metrics (same names in every
run, so the compare view lines them up).

Definitions used in the comparison (also printed at the end of the report):

- **Pooled**: a calendar-time, equal-weight portfolio per strategy. On each
  date its return is the mean of the daily returns of the instruments that
  are in their out-of-sample period that day (rebalanced daily, without
  rebalancing costs). The instruments' out-of-sample periods need not
  overlap. Return statistics come from that series; trades, commissions and
  orders are summed over instruments; win rate and profit factor use all
  trades together; exposure and turnover are day-weighted means. Pooled
  forecast accuracy uses each instrument's errors divided by its random
  walk's RMSE (scale-free): Theil's U2 and the Diebold-Mariano test are
  computed on those pooled scaled errors; directional accuracy counts every
  instrument's hits; RMSE/MAE/MASE, being in price units, are left empty.
- **Trials** for the deflated Sharpe ratio: every strategy configuration
  backtested in the experiment, i.e. strategies x instruments with each LSTM
  seed counted as its own configuration (the cost sweep is a sensitivity
  analysis, not a search, and does not count). The variance of the trials'
  Sharpe ratios is taken over the same set (per-instrument rows) or over
  the pooled strategies (pooled rows).
- **Sharpe difference**: annualised Sharpe ratio minus buy-and-hold's on the
  same instrument (or pooled), with a percentile interval from a stationary
  bootstrap of the paired daily excess returns (``report.bootstrap``).
- **Break-even cost**: the commission (bp of traded value, all else as
  configured) at which the strategy's Sharpe ratio falls to buy-and-hold's,
  interpolated between the points of ``report.cost_sweep_bp``.
"""

from __future__ import annotations

import base64
import concurrent.futures as futures
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from scipy import stats as sps
from tqdm import tqdm

from pipelines import charts, stats
from pipelines.cli import config_from_args, run_stage, setup_logging, stage_parser
from pipelines.config import REPO_ROOT, Config
from pipelines.errors import DataError, GatecastError
from pipelines.outputs import read_stage_summary
from strategies.metrics import METRIC_KEYS

log = logging.getLogger("gatecast.report")

STAGE = "report"
BENCHMARK = "buy_and_hold"
LSTM = "lstm"
POOLED = "pooled"
RANDOM_WALK = "random_walk"
TEMPLATE = "report.html.j2"

# The backtest's metrics dict (strategies.metrics), less the order counts.
TRADING_KEYS = tuple(k for k in METRIC_KEYS if k not in {"orders", "rejected_orders"})
FORECAST_KEYS = (
    "rmse",
    "mae",
    "theil_u2",
    "mase",
    "directional_accuracy",
    "directional_p_value",
    "dm_statistic",
    "dm_p_value",
)
STAT_KEYS = (
    "psr",
    "dsr",
    "dsr_trials",
    "sharpe_diff",
    "sharpe_diff_low",
    "sharpe_diff_high",
    "sharpe_diff_p_value",
    "break_even_bp",
)
SEED_KEYS = ("seeds", "sharpe_seed_mean", "sharpe_seed_std")
METRIC_COLUMNS = TRADING_KEYS + FORECAST_KEYS + STAT_KEYS + SEED_KEYS


# Inputs -------------------------------------------------------------------------------


@dataclass
class StrategyRun:
    """One backtest as the report sees it.

    Args:
        metrics: the backtest's metrics dict.
        equity: broker value by date from the out-of-sample start.
        returns: daily simple returns of ``equity`` (from the second date).
        trades_pnl: net profit of every trade (for pooled win rate and profit factor).
    """

    metrics: dict[str, float]
    equity: pd.Series
    returns: pd.Series
    trades_pnl: np.ndarray = field(default_factory=lambda: np.array([]))


@dataclass
class InstrumentData:
    """Everything the report needs about one instrument.

    Args:
        name: the instrument.
        frame: bars plus one column per forecaster (the forecast file).
        oos_start, oos_end: the out-of-sample period.
        forecast_metrics: forecaster column -> forecast metrics (train stage).
        runs: strategy name -> its backtest, LSTM seeds (``lstm_seed<k>``) included.
        gates: the LSTM's gate activations by date, or None.
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
    frame = pd.read_parquet(path)
    if "equity" not in frame:
        raise DataError(f"{path}: no 'equity' column; rerun the backtest stage")
    equity = frame["equity"].astype(float)
    returns = equity.pct_change().iloc[1:]
    pnl = np.array([])
    trades_file = files.get("trades")
    if trades_file and (directory / trades_file).is_file():
        trades = pd.read_parquet(directory / trades_file)
        if "pnl_net" in trades:
            pnl = trades["pnl_net"].to_numpy(dtype=float)
    return StrategyRun(_float_dict(metrics), equity, returns, pnl)


def load_instruments(cfg: Config) -> list[InstrumentData]:
    """Read the train and backtest stages' files for every configured instrument."""
    forecasts_dir = cfg.run_directory / "forecasts"
    backtests_dir = cfg.run_directory / "backtests"
    f_path, b_path = forecasts_dir / "summary.json", backtests_dir / "summary.json"
    f_summary = read_stage_summary(f_path, "train")
    b_summary = read_stage_summary(b_path, "backtest")
    out = []
    for name in cfg.data.instruments:
        f_entry = _entry(f_summary, name, f_path, "train")
        b_entry = _entry(b_summary, name, b_path, "backtest")
        parquet = forecasts_dir / f"{name}.parquet"
        if not parquet.is_file():
            raise DataError(f"{parquet} not found: rerun the train stage")
        frame = pd.read_parquet(parquet)
        runs = {
            strategy: _read_run(backtests_dir, item["files"], item["metrics"])
            for strategy, item in b_entry["strategies"].items()
        }
        gates = None
        gates_path = forecasts_dir / f"{name}.gates.parquet"
        if gates_path.is_file():
            gates = pd.read_parquet(gates_path)
        folds = f_entry.get("folds") or []
        # the train stage writes walkforward.Fold.as_dict(): dates under "test_start"
        fold_starts = [pd.Timestamp(f["test_start"]) for f in folds]
        out.append(
            InstrumentData(
                name=name,
                frame=frame,
                oos_start=pd.Timestamp(f_entry["oos_start"]),
                oos_end=pd.Timestamp(f_entry["oos_end"]),
                forecast_metrics={
                    k: _float_dict(v) for k, v in (f_entry.get("metrics") or {}).items()
                },
                runs=runs,
                gates=gates,
                fold_starts=fold_starts,
            )
        )
    return out


def seed_columns(frame: pd.DataFrame) -> list[str]:
    """The per-seed LSTM forecast columns of a forecast file, in seed order."""
    cols = [c for c in frame.columns if c.startswith(f"{LSTM}_seed") and c[9:].isdigit()]
    return sorted(cols, key=lambda c: int(c[9:]))


def _risk_free(cfg: Config, index: pd.DatetimeIndex) -> float | pd.Series:
    rf = cfg.data.risk_free
    if rf.source == "constant":
        return rf.rate
    from pipelines.data import load_risk_free

    return load_risk_free(cfg, index)


def check_seeds(instruments: Sequence[InstrumentData]) -> None:
    """Raise DataError unless the backtest stage backtested every LSTM seed's own forecasts.

    The stage runs ``lstm_seed<k>`` like every strategy (same execution, dates
    and bars as ``lstm``); the report only reads them.
    """
    for inst in instruments:
        missing = [c for c in seed_columns(inst.frame) if c not in inst.runs]
        if missing and LSTM in inst.runs:
            raise DataError(
                f"backtests of {inst.name} lack the LSTM seed(s) {', '.join(missing)} that its "
                "forecast file has: rerun `python -m pipelines backtest --config ...`"
            )


# Cost sweep -----------------------------------------------------------------------------


def _sweep_one(
    cfg: Config, forecasts_dir: str, commission: float, instrument: str | None = None
) -> dict[str, Any]:
    """Every strategy's backtest at one commission: ``{inst: {strategy: (sharpe, returns)}}``.

    With ``instrument``, only that instrument (one task of the parallel sweep).
    """
    from pipelines.backtest import run_backtests

    update: dict[str, Any] = {
        "backtest": cfg.backtest.model_copy(update={"commission": commission})
    }
    if instrument is not None:
        update["data"] = cfg.data.model_copy(update={"instruments": [instrument]})
    out: dict[str, Any] = {}
    swept = run_backtests(cfg.model_copy(update=update), Path(forecasts_dir), seeds=False)
    for inst, run in swept.items():
        out[inst] = {
            name: (float(r.metrics["sharpe"]), r.returns) for name, r in run["results"].items()
        }
    return out


def cost_sweep(
    cfg: Config,
    instruments: Sequence[InstrumentData],
    workers: int | None = None,
    progress: bool = True,
) -> dict[float, dict[str, Any]]:
    """Sharpe ratio (and returns) of every strategy at each commission of ``report.cost_sweep_bp``.

    Re-runs the backtest stage's own ``run_backtests`` with only the commission
    changed; the configured commission reuses the stage's results. Each
    (commission, instrument) pair is one task, longest histories first, spread
    over processes (``spawn``: the parent may hold TensorFlow threads).
    """
    forecasts_dir = str(cfg.run_directory / "forecasts")
    # The swept strategies are the backtest stage's, less the LSTM seeds (not in the sweep).
    base = {
        inst.name: {
            n: (r.metrics.get("sharpe", math.nan), r.returns)
            for n, r in inst.runs.items()
            if _kind(n) != "seed"
        }
        for inst in instruments
    }
    points = sorted({float(bp) for bp in cfg.report.cost_sweep_bp})
    out: dict[float, dict[str, Any]] = {}
    todo = []
    by_length = sorted(instruments, key=lambda inst: len(inst.frame), reverse=True)
    for bp in points:
        if math.isclose(bp / 1e4, cfg.backtest.commission):
            out[bp] = base
        else:
            out[bp] = {}
            todo.extend((bp, inst.name) for inst in by_length)
    todo.sort(key=lambda task: [i.name for i in by_length].index(task[1]))
    workers = min(workers or os.cpu_count() or 1, len(todo))
    # disable=None: a bar on a terminal, nothing in logs and CI
    bar = tqdm(
        total=len(todo),
        desc="cost sweep",
        unit="backtest set",
        disable=None if progress else True,
        file=sys.stderr,
    )
    with bar:
        if workers <= 1:
            for bp, name in todo:
                out[bp].update(_sweep_one(cfg, forecasts_dir, bp / 1e4, name))
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                jobs = {
                    pool.submit(_sweep_one, cfg, forecasts_dir, bp / 1e4, name): bp
                    for bp, name in todo
                }
                for job in futures.as_completed(jobs):
                    out[jobs[job]].update(job.result())
                    bar.update()
    return {bp: {i.name: out[bp][i.name] for i in instruments} for bp in points}


# Comparison -----------------------------------------------------------------------------


def _excess(returns: pd.Series, cfg: Config) -> pd.Series:
    from strategies.metrics import daily_risk_free

    returns = returns.dropna()
    return returns - daily_risk_free(_risk_free(cfg, returns.index), returns.index)


def pooled_returns(per_instrument: Mapping[str, pd.Series]) -> pd.Series:
    """Calendar-time equal-weight portfolio: each day, the mean return of the active instruments."""
    frame = pd.DataFrame({k: v for k, v in per_instrument.items()}).sort_index()
    return frame.mean(axis=1, skipna=True).dropna()


def _pooled_run(cfg: Config, runs: Sequence[StrategyRun]) -> StrategyRun:
    from strategies.metrics import compute_metrics

    returns = pooled_returns({str(k): r.returns for k, r in enumerate(runs)})
    start = min(r.equity.index[0] for r in runs)
    growth = pd.concat([pd.Series([1.0], index=[start]), (1.0 + returns).cumprod()])
    equity = cfg.backtest.cash * growth
    empty_trades = pd.DataFrame({"pnl_net": pd.Series(dtype=float)})
    empty_orders = pd.DataFrame(
        {
            "status": pd.Series(dtype=str),
            "value": pd.Series(dtype=float),
            "commission": pd.Series(dtype=float),
        }
    )
    positions = pd.Series(0.0, index=equity.index)
    metrics = {
        k: float(v)
        for k, v in compute_metrics(
            equity, positions, empty_trades, empty_orders, _risk_free(cfg, returns.index)
        ).items()
    }
    pnl = np.concatenate([r.trades_pnl for r in runs]) if runs else np.array([])
    days = np.array([len(r.returns) for r in runs], dtype=float)
    metrics["trades"] = float(sum(r.metrics.get("trades", 0) for r in runs))
    metrics["commissions"] = float(sum(r.metrics.get("commissions", 0.0) for r in runs))
    metrics["orders"] = float(sum(r.metrics.get("orders", 0) for r in runs))
    metrics["win_rate"] = float((pnl > 0).mean()) if pnl.size else math.nan
    losses = -pnl[pnl < 0].sum()
    wins = pnl[pnl > 0].sum()
    if pnl.size == 0:
        metrics["profit_factor"] = math.nan
    else:
        metrics["profit_factor"] = (
            float(wins / losses) if losses else (math.inf if wins else math.nan)
        )
    for key in ("exposure", "turnover"):
        values = np.array([r.metrics.get(key, math.nan) for r in runs], dtype=float)
        metrics[key] = float(np.average(values, weights=days)) if days.sum() else math.nan
    return StrategyRun(metrics, equity, returns, pnl)


def pooled_forecast_metrics(instruments: Sequence[InstrumentData], name: str) -> dict[str, float]:
    """Scale-free forecast accuracy of forecaster ``name`` over every instrument together."""
    from models.metrics import diebold_mariano

    scaled_f, scaled_rw, hits, counted = [], [], 0.0, 0
    for inst in instruments:
        if name not in inst.frame or RANDOM_WALK not in inst.frame:
            return {}
        oos = inst.frame.loc[inst.oos_start : inst.oos_end]
        actual = inst.frame["close"].shift(-1).loc[oos.index]
        keep = actual.notna() & oos[name].notna() & oos[RANDOM_WALK].notna()
        e_f = (oos[name] - actual)[keep].to_numpy(float)
        e_rw = (oos[RANDOM_WALK] - actual)[keep].to_numpy(float)
        scale = float(np.sqrt(np.mean(e_rw**2))) if e_rw.size else 0.0
        if scale <= 0:
            return {}
        scaled_f.append(e_f / scale)
        scaled_rw.append(e_rw / scale)
        m = inst.forecast_metrics.get(name, {})
        n = m.get("directional_n", math.nan)
        acc = m.get("directional_accuracy", math.nan)
        if np.isfinite(n) and np.isfinite(acc) and n > 0:
            hits += round(acc * n)
            counted += int(n)
    f, rw = np.concatenate(scaled_f), np.concatenate(scaled_rw)
    dm_stat, dm_p = diebold_mariano(f, rw) if f.size >= 2 else (math.nan, math.nan)
    out = {
        "rmse": math.nan,
        "mae": math.nan,
        "mase": math.nan,
        "theil_u2": float(np.sqrt(np.mean(f**2)) / np.sqrt(np.mean(rw**2))),
        "dm_statistic": float(dm_stat),
        "dm_p_value": float(dm_p),
        "directional_accuracy": hits / counted if counted else math.nan,
        "directional_p_value": (
            float(sps.binomtest(int(hits), counted, 0.5).pvalue) if counted else math.nan
        ),
    }
    return out


@dataclass
class Comparison:
    """The numbers behind the report.

    Args:
        league: one row per (instrument, strategy), ``instrument == "pooled"``
            for the pooled rows; columns ``METRIC_COLUMNS`` plus ``break_even``
            (text) and ``kind`` (forecast, crossover, benchmark, seed).
        sweep: long table ``instrument, strategy, cost_bp, sharpe``.
        seeds: per instrument, metric -> (mean, std) over the LSTM seeds.
        pooled_runs: strategy -> pooled StrategyRun.
        n_trials: trials counted for the deflated Sharpe ratio.
    """

    league: pd.DataFrame
    sweep: pd.DataFrame
    seeds: dict[str, dict[str, tuple[float, float]]]
    pooled_runs: dict[str, StrategyRun]
    n_trials: int


def _kind(strategy: str) -> str:
    if strategy == BENCHMARK:
        return "benchmark"
    if strategy.endswith("_crossover"):
        return "crossover"
    if strategy.startswith(f"{LSTM}_seed"):
        return "seed"
    return "forecast"


def compare(
    cfg: Config,
    instruments: Sequence[InstrumentData],
    sweep: Mapping[float, Mapping[str, Any]] | None = None,
) -> Comparison:
    """Build the league table, the statistics and the cost-sweep table."""
    level = 1.0 - cfg.report.significance
    boot = cfg.report.bootstrap
    excess = {
        (inst.name, name): _excess(run.returns, cfg)
        for inst in instruments
        for name, run in inst.runs.items()
    }
    trial_sr = np.array([stats.sharpe_ratio(r) for r in excess.values()])
    n_trials = int(len(trial_sr))

    pooled_names = (
        [n for n in instruments[0].runs if all(n in inst.runs for inst in instruments)]
        if instruments
        else []
    )
    pooled_runs = {
        n: _pooled_run(cfg, [inst.runs[n] for inst in instruments]) for n in pooled_names
    }
    pooled_excess = {n: _excess(r.returns, cfg) for n, r in pooled_runs.items()}
    pooled_sr = np.array([stats.sharpe_ratio(r) for r in pooled_excess.values()])

    # Cost sweep table and break-even per (instrument, strategy).
    rows_sweep = []
    for bp, per_inst in (sweep or {}).items():
        for inst_name, by_strategy in per_inst.items():
            for name, (sharpe, _) in by_strategy.items():
                rows_sweep.append((inst_name, name, bp, sharpe))
        for name in pooled_names:
            if all(name in by_strategy for by_strategy in per_inst.values()):
                r = pooled_returns({k: v[name][1] for k, v in per_inst.items()})
                sr = stats.sharpe_ratio(_excess(r, cfg), stats.PERIODS_PER_YEAR)
                rows_sweep.append((POOLED, name, bp, sr))
    sweep_table = pd.DataFrame(rows_sweep, columns=["instrument", "strategy", "cost_bp", "sharpe"])

    def break_even(inst_name: str, name: str) -> stats.BreakEven | None:
        if sweep_table.empty or name == BENCHMARK:
            return None
        block = sweep_table[sweep_table["instrument"] == inst_name]
        mine = block[block["strategy"] == name].set_index("cost_bp")["sharpe"]
        bench = block[block["strategy"] == BENCHMARK].set_index("cost_bp")["sharpe"]
        both = pd.concat([mine, bench], axis=1, keys=["s", "b"]).dropna()
        if both.empty:
            return None
        return stats.break_even_cost(both.index.to_numpy(float), (both["s"] - both["b"]).to_numpy())

    max_bp = max(cfg.report.cost_sweep_bp) if cfg.report.cost_sweep_bp else 0.0
    rows = []
    seeds: dict[str, dict[str, tuple[float, float]]] = {}
    blocks = [
        (inst.name, inst.runs, inst.forecast_metrics, excess, trial_sr) for inst in instruments
    ]
    pooled_fm = {n: pooled_forecast_metrics(instruments, n) for n in pooled_names}
    blocks.append((POOLED, pooled_runs, pooled_fm, None, pooled_sr))
    for inst_name, runs, fmetrics, excess_map, trial_set in blocks:
        ex = (
            {n: excess_map[(inst_name, n)] for n in runs}
            if excess_map is not None
            else pooled_excess
        )
        seed_runs = [runs[c] for c in sorted(runs) if _kind(c) == "seed"]
        if seed_runs:
            seeds[inst_name] = stats.seed_summary([r.metrics for r in seed_runs])
        bench = ex.get(BENCHMARK)
        for name, run in runs.items():
            row: dict[str, Any] = {"instrument": inst_name, "strategy": name, "kind": _kind(name)}
            row.update({k: run.metrics.get(k, math.nan) for k in TRADING_KEYS})
            fm = fmetrics.get(name, {})
            row.update({k: fm.get(k, math.nan) for k in FORECAST_KEYS})
            r = ex[name]
            row["psr"] = stats.probabilistic_sharpe_ratio(r.to_numpy())
            row["dsr"] = stats.deflated_sharpe_ratio(r.to_numpy(), trial_set, n_trials)
            row["dsr_trials"] = n_trials
            if bench is not None and name != BENCHMARK:
                a, b = r.align(bench, join="inner")
                ci = stats.sharpe_difference_ci(
                    a.to_numpy(),
                    b.to_numpy(),
                    samples=boot.samples,
                    block=boot.block,
                    level=level,
                    seed=cfg.seed,
                )
                row.update(
                    sharpe_diff=ci.estimate,
                    sharpe_diff_low=ci.low,
                    sharpe_diff_high=ci.high,
                    sharpe_diff_p_value=ci.pvalue,
                )
            else:
                row.update(
                    sharpe_diff=math.nan,
                    sharpe_diff_low=math.nan,
                    sharpe_diff_high=math.nan,
                    sharpe_diff_p_value=math.nan,
                )
            be = break_even(inst_name, name)
            row["break_even_bp"] = be.cost_bp if be and be.cost_bp is not None else math.nan
            row["break_even"] = be.describe(max_bp) if be else ""
            if name == LSTM and seed_runs:
                mean, std = seeds[inst_name].get("sharpe", (math.nan, math.nan))
                row.update(seeds=len(seed_runs), sharpe_seed_mean=mean, sharpe_seed_std=std)
            else:
                row.update(seeds=math.nan, sharpe_seed_mean=math.nan, sharpe_seed_std=math.nan)
            rows.append(row)
    league = pd.DataFrame(
        rows, columns=["instrument", "strategy", "kind", *METRIC_COLUMNS, "break_even"]
    )
    return Comparison(league, sweep_table, seeds, pooled_runs, n_trials)


# Verdicts -------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def verdict(block: pd.DataFrame, alpha: float, n_trials: int) -> tuple[list[str], str]:
    """Plain sentences on whether the LSTM beat the baselines, and whether it is significant.

    Args:
        block: the league rows of one instrument (or pooled), indexed by strategy.
        alpha: significance level.
        n_trials: trials behind the deflated Sharpe ratio.

    Returns:
        The sentences and a one-word outcome (``win``, ``loss`` or ``mixed``).
    """
    if LSTM not in block.index:
        return ["No LSTM forecasts in this experiment: nothing to judge."], "mixed"
    main = block[block["kind"] != "seed"]
    lstm = block.loc[LSTM]
    level = round(100 * (1 - alpha))
    sentences = []

    # Trading: Sharpe ratio against every other strategy.
    others = main.drop(index=LSTM)["sharpe"].dropna()
    best_name = others.idxmax() if not others.empty else None
    beat_sharpe = bool(
        np.isfinite(lstm["sharpe"]) and (others.empty or lstm["sharpe"] > others.max())
    )
    ranked = main["sharpe"].rank(ascending=False, method="min")
    if not np.isfinite(lstm["sharpe"]):
        sentences.append(
            "By Sharpe ratio: undefined for the LSTM strategy (it never held a position)."
        )
    else:
        lead = (
            f"By Sharpe ratio the LSTM strategy ranks {int(ranked[LSTM])} of "
            f"{int(main['sharpe'].notna().sum())} "
            f"({_fmt(lstm['sharpe'])})"
        )
        if best_name is None:
            sentences.append(lead + ".")
        elif beat_sharpe:
            sentences.append(
                f"{lead} and beats every baseline; the next best is {best_name} "
                f"({_fmt(others.max())})."
            )
        else:
            sentences.append(
                f"{lead}: it does not beat the baselines; the best is {best_name} "
                f"({_fmt(others.max())})."
            )
    if np.isfinite(lstm.get("sharpe_seed_std", math.nan)):
        sentences.append(
            f"Across {int(lstm['seeds'])} seeds its Sharpe ratio is "
            f"{_fmt(lstm['sharpe_seed_mean'])} ± {_fmt(lstm['sharpe_seed_std'])}."
        )

    # Significance of the trading edge.
    sig_bh = False
    if BENCHMARK in block.index and np.isfinite(lstm["sharpe_diff"]):
        low, high = lstm["sharpe_diff_low"], lstm["sharpe_diff_high"]
        sig_bh = bool(low > 0)
        if low > 0:
            judged = "significantly better than buy-and-hold"
        elif high < 0:
            judged = "significantly worse than buy-and-hold"
        else:
            judged = "not significantly different from buy-and-hold (the interval contains 0)"
        sentences.append(
            f"Sharpe ratio minus buy-and-hold's: {lstm['sharpe_diff']:+.2f}, {level}% bootstrap "
            f"interval [{_fmt(low)}, {_fmt(high)}]: {judged}."
        )
    dsr_ok = bool(np.isfinite(lstm["dsr"]) and lstm["dsr"] > 1 - alpha)
    if np.isfinite(lstm["dsr"]):
        sentences.append(
            f"Deflated Sharpe ratio {_fmt(lstm['dsr'])} after {n_trials} trials "
            f"(PSR {_fmt(lstm['psr'])}): "
            + (
                f"the Sharpe ratio is significant at {alpha:g} even allowing for selection."
                if dsr_ok
                else f"not significant at {alpha:g} once the number of trials is accounted for."
            )
        )

    # Forecast accuracy.
    forecasters = main[main["kind"] == "forecast"]["rmse"].dropna()
    fcol = "rmse" if not forecasters.empty else "theil_u2"
    forecasters = main[main["kind"] == "forecast"][fcol].dropna()
    beat_forecast = sig_forecast = False
    if LSTM in forecasters.index and len(forecasters) > 1:
        rest = forecasters.drop(index=LSTM)
        beat_forecast = bool(forecasters[LSTM] < rest.min())
        rank = int(forecasters.rank(method="min")[LSTM])
        u2 = lstm["theil_u2"]
        sentence = (
            f"As a forecaster the LSTM ranks {rank} of {len(forecasters)} by "
            f"{'RMSE' if fcol == 'rmse' else 'Theil U2'}"
        )
        sentence += (
            " (the most accurate)." if beat_forecast else f"; the most accurate is {rest.idxmin()}."
        )
        sentences.append(sentence)
        dm, p = lstm["dm_statistic"], lstm["dm_p_value"]
        if np.isfinite(u2) and np.isfinite(p):
            better = u2 < 1
            sig_forecast = bool(better and p < alpha)
            verdict_dm = "significantly" if p < alpha else "but not significantly"
            sentences.append(
                f"Against the random walk: Theil U2 {_fmt(u2, 3)} "
                f"({'lower' if better else 'higher'} error), Diebold-Mariano {_fmt(dm)}, "
                f"p = {_fmt(p, 3)}: {verdict_dm} {'more' if better else 'less'} accurate."
            )

    # Bottom line.
    trade_sig = sig_bh and dsr_ok
    if beat_sharpe and beat_forecast:
        what = "beat every baseline by Sharpe ratio and by forecast accuracy"
    elif beat_sharpe:
        what = "beat every baseline by Sharpe ratio but not by forecast accuracy"
    elif beat_forecast:
        what = "forecast most accurately but did not beat every baseline by Sharpe ratio"
    else:
        what = "did not beat the baselines, by Sharpe ratio or by forecast accuracy"
    if beat_sharpe or beat_forecast:
        details = []
        if beat_sharpe:
            details.append(
                "its Sharpe edge over buy-and-hold is statistically significant "
                "(bootstrap interval above 0 and DSR)"
                if trade_sig
                else "its Sharpe edge over buy-and-hold is not statistically significant"
            )
        if beat_forecast:
            details.append(
                "its accuracy edge over the random walk is "
                + ("" if sig_forecast else "not ")
                + "statistically significant (Diebold-Mariano)"
            )
        sentences.append(f"Bottom line: the LSTM {what}; {'; '.join(details)}.")
    else:
        extras = []
        if trade_sig:
            extras.append("its Sharpe ratio is still significantly above buy-and-hold's")
        if sig_forecast:
            extras.append("it is still significantly more accurate than the random walk")
        tail = (
            ", although " + " and ".join(extras)
            if extras
            else ", and shows no statistically significant edge"
        )
        sentences.append(f"Bottom line: the LSTM {what}{tail}.")
    outcome = (
        "win"
        if (beat_sharpe or beat_forecast) and (trade_sig or sig_forecast)
        else ("loss" if not (beat_sharpe or beat_forecast) else "mixed")
    )
    return sentences, outcome


# Rendering ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of the HTML league table."""

    key: str
    label: str
    group: str
    kind: str  # number, percent, int, pvalue, prob, ci, text
    help: str = ""


COLUMNS = (
    Column(
        "sharpe", "Sharpe", "trading", "number", "annualised Sharpe ratio of daily excess returns"
    ),
    Column("sortino", "Sortino", "trading", "number", "annualised Sortino ratio"),
    Column("cagr", "CAGR", "trading", "percent", "compound annual growth rate"),
    Column("max_drawdown", "max DD", "trading", "percent", "maximum drawdown"),
    Column("volatility", "vol", "trading", "percent", "annualised volatility"),
    Column("trades", "trades", "trading", "int", "round trips (an open position counts)"),
    Column("win_rate", "win rate", "trading", "percent", "share of trades with a net profit"),
    Column("exposure", "exposure", "trading", "percent", "share of days with a position"),
    Column("psr", "PSR", "statistics", "prob", "probabilistic Sharpe ratio against 0"),
    Column("dsr", "DSR", "statistics", "prob", "deflated Sharpe ratio (selection-adjusted PSR)"),
    Column(
        "sharpe_diff",
        "ΔSharpe vs B&H [CI]",
        "statistics",
        "ci",
        "Sharpe ratio minus buy-and-hold's with its bootstrap interval",
    ),
    Column(
        "break_even",
        "break-even cost",
        "statistics",
        "text",
        "commission at which the Sharpe edge over buy-and-hold vanishes",
    ),
    Column("rmse", "RMSE", "forecast", "number", "root mean squared error of the next close"),
    Column("theil_u2", "Theil U2", "forecast", "number3", "RMSE / random walk's RMSE"),
    Column(
        "directional_accuracy",
        "dir. acc.",
        "forecast",
        "percent",
        "share of correctly forecast up/down moves",
    ),
    Column("dm_statistic", "DM", "forecast", "number", "Diebold-Mariano statistic vs random walk"),
    Column("dm_p_value", "DM p", "forecast", "pvalue", "Diebold-Mariano p-value vs random walk"),
)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and bool(np.isfinite(value))


def _cell(col: Column, row: pd.Series, alpha: float) -> dict[str, str]:
    value = row.get(col.key)
    raw = "" if not _finite(value) else repr(float(value))
    css = ""
    if col.kind == "text":
        text = str(value or "")
    elif not _finite(value):
        return {"key": col.key, "text": "–", "raw": "", "css": "na"}
    elif col.kind == "percent":
        text = f"{100 * value:.1f}%"
    elif col.kind == "int":
        text = f"{int(value)}"
    elif col.kind == "pvalue":
        text = f"{value:.3f}" if value >= 0.001 else "<0.001"
        # DM < 0: more accurate than the random walk; significance colours the direction.
        if value < alpha:
            css = "sig" if row.get("dm_statistic", 0.0) < 0 else "sigworse"
    elif col.kind == "prob":
        text = f"{value:.2f}"
        css = "sig" if value > 1 - alpha else ""
    elif col.kind == "ci":
        low, high = row.get("sharpe_diff_low"), row.get("sharpe_diff_high")
        text = f"{value:+.2f}"
        if _finite(low) and _finite(high):
            text += f" [{low:+.2f}, {high:+.2f}]"
            css = "sig" if low > 0 else ("sigworse" if high < 0 else "")
    elif col.kind == "number3":
        text = f"{value:.3f}"
    else:
        text = f"{value:.2f}" if abs(value) < 1e4 else f"{value:,.0f}"
    if col.key == "sharpe" and _finite(row.get("sharpe_seed_std")):
        text += f" ({row['sharpe_seed_mean']:.2f} ± {row['sharpe_seed_std']:.2f})"
    return {"key": col.key, "text": text, "raw": raw, "css": css}


def _sorted_block(block: pd.DataFrame) -> pd.DataFrame:
    main = block[block["kind"] != "seed"]
    return main.sort_values("sharpe", ascending=False, na_position="last")


def _png(fig: Any, directory: Path, filename: str, caption: str, embed: bool) -> dict[str, Any]:
    path = charts.save_png(fig, directory / filename)
    width, height = (int(round(v)) for v in fig.get_size_inches() * charts.DPI)
    src = filename
    if embed:
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return {
        "src": src,
        "file": filename,
        "alt": caption,
        "caption": caption,
        "width": width,
        "height": height,
    }


def _main_equity(runs: Mapping[str, StrategyRun]) -> dict[str, pd.Series]:
    return {n: r.equity for n, r in runs.items() if _kind(n) != "seed"}


def _instrument_charts(
    inst: InstrumentData, comparison: Comparison, directory: Path, embed: bool
) -> list[dict[str, Any]]:
    out = []
    name = inst.name
    equity = _main_equity(inst.runs)
    out.append(
        _png(
            charts.equity_chart(equity, f"{name}: equity of every strategy (out of sample)"),
            directory,
            f"{name}_equity.png",
            f"{name}: growth of 1 for every strategy from the out-of-sample start, after costs.",
            embed,
        )
    )
    out.append(
        _png(
            charts.drawdown_chart(equity, f"{name}: drawdowns"),
            directory,
            f"{name}_drawdown.png",
            f"{name}: drawdown from the running peak.",
            embed,
        )
    )
    block = comparison.league[comparison.league["instrument"] == name].set_index("strategy")
    forecasters = block[(block["kind"] == "forecast")]["rmse"].dropna()
    shown = [n for n in (LSTM, RANDOM_WALK) if n in inst.frame]
    rest = forecasters.drop(index=[n for n in shown if n in forecasters.index])
    if not rest.empty:
        shown.append(rest.idxmin())
    if shown:
        oos = inst.frame.loc[inst.oos_start : inst.oos_end]
        fig = charts.forecast_chart(
            oos["close"],
            {n: oos[n] for n in shown},
            f"{name}: next-close forecasts against the actual close",
        )
        out.append(
            _png(
                fig,
                directory,
                f"{name}_forecast.png",
                f"{name}: forecasts of {', '.join(shown)} (the LSTM, the random walk and "
                "the most accurate other forecaster), each drawn on the date it forecasts.",
                embed,
            )
        )
    if inst.gates is not None and not inst.gates.empty:
        fig = charts.gates_chart(
            inst.gates,
            inst.frame["close"],
            f"{name}: LSTM gate activations over the out-of-sample dates",
            inst.fold_starts,
        )
        out.append(
            _png(
                fig,
                directory,
                f"{name}_gates.png",
                f"{name}: forget, input and output gates (mean over units) and cell state "
                "of the LSTM's last layer at each date; dotted lines: walk-forward refits.",
                embed,
            )
        )
    out.extend(_sweep_chart(comparison, name, directory, embed))
    return out


def _sweep_chart(
    comparison: Comparison, name: str, directory: Path, embed: bool
) -> list[dict[str, Any]]:
    sweep = comparison.sweep[comparison.sweep["instrument"] == name]
    sweep = sweep[sweep["strategy"].map(_kind) != "seed"]
    if sweep.empty or sweep["cost_bp"].nunique() < 2:
        return []
    table = sweep.pivot(index="cost_bp", columns="strategy", values="sharpe")
    block = comparison.league[comparison.league["instrument"] == name]
    be = {r.strategy: r.break_even_bp for r in block.itertuples() if _finite(r.break_even_bp)}
    fig = charts.cost_sweep_chart(table, f"{name}: Sharpe ratio against commission", be)
    label = "pooled" if name == POOLED else name
    return [
        _png(
            fig,
            directory,
            f"{label}_cost_sweep.png",
            f"{label}: annualised Sharpe ratio of each strategy as the commission grows "
            "(all else as configured); circles mark the break-even cost against buy-and-hold.",
            embed,
        )
    ]


def _notes(cfg: Config, comparison: Comparison) -> list[str]:
    boot = cfg.report.bootstrap
    return [
        "Every strategy trades the same out-of-sample dates with the same execution model: "
        f"market orders at the next bar's open, commission {1e4 * cfg.backtest.commission:g} bp, "
        f"slippage {1e4 * cfg.backtest.slippage:g} bp, {cfg.backtest.sizing.percent:g}% of equity "
        "per position. Conventions of every trading metric: the docstring of strategies/engine.py.",
        "Sharpe ratios are annualised with √252 from daily returns in excess of the risk-free "
        f"rate ({cfg.data.risk_free.source}).",
        "PSR (Bailey & López de Prado 2012) is the probability that the true Sharpe ratio is "
        "above 0 given the sample's length, skewness and kurtosis. DSR (2014) is the PSR against "
        "the Sharpe ratio the best of N unskilled trials would reach by luck, from the variance "
        f"of the trials' Sharpe ratios. Here N = {comparison.n_trials}: every strategy "
        "configuration backtested in this experiment (strategies × instruments, each LSTM seed "
        "counted separately).",
        f"ΔSharpe intervals: stationary bootstrap (Politis & Romano 1994) of the paired daily "
        f"excess returns, {boot.samples} resamples, mean block length {boot.block} days, "
        f"{round(100 * (1 - cfg.report.significance))}% percentile interval; the same resampled "
        "days for every strategy of an instrument.",
        "Break-even cost: the commission at which the strategy's Sharpe ratio falls to "
        "buy-and-hold's (which pays the commission too), interpolated on the sweep "
        f"{', '.join(f'{bp:g}' for bp in cfg.report.cost_sweep_bp)} bp; 'no edge' = behind "
        "buy-and-hold even at the lowest cost, '> max' = still ahead at the highest.",
        "Forecast metrics are those of the train stage on the out-of-sample dates: RMSE of the "
        "next close, Theil U2 = RMSE / random walk's RMSE, directional accuracy over days where "
        "both the forecast and the close moved, Diebold-Mariano test with the "
        "Harvey-Leybourne-Newbold correction against the random walk (negative = more accurate).",
        "Pooled rows: a calendar-time equal-weight portfolio per strategy (each day, the mean "
        "return of the instruments in their out-of-sample period that day); trades and "
        "commissions are summed, exposure day-weighted. Pooled forecast accuracy uses each "
        "instrument's errors divided by its random walk's RMSE (RMSE itself, in price units, "
        "is not pooled).",
        "LSTM: the 'lstm' strategy trades the mean forecast of the seeds; each seed's own "
        "forecasts are also backtested (mean ± std in the seeds table).",
    ]


def _seed_table(comparison: Comparison) -> tuple[list[str], list[dict[str, Any]]]:
    metrics = ["sharpe", "sortino", "cagr", "max_drawdown", "trades", "total_return"]
    rows = []
    for inst, summary in comparison.seeds.items():
        cells = []
        for m in metrics:
            mean, std = summary.get(m, (math.nan, math.nan))
            pct = m in {"cagr", "max_drawdown", "total_return"}
            scale, unit = (100, "%") if pct else (1, "")
            if not np.isfinite(mean):
                cells.append("–")
            elif np.isfinite(std):
                cells.append(f"{scale * mean:.2f}{unit} ± {scale * std:.2f}{unit}")
            else:
                cells.append(f"{scale * mean:.2f}{unit}")
        rows.append({"instrument": inst, "cells": cells})
    return metrics, rows


def render_html(
    cfg: Config,
    comparison: Comparison,
    instruments: Sequence[InstrumentData],
    directory: Path,
    *,
    config_path: str = "",
    embed: bool = True,
) -> Path:
    """Draw every chart into ``directory`` and write ``index.html`` there."""
    alpha = cfg.report.significance
    league = comparison.league
    blocks, verdicts = [], []
    order = (
        [POOLED] + [inst.name for inst in instruments]
        if len(instruments) > 1
        else [inst.name for inst in instruments]
    )
    for key in order:
        block = league[league["instrument"] == key]
        if block.empty:
            continue
        title = "Pooled across instruments (equal-weight)" if key == POOLED else key
        rows = []
        for _, row in _sorted_block(block).iterrows():
            css = (
                "lstm"
                if row["strategy"] == LSTM
                else ("benchmark" if row["strategy"] == BENCHMARK else "")
            )
            cells = [_cell(c, row, alpha) for c in COLUMNS]
            rows.append({"strategy": row["strategy"], "css": css, "cells": cells})
        blocks.append({"key": key, "title": title, "rows": rows})
        sentences, outcome = verdict(block.set_index("strategy"), alpha, comparison.n_trials)
        verdicts.append({"instrument": title, "sentences": sentences, "css": outcome})

    groups: list[tuple[str, int]] = []
    for col in COLUMNS:
        if groups and groups[-1][0] == col.group:
            groups[-1] = (col.group, groups[-1][1] + 1)
        else:
            groups.append((col.group, 1))

    inst_ctx = []
    for inst in instruments:
        days = len(inst.runs[next(iter(inst.runs))].returns) if inst.runs else 0
        inst_ctx.append(
            {
                "name": inst.name,
                "oos_start": str(inst.oos_start.date()),
                "oos_end": str(inst.oos_end.date()),
                "days": days,
                "charts": _instrument_charts(inst, comparison, directory, embed),
            }
        )
    pooled_charts = []
    if len(instruments) > 1 and comparison.pooled_runs:
        equity = _main_equity(comparison.pooled_runs)
        pooled_charts.append(
            _png(
                charts.equity_chart(equity, "Pooled: equal-weight equity"),
                directory,
                "pooled_equity.png",
                "Pooled: growth of 1 of the equal-weight portfolio of each strategy.",
                embed,
            )
        )
        pooled_charts.append(
            _png(
                charts.drawdown_chart(equity, "Pooled: drawdowns"),
                directory,
                "pooled_drawdown.png",
                "Pooled: drawdown from the running peak.",
                embed,
            )
        )
        pooled_charts.extend(_sweep_chart(comparison, POOLED, directory, embed))

    seed_metrics, seed_rows = _seed_table(comparison)
    seed_count = max((len(seed_columns(inst.frame)) for inst in instruments), default=0)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template(TEMPLATE).render(
        experiment=cfg.experiment_name,
        config_path=config_path or cfg.name,
        generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
        significance=alpha,
        level=1 - alpha,
        instruments=inst_ctx,
        verdicts=verdicts,
        league=blocks,
        columns=COLUMNS,
        column_groups=groups,
        seed_tables=seed_rows,
        seed_metrics=seed_metrics,
        seed_count=seed_count,
        pooled_charts=pooled_charts,
        notes=_notes(cfg, comparison),
    )
    path = directory / "index.html"
    path.write_text(html, encoding="utf-8")
    return path


def _json_ready(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_tables(comparison: Comparison, directory: Path) -> None:
    """``league.csv``, ``league.json``, ``cost_sweep.csv`` and ``seeds.csv`` in ``directory``."""
    comparison.league.to_csv(directory / "league.csv", index=False)
    records = [
        {k: _json_ready(v) for k, v in row.items()}
        for row in comparison.league.to_dict(orient="records")
    ]
    (directory / "league.json").write_text(json.dumps(records, indent=1, allow_nan=False) + "\n")
    comparison.sweep.to_csv(directory / "cost_sweep.csv", index=False)
    seed_rows = [
        {"instrument": inst, "metric": m, "mean": mean, "std": std}
        for inst, summary in comparison.seeds.items()
        for m, (mean, std) in summary.items()
    ]
    pd.DataFrame(seed_rows, columns=["instrument", "metric", "mean", "std"]).to_csv(
        directory / "seeds.csv", index=False
    )


def publish(build: Path, target: Path) -> None:
    """Replace ``target`` by the finished directory ``build`` (old report removed last)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(build, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# Console --------------------------------------------------------------------------------


def console_table(league: pd.DataFrame, max_rows_per_instrument: int | None = None) -> str:
    """A compact league table for the terminal, sorted by Sharpe ratio within instruments."""
    pieces = []
    order = [POOLED] + [i for i in dict.fromkeys(league["instrument"]) if i != POOLED]
    for key in order:
        block = _sorted_block(league[league["instrument"] == key])
        if block.empty:
            continue
        if max_rows_per_instrument and key != POOLED:
            keep = set(block["strategy"].head(max_rows_per_instrument)) | {LSTM, BENCHMARK}
            block = block[block["strategy"].isin(keep)]
        pieces.append(block)
    if not pieces:
        return "(no results)"
    table = pd.concat(pieces)

    def ci(row: pd.Series) -> str:
        if not _finite(row["sharpe_diff"]):
            return ""
        if not _finite(row["sharpe_diff_low"]):
            return f"{row['sharpe_diff']:+.2f}"
        low, high = row["sharpe_diff_low"], row["sharpe_diff_high"]
        return f"{row['sharpe_diff']:+.2f} [{low:+.2f},{high:+.2f}]"

    shown = pd.DataFrame(
        {
            "instrument": table["instrument"],
            "strategy": table["strategy"],
            "sharpe": table["sharpe"].map(lambda v: _fmt(v)),
            "cagr": table["cagr"].map(lambda v: f"{100 * v:.1f}%" if _finite(v) else ""),
            "max_dd": table["max_drawdown"].map(lambda v: f"{100 * v:.1f}%" if _finite(v) else ""),
            "trades": table["trades"].map(lambda v: f"{int(v)}" if _finite(v) else ""),
            "dSharpe_vs_BH": table.apply(ci, axis=1),
            "dsr": table["dsr"].map(lambda v: _fmt(v)),
            "theil_u2": table["theil_u2"].map(lambda v: _fmt(v, 3) if _finite(v) else ""),
            "dm_p": table["dm_p_value"].map(lambda v: _fmt(v, 3) if _finite(v) else ""),
            "break_even": table["break_even"],
        }
    )
    return shown.to_string(index=False)


# The stage ------------------------------------------------------------------------------


@dataclass
class ReportResult:
    """What the report stage produced.

    Args:
        comparison: the numbers.
        index: path of ``index.html``.
        run_id: the MLflow ``report`` run.
        experiment: the MLflow experiment name.
        tracking_uri: where MLflow keeps it.
    """

    comparison: Comparison
    index: Path
    run_id: str
    experiment: str
    tracking_uri: str
    verdicts: dict[str, list[str]] = field(default_factory=dict)


def _log_strategy_runs(comparison: Comparison) -> None:
    """One child run per instrument x strategy (and the pooled rows on the report run).

    Handed to the recorder before the charts are drawn, so the writer
    process stores them while this process renders.
    """
    from pipelines import tracking

    for row in comparison.league.to_dict(orient="records"):
        numeric = {k: row[k] for k in METRIC_COLUMNS if _finite(row.get(k))}
        if row["instrument"] == POOLED:
            tracking.log_metrics({f"{POOLED}/{row['strategy']}/{k}": v for k, v in numeric.items()})
            continue
        tags = {
            "gatecast.instrument": row["instrument"],
            "gatecast.strategy": row["strategy"],
            "gatecast.kind": row["kind"],
        }
        with tracking.child_run(f"{row['instrument']}/{row['strategy']}", tags=tags):
            tracking.log_metrics(numeric)


def report(
    cfg: Config,
    *,
    config_path: str = "",
    workers: int | None = None,
    command: str | None = None,
    progress: bool = True,
) -> ReportResult:
    """Run the report stage: compare, write ``<report dir>/index.html``, log to MLflow."""
    from pipelines.cli import loading_code

    with loading_code():  # here, not at the top: the sweep's spawned workers never track
        from pipelines import tracking

    started = time.perf_counter()
    instruments = load_instruments(cfg)
    inputs = {
        "forecasts.summary.json": cfg.run_directory / "forecasts" / "summary.json",
        "backtests.summary.json": cfg.run_directory / "backtests" / "summary.json",
    }
    inputs = {label: path for label, path in inputs.items() if path.is_file()}
    target = cfg.report_directory
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        return now

    with tracking.pipeline_run(cfg, STAGE, inputs=inputs, command=command) as run:
        t = time.perf_counter()
        check_seeds(instruments)
        sweep = cost_sweep(cfg, instruments, workers=workers, progress=progress)
        t = lap("cost_sweep", t)
        comparison = compare(cfg, instruments, sweep)
        t = lap("statistics", t)
        _log_strategy_runs(comparison)
        t = lap("mlflow", t)
        target.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        build.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
        try:
            index = render_html(cfg, comparison, instruments, build, config_path=config_path)
            write_tables(comparison, build)
            publish(build, target)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        t = lap("render", t)
        tracking.log_artifact(target, "report")
        log.info("report phases: %s", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
        tracking.log_metrics(
            {
                "n_trials": comparison.n_trials,
                "wall_seconds": time.perf_counter() - started,
                **{f"seconds/{k}": v for k, v in timings.items()},
            }
        )
    verdicts = {}
    for key in dict.fromkeys(comparison.league["instrument"]):
        block = comparison.league[comparison.league["instrument"] == key].set_index("strategy")
        verdicts[key] = verdict(block, cfg.report.significance, comparison.n_trials)[0]
    index = target / index.name
    return ReportResult(
        comparison, index, run.run_id, cfg.experiment_name, run.tracking_uri, verdicts
    )


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(
        STAGE, "League table, statistics (PSR, DSR, bootstrap, cost sweep) and the HTML report."
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes for the cost sweep (default: CPUs)"
    )
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        cfg = config_from_args(args)
        try:
            result = report(cfg, config_path=args.config, workers=args.workers)
        except (GatecastError, KeyboardInterrupt):
            raise
        except Exception as err:
            if args.verbose:
                traceback.print_exc()
            cause = " ".join(str(err).split()) or "(no message)"
            print(
                f"error: report failed: {type(err).__name__}: {cause} (the previous report, if "
                "any, is left as it was; -v shows the traceback)",
                file=sys.stderr,
            )
            return 1
        print(console_table(result.comparison.league, max_rows_per_instrument=3))
        print(f"report: {_shown(result.index)}")
        print(
            f"MLflow: experiment {result.experiment}, run {result.run_id} at "
            f"{result.tracking_uri} (browse: make ui)"
        )
        return 0

    return run_stage(body)


if __name__ == "__main__":
    sys.exit(main())
