"""Stage ``backtest``: every configured strategy on every instrument, from the saved forecasts.

Reads ``<run>/forecasts/<INST>.parquet`` and ``<run>/forecasts/summary.json``
(see docs/architecture.md) and never loads or calls a model: forecasts are
data. Writes, under ``<run>/backtests/``:

- ``<INST>/<strategy>.json``: instrument, strategy, parameters, execution,
  measured period, the metrics dict and the cost sweep's Sharpe ratios
  (non-finite numbers as ``null``);
- ``<INST>/<strategy>_equity.parquet`` (``equity``, ``returns``,
  ``position`` and ``risk_free``, the annual risk-free rate of the date, by
  date), ``<INST>/<strategy>_trades.parquet``, ``<INST>/<strategy>_orders.parquet``;
- ``<INST>/<strategy>_cost_sweep.parquet``: the daily returns at each
  commission of ``report.cost_sweep_bp`` (one column per point, named by its
  bp, e.g. ``"10"``), for every strategy but the seeds' own;
- ``<INST>/<strategy>.png``: Backtrader's chart, for the report's candidate (or the first
  forecaster present) and the SMA crossover;
- with ``backtest.top_k``: the top-k portfolios over the universe and their
  equal-weight buy-and-hold under ``portfolio/`` (``pipelines.execution.portfolio_unit``);
- ``summary.json``, written last and atomically, so its presence means the
  stage finished. It lists every file above under each strategy's ``files``,
  the metrics, the sweep's Sharpe ratios by bp (``cost_sweep``), and the
  swept points (``cost_sweep_bp``).

Each strategy's files are written, and recorded in MLflow
(``pipelines.tracking.backtest_runs``), as soon as its unit is in, beside the
units still running (``pipelines.execution.recorder``), in a fixed order
whichever finished first (``recording_order``: the plan's, with each
instrument's ``report.benchmark`` first, as the others' charts draw it): a ``backtest``
run with one child per instrument x strategy, ``backtest/<INST>/<strategy>``
(params ``stage``, ``instrument``, ``strategy``, ``kind`` and the strategy's
own as ``strategy.<name>``), carrying the metrics, the cost sweep's Sharpe
ratios (``sharpe_at_<bp>bp``), the strategy's files above as artifacts
(``backtest/``) and its growth and drawdown against buy-and-hold as a PNG
(``plots/equity.png``), besides Backtrader's chart where the stage drew one.

Strategy names: each forecaster column present in the file
(``backtest.forecast_strategy`` on that column), then the strategies of
``backtest.strategies`` by their names, then ``<name>_seed<k>`` for each
seed's own forecast column of a stochastic forecaster (the same forecast
strategy; the report summarises them as mean ± std and keeps them out of its
league and cost sweep). Every strategy trades from the
instrument's ``oos_start`` to its ``oos_end`` under the same
``ExecutionSettings`` and is fed the same bars: from
``strategies.warmup_bars`` of the instrument's strategies before
``oos_start`` (the warm-up convention of ``strategies.engine``).

Each (instrument, strategy) is one unit of work, ``pipelines.execution.backtest_unit``:
a plain function of its inputs that returns its results; this module builds
the units from the files, runs them through the config's executor and writes
what they return. A failed unit fails alone: its child run ends FAILED naming
its error, the others finish and are written and recorded (their results kept
for a rerun, which redoes only the failed ones), then the stage exits non-zero
with one line naming every failed (instrument, strategy) and its error, and
writes no summary.json.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from core.bars import BAR_COLUMNS, format_timestamp
from core.periods import PERIODS_PER_YEAR, bar_interval
from pipelines import tracking
from pipelines.cli import (
    config_from_args,
    recorded_command,
    run_stage,
    setup_logging,
    stage_parser,
)
from pipelines.common.errors import DataError
from pipelines.common.outputs import (
    json_safe,
    read_stage_parquet,
    read_stage_summary,
    shown,
    write_json,
)
from pipelines.common.strategy_names import cost_label, is_seed
from pipelines.config import Config
from pipelines.execution import executors, portfolio_unit
from pipelines.execution.backtest_plan import execution_from_config, strategy_plan, sweep_points
from pipelines.execution.backtest_unit import BacktestUnit, StrategyBacktest, run_unit, unit_inputs
from pipelines.execution.recorder import Recorder
from pipelines.execution.unit_cache import UnitCache, UnitRunner
from pipelines.sources.load import bars_per_year, load_risk_free
from pipelines.tracking import backtest_runs
from strategies.engine import ExecutionSettings, execution_dict, warmup_bars

log = logging.getLogger("gatecast.backtest")


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
    frame = read_stage_parquet(path, "train")
    if not isinstance(frame.index, pd.DatetimeIndex) and "date" in frame.columns:
        frame = frame.set_index(pd.DatetimeIndex(frame.pop("date"), name="date"))
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError(f"{path}: expected a DatetimeIndex named 'date' (see docs/architecture.md)")
    missing = [c for c in BAR_COLUMNS[:4] if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing bar column(s) {missing}; rerun the train stage")
    return frame


@dataclass
class InstrumentBacktests:
    """The units of one instrument and, once run, their results.

    Args:
        instrument: the instrument.
        path: its forecast file (named in errors).
        oos_start, oos_end: the out-of-sample period traded.
        warmup: bars fed before ``oos_start`` to every strategy.
        risk_free: annual risk-free rate on each date from ``oos_start``.
        units: strategy name -> its unit, in plan order.
        results: strategy name -> what its unit returned (plan order once all are in).
        failures: strategy name -> its unit's failure.
        entries: strategy name -> its entry of summary.json, once its files are written.
    """

    instrument: str
    path: Path
    oos_start: pd.Timestamp
    oos_end: pd.Timestamp
    warmup: int | None
    risk_free: pd.Series
    units: dict[str, BacktestUnit]
    results: dict[str, StrategyBacktest] = field(default_factory=dict)
    failures: dict[str, executors.UnitFailure] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)


def plan_instrument(
    cfg: Config,
    instrument: str,
    frame: pd.DataFrame,
    forecasts_dir: Path,
    summary: dict[str, Any],
    charts: bool,
    periods_per_year: float = PERIODS_PER_YEAR,
) -> InstrumentBacktests:
    """Build a unit per strategy from one instrument's forecasts ``frame`` (nothing is run)."""
    path = forecasts_dir / f"{instrument}.parquet"
    entry = _instrument_entry(summary, instrument, forecasts_dir / "summary.json")
    start, end = pd.Timestamp(entry["oos_start"]), pd.Timestamp(entry["oos_end"])
    frame = frame.loc[:end]
    if start not in frame.index:
        raise DataError(
            f"{path}: oos_start {start.date()} from summary.json is not a bar date in the file"
        )
    bars = frame[[c for c in BAR_COLUMNS if c in frame.columns]]
    plan = strategy_plan(cfg, list(frame.columns))
    # One warm-up for all: every strategy and every point of its cost sweep is fed the same bars.
    warmup = warmup_bars((p.strategy, p.params) for p in plan.values())
    missing = [n for n in cfg.forecasters.enabled() if n not in frame.columns]
    if missing:
        log.warning("%s: no forecast column for %s; skipped", path, ", ".join(missing))
    forecast_names = [n for n in plan if plan[n].forecast == n]
    candidate = cfg.report.candidate
    first = candidate if candidate in forecast_names else next(iter(forecast_names), "")
    # Backtrader's own chart: the candidate's strategy and the first configured one
    charted = {first, next(iter(cfg.backtest.strategies), "")}
    risk_free = load_risk_free(cfg, bars.index[bars.index >= start])
    execution = execution_from_config(cfg.backtest, periods_per_year)
    sweep = tuple(sweep_points(cfg))
    units = {
        name: BacktestUnit(
            instrument=instrument,
            name=name,
            bars=bars,
            strategy=planned.strategy,
            params=planned.params,
            execution=execution,
            trade_start=start,
            warmup=warmup,
            risk_free=risk_free,
            forecast=None if planned.forecast is None else frame[planned.forecast],
            # the seeds are summarised as mean ± std, not compared across costs
            cost_sweep_bp=() if is_seed(name) else sweep,
            chart=charts and name in charted,
        )
        for name, planned in plan.items()
    }
    return InstrumentBacktests(instrument, path, start, frame.index[-1], warmup, risk_free, units)


