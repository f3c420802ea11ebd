"""What the backtest stage runs on an instrument: the strategies of a forecast file
(``strategy_plan``), the execution settings and the cost sweep's points, all from the
config. Shared by the backtest stage and the look-ahead check."""

from __future__ import annotations

from typing import Any

from core.periods import PERIODS_PER_YEAR
from pipelines.common.errors import ConfigError
from pipelines.common.strategy_names import seed_columns
from pipelines.config import Config
from pipelines.config.sections import BacktestConfig
from strategies.engine import ExecutionSettings


def execution_from_config(
    backtest: BacktestConfig, periods_per_year: float = PERIODS_PER_YEAR
) -> ExecutionSettings:
    """The execution model of every strategy, from the ``backtest`` section of the config.

    ``periods_per_year`` is the run's bars per year (``pipelines.sources.load.bars_per_year``),
    which every annualised metric uses.
    """
    try:
        return ExecutionSettings(
            cash=backtest.cash,
            commission=backtest.commission,
            commission_fixed=backtest.commission_fixed,
            slippage=backtest.slippage,
            percent=backtest.sizing.percent,
            fractional=backtest.sizing.fractional,
            allow_short=backtest.allow_short,
            periods_per_year=periods_per_year,
        )
    except ValueError as err:
        raise ConfigError(f"backtest: {err}") from None


def sweep_points(cfg: Config) -> list[float]:
    """The cost sweep's commissions in bp: ``report.cost_sweep_bp``, sorted, without repeats."""
    return sorted({float(bp) for bp in cfg.report.cost_sweep_bp})


def strategy_plan(cfg: Config, columns: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Strategy name -> (engine strategy, params) for a forecast file with ``columns``.

    A ForecastStrategy on each forecaster column present, the configured
    crossovers and buy-and-hold, then one on each ``lstm_seed<k>`` column with
    the same parameters as ``lstm``.

    Args:
        cfg: the experiment.
        columns: the forecast file's columns.
    """
    bt_cfg = cfg.backtest
    plan: dict[str, tuple[str, dict[str, Any]]] = {}
    thresholds = {
        "entry_threshold": bt_cfg.entry_threshold,
        "exit_threshold": bt_cfg.exit_threshold,
    }
    for name in cfg.forecasters.enabled():
        if name in columns:
            plan[name] = ("forecast", dict(thresholds))
    if bt_cfg.sma_crossover is not None:
        plan["sma_crossover"] = ("sma_crossover", bt_cfg.sma_crossover.model_dump())
    if bt_cfg.ema_crossover is not None:
        plan["ema_crossover"] = ("ema_crossover", bt_cfg.ema_crossover.model_dump())
    if bt_cfg.buy_and_hold:
        plan["buy_and_hold"] = ("buy_and_hold", {})
    for name in cfg.forecasters.with_capability("stochastic"):
        for column in seed_columns(columns, name):
            plan[column] = ("forecast", dict(thresholds))
    return plan
