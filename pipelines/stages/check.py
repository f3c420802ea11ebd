"""``python -m pipelines check``: look-ahead analysis of every configured forecaster and strategy.

Modelled on freqtrade's ``lookahead-analysis``: nothing computed for a date
``t`` may change when the bars after ``t`` change. The check runs on the
config's own data (loaded from ``data.source`` as the data stage loads it, so
no earlier stage need have run) at cut dates ``T`` spread over the
walk-forward test periods (``cut_positions``: ``--points`` per fold).

Forecasters (``check_forecaster``), per fold: one fit on the fold's training
bars, then every prediction from that same fitted object (so a stochastic fit
cannot pass for a leak), from the training start to the test end, as the train
stage does:

- *repeat*: predicting twice on the same bars gives the same forecasts, or
  the checks below would mean nothing (reported as an error);
- *truncation*: predicting with every bar after ``T`` removed;
- *perturbation*: predicting with every bar after ``T`` replaced by a random
  walk of plausible OHLCV (``noise_bars``, seeded by the config's seed);

and the forecasts dated ``<= T`` must equal those from the full bars within
``rtol`` (relative, default 1e-12, for float noise; NaN equals NaN; ``--rtol
0`` asks for bit-identical). The first date where they differ is the leak.

Strategies (``check_strategy``), each backtested as the backtest stage runs it
(``pipelines.stages.backtest.strategy_plan``, the stage's execution settings and
warm-up, trading from the first test date; a forecast strategy reads the
forecasts its forecaster made above from the full bars, and every other
strategy the first forecaster's, so that the forecast line is checked too),
with every order read back from Backtrader's broker:

- *fill*: every filled order was filled on a bar strictly after the bar on
  which it was created (decided); a fill on the decision bar (cheat-on-close)
  is a leak dated at that bar;
- *truncation* and *perturbation*, as above, on the bars and the forecast
  line: the orders decided on bars ``<= T`` (date, side, size) and the fills
  on bars ``<= T`` (date, price, size) must be exactly the same.

A component that runs on the full bars but raises once the bars after ``T``
are removed depends on them: a leak dated ``T``. Any other exception is an
error. The command prints one row per component and exits 1 when any
component leaks or fails, naming it and its first leaking date.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.bars import format_timestamp
from models.base import Forecaster
from pipelines.cli import run_stage, setup_logging, stage_parser
from pipelines.common.errors import ConfigError
from pipelines.config import Config, load_config, parse_set
from pipelines.execution.walkforward import Fold, make_folds, make_forecaster, required_train_bars
from pipelines.sources.load import load_instrument
from pipelines.stages.backtest import execution_from_config, strategy_plan
from strategies.engine import ExecutionSettings, run_backtest, warmup_bars
from strategies.feeds import date_numbers

log = logging.getLogger("gatecast.check")

#: Relative tolerance of the forecaster comparisons: float noise, never a leak.
RTOL = 1e-12
POINTS = 3
EPOCHS = 2

FORECASTER = "forecaster"
STRATEGY = "strategy"

#: A strategy as the backtest stage plans it: (engine name or bt.Strategy class, params).
StrategySpec = tuple[Any, dict[str, Any]]


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


def _failure(err: Exception) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split()) or '(no message)'}"


# Forecasters --------------------------------------------------------------------------


def check_forecaster(
    factory: Callable[[], Forecaster],
    bars: pd.DataFrame,
    folds: Sequence[Fold],
    *,
    points: int = POINTS,
    seed: int = 0,
    rtol: float = RTOL,
    name: str | None = None,
    instrument: str = "",
) -> ComponentCheck:
    """Truncation, perturbation and repeat checks of one forecaster over ``folds``.

    Args:
        factory: Returns a fresh, unfitted forecaster (one is fit per fold).
        bars: The instrument's bars (the index the folds were made from).
        folds: Walk-forward folds of ``bars`` (``make_folds``).
        points: Cut dates per fold (``cut_positions``).
        seed: Seeds the noise of the perturbation.
        rtol: Relative tolerance of the comparisons (0: bit-identical).
        name: The component's name (default: the forecaster's ``name``).
        instrument: The instrument's name, for the report.
    """
    check = ComponentCheck(name or "", FORECASTER, instrument)
    pieces = []
    for fold in folds:
        window = bars.iloc[fold.train_start : fold.test_end + 1]
        start = fold.test_start_date
        try:
            forecaster = factory()
            check.name = check.name or forecaster.name
            forecaster.fit(bars.iloc[fold.train_slice])
            reference = forecaster.predict(window, start)
            again = forecaster.predict(window, start)
        except Exception as err:  # noqa: BLE001 -- reported as the component's error
            check.findings.append(
                Finding("run", False, None, f"fold {fold.number}: " + _failure(err))
            )
            return check
        pieces.append(reference.astype(np.float64))
        moved = first_difference(reference, again, rtol)
        if moved is not None:
            detail = (
                f"two predictions on the same bars differ from {format_timestamp(moved)}: "
                "predict is not deterministic, so look-ahead cannot be checked"
            )
            check.findings.append(Finding("repeat", False, moved, detail))
            continue
        for cut in cut_positions(fold, points):
            check.cuts.append(bars.index[cut])
            local = cut - fold.train_start
            check.findings.extend(
                _forecaster_cut(forecaster, window, start, reference, local, seed, rtol)
            )
    if pieces:
        check.forecasts = pd.concat(pieces).rename(check.name)
    return check


def _forecaster_cut(
    forecaster: Forecaster,
    window: pd.DataFrame,
    start: pd.Timestamp,
    reference: pd.Series,
    cut: int,
    seed: int,
    rtol: float,
) -> list[Finding]:
    """The ``reference`` forecasts dated <= the bar at ``cut`` against those from the
    truncated and the perturbed ``window``."""
    when = window.index[cut]
    shown = format_timestamp(when)
    expected = reference.loc[:when]
    findings = []
    variants = {
        "truncation": (window.iloc[: cut + 1], "removed"),
        "perturbation": (noise_bars(window, cut, (seed, cut)), "replaced by noise"),
    }
    for check, (bars, how) in variants.items():
        try:
            actual = forecaster.predict(bars, start)
        except Exception as err:  # noqa: BLE001 -- a failure without the future is a finding
            leak = check == "truncation"
            detail = f"predict failed with the bars after {shown} {how}: {_failure(err)}"
            findings.append(Finding(check, leak, when, detail))
            continue
        moved = first_difference(expected, actual, rtol)
        if moved is not None:
            detail = (
                f"the forecast dated {format_timestamp(moved)} changed when the bars after "
                f"{shown} were {how}"
            )
            findings.append(Finding(check, True, moved, detail))
    return findings


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
        check.findings.append(Finding("run", False, None, _failure(err)))
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
            detail = f"the backtest failed with the bars after {shown} {how}: {_failure(err)}"
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


# The command --------------------------------------------------------------------------


def run_check(
    cfg: Config,
    *,
    instruments: Sequence[str] | None = None,
    only: Sequence[str] | None = None,
    forecasters: Mapping[str, Callable[[], Forecaster]] | None = None,
    strategies: Mapping[str, StrategySpec] | None = None,
    points: int = POINTS,
    rtol: float = RTOL,
) -> CheckReport:
    """Check every forecaster, then every strategy, on every instrument of ``cfg``.

    Args:
        cfg: The experiment: its data source, walk-forward, forecasters and backtest.
        instruments: A subset of ``data.instruments`` (default: all of them).
        only: Check only the components of these names.
        forecasters: Name -> a factory of fresh forecasters, instead of the
            config's (``make_forecaster``).
        strategies: Name -> (engine strategy or ``bt.Strategy`` class, params),
            instead of the backtest stage's plan (``strategy_plan``).
        points: Cut dates per walk-forward fold.
        rtol: Relative tolerance of the forecaster comparisons.

    Raises:
        ConfigError: An instrument or a name of ``only`` the config does not have.
    """
    names = _instruments(cfg, instruments)
    if forecasters is None:
        forecasters = {
            n: functools.partial(make_forecaster, n, cfg) for n in cfg.forecasters.enabled()
        }
    if strategies is None:
        strategies = strategy_plan(cfg, list(forecasters))
    forecasters, strategies = _selected(forecasters, strategies, only)
    built = [factory() for factory in forecasters.values()]
    min_history = max((required_train_bars(f) for f in built), default=1)
    report = CheckReport()
    with _device(cfg, any(getattr(type(f), "device", False) for f in built)):
        for instrument in names:
            bars = load_instrument(cfg, instrument)
            folds = make_folds(bars.index, cfg.walkforward, min_history)
            forecasts = {}
            for name, factory in forecasters.items():
                started = time.perf_counter()
                check = check_forecaster(
                    factory,
                    bars,
                    folds,
                    points=points,
                    seed=cfg.seed,
                    rtol=rtol,
                    name=name,
                    instrument=instrument,
                )
                report.checks.append(_logged(check, started))
                if check.forecasts is not None:
                    forecasts[name] = check.forecasts
            report.checks.extend(
                _check_strategies(cfg, strategies, bars, folds, forecasts, points, instrument)
            )
    return report


def _check_strategies(
    cfg: Config,
    strategies: Mapping[str, StrategySpec],
    bars: pd.DataFrame,
    folds: Sequence[Fold],
    forecasts: Mapping[str, pd.Series],
    points: int,
    instrument: str,
) -> list[ComponentCheck]:
    """Every strategy on one instrument, as the backtest stage runs them (one warm-up)."""
    execution = execution_from_config(cfg.backtest)
    warmup = warmup_bars(strategies.values())
    cuts = [cut for fold in folds for cut in cut_positions(fold, points)]
    checks = []
    for name, (strategy, params) in strategies.items():
        started = time.perf_counter()
        check = check_strategy(
            strategy,
            params,
            bars,
            cuts,
            trade_start=folds[0].test_start_date,
            execution=execution,
            warmup=warmup,
            forecast=forecasts.get(name, next(iter(forecasts.values()), None)),
            seed=cfg.seed,
            name=name,
            instrument=instrument,
        )
        checks.append(_logged(check, started))
    return checks


def _logged(check: ComponentCheck, started: float) -> ComponentCheck:
    log.info(
        "%s %s %s: %s, %d cut date(s), %.1f s",
        check.instrument,
        check.kind,
        check.name,
        check.result,
        len(check.cuts),
        time.perf_counter() - started,
    )
    return check


def _device(cfg: Config, needed: bool) -> Any:
    """The config's device for forecasters that declare one (``pipelines.execution.runtime``)."""
    if not needed:
        return contextlib.nullcontext()
    from pipelines.execution import runtime

    return runtime.device_scope(runtime.configure(cfg))