def _log_result(instrument: str, name: str, result: StrategyBacktest) -> None:
    m = result.backtest.metrics
    # a Sharpe ratio is undefined for a strategy that never held a position: say so
    sharpe = f"{m['sharpe']:6.2f}" if math.isfinite(m["sharpe"]) else "   n/a"
    log.info(
        "%s %-14s total %+7.2f%%  sharpe %s  maxdd %6.2f%%  trades %d",
        instrument,
        name,
        100 * m["total_return"],
        sharpe,
        100 * m["max_drawdown"],
        m["trades"],
    )


def plan_backtests(
    cfg: Config, forecasts_dir: Path | None = None, charts: bool = False
) -> list[InstrumentBacktests]:
    """Every instrument's units, from the train stage's files (nothing is run).

    Every unit is planned before any runs, so bad inputs stop the stage first.

    Args:
        cfg: the experiment.
        forecasts_dir: where the train stage wrote its files (default
            ``<run_directory>/forecasts``).
        charts: draw Backtrader's chart of the charted strategies.
    """
    forecasts_dir = Path(forecasts_dir or cfg.stage_directory("train"))
    summary = read_stage_summary(forecasts_dir / "summary.json", "train")
    for name in cfg.data.instruments:  # an instrument the train stage did not do is named first
        _instrument_entry(summary, name, forecasts_dir / "summary.json")
    frames = {
        name: _read_forecasts(forecasts_dir / f"{name}.parquet") for name in cfg.data.instruments
    }
    per_year = bars_per_year(cfg, frames)  # the same on every instrument (one interval per run)
    return [
        plan_instrument(cfg, name, frame, forecasts_dir, summary, charts, per_year)
        for name, frame in frames.items()
    ]


