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
    parser = argparse.ArgumentParser(prog="python -m benchmarks strategies")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--oos-bars", type=int, default=1000)
    args = parser.parse_args(argv or [])

    bars = load_gspc()
    forecast = bars["close"].rolling(20).mean().rename("sma")
    execution = ExecutionSettings(commission=0.001, slippage=0.0005, percent=95)
    warmup = warmup_bars(CASES.values())
    first = len(bars) - args.oos_bars
    start = bars.index[first]
    oos_forecast = forecast.where(bars.index >= start)
    settings = {
        # setting: (trade_start, forecast, warmup, bars fed)
        "whole": (None, forecast, None, len(bars)),
        "oos": (start, oos_forecast, warmup, len(bars) - max(first - warmup, 0)),
        "oos_whole_history": (start, oos_forecast, None, len(bars)),
    }
    runs = [(s, n) for s in settings for n in CASES]

    def once(setting: str, name: str) -> tuple[float, int]:
        trade_start, fc, warm, _ = settings[setting]
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

    for run in runs:  # warm-up: imports, caches
        once(*run)
    times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    orders: dict[tuple[str, str], int] = {}
    for r in range(args.rounds):
        for run in runs[r % len(runs) :] + runs[: r % len(runs)]:
            seconds, orders[run] = once(*run)
            times[run].append(seconds)

    print(
        f"GSPC: {len(bars)} bars; oos = last {args.oos_bars} traded, warm-up {warmup}; "
        f"{args.rounds} interleaved rounds, median of each"
    )
    record_settings = {}
    for setting, (_, _, _, fed) in settings.items():
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
        record_settings[setting] = {
            "bars_fed": fed,
            "strategies": rows,
            "ratio_forecast_to_sma": ratio,
        }
    trim = {
        name: statistics.median(times[("oos_whole_history", name)])
        / statistics.median(times[("oos", name)])
        for name in CASES
    }
    print("\nwarm-up trim speed-up (oos_whole_history / oos): ", end="")
    print(", ".join(f"{n} {v:.1f}x" for n, v in trim.items()))

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
