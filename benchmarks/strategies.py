"""Bars per second of every strategy on a bundled instrument, and ForecastStrategy / SMA crossover.

Each timing is one whole ``run_backtest`` call (feed, Backtrader run in the
default runonce/preload mode, trade log and metrics) on ``data/sample/GSPC.csv``,
adjusted, in three settings:

- ``whole``: every bar fed and traded from the first (the engine's speed per bar);
- ``oos``: what the backtest stage does: only the last ``--oos-bars`` bars are
  traded (the default config's four 250-bar folds) and Backtrader is fed the
  warm-up before them (``strategies.warmup_bars`` of the four strategies);
- ``oos_whole_history``: the same trades with every earlier bar fed as well
  (what the stage did before the warm-up trim).

The strategies and settings run interleaved, in a rotating order, for several
rounds, each after a full garbage collection; the median of each is
reported, with bars per second counted over the bars fed. The forecast
column is a 20-bar moving average of the closes computed with pandas
beforehand, as a forecaster's saved output would be (NaN before the traded
period in the ``oos`` settings). Goal: the forecast strategy costs at most
1.3x the SMA crossover, because it only reads a line.

``python -m benchmarks strategies [--rounds N] [--oos-bars N]``
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
from pathlib import Path

import pandas as pd

from strategies import ExecutionSettings, run_backtest, warmup_bars

REPO = Path(__file__).resolve().parent.parent
GOAL = 1.3
CASES = {
    "forecast": ("forecast", {}),
    "sma_crossover": ("sma_crossover", {"fast": 20, "slow": 50}),
    "ema_crossover": ("ema_crossover", {"fast": 12, "slow": 26}),
    "buy_and_hold": ("buy_and_hold", {}),
}
# A setting: (trade_start, forecast, warmup, bars fed).
Setting = tuple[pd.Timestamp | None, pd.Series, int | None, int]


def load_gspc() -> pd.DataFrame:
    raw = pd.read_csv(
        REPO / "data/sample/GSPC.csv", parse_dates=["Date"], index_col="Date"
    ).dropna()
    factor = raw["Adj Close"] / raw["Close"]
    bars = pd.DataFrame({c.lower(): raw[c] * factor for c in ("Open", "High", "Low", "Close")})
    bars["volume"] = raw["Volume"].astype(float)
    bars.index.name = "date"
    return bars


def main(argv: list[str] | None = None) -> int:
    """Time every strategy in every setting; print the tables and save them as JSON."""
    args = _parse_args(argv)
    bars = load_gspc()
    execution = ExecutionSettings(commission=0.001, slippage=0.0005, percent=95)
    warmup = warmup_bars(CASES.values())
    settings = _settings(bars, args.oos_bars, warmup)
    times, orders = _interleaved_times(bars, execution, settings, args.rounds)

    print(
        f"GSPC: {len(bars)} bars; oos = last {args.oos_bars} traded, warm-up {warmup}; "
        f"{args.rounds} interleaved rounds, median of each"
    )
    record_settings = {
        setting: _print_setting(setting, fed, times, orders)
        for setting, (_, _, _, fed) in settings.items()
    }
    trim = _print_trim_speedup(times)

    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "strategies",
        "bars": len(bars),
        "oos_bars": args.oos_bars,
        "warmup": warmup,
        "rounds": args.rounds,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "settings": record_settings,
        "trim_speedup": trim,
        "goal": GOAL,
    }
    (out / "strategies.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; no arguments (None or []) gives the defaults."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks strategies")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--oos-bars", type=int, default=1000)
    return parser.parse_args(argv or [])


def _settings(bars: pd.DataFrame, oos_bars: int, warmup: int) -> dict[str, Setting]:
    """The three settings of the module docstring, each (trade_start, forecast, warmup, bars fed).

    The forecast is a 20-bar moving average of the closes, NaN before the
    traded period in the ``oos`` settings.
    """
    forecast = bars["close"].rolling(20).mean().rename("sma")
    first = len(bars) - oos_bars
    start = bars.index[first]
    oos_forecast = forecast.where(bars.index >= start)
    return {
        "whole": (None, forecast, None, len(bars)),
        "oos": (start, oos_forecast, warmup, len(bars) - max(first - warmup, 0)),
        "oos_whole_history": (start, oos_forecast, None, len(bars)),
    }


def _time_one_run(
    bars: pd.DataFrame,
    execution: ExecutionSettings,
    setting: Setting,
    name: str,
) -> tuple[float, int]:
    """Seconds of one ``run_backtest`` of strategy ``name`` in ``setting``, and its orders."""
    trade_start, fc, warm, _ = setting
    strategy, params = CASES[name]
    # Each run leaves Backtrader's reference cycles behind; without a collection here a
    # full collection of the earlier runs' garbage (0.1 s or more) lands in whichever
    # run happens to cross the threshold.
    gc.collect()
    t0 = time.perf_counter()
    result = run_backtest(
        bars, strategy, params, execution, trade_start=trade_start, forecast=fc, warmup=warm
    )
    return time.perf_counter() - t0, int(result.metrics["orders"])


def _interleaved_times(
    bars: pd.DataFrame,
    execution: ExecutionSettings,
    settings: dict[str, Setting],
    rounds: int,
) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], int]]:
    """Seconds of every (setting, strategy) in each round, and its orders.

    One untimed run of each first (imports, caches); then ``rounds`` rounds,
    each starting one run later in the list, so that no pair always runs first.
    """
    runs = [(s, n) for s in settings for n in CASES]
    for setting, name in runs:  # warm-up: imports, caches
        _time_one_run(bars, execution, settings[setting], name)
    times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    orders: dict[tuple[str, str], int] = {}
    for r in range(rounds):
        for run in runs[r % len(runs) :] + runs[: r % len(runs)]:
            setting, name = run
            seconds, orders[run] = _time_one_run(bars, execution, settings[setting], name)
            times[run].append(seconds)
    return times, orders


def _print_setting(
    setting: str,
    fed: int,
    times: dict[tuple[str, str], list[float]],
    orders: dict[tuple[str, str], int],
) -> dict:
    """Print one setting's table and its forecast / SMA ratio against ``GOAL``; its record."""
    print(f"\n{setting} ({fed} bars fed)")
    print(f"{'strategy':15} {'median s':>9} {'bars/s':>9} {'orders':>7}")
    rows = {}
    for name in CASES:
        med, n_orders = statistics.median(times[(setting, name)]), orders[(setting, name)]
        rows[name] = {"median_s": med, "bars_per_s": fed / med, "orders": n_orders}
        print(f"{name:15} {med:9.3f} {fed / med:9.0f} {n_orders:7d}")
    ratio = rows["forecast"]["median_s"] / rows["sma_crossover"]["median_s"]
    verdict = "meets" if ratio <= GOAL else "misses"
    print(f"ForecastStrategy / SMA crossover time: {ratio:.2f} ({verdict} goal <= {GOAL})")
    return {
        "bars_fed": fed,
        "strategies": rows,
        "ratio_forecast_to_sma": ratio,
    }


def _print_trim_speedup(times: dict[tuple[str, str], list[float]]) -> dict[str, float]:
    """Print and return each strategy's median time on the whole history over the trimmed one."""
    trim = {
        name: statistics.median(times[("oos_whole_history", name)])
        / statistics.median(times[("oos", name)])
        for name in CASES
    }
    print("\nwarm-up trim speed-up (oos_whole_history / oos): ", end="")
    print(", ".join(f"{n} {v:.1f}x" for n, v in trim.items()))
    return trim
