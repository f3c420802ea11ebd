"""What the backtest stage runs on an instrument: the strategies of a forecast file
(``strategy_plan``), the execution settings and the cost sweep's points, all from the
config. Shared by the backtest stage and the look-ahead check."""

from __future__ import annotations

from typing import Any, NamedTuple

from core.periods import PERIODS_PER_YEAR
from pipelines.common.errors import ConfigError
from pipelines.common.strategy_names import seed_columns
from pipelines.config import Config
from pipelines.config.sections import BacktestConfig
from pipelines.config.strategies import load_strategy
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


class Planned(NamedTuple):
    """One strategy of an instrument's plan.

    Attributes:
        strategy: its registered kind (what ``strategies.engine.run_backtest`` resolves).
        params: its parameters.
        forecast: the forecast column it trades (None for a strategy that trades none).
    """

    strategy: str
    params: dict[str, Any]
    forecast: str | None = None


def strategy_plan(cfg: Config, columns: list[str]) -> dict[str, Planned]:
    """Strategy name -> what runs under that name, for a forecast file with ``columns``.

    ``backtest.forecast_strategy`` on each forecaster column present, the
    strategies of ``backtest.strategies`` (one that trades a forecast on its
    ``forecaster``'s column, ``report.candidate`` by default, where present),
    then ``backtest.forecast_strategy`` on each seed column of a stochastic
    forecaster, with the same parameters.

    Args:
        cfg: the experiment.
        columns: the forecast file's columns.
    """
    bt_cfg = cfg.backtest
    traded = _forecast_params(cfg)
    plan: dict[str, Planned] = {}
    for name in cfg.forecasters.enabled():
        if name in columns:
            plan[name] = Planned(bt_cfg.forecast_strategy, dict(traded), name)
    for name, spec in bt_cfg.strategies.items():
        column = (spec.forecaster or cfg.report.candidate) if spec.cls.trades_forecast else None
        if column is None or column in columns:
            plan[name] = Planned(spec.kind, spec.arguments(), column)
    for name in cfg.forecasters.with_capability("stochastic"):
        for column in seed_columns(columns, name):
            plan[column] = Planned(bt_cfg.forecast_strategy, dict(traded), column)
    return plan


def _forecast_params(cfg: Config) -> dict[str, Any]:
    """The parameters of ``backtest.forecast_strategy``: ``backtest.entry_threshold`` and
    ``exit_threshold``, for a class that has them."""
    known = load_strategy(cfg.backtest.forecast_strategy, "backtest.forecast_strategy")
    thresholds = {
        "entry_threshold": cfg.backtest.entry_threshold,
        "exit_threshold": cfg.backtest.exit_threshold,
    }
    return {k: v for k, v in thresholds.items() if k in known.parameter_defaults()}
