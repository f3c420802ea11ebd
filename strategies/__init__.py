"""gatecast strategies: Backtrader feeds, strategies and the backtest engine (no keras, no mlflow).

Conventions of execution and metrics: see the docstring of ``strategies.engine``.

The names below are loaded when first used (PEP 562), so a module that needs
only ``strategies.metrics`` (the report stage) does not import Backtrader.
"""

from __future__ import annotations

import importlib
from typing import Any

from strategies.metrics import METRIC_KEYS, compute_metrics

# public name -> the module that defines it
_LAZY = {
    "BuyAndHold": "strategies.buyhold",
    "EmaCrossover": "strategies.crossover",
    "SmaCrossover": "strategies.crossover",
    "BacktestResult": "strategies.engine",
    "ExecutionSettings": "strategies.engine",
    "PercentCommission": "strategies.broker",
    "PercentOfEquitySizer": "strategies.broker",
    "resolve_strategy": "strategies.engine",
    "Strategy": "strategies.base",
    "run_backtest": "strategies.engine",
    "warmup_bars": "strategies.engine",
    "ForecastData": "strategies.feeds",
    "align_forecast": "strategies.feeds",
    "make_feed": "strategies.feeds",
    "validate_bars": "strategies.feeds",
    "ForecastStrategy": "strategies.forecast",
    "PORTFOLIO_STRATEGIES": "strategies.portfolio",
    "PortfolioResult": "strategies.portfolio",
    "run_portfolio": "strategies.portfolio",
    "EqualWeightBuyAndHold": "strategies.topk",
    "TopK": "strategies.topk",
}

__all__ = ["METRIC_KEYS", "compute_metrics", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'strategies' has no attribute {name!r}")
