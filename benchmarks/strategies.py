"""Bars per second of every strategy on a bundled instrument, and ForecastStrategy / SMA crossover.

Each timing is one whole ``run_backtest`` call (feed, Backtrader run in the
default runonce/preload mode, trade log and metrics) on every bar of
``data/sample/GSPC.csv``, adjusted. The strategies run interleaved, in a
rotating order, for several rounds; the median of each is reported. The
forecast column is a 20-bar moving average of the closes computed with pandas
beforehand, as a forecaster's saved output would be. Goal: the forecast
strategy costs at most 1.3x the SMA crossover, because it only reads a line.

``python -m benchmarks strategies [--rounds N]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import pandas as pd

from strategies import ExecutionSettings, run_backtest

REPO = Path(__file__).resolve().parent.parent
GOAL = 1.3


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
    args = parser.parse_args(argv or [])

    bars = load_gspc()
    forecast = bars["close"].rolling(20).mean().rename("sma")
    execution = ExecutionSettings(commission=0.001, slippage=0.0005, percent=95)
    cases = {
        "forecast": ("forecast", {}),
        "sma_crossover": ("sma_crossover", {"fast": 20, "slow": 50}),
        "ema_crossover": ("ema_crossover", {"fast": 12, "slow": 26}),
        "buy_and_hold": ("buy_and_hold", {}),
    }
    names = list(cases)

    def once(name: str) -> tuple[float, int]:
        strategy, params = cases[name]
        t0 = time.perf_counter()
        result = run_backtest(bars, strategy, params, execution, forecast=forecast)
        return time.perf_counter() - t0, int(result.metrics["orders"])

    for name in names:  # warm-up: imports, caches
        once(name)
    times: dict[str, list[float]] = {n: [] for n in names}
    orders: dict[str, int] = {}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds, orders[name] = once(name)
            times[name].append(seconds)

    n = len(bars)
    print(f"GSPC: {n} bars, {args.rounds} interleaved rounds, median of each")
    print(f"{'strategy':15} {'median s':>9} {'bars/s':>9} {'orders':>7}")
    rows = {}
    for name in names:
        med = statistics.median(times[name])
        rows[name] = {"median_s": med, "bars_per_s": n / med, "orders": orders[name]}
        print(f"{name:15} {med:9.3f} {n / med:9.0f} {orders[name]:7d}")
    ratio = rows["forecast"]["median_s"] / rows["sma_crossover"]["median_s"]
    verdict = "meets" if ratio <= GOAL else "misses"
    print(f"ForecastStrategy / SMA crossover time ratio: {ratio:.2f} ({verdict} goal <= {GOAL})")

    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "strategies",
        "bars": n,
        "rounds": args.rounds,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "strategies": rows,
        "ratio_forecast_to_sma": ratio,
        "goal": GOAL,
    }
    (out / "strategies.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0
