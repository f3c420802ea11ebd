"""The backtest stage's portfolio units: the top-k portfolio of each forecaster over the universe.

With ``backtest.top_k`` set, after the per-instrument backtests the stage runs,
on the instruments' common dates from the latest out-of-sample start to the
earliest out-of-sample end:

- ``top_k_<forecaster>``: ``strategies.topk.TopK`` on that forecaster's
  forecasts, for every forecaster column but the random walk (its expected
  return is 0 everywhere, so it ranks nothing) and the LSTM seeds;
- ``equal_weight``: the equal-weight buy-and-hold of the universe, the
  portfolio's benchmark.

Each is one unit (``PortfolioUnit``, run by ``run_unit`` through the stage's
executor): a plain function of its inputs that writes nothing. The stage
writes, under ``<run>/backtests/portfolio/``: ``<name>.json`` (metrics,
params, instruments, period), ``<name>_equity.parquet`` (``equity``,
``returns``, ``position``: instruments held, ``risk_free``),
``<name>_trades.parquet``, ``<name>_orders.parquet`` (with an ``instrument``
column) and ``<name>_holdings.parquet`` (units of each instrument), and lists
them under ``portfolio`` in ``summary.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.bars import BAR_COLUMNS, format_timestamp
from pipelines.common.errors import DataError
from pipelines.common.outputs import json_safe, write_json
from pipelines.common.strategy_names import RANDOM_WALK, is_seed
from pipelines.config import Config
from pipelines.execution import executors
from strategies.engine import ExecutionSettings
from strategies.portfolio import PortfolioResult, run_portfolio

log = logging.getLogger("gatecast.backtest")

EQUAL_WEIGHT = "equal_weight"
PREFIX = "top_k_"


@dataclass(frozen=True)
class PortfolioUnit:
    """The inputs of one ``run_portfolio`` call, as one picklable value for an executor.

    Args:
        name: the portfolio's name in the stage's outputs (``top_k_lstm``, ``equal_weight``).
        bars: instrument -> bars on the common dates.
        strategy: ``top_k`` or ``equal_weight``; params: its parameters.
        execution: the execution model of every backtest of the run.
        trade_start: the first common out-of-sample date.
        risk_free: annual risk-free rate on the common dates.
        forecasts: instrument -> the forecaster's column on the common dates (top_k).
    """

    name: str
    bars: dict[str, pd.DataFrame]
    strategy: str
    params: dict[str, Any]
    execution: ExecutionSettings
    trade_start: pd.Timestamp
    risk_free: pd.Series
    forecasts: dict[str, pd.Series] | None = None


def run_unit(unit: PortfolioUnit) -> PortfolioResult:
    """``run_portfolio`` on a unit's inputs (top level, so a process pool can pickle it)."""
    return run_portfolio(
        unit.bars,
        unit.strategy,
        unit.params,
        unit.execution,
        trade_start=unit.trade_start,
        risk_free=unit.risk_free,
        forecasts=unit.forecasts,
    )


# ``instruments`` below are the backtest stage's ``pipelines.stages.backtest.InstrumentBacktests``
# (not imported: that module imports this one).


def _common_dates(instruments: Sequence[Any]) -> pd.DatetimeIndex:
    """Dates every instrument has, from the latest out-of-sample start to the earliest end."""
    start = max(inst.oos_start for inst in instruments)
    end = min(inst.oos_end for inst in instruments)
    dates = None
    for inst in instruments:
        index = next(iter(inst.units.values())).bars.index
        index = index[(index >= start) & (index <= end)]
        dates = index if dates is None else dates.intersection(index)
    if dates is None or len(dates) < 2:
        names = ", ".join(inst.instrument for inst in instruments)
        raise DataError(
            f"backtest.top_k: the out-of-sample periods of {names} share fewer than 2 bar dates; "
            "drop backtest.top_k or choose instruments that trade on the same days"
        )
    return dates


