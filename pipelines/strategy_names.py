"""Names of strategies, forecast columns and cost-sweep points, shared by backtest and report.

A forecast file (``forecasts/<INST>.parquet``) has one column per forecaster
(``random_walk``, ``sma``, ..., ``lstm``) and, with ``forecasters.lstm.seeds``,
one ``lstm_seed<k>`` column per seed; ``lstm`` is the mean of the seeds. The
backtest stage runs a strategy named after each column (plus the crossovers
and ``buy_and_hold``); the report groups them by ``strategy_kind``.

This module imports nothing heavy, so the report can use it without loading
Backtrader.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

BENCHMARK = "buy_and_hold"
LSTM = "lstm"
RANDOM_WALK = "random_walk"
SEED_COLUMN = re.compile(rf"{LSTM}_seed(\d+)")


def seed_columns(columns: Iterable[str]) -> list[str]:
    """The per-seed LSTM forecast columns (``lstm_seed<k>``) among ``columns``, in seed order."""
    seeds = [c for c in columns if SEED_COLUMN.fullmatch(c)]
    return sorted(seeds, key=lambda c: int(SEED_COLUMN.fullmatch(c).group(1)))


def strategy_kind(strategy: str) -> str:
    """``benchmark`` (buy-and-hold), ``crossover``, ``seed`` (one LSTM seed) or ``forecast``."""
    if strategy == BENCHMARK:
        return "benchmark"
    if strategy.endswith("_crossover"):
        return "crossover"
    if SEED_COLUMN.fullmatch(strategy):
        return "seed"
    return "forecast"


def cost_label(bp: float) -> str:
    """A cost-sweep point's name in the backtest stage's files: ``10.0`` -> ``"10"``."""
    return f"{float(bp):g}"