def recording_order(
    cfg: Config, planned: Sequence[InstrumentBacktests]
) -> list[tuple[InstrumentBacktests, str]]:
    """The order in which strategies are run, written and recorded: instrument by
    instrument in plan order, each instrument's ``report.benchmark`` first (every other
    strategy's equity chart draws it), then its other strategies in plan order."""
    benchmark = cfg.report.benchmark
    return [
        (inst, name)
        for inst in planned
        for name in sorted(inst.units, key=lambda name: name != benchmark)  # a stable sort
    ]


def run_units(
    cfg: Config,
    planned: Sequence[InstrumentBacktests],
    executor: executors.Executor,
    progress: bool = True,
    reuse: bool = True,
    record: Callable[[InstrumentBacktests, str], Any] | None = None,
) -> None:
    """Run the planned units through ``executor``, filling each instrument's ``results``
    (and ``failures``), in plan order once all are in.

    Each finished unit's result is kept in ``backtests/.units``
    (``pipelines.execution.unit_cache``) and taken from there by a later call with
    the same inputs and code. A unit that raises does not stop the others; once
    all are done, ``UnitsFailed`` names every failed one.

    ``record`` is called with each (instrument, strategy) once its unit is in, in
    ``recording_order`` whichever finished first, beside the units still running
    (``pipelines.execution.recorder``: in a background thread when the units run in
    other processes); every call has returned when this returns.
    """
    owner = {id(unit): (inst, name) for inst in planned for name, unit in inst.units.items()}
    order = recording_order(cfg, planned)
    # handed out in the order they are recorded in, so each is recorded soon after it runs
    units = [inst.units[name] for inst, name in order]
    cache = None
    if reuse:
        cache = UnitCache(
            cfg.stage_directory("backtest"), "pipelines.execution.backtest_unit", unit_inputs
        )
    runner = UnitRunner("backtest", cache, lambda u: f"{u} ({shown(owner[id(u)][0].path)})")
    # a recording thread only where there is something to record beside other processes
    background = record is not None and not getattr(executor, "in_process", False)
    # every result stays in memory until the summary anyway: a queue shorter than the
    # units would only hold up the driver (and the units it hands out) behind the recording
    recorder = Recorder(background=background, capacity=max(1, len(units)), name="backtest")
    submitted = 0  # order[:submitted] are with the recorder
    # disable=None: a bar on a terminal, nothing in logs and CI
    bar = tqdm(
        total=len(units),
        desc="backtests",
        unit="strategy",
        disable=None if progress else True,
        file=sys.stderr,
    )
    try:
        with recorder, bar:
            for unit, outcome in runner.run(executor, run_unit, units):
                bar.update()
                inst, name = owner[id(unit)]
                if isinstance(outcome, Exception):
                    inst.failures[name] = runner.failures[-1][1]
                else:
                    inst.results[name] = outcome
                    _log_result(inst.instrument, name, outcome)
                # hand over, in recording order, every strategy whose unit is in
                while submitted < len(order) and _is_in(*order[submitted]):
                    if record is not None:
                        recorder.submit(record, *order[submitted])
                    submitted += 1
    finally:
        if record is not None:
            log.info(
                "recording: %.1f s, of which the driver waited %.1f s",
                recorder.busy_seconds,
                recorder.waited_seconds,
            )
    for inst in planned:
        inst.results = {n: inst.results[n] for n in inst.units if n in inst.results}
    runner.finish()


