"""The comparison behind the report: the league table, its statistics and the cost sweep.

Definitions (also printed at the end of the report):

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
  backtested in the experiment, i.e. strategies x instruments with each
  seed counted as its own configuration, plus every configuration the
  hyperparameter search scored (``search.trials``; read from the search
  stage's summary). The cost sweep is a sensitivity analysis, not a search,
  and does not count. The variance of the trials' Sharpe ratios is taken over
  the backtested set (per-instrument rows) or over the pooled strategies
  (pooled rows): the search's trials were scored on forecasts, not Sharpe ratios.
- **Sharpe difference**: annualised Sharpe ratio minus buy-and-hold's on the
  same instrument (or pooled), with a percentile interval from a stationary
  bootstrap of the paired daily excess returns (``report.bootstrap``).
- **Break-even cost**: the commission (bp of traded value, all else as
  configured) at which the strategy's Sharpe ratio falls to buy-and-hold's,
  interpolated between the points of ``report.cost_sweep_bp`` (swept by the
  backtest stage).

Every statistic comes from its one definition: Sharpe ratios from
``core.periods``, win rate and profit factor from ``strategies.metrics``,
Theil's U2 and Diebold-Mariano from ``models.metrics``, PSR, DSR, bootstrap
and break-even from ``pipelines.report.stats``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from core.periods import PERIODS_PER_YEAR, sharpe_ratio
from models.metrics import diebold_mariano, theil_u2
from pipelines.common.strategy_names import RANDOM_WALK, seed_columns
from pipelines.config import Config
from pipelines.report import inputs as report_inputs
from pipelines.report import stats
from pipelines.report.inputs import CostSweep, InstrumentData, StrategyRun
from strategies.metrics import (
    METRIC_KEYS,
    compute_metrics,
    profit_factor,
    risk_free_per_bar,
    win_rate,
)

POOLED = "pooled"

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


def finite(value: Any) -> bool:
    """True for a finite number (False for NaN, inf, None and text)."""
    return isinstance(value, int | float | np.integer | np.floating) and bool(np.isfinite(value))


def fmt(value: float, digits: int = 2) -> str:
    """A number with ``digits`` decimals, or ``n/a`` when it is not finite."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def sorted_block(block: pd.DataFrame) -> pd.DataFrame:
    """League rows of one instrument without the seeds, best Sharpe ratio first."""
    main = block[block["kind"] != "seed"]
    return main.sort_values("sharpe", ascending=False, na_position="last")


# Pooling --------------------------------------------------------------------------------


def excess_returns(
    returns: pd.Series, risk_free: float | pd.Series, periods_per_year: float = PERIODS_PER_YEAR
) -> pd.Series:
    """Per-bar returns less the risk-free rate per bar (``risk_free`` is annual)."""
    returns = returns.dropna()
    return returns - risk_free_per_bar(risk_free, returns.index, periods_per_year)


def pooled_returns(per_instrument: Mapping[str, pd.Series]) -> pd.Series:
    """Calendar-time equal-weight portfolio: each day, the mean return of the active instruments."""
    frame = pd.DataFrame({k: v for k, v in per_instrument.items()}).sort_index()
    return frame.mean(axis=1, skipna=True).dropna()


def pooled_risk_free(runs: Sequence[StrategyRun]) -> float | pd.Series:
    """The annual risk-free rate on every date of ``runs`` (one rate per date, whoever's run)."""
    rates = [r.risk_free for r in runs]
    if not any(isinstance(rate, pd.Series) for rate in rates) and len(set(rates)) <= 1:
        return rates[0] if rates else 0.0
    series = [
        rate if isinstance(rate, pd.Series) else pd.Series(float(rate), index=r.equity.index)
        for r, rate in zip(runs, rates, strict=True)
    ]
    combined = pd.concat(series)
    return combined[~combined.index.duplicated()].sort_index()


def pooled_run(
    cfg: Config, runs: Sequence[StrategyRun], periods_per_year: float = PERIODS_PER_YEAR
) -> StrategyRun:
    """The pooled backtest of one strategy over ``runs`` (one per instrument)."""
    returns = pooled_returns({str(k): r.returns for k, r in enumerate(runs)})
    risk_free = pooled_risk_free(runs)
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
            equity, positions, empty_trades, empty_orders, risk_free, periods_per_year
        ).items()
    }
    pnl = np.concatenate([r.trades_pnl for r in runs]) if runs else np.array([])
    days = np.array([len(r.returns) for r in runs], dtype=float)
    metrics["trades"] = float(sum(r.metrics.get("trades", 0) for r in runs))
    metrics["commissions"] = float(sum(r.metrics.get("commissions", 0.0) for r in runs))
    metrics["orders"] = float(sum(r.metrics.get("orders", 0) for r in runs))
    metrics["win_rate"] = win_rate(pnl)
    metrics["profit_factor"] = profit_factor(pnl)
    for key in ("exposure", "turnover"):
        values = np.array([r.metrics.get(key, math.nan) for r in runs], dtype=float)
        metrics[key] = float(np.average(values, weights=days)) if days.sum() else math.nan
    return StrategyRun(metrics, equity, returns, pnl, risk_free)


