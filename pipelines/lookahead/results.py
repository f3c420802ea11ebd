"""What a look-ahead check finds: findings, per-component checks and the report, and the
cut dates and noise every check uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.bars import format_timestamp
from pipelines.execution.walkforward import Fold

#: Relative tolerance of the forecaster comparisons: float noise, never a leak.
RTOL = 1e-12
POINTS = 3
EPOCHS = 2

FORECASTER = "forecaster"
STRATEGY = "strategy"

#: A strategy to check: (registered name or bt.Strategy class, params[, forecast column]).
StrategySpec = tuple[Any, ...]


# Results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One failed check of one component on one instrument.

    Args:
        check: ``truncation``, ``perturbation``, ``fill``, ``repeat`` or ``run``.
        leak: True for look-ahead (a date moved), False for an error.
        date: The first leaking date (for an error: the cut date, if any).
        detail: What happened, in words.
    """

    check: str
    leak: bool
    date: pd.Timestamp | None
    detail: str


@dataclass
class ComponentCheck:
    """The look-ahead checks of one component on one instrument.

    Args:
        name: The component's name (the config's forecaster or strategy name).
        kind: ``forecaster`` or ``strategy``.
        instrument: The instrument checked on.
        cuts: The cut dates checked.
        fills: Filled orders whose fill bar was checked (strategies).
        findings: The failed checks.
        forecasts: A forecaster's forecasts from the full bars over every
            checked test period (what its forecast strategy trades).
    """

    name: str
    kind: str
    instrument: str = ""
    cuts: list[pd.Timestamp] = field(default_factory=list)
    fills: int = 0
    findings: list[Finding] = field(default_factory=list)
    forecasts: pd.Series | None = None

    @property
    def result(self) -> str:
        """``ok``, ``LEAK`` (a date moved) or ``ERROR`` (a run failed)."""
        if any(f.leak for f in self.findings):
            return "LEAK"
        return "ERROR" if self.findings else "ok"

    @property
    def first(self) -> Finding | None:
        """The leak with the earliest date (else the first error)."""
        leaks = [f for f in self.findings if f.leak and f.date is not None]
        if leaks:
            return min(leaks, key=lambda f: f.date)
        return self.findings[0] if self.findings else None


@dataclass
class CheckReport:
    """Every component checked on every instrument, with the table and the verdict."""

    checks: list[ComponentCheck] = field(default_factory=list)

    def components(self) -> dict[tuple[str, str], list[ComponentCheck]]:
        """(kind, name) -> its checks over the instruments, forecasters first."""
        out: dict[tuple[str, str], list[ComponentCheck]] = {}
        for check in sorted(self.checks, key=lambda c: c.kind != FORECASTER):
            out.setdefault((check.kind, check.name), []).append(check)
        return out

    def table(self) -> str:
        """One row per component: points checked, result and the first leaking date."""
        rows = []
        for (kind, name), checks in self.components().items():
            first, where = _first_of(checks)
            results = {c.result for c in checks}
            rows.append(
                {
                    "component": name,
                    "kind": kind,
                    "instruments": len(checks),
                    "points": sum(len(c.cuts) for c in checks),
                    "fills": sum(c.fills for c in checks) if kind == STRATEGY else "-",
                    "result": next((r for r in ("LEAK", "ERROR") if r in results), "ok"),
                    "first leak": format_timestamp(first.date) if first and first.leak else "-",
                    "where": where,
                }
            )
        return pd.DataFrame(rows).to_string(index=False) if rows else "(nothing checked)"

    def failures(self) -> list[str]:
        """One line per failed component, naming it and its first leaking date."""
        lines = []
        for (kind, name), checks in self.components().items():
            first, where = _first_of(checks)
            if first is None:
                continue
            if first.leak:
                lines.append(
                    f"LEAK: {kind} {name!r}: first leaking date {format_timestamp(first.date)} "
                    f"({where}: {first.detail})"
                )
            else:
                lines.append(f"ERROR: {kind} {name!r} ({where}): {first.detail}")
        return lines

    @property
    def exit_code(self) -> int:
        """0 when every component passed, else 1."""
        return 1 if any(c.findings for c in self.checks) else 0


def _first_of(checks: Sequence[ComponentCheck]) -> tuple[Finding | None, str]:
    found = [(c.first, c.instrument) for c in checks if c.first is not None]
    if not found:
        return None, "-"
    leaks = [(f, i) for f, i in found if f.leak]
    finding, instrument = min(leaks, key=lambda p: p[0].date) if leaks else found[0]
    return finding, f"{instrument}, {finding.check}" if instrument else finding.check


# Cut dates, noise, comparisons --------------------------------------------------------


def cut_positions(fold: Fold, points: int = POINTS) -> list[int]:
    """``points`` cut positions spread evenly over ``fold``'s test period, first bar included.

    The last test bar is never a cut (nothing after it in the fold to remove).
    """
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points!r}")
    last = max(fold.test_end - 1, fold.test_start)
    spread = np.linspace(fold.test_start, last, num=points)
    return sorted({int(round(p)) for p in spread})


def noise_bars(bars: pd.DataFrame, cut: int, seed: int | Sequence[int] = 0) -> pd.DataFrame:
    """``bars`` with every bar after position ``cut`` replaced by a random walk of OHLCV.

    The walk starts at the close of ``cut`` with log returns of the standard
    deviation of those up to it; opens, highs, lows and volumes are drawn
    around it so that every bar keeps the bars contract (``core.bars``).
    """
    out = bars.copy()
    n = len(bars) - cut - 1
    if n <= 0:
        return out
    rng = np.random.default_rng(seed)
    close = bars["close"].to_numpy(dtype=np.float64)
    past = np.diff(np.log(close[: cut + 1]))
    sigma = float(np.std(past)) if len(past) > 1 else 0.0
    sigma = sigma if np.isfinite(sigma) and sigma > 0 else 0.01
    walk = close[cut] * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))
    opens = np.concatenate([[close[cut]], walk[:-1]]) * np.exp(rng.normal(0.0, sigma / 4, n))
    wicks = np.exp(np.abs(rng.normal(0.0, sigma / 2, (2, n))))
    noise = {
        "open": opens,
        "high": np.maximum(opens, walk) * wicks[0],
        "low": np.minimum(opens, walk) / wicks[1],
        "close": walk,
    }
    if "volume" in bars.columns:
        volume = bars["volume"].to_numpy(dtype=np.float64)[: cut + 1]
        noise["volume"] = float(np.median(volume)) * rng.lognormal(0.0, 0.5, n)
    for column, values in noise.items():
        out.iloc[cut + 1 :, out.columns.get_loc(column)] = values
    return out


def first_difference(
    expected: pd.Series, actual: pd.Series, rtol: float = RTOL
) -> pd.Timestamp | None:
    """The first date of ``expected`` where ``actual`` differs by more than ``rtol`` (relative).

    NaN equals NaN; a date missing from ``actual`` differs.
    """
    a = expected.to_numpy(dtype=np.float64)
    b = actual.reindex(expected.index).to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        close = np.abs(a - b) <= rtol * np.maximum(np.abs(a), np.abs(b))
    same = (a == b) | (np.isnan(a) & np.isnan(b)) | close
    bad = np.flatnonzero(~same)
    return expected.index[bad[0]] if len(bad) else None


def failure_text(err: Exception) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split()) or '(no message)'}"
