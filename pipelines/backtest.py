"""Stage ``backtest``: every configured strategy on every instrument, from the saved forecasts.

Reads ``<run>/forecasts/<INST>.parquet`` and ``<run>/forecasts/summary.json``
(see docs/architecture.md) and never loads or calls a model: forecasts are
data. Writes, under ``<run>/backtests/``:

- ``<INST>/<strategy>.json``: instrument, strategy, parameters, execution,
  measured period and the metrics dict (non-finite numbers as ``null``);
- ``<INST>/<strategy>_equity.parquet`` (``equity``, ``returns``,
  ``position`` by date), ``<INST>/<strategy>_trades.parquet``,
  ``<INST>/<strategy>_orders.parquet``;
- ``<INST>/<strategy>.png``: Backtrader's chart, for the LSTM (or the first
  forecaster present) and the SMA crossover;
- ``summary.json``, written last and atomically, so its presence means the
  stage finished.

Strategy names: each forecaster column present in the file (``ForecastStrategy``
on that column), then ``sma_crossover``, ``ema_crossover``, ``buy_and_hold``
as configured, then ``lstm_seed<k>`` for each LSTM seed's own forecast column
(the same ForecastStrategy; the report summarises them as mean ± std and
keeps them out of its league and cost sweep). Every strategy trades from the
instrument's ``oos_start`` to its ``oos_end`` under the same
``ExecutionSettings`` and is fed the same bars: from
``strategies.warmup_bars`` of the instrument's strategies before
``oos_start`` (the warm-up convention of ``strategies.engine``).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.cli import config_from_args, run_stage, setup_logging, stage_parser
from pipelines.config import BacktestConfig, Config, ForecastersConfig
from pipelines.errors import ConfigError, DataError
from pipelines.outputs import atomic_write, read_stage_summary
from strategies.engine import (
    BacktestResult,
    ExecutionSettings,
    execution_dict,
    run_backtest,
    warmup_bars,
)

log = logging.getLogger("gatecast.backtest")

FORECASTERS = tuple(ForecastersConfig.model_fields)
BAR_COLUMNS = ("open", "high", "low", "close", "volume")
CHARTED = ("sma_crossover",)
SEED_COLUMN = re.compile(r"lstm_seed(\d+)")


def execution_from_config(backtest: BacktestConfig) -> ExecutionSettings:
    """The execution model of every strategy, from the ``backtest`` section of the config."""
    try:
        return ExecutionSettings(
            cash=backtest.cash,
            commission=backtest.commission,
            commission_fixed=backtest.commission_fixed,
            slippage=backtest.slippage,
            percent=backtest.sizing.percent,
            fractional=backtest.sizing.fractional,
            allow_short=backtest.allow_short,
        )
    except ValueError as err:
        raise ConfigError(f"backtest: {err}") from None


def seed_columns(columns: list[str]) -> list[str]:
    """The per-seed LSTM forecast columns (``lstm_seed<k>``) among ``columns``, in seed order."""
    seeds = [c for c in columns if SEED_COLUMN.fullmatch(c)]
    return sorted(seeds, key=lambda c: int(SEED_COLUMN.fullmatch(c).group(1)))


def strategy_plan(
    cfg: Config, columns: list[str], seeds: bool = True
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Strategy name -> (engine strategy, params) for a forecast file with ``columns``.

    Args:
        cfg: the experiment.
        columns: the forecast file's columns.
        seeds: include a ForecastStrategy on each ``lstm_seed<k>`` column (after
            the others), with the same parameters as ``lstm``.
    """
    bt_cfg = cfg.backtest
    plan: dict[str, tuple[str, dict[str, Any]]] = {}
    thresholds = {
        "entry_threshold": bt_cfg.entry_threshold,
        "exit_threshold": bt_cfg.exit_threshold,
    }
    for name in FORECASTERS:
        if name in columns:
            plan[name] = ("forecast", dict(thresholds))
    if bt_cfg.sma_crossover is not None:
        plan["sma_crossover"] = ("sma_crossover", bt_cfg.sma_crossover.model_dump())
    if bt_cfg.ema_crossover is not None:
        plan["ema_crossover"] = ("ema_crossover", bt_cfg.ema_crossover.model_dump())
    if bt_cfg.buy_and_hold:
        plan["buy_and_hold"] = ("buy_and_hold", {})
    if seeds and cfg.forecasters.lstm is not None:
        for column in seed_columns(columns):
            plan[column] = ("forecast", dict(thresholds))
    return plan