def _is_in(inst: InstrumentBacktests, name: str) -> bool:
    return name in inst.results or name in inst.failures


def run_backtests(
    cfg: Config,
    forecasts_dir: Path | None = None,
    charts: bool = False,
    progress: bool = True,
    reuse: bool = True,
) -> list[InstrumentBacktests]:
    """Plan and run every configured strategy, with its cost sweep, on every
    instrument's forecasts, through the config's executor (``executor``: in this
    process, a pool of processes or Ray); the results are the same either way.
    No file is written and nothing recorded (``plan_backtests``, ``run_units``).

    Args:
        cfg: the experiment.
        forecasts_dir: where the train stage wrote its files (default
            ``<run_directory>/forecasts``).
        charts: draw Backtrader's chart of the charted strategies.
        progress: show a progress bar on a terminal.
        reuse: keep and reuse finished units' results (False: run every unit, keep none).
    """
    planned = plan_backtests(cfg, forecasts_dir, charts)
    with executors.executor_for(cfg.executor) as executor:
        run_units(cfg, planned, executor, progress, reuse)
    return planned


def _write_strategy(
    out_dir: Path, inst: InstrumentBacktests, name: str, execution: dict[str, Any]
) -> dict[str, Any]:
    """Write one strategy's files; return its entry of summary.json."""
    instrument, unit_result = inst.instrument, inst.results[name]
    result = unit_result.backtest
    prefix = f"{instrument}/{name}"
    sweep = {cost_label(bp): sharpe for bp, sharpe in unit_result.sweep_sharpe.items()}
    record = {
        "instrument": instrument,
        "strategy": name,
        "class": result.strategy,
        "params": result.params,
        "execution": execution,
        "start": str(result.equity.index[0].date()),
        "end": str(result.equity.index[-1].date()),
        "metrics": result.metrics,
        "cost_sweep": sweep,
    }
    write_json(out_dir / f"{prefix}.json", json_safe(record))
    equity = pd.DataFrame(
        {
            "equity": result.equity,
            "returns": result.returns,
            "position": result.positions,
            "risk_free": inst.risk_free.reindex(result.equity.index),
        }
    )
    equity.to_parquet(out_dir / f"{prefix}_equity.parquet")
    result.trades.to_parquet(out_dir / f"{prefix}_trades.parquet", index=False)
    result.orders.to_parquet(out_dir / f"{prefix}_orders.parquet", index=False)
    files = {
        "metrics": f"{prefix}.json",
        "equity": f"{prefix}_equity.parquet",
        "trades": f"{prefix}_trades.parquet",
        "orders": f"{prefix}_orders.parquet",
    }
    if sweep:
        returns = unit_result.sweep_returns.rename(columns=cost_label)
        returns.to_parquet(out_dir / f"{prefix}_cost_sweep.parquet")
        files["cost_sweep"] = f"{prefix}_cost_sweep.parquet"
    if unit_result.chart_png is not None:
        (out_dir / f"{prefix}.png").write_bytes(unit_result.chart_png)
        files["chart"] = f"{prefix}.png"
    return {
        "class": result.strategy,
        "metrics": result.metrics,
        "cost_sweep": sweep,
        "files": files,
    }


def _first_unit(instruments: Sequence[InstrumentBacktests]) -> BacktestUnit | None:
    return next((u for inst in instruments for u in inst.units.values()), None)


def _settings(cfg: Config, instruments: Sequence[InstrumentBacktests]) -> ExecutionSettings:
    """The execution settings every unit shares."""
    first = _first_unit(instruments)
    return first.execution if first else execution_from_config(cfg.backtest)


