"""The look-ahead check of a strategy: fills after the deciding bar, truncation and
perturbation of the orders (see ``pipelines.lookahead``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.bars import format_timestamp
from pipelines.lookahead.results import STRATEGY, ComponentCheck, Finding, failure_text, noise_bars
from strategies.engine import ExecutionSettings, run_backtest
from strategies.feeds import date_numbers

# Strategies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderRecord:
    """One order as Backtrader's broker kept it: when it was decided and when it filled."""

    created: pd.Timestamp
    side: str
    size: float
    executed: pd.Timestamp | None
    price: float
    filled: float

    @property
    def decision(self) -> tuple[Any, ...]:
        return (self.created, self.side, self.size)

    @property
    def fill(self) -> tuple[Any, ...]:
        return (self.created, self.executed, self.price, self.filled)


def order_log(
    bars: pd.DataFrame,
    strategy: Any,
    params: Mapping[str, Any] | None = None,
    execution: ExecutionSettings | None = None,
    *,
    trade_start: pd.Timestamp,
    warmup: int | None = None,
    forecast: pd.Series | None = None,
) -> list[OrderRecord]:
    """Every order a backtest sent (``strategies.engine.run_backtest``), in order.

    Read from the broker after the run, so an order sent on the last bar,
    which never fills, is there too.
    """
    result = run_backtest(
        bars,
        strategy,
        dict(params or {}),
        execution,
        trade_start=trade_start,
        forecast=forecast,
        warmup=warmup,
        keep_cerebro=True,
    )
    dates = dict(zip(date_numbers(bars.index).tolist(), bars.index, strict=True))
    records = []
    for order in result.cerebro.broker.orders:
        executed = order.executed.size != 0
        records.append(
            OrderRecord(
                created=dates[order.created.dt],
                side="buy" if order.isbuy() else "sell",
                size=float(order.created.size),
                executed=dates[order.executed.dt] if executed else None,
                price=float(order.executed.price) if executed else float("nan"),
                filled=float(order.executed.size),
            )
        )
    return records


def _first_mismatch(expected: list[tuple], actual: list[tuple]) -> pd.Timestamp | None:
    """The date (first field) of the first entry where two lists of orders part."""
    n = min(len(expected), len(actual))
    for a, b in zip(expected[:n], actual[:n], strict=True):
        if a != b:
            return min(a[0], b[0])
    longer = expected if len(expected) > n else actual
    return longer[n][0] if len(longer) > n else None


def _same_orders(
    expected: list[OrderRecord], actual: list[OrderRecord], when: pd.Timestamp
) -> pd.Timestamp | None:
    """The first date at which the decisions or fills on bars <= ``when`` differ."""
    dates = [
        _first_mismatch(
            [o.decision for o in expected if o.created <= when],
            [o.decision for o in actual if o.created <= when],
        ),
        _first_mismatch(
            [o.fill for o in expected if o.executed is not None and o.executed <= when],
            [o.fill for o in actual if o.executed is not None and o.executed <= when],
        ),
    ]
    found = [d for d in dates if d is not None]
    return min(found) if found else None


def check_strategy(
    strategy: Any,
    params: Mapping[str, Any] | None,
    bars: pd.DataFrame,
    cuts: Iterable[int],
    *,
    trade_start: pd.Timestamp,
    execution: ExecutionSettings | None = None,
    warmup: int | None = None,
    forecast: pd.Series | None = None,
    seed: int = 0,
    name: str = "",
    instrument: str = "",
) -> ComponentCheck:
    """Fill, truncation and perturbation checks of one strategy on one instrument.

    Args:
        strategy: An engine strategy name (``strategies.engine.STRATEGIES``) or
            a ``bt.Strategy`` subclass.
        params: Its parameters.
        bars: The instrument's bars.
        cuts: Cut positions in ``bars``; those before the second bar from
            ``trade_start`` move up to it (a backtest needs two bars).
        trade_start: First date the strategy may act on.
        execution: The execution model (default ``ExecutionSettings()``).
        warmup: Bars fed before ``trade_start`` (``strategies.engine.warmup_bars``).
        forecast: The forecast line, on the bars' dates (NaN where none).
        seed: Seeds the noise of the perturbation.
        name: The component's name; instrument: the instrument's, for the report.
    """
    check = ComponentCheck(
        name or str(getattr(strategy, "__name__", strategy)), STRATEGY, instrument
    )
    if forecast is not None:
        forecast = forecast.reindex(bars.index).astype(np.float64)
    run = functools.partial(
        order_log,
        strategy=strategy,
        params=params,
        execution=execution,
        trade_start=trade_start,
        warmup=warmup,
    )
    try:
        reference = run(bars, forecast=forecast)
    except Exception as err:  # noqa: BLE001 -- reported as the component's error
        check.findings.append(Finding("run", False, None, failure_text(err)))
        return check
    filled = [o for o in reference if o.executed is not None]
    check.fills = len(filled)
    early = [o for o in filled if o.executed <= o.created]
    if early:
        first = min(early, key=lambda o: o.created)
        detail = (
            f"an order decided on {format_timestamp(first.created)} was filled on "
            f"{format_timestamp(first.executed)}, not on a later bar"
        )
        check.findings.append(Finding("fill", True, first.created, detail))
    lowest = int(bars.index.searchsorted(trade_start)) + 1
    for cut in sorted(c for c in {max(int(c), lowest) for c in cuts} if c < len(bars) - 1):
        check.cuts.append(bars.index[cut])
        check.findings.extend(_strategy_cut(run, bars, forecast, reference, cut, seed))
    return check


def _strategy_cut(
    run: Callable[..., list[OrderRecord]],
    bars: pd.DataFrame,
    forecast: pd.Series | None,
    reference: list[OrderRecord],
    cut: int,
    seed: int,
) -> list[Finding]:
    """Orders decided or filled on bars <= the one at ``cut``, without and with other futures."""
    when = bars.index[cut]
    shown = format_timestamp(when)
    noisy = noise_bars(bars, cut, (seed, cut))
    noisy_forecast = None
    if forecast is not None:
        rng = np.random.default_rng((seed, cut, 1))
        later = noisy["close"].to_numpy()[cut + 1 :]
        noisy_forecast = forecast.copy()
        noisy_forecast.iloc[cut + 1 :] = later * np.exp(rng.normal(0.0, 0.01, len(later)))
    variants = {
        "truncation": (
            bars.iloc[: cut + 1],
            None if forecast is None else forecast.iloc[: cut + 1],
            "removed",
        ),
        "perturbation": (noisy, noisy_forecast, "replaced by noise"),
    }
    findings = []
    for check, (frame, line, how) in variants.items():
        try:
            orders = run(frame, forecast=line)
        except Exception as err:  # noqa: BLE001 -- a failure without the future is a finding
            leak = check == "truncation"
            detail = f"the backtest failed with the bars after {shown} {how}: {failure_text(err)}"
            findings.append(Finding(check, leak, when, detail))
            continue
        moved = _same_orders(reference, orders, when)
        if moved is not None:
            detail = (
                f"the orders of {format_timestamp(moved)} changed when the bars after {shown} "
                f"were {how}"
            )
            findings.append(Finding(check, True, moved, detail))
    return findings