def _instrument_entry(summary: dict[str, Any], instrument: str, path: Path) -> dict[str, Any]:
    entry = summary["instruments"].get(instrument)
    if not isinstance(entry, dict):
        raise DataError(
            f"{path}: no entry for instrument {instrument!r}; rerun the train stage for this config"
        )
    for key in ("oos_start", "oos_end"):
        if key not in entry:
            raise DataError(f"{path}: instrument {instrument!r} lacks {key!r}")
    return entry


def _read_forecasts(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} not found: run `python -m pipelines train --config ...` first")
    frame = pd.read_parquet(path)
    if not isinstance(frame.index, pd.DatetimeIndex) and "date" in frame.columns:
        frame = frame.set_index(pd.DatetimeIndex(frame.pop("date"), name="date"))
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError(f"{path}: expected a DatetimeIndex named 'date' (see docs/architecture.md)")
    missing = [c for c in BAR_COLUMNS[:4] if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing bar column(s) {missing}; rerun the train stage")
    return frame


def _risk_free(cfg: Config, index: pd.DatetimeIndex) -> float | pd.Series:
    rf = cfg.data.risk_free
    if rf.source == "constant":
        return rf.rate
    try:
        from pipelines.data import load_risk_free
    except ImportError as err:
        raise ConfigError(
            f"data.risk_free.source=fred needs pipelines.data.load_risk_free ({err}); "
            "use source: constant"
        ) from None
    return load_risk_free(cfg, index)


def run_backtests(
    cfg: Config, forecasts_dir: Path | None = None, charts: bool = False, seeds: bool = True
) -> dict[str, dict[str, Any]]:
    """Run every configured strategy on every instrument's saved forecasts.

    Returns ``{instrument: {"oos_start", "oos_end", "warmup", "results":
    {strategy: BacktestResult}}}``; nothing is written. With ``charts`` the
    results of the charted strategies keep their engine for
    ``strategies.plotting``.

    Args:
        cfg: the experiment.
        forecasts_dir: where the train stage wrote its files (default
            ``<run_directory>/forecasts``).
        charts: keep the engines needed for the PNG charts.
        seeds: also backtest each LSTM seed's forecasts (``lstm_seed<k>``).
    """
    forecasts_dir = Path(forecasts_dir or cfg.run_directory / "forecasts")
    summary = read_stage_summary(forecasts_dir / "summary.json", "train")
    execution = execution_from_config(cfg.backtest)
    out: dict[str, dict[str, Any]] = {}
    for instrument in cfg.data.instruments:
        path = forecasts_dir / f"{instrument}.parquet"
        entry = _instrument_entry(summary, instrument, forecasts_dir / "summary.json")
        frame = _read_forecasts(path)
        start, end = pd.Timestamp(entry["oos_start"]), pd.Timestamp(entry["oos_end"])
        frame = frame.loc[:end]
        if start not in frame.index:
            raise DataError(
                f"{path}: oos_start {start.date()} from summary.json is not a bar date in the file"
            )
        bars = frame[[c for c in BAR_COLUMNS if c in frame.columns]]
        plan = strategy_plan(cfg, list(frame.columns), seeds=seeds)
        # One warm-up for all: every strategy (and every rerun of it in the report's cost
        # sweep, which leaves the seeds out; they need none) is fed the same bars.
        warmup = warmup_bars(plan.values())
        missing = [n for n in cfg.forecasters.enabled() if n not in frame.columns]
        if missing:
            log.warning("%s: no forecast column for %s; skipped", path, ", ".join(missing))
        forecast_names = [n for n in plan if plan[n][0] == "forecast"]
        charted = {*CHARTED, "lstm" if "lstm" in forecast_names else next(iter(forecast_names), "")}
        risk_free = _risk_free(cfg, bars.index[bars.index >= start])
        results: dict[str, BacktestResult] = {}
        for name, (strategy, params) in plan.items():
            try:
                results[name] = run_backtest(
                    bars,
                    strategy,
                    params,
                    execution,
                    trade_start=start,
                    risk_free=risk_free,
                    forecast=frame[name] if strategy == "forecast" else None,
                    warmup=warmup,
                    keep_cerebro=charts and name in charted,
                )
            except ValueError as err:
                raise DataError(f"{path}: strategy {name!r}: {err}") from None
            m = results[name].metrics
            log.info(
                "%s %-14s total %+7.2f%%  sharpe %6.2f  maxdd %6.2f%%  trades %d",
                instrument,
                name,
                100 * m["total_return"],
                m["sharpe"],
                100 * m["max_drawdown"],
                m["trades"],
            )
        out[instrument] = {
            "oos_start": str(start.date()),
            "oos_end": str(frame.index[-1].date()),
            "warmup": warmup,
            "results": results,
        }
    return out


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null (strict JSON has neither)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return str(value.date())
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()  # NumPy scalar -> Python number
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(_finite(payload), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_backtests(cfg: Config, results: dict[str, dict[str, Any]]) -> Path:
    """Write every result under ``<run>/backtests/``; return the path of summary.json."""
    from strategies.plotting import save_chart

    out_dir = cfg.run_directory / "backtests"
    execution = execution_dict(execution_from_config(cfg.backtest))
    summary: dict[str, Any] = {
        "name": cfg.name,
        "execution": execution,
        "risk_free": cfg.data.risk_free.model_dump(),
        "instruments": {},
    }
    for instrument, run in results.items():
        inst_dir = out_dir / instrument
        inst_dir.mkdir(parents=True, exist_ok=True)
        strategies: dict[str, Any] = {}
        for name, result in run["results"].items():
            record = {
                "instrument": instrument,
                "strategy": name,
                "class": result.strategy,
                "params": result.params,
                "execution": execution,
                "start": str(result.equity.index[0].date()),
                "end": str(result.equity.index[-1].date()),
                "metrics": result.metrics,
            }
            _write_json(inst_dir / f"{name}.json", record)
            equity = pd.DataFrame(
                {"equity": result.equity, "returns": result.returns, "position": result.positions}
            )
            equity.to_parquet(inst_dir / f"{name}_equity.parquet")
            result.trades.to_parquet(inst_dir / f"{name}_trades.parquet", index=False)
            result.orders.to_parquet(inst_dir / f"{name}_orders.parquet", index=False)
            files = {
                "metrics": f"{instrument}/{name}.json",
                "equity": f"{instrument}/{name}_equity.parquet",
                "trades": f"{instrument}/{name}_trades.parquet",
                "orders": f"{instrument}/{name}_orders.parquet",
            }
            if result.cerebro is not None:
                save_chart(result, inst_dir / f"{name}.png")
                files["chart"] = f"{instrument}/{name}.png"
                result.cerebro = None  # the engine holds every line; free it once drawn
            strategies[name] = {"class": result.strategy, "metrics": result.metrics, "files": files}
        summary["instruments"][instrument] = {
            "oos_start": run["oos_start"],
            "oos_end": run["oos_end"],
            "warmup_bars": run.get("warmup"),
            "strategies": strategies,
        }
    path = out_dir / "summary.json"
    _write_json(path, summary)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("backtest", "Backtest every configured strategy on the saved forecasts.")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        cfg = config_from_args(args)
        results = run_backtests(cfg, charts=not args.no_charts)
        path = write_backtests(cfg, results)
        log.info("wrote %s", path)
        return 0

    return run_stage(body)


if __name__ == "__main__":
    sys.exit(main())