def pooled_forecast_metrics(instruments: Sequence[InstrumentData], name: str) -> dict[str, float]:
    """Scale-free forecast accuracy of forecaster ``name`` over every instrument together."""
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
    return {
        "rmse": math.nan,
        "mae": math.nan,
        "mase": math.nan,
        "theil_u2": theil_u2(f, rw),
        "dm_statistic": float(dm_stat),
        "dm_p_value": float(dm_p),
        "directional_accuracy": hits / counted if counted else math.nan,
        "directional_p_value": (
            float(sps.binomtest(int(hits), counted, 0.5).pvalue) if counted else math.nan
        ),
    }


# The league -----------------------------------------------------------------------------


@dataclass
class Comparison:
    """The numbers behind the report.

    Args:
        league: one row per (instrument, strategy), ``instrument == "pooled"``
            for the pooled rows; columns ``METRIC_COLUMNS`` plus ``break_even``
            (text) and ``kind`` (forecast, crossover, benchmark, seed).
        sweep: long table ``instrument, strategy, cost_bp, sharpe``.
        seeds: per instrument, metric -> (mean, std) over the candidate's seeds.
        pooled_runs: strategy -> pooled StrategyRun.
        n_trials: trials counted for the deflated Sharpe ratio (search trials included).
        search_trials: of which configurations scored by the search stage.
        periods_per_year: bars per year behind every annualised figure.
        interval: the bars' interval in words (``core.periods.bar_interval``).
        candidate: the forecaster the report judges (``report.candidate``).
        label: how the report calls it (``Config.candidate_label``).
        benchmark: the strategy every Sharpe ratio is compared with (``report.benchmark``).
    """

    league: pd.DataFrame
    sweep: pd.DataFrame
    seeds: dict[str, dict[str, tuple[float, float]]]
    pooled_runs: dict[str, StrategyRun]
    n_trials: int
    periods_per_year: float = PERIODS_PER_YEAR
    interval: str = "daily"
    search_trials: int = 0
    candidate: str = ""
    label: str = ""
    benchmark: str = ""


def cost_sweep_table(
    sweep: CostSweep | None,
    pooled_names: Sequence[str],
    instruments: Sequence[InstrumentData],
    periods_per_year: float = PERIODS_PER_YEAR,
) -> pd.DataFrame:
    """Long table ``instrument, strategy, cost_bp, sharpe`` of the sweep, pooled rows included."""
    rows = []
    for bp, per_inst in (sweep or {}).items():
        for inst_name, by_strategy in per_inst.items():
            for name, (sharpe, _) in by_strategy.items():
                rows.append((inst_name, name, bp, sharpe))
        for name in pooled_names:
            if all(name in by_strategy for by_strategy in per_inst.values()):
                r = pooled_returns({k: v[name][1] for k, v in per_inst.items()})
                risk_free = pooled_risk_free([inst.runs[name] for inst in instruments])
                sr = sharpe_ratio(excess_returns(r, risk_free, periods_per_year), periods_per_year)
                rows.append((POOLED, name, bp, sr))
    return pd.DataFrame(rows, columns=["instrument", "strategy", "cost_bp", "sharpe"])


def _break_even(
    sweep_table: pd.DataFrame, inst_name: str, name: str, benchmark: str
) -> stats.BreakEven | None:
    if sweep_table.empty or name == benchmark:
        return None
    block = sweep_table[sweep_table["instrument"] == inst_name]
    mine = block[block["strategy"] == name].set_index("cost_bp")["sharpe"]
    bench = block[block["strategy"] == benchmark].set_index("cost_bp")["sharpe"]
    both = pd.concat([mine, bench], axis=1, keys=["s", "b"]).dropna()
    if both.empty:
        return None
    return stats.break_even_cost(both.index.to_numpy(float), (both["s"] - both["b"]).to_numpy())


@dataclass
class _Block:
    """One instrument's (or the pooled) rows to build: runs, their excess returns, trials."""

    name: str
    runs: Mapping[str, StrategyRun]
    forecast_metrics: Mapping[str, Mapping[str, float]]
    excess: Mapping[str, pd.Series]
    trial_sharpes: np.ndarray


def _sharpe_diff(
    cfg: Config, r: pd.Series, bench: pd.Series | None, name: str, periods_per_year: float
) -> dict:
    if bench is None or name == cfg.report.benchmark:
        keys = ("sharpe_diff", "sharpe_diff_low", "sharpe_diff_high", "sharpe_diff_p_value")
        return dict.fromkeys(keys, math.nan)
    a, b = r.align(bench, join="inner")
    ci = stats.sharpe_difference_ci(
        a.to_numpy(),
        b.to_numpy(),
        samples=cfg.report.bootstrap.samples,
        block=cfg.report.bootstrap.block,
        level=1.0 - cfg.report.significance,
        seed=cfg.seed,
        periods_per_year=periods_per_year,
    )
    return {
        "sharpe_diff": ci.estimate,
        "sharpe_diff_low": ci.low,
        "sharpe_diff_high": ci.high,
        "sharpe_diff_p_value": ci.pvalue,
    }