def plan_portfolios(cfg: Config, instruments: Sequence[Any]) -> list[PortfolioUnit]:
    """One unit per forecaster's top-k portfolio and one for the equal-weight universe."""
    top_k = cfg.backtest.top_k
    if top_k is None or not instruments:
        return []
    dates = _common_dates(instruments)
    first_units = {inst.instrument: next(iter(inst.units.values())) for inst in instruments}
    bars = {
        name: unit.bars.loc[dates, [c for c in BAR_COLUMNS if c in unit.bars.columns]]
        for name, unit in first_units.items()
    }
    execution = next(iter(first_units.values())).execution
    risk_free = instruments[0].risk_free.reindex(dates).ffill().fillna(0.0)
    common = dict(execution=execution, trade_start=dates[0], risk_free=risk_free)
    units = [PortfolioUnit(EQUAL_WEIGHT, bars, "equal_weight", {}, **common)]
    forecasters = [
        name
        for name, unit in instruments[0].units.items()
        # a forecaster's own column (not a configured strategy on it, nor a seed)
        if unit.forecast is not None
        and unit.forecast.name == name
        and name != RANDOM_WALK
        and not is_seed(name)
    ]
    params = {"k": top_k.k, "short": top_k.short}
    for name in forecasters:
        if not all(name in inst.units for inst in instruments):
            continue
        forecasts = {inst.instrument: inst.units[name].forecast.loc[dates] for inst in instruments}
        units.append(
            PortfolioUnit(PREFIX + name, bars, "top_k", params, **common, forecasts=forecasts)
        )
    return units


def run_portfolios(
    cfg: Config, instruments: Sequence[Any]
) -> dict[str, tuple[PortfolioUnit, PortfolioResult]]:
    """Plan and run the portfolio units through the config's executor (empty when top_k is off)."""
    units = plan_portfolios(cfg, instruments)
    results: dict[str, tuple[PortfolioUnit, PortfolioResult]] = {}
    if not units:
        return results
    with executors.executor_for(cfg.executor) as executor:
        for unit, outcome in executor.run(run_unit, units):
            if isinstance(outcome, ValueError):
                raise DataError(f"backtest.top_k: portfolio {unit.name!r}: {outcome}") from None
            if isinstance(outcome, Exception):
                raise outcome
            results[unit.name] = (unit, outcome)
            m = outcome.metrics
            log.info(
                "portfolio %-18s total %+7.2f%%  sharpe %6.2f  trades %d",
                unit.name, 100 * m["total_return"], m["sharpe"], m["trades"],
            )  # fmt: skip
    return {u.name: results[u.name] for u in units}  # plan order


def write_portfolios(
    out_dir: Path, portfolios: dict[str, tuple[PortfolioUnit, PortfolioResult]]
) -> dict[str, Any]:
    """Write every portfolio's files under ``out_dir/portfolio``; return summary.json's entry."""
    folder = out_dir / "portfolio"
    folder.mkdir(parents=True, exist_ok=True)
    entry: dict[str, Any] = {"strategies": {}}
    for name, (unit, result) in portfolios.items():
        prefix = f"portfolio/{name}"
        files = {
            "metrics": f"{prefix}.json",
            "equity": f"{prefix}_equity.parquet",
            "trades": f"{prefix}_trades.parquet",
            "orders": f"{prefix}_orders.parquet",
            "holdings": f"{prefix}_holdings.parquet",
        }
        record = {
            "strategy": name,
            "class": result.strategy,
            "params": result.params,
            "instruments": list(unit.bars),
            "start": format_timestamp(result.equity.index[0]),
            "end": format_timestamp(result.equity.index[-1]),
            "metrics": result.metrics,
        }
        write_json(out_dir / files["metrics"], json_safe(record))
        equity = pd.DataFrame(
            {
                "equity": result.equity,
                "returns": result.returns,
                "position": result.positions,
                "risk_free": unit.risk_free.reindex(result.equity.index),
            }
        )
        equity.to_parquet(out_dir / files["equity"])
        result.trades.to_parquet(out_dir / files["trades"], index=False)
        result.orders.to_parquet(out_dir / files["orders"], index=False)
        result.holdings.to_parquet(out_dir / files["holdings"])
        entry["strategies"][name] = {
            "class": result.strategy,
            "metrics": result.metrics,
            "files": files,
        }
        entry["instruments"] = list(unit.bars)
        entry["start"], entry["end"] = record["start"], record["end"]
    return entry