def write_instrument(out_dir: Path, inst: InstrumentBacktests, execution: dict[str, Any]) -> None:
    """Write the files of each of the instrument's results; keep their entries of
    summary.json in ``inst.entries``."""
    (out_dir / inst.instrument).mkdir(parents=True, exist_ok=True)
    inst.entries = {name: _write_strategy(out_dir, inst, name, execution) for name in inst.results}


def write_summary(
    cfg: Config, instruments: Sequence[InstrumentBacktests], portfolios: dict | None = None
) -> Path:
    """Write ``portfolio_unit.run_portfolios``'s results, then summary.json (atomically,
    last), from the instruments' written ``entries``; return its path."""
    out_dir = cfg.stage_directory("backtest")
    first, settings = _first_unit(instruments), _settings(cfg, instruments)
    summary: dict[str, Any] = {
        "name": cfg.name,
        "interval": bar_interval(first.bars.index) if first else "-",
        "periods_per_year": settings.periods_per_year,
        "execution": execution_dict(settings),
        "risk_free": cfg.data.risk_free.model_dump(),
        "cost_sweep_bp": sweep_points(cfg),
        "instruments": {},
    }
    for inst in instruments:
        summary["instruments"][inst.instrument] = {
            "oos_start": format_timestamp(inst.oos_start),
            "oos_end": format_timestamp(inst.oos_end),
            "warmup_bars": inst.warmup,
            # in plan order, whichever order they were written in
            "strategies": {n: inst.entries[n] for n in inst.units if n in inst.entries},
        }
    if portfolios:
        summary["portfolio"] = portfolio_unit.write_portfolios(out_dir, portfolios)
    path = out_dir / "summary.json"
    write_json(path, json_safe(summary))
    return path


def write_backtests(
    cfg: Config, instruments: list[InstrumentBacktests], portfolios: dict | None = None
) -> Path:
    """Write every result (and ``portfolio_unit.run_portfolios``'s) under ``<run>/backtests/``,
    without recording them. Returns the path of summary.json.
    """
    out_dir = cfg.stage_directory("backtest")
    execution = execution_dict(_settings(cfg, instruments))
    for inst in instruments:
        write_instrument(out_dir, inst, execution)
    return write_summary(cfg, instruments, portfolios)


def _write_and_record(
    cfg: Config, out_dir: Path, execution: dict[str, Any], inst: InstrumentBacktests, name: str
) -> None:
    """One strategy's files, then its child run (made from those files); or, for a
    failed unit, its FAILED child run."""
    if name in inst.failures:
        backtest_runs.record_failure(inst.instrument, name, str(inst.failures[name]))
        return
    (out_dir / inst.instrument).mkdir(parents=True, exist_ok=True)
    inst.entries[name] = _write_strategy(out_dir, inst, name, execution)
    backtest_runs.record_strategy(cfg, out_dir, inst.instrument, name, inst.entries)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(
        "backtest",
        "Backtest every configured strategy, and its cost sweep, on the saved forecasts.",
    )
    parser.add_argument(
        "--no-charts", action="store_true", help="skip the PNG charts (as tracking.charts: false)"
    )
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        cfg = config_from_args(args)
        out_dir = cfg.stage_directory("backtest")
        # make must not take a failed run for a finished stage
        (out_dir / "summary.json").unlink(missing_ok=True)
        planned = plan_backtests(cfg, charts=cfg.tracking.charts and not args.no_charts)
        inputs = {f"{inst.instrument}.parquet": inst.path for inst in planned}
        record = functools.partial(
            _write_and_record, cfg, out_dir, execution_dict(_settings(cfg, planned))
        )
        # the executor starts first: its workers start while this process opens the run
        with (
            executors.executor_for(cfg.executor) as executor,
            tracking.pipeline_run(
                cfg, "backtest", inputs=inputs, command=recorded_command(args, "backtest")
            ),
        ):
            run_units(cfg, planned, executor, record=record)
            portfolios = portfolio_unit.run_portfolios(cfg, planned)  # {} without backtest.top_k
            path = write_summary(cfg, planned, portfolios)
            backtest_runs.record_summary(cfg, path)
        log.info("wrote %s", path)
        return 0

    return run_stage(body)


if __name__ == "__main__":
    sys.exit(main())