def _block_rows(
    cfg: Config,
    block: _Block,
    n_trials: int,
    sweep_table: pd.DataFrame,
    seeds: dict[str, dict[str, tuple[float, float]]],
    periods_per_year: float = PERIODS_PER_YEAR,
) -> list[dict[str, Any]]:
    """The league rows of one block; fills ``seeds[block.name]`` when the candidate has seeds."""
    max_bp = max(cfg.report.cost_sweep_bp) if cfg.report.cost_sweep_bp else 0.0
    candidate = cfg.report.candidate
    seed_runs = [block.runs[c] for c in seed_columns(block.runs, candidate)]
    if seed_runs:
        seeds[block.name] = stats.seed_summary([r.metrics for r in seed_runs])
    bench = block.excess.get(cfg.report.benchmark)
    rows = []
    for name, run in block.runs.items():
        row: dict[str, Any] = {"instrument": block.name, "strategy": name}
        row["kind"] = cfg.strategy_kind(name)
        row.update({k: run.metrics.get(k, math.nan) for k in TRADING_KEYS})
        fm = block.forecast_metrics.get(name, {})
        row.update({k: fm.get(k, math.nan) for k in FORECAST_KEYS})
        r = block.excess[name]
        row["psr"] = stats.probabilistic_sharpe_ratio(r.to_numpy())
        row["dsr"] = stats.deflated_sharpe_ratio(r.to_numpy(), block.trial_sharpes, n_trials)
        row["dsr_trials"] = n_trials
        row.update(_sharpe_diff(cfg, r, bench, name, periods_per_year))
        be = _break_even(sweep_table, block.name, name, cfg.report.benchmark)
        row["break_even_bp"] = be.cost_bp if be and be.cost_bp is not None else math.nan
        row["break_even"] = be.describe(max_bp) if be else ""
        if name == candidate and seed_runs:
            mean, std = seeds[block.name].get("sharpe", (math.nan, math.nan))
            row.update(seeds=len(seed_runs), sharpe_seed_mean=mean, sharpe_seed_std=std)
        else:
            row.update(seeds=math.nan, sharpe_seed_mean=math.nan, sharpe_seed_std=math.nan)
        rows.append(row)
    return rows


def compare(
    cfg: Config,
    instruments: Sequence[InstrumentData],
    sweep: CostSweep | None = None,
    periods_per_year: float = PERIODS_PER_YEAR,
    interval: str = "daily",
    search_trials: int | None = None,
) -> Comparison:
    """Build the league table, the statistics and the cost-sweep table.

    ``periods_per_year``: the run's bars per year (the backtest stage's
    summary), for every annualised figure and the risk-free rate per bar.
    ``search_trials``: configurations the search scored (None: read from
    the search stage's summary, ``report_inputs.search_trials``).
    """
    if search_trials is None:
        search_trials = report_inputs.search_trials(cfg).count
    per_year = periods_per_year
    blocks = []
    for inst in instruments:
        excess = {
            n: excess_returns(run.returns, run.risk_free, per_year) for n, run in inst.runs.items()
        }
        blocks.append(_Block(inst.name, inst.runs, inst.forecast_metrics, excess, np.array([])))
    trial_sr = np.array([sharpe_ratio(r) for b in blocks for r in b.excess.values()])
    n_trials = int(len(trial_sr)) + search_trials
    for block in blocks:
        block.trial_sharpes = trial_sr

    pooled_names = (
        [n for n in instruments[0].runs if all(n in inst.runs for inst in instruments)]
        if instruments
        else []
    )
    pooled_runs = {
        n: pooled_run(cfg, [inst.runs[n] for inst in instruments], per_year) for n in pooled_names
    }
    pooled_excess = {
        n: excess_returns(r.returns, r.risk_free, per_year) for n, r in pooled_runs.items()
    }
    pooled_sr = np.array([sharpe_ratio(r) for r in pooled_excess.values()])
    pooled_fm = {n: pooled_forecast_metrics(instruments, n) for n in pooled_names}
    blocks.append(_Block(POOLED, pooled_runs, pooled_fm, pooled_excess, pooled_sr))

    sweep_table = cost_sweep_table(sweep, pooled_names, instruments, per_year)
    seeds: dict[str, dict[str, tuple[float, float]]] = {}
    rows = [
        row for b in blocks for row in _block_rows(cfg, b, n_trials, sweep_table, seeds, per_year)
    ]
    league = pd.DataFrame(
        rows, columns=["instrument", "strategy", "kind", *METRIC_COLUMNS, "break_even"]
    )
    return Comparison(
        league,
        sweep_table,
        seeds,
        pooled_runs,
        n_trials,
        per_year,
        interval,
        search_trials,
        cfg.report.candidate,
        cfg.candidate_label,
        cfg.report.benchmark,
    )
