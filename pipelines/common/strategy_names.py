"""Names of strategies, forecast columns and cost-sweep points, shared by backtest and report.

A forecast file (``forecasts/<INST>.parquet``) has one column per forecaster
(``random_walk``, ``sma``, ..., ``lstm``) and, for a stochastic forecaster, one
``<name>_seed<k>`` column per seed; ``<name>`` is the mean of its seeds. The
backtest stage runs a strategy named after each column (plus the strategies of
``backtest.strategies``); the report groups them by ``Config.strategy_kind``.

This module imports nothing heavy, so the report can use it without loading
Backtrader.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

RANDOM_WALK = "random_walk"
SEED_COLUMN = re.compile(r"(.+)_seed(\d+)")


def seed_column(forecaster: str, k: int) -> str:
    """The forecast column of seed ``k`` of a stochastic forecaster: ``<name>_seed<k>``."""
    return f"{forecaster}_seed{k}"


def seed_columns(columns: Iterable[str], forecaster: str | None = None) -> list[str]:
    """The per-seed forecast columns (``<name>_seed<k>``) among ``columns``, by forecaster
    then seed; only ``forecaster``'s when given."""
    seeds = [
        (match.group(1), int(match.group(2)), c)
        for c in columns
        if (match := SEED_COLUMN.fullmatch(c)) and forecaster in (None, match.group(1))
    ]
    return [c for *_, c in sorted(seeds)]


def is_seed(name: str) -> bool:
    """Whether ``name`` is the column (and strategy) of one seed of a stochastic forecaster."""
    return SEED_COLUMN.fullmatch(name) is not None


def cost_label(bp: float) -> str:
    """A cost-sweep point's name in the backtest stage's files: ``10.0`` -> ``"10"``."""
    return f"{float(bp):g}"
