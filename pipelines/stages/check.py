"""``python -m pipelines check``: look-ahead analysis of every configured forecaster and strategy.

The stage loads the config's own data, selects the components and prints one
row per component; the checks themselves, and what they prove, are
:mod:`pipelines.lookahead`'s. It exits 1 when any component leaks or fails,
naming it and its first leaking date.
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
from typing import Any

import pandas as pd

from models.base import Forecaster
from pipelines.cli import run_stage, setup_logging, stage_parser
from pipelines.common.errors import ConfigError
from pipelines.config import Config, load_config, parse_set
from pipelines.execution.backtest_plan import Planned, execution_from_config, strategy_plan
from pipelines.execution.walkforward import Fold, make_folds, make_forecaster, required_train_bars
from pipelines.lookahead.forecasters import check_forecaster
from pipelines.lookahead.results import (
    EPOCHS,
    POINTS,
    RTOL,
    CheckReport,
    ComponentCheck,
    StrategySpec,
    cut_positions,
)
from pipelines.lookahead.strategies import check_strategy
from pipelines.sources.load import load_instrument
from strategies.engine import warmup_bars

log = logging.getLogger("gatecast.check")

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
        strategies: Name -> (registered strategy or ``bt.Strategy`` class, params[,
            forecast column]), instead of the backtest stage's plan (``strategy_plan``).
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
    planned = {name: Planned(*value) for name, value in strategies.items()}
    warmup = warmup_bars((p.strategy, p.params) for p in planned.values())
    cuts = [cut for fold in folds for cut in cut_positions(fold, points)]
    checks = []
    for name, (strategy, params, column) in planned.items():
        started = time.perf_counter()
        check = check_strategy(
            strategy,
            params,
            bars,
            cuts,
            trade_start=folds[0].test_start_date,
            execution=execution,
            warmup=warmup,
            forecast=forecasts.get(column or name, next(iter(forecasts.values()), None)),
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