def _suggestion(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def _instruments(cfg: Config, wanted: Sequence[str] | None) -> list[str]:
    configured = list(cfg.data.instruments)
    if not wanted:
        return configured
    for name in wanted:
        if name not in configured:
            raise ConfigError(
                f"--instruments: {name!r} is not in data.instruments: "
                f"{_suggestion(name, configured)}configured: {', '.join(configured)} "
                "(add it to data.instruments, e.g. --set 'data.instruments=[...]')"
            )
    return list(dict.fromkeys(wanted))


def _selected(
    forecasters: Mapping[str, Callable[[], Forecaster]],
    strategies: Mapping[str, StrategySpec],
    only: Sequence[str] | None,
) -> tuple[dict[str, Callable[[], Forecaster]], dict[str, StrategySpec]]:
    if not only:
        return dict(forecasters), dict(strategies)
    known = list(dict.fromkeys([*forecasters, *strategies]))
    for name in only:
        if name not in known:
            raise ConfigError(
                f"--only: {name!r} names no configured forecaster or strategy: "
                f"{_suggestion(name, known)}configured: {', '.join(known)}"
            )
    return (
        {n: f for n, f in forecasters.items() if n in only},
        {n: s for n, s in strategies.items() if n in only},
    )


def check_config(path: str, sets: Sequence[str] = (), epochs: int = EPOCHS) -> Config:
    """The config with ``--set`` applied and ``epochs`` for each forecaster that has them.

    ``forecasters.<name>.epochs=<epochs>`` is added to the ``--set`` items for
    every forecaster that trains for a number of ``epochs`` (the LSTM), unless
    ``sets`` gives its epochs itself; ``epochs=0`` keeps the config's.
    """
    sets = list(sets)
    cfg = load_config(path, overrides=parse_set(sets) if sets else None)
    if not epochs:
        return cfg
    extra = [
        f"forecasters.{name}.epochs={epochs}"
        for name in cfg.forecasters.enabled()
        if isinstance(getattr(make_forecaster(name, cfg), "epochs", None), int)
        and not any(s.startswith(f"forecasters.{name}.epochs=") for s in sets)
    ]
    return load_config(path, overrides=parse_set(sets + extra)) if extra else cfg


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a number >= {low}, got {value}")
        return value

    return parse


def _names(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [n for value in values for n in value.split(",") if n]


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines check``: look-ahead analysis; exit 1 on a leak."""
    parser = stage_parser(
        "check",
        "Look-ahead analysis of every configured forecaster and strategy on the config's own "
        "data: forecasts and orders dated up to a cut date must not change when the bars "
        "after it are removed or replaced by noise, and no order may fill on the bar it was "
        "decided on. Prints a table; exits 1 naming each component that leaks.",
    )
    parser.add_argument(
        "--instruments", nargs="+", metavar="NAME", help="only these of data.instruments"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="only the forecasters and strategies named"
    )
    parser.add_argument(
        "--points",
        type=_at_least(1),
        default=POINTS,
        help="cut dates per walk-forward fold (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=_at_least(0),
        default=EPOCHS,
        help="epochs of forecasters that train for epochs, the LSTM (default: %(default)s; "
        "0 keeps the config's)",
    )
    parser.add_argument(
        "--rtol",
        type=float,
        default=RTOL,
        help="relative tolerance of the forecast comparisons (default: %(default)g; 0: exact)",
    )
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        cfg = check_config(args.config, args.set, args.epochs)
        report = run_check(
            cfg,
            instruments=_names(args.instruments),
            only=_names(args.only),
            points=args.points,
            rtol=args.rtol,
        )
        print(report.table())
        for line in report.failures():
            print(line, file=sys.stderr)
        if report.exit_code == 0:
            print(f"no look-ahead found in {len(report.components())} component(s)")
        return report.exit_code

    return run_stage(body, "check", verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
