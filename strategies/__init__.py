"""gatecast strategies: Backtrader feeds, strategies and the backtest engine (no keras, no mlflow).

Conventions of execution and metrics: see the docstring of ``strategies.engine``.
"""

from strategies.buyhold import BuyAndHold
from strategies.crossover import EmaCrossover, SmaCrossover
from strategies.engine import (
    STRATEGIES,
    BacktestResult,
    ExecutionSettings,
    PercentCommission,
    PercentOfEquitySizer,
    resolve_strategy,
    run_backtest,
    warmup_bars,
)
from strategies.feeds import ForecastData, align_forecast, make_feed, validate_bars
from strategies.forecast import ForecastStrategy
from strategies.metrics import METRIC_KEYS, compute_metrics

__all__ = [
    "METRIC_KEYS",
    "STRATEGIES",
    "BacktestResult",
    "BuyAndHold",
    "EmaCrossover",
    "ExecutionSettings",
    "ForecastData",
    "ForecastStrategy",
    "PercentCommission",
    "PercentOfEquitySizer",
    "SmaCrossover",
    "align_forecast",
    "compute_metrics",
    "make_feed",
    "resolve_strategy",
    "run_backtest",
    "validate_bars",
    "warmup_bars",
]
