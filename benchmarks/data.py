"""Loading and validating the bundled CSVs against a bare ``pandas.read_csv``.

For each of the four files in ``data/sample/`` the benchmark times
``pipelines.sources.load.read_csv_bars`` (read as text, map columns, parse numbers and
dates, null/order/duplicate policies, price checks, adjustment) against
``pd.read_csv(path, index_col=0, parse_dates=True)``, which only reads. It also
times the same bars written with ``MM/DD/YYYY`` dates, where the format must be
detected. Runs are interleaved (A B C, A B C, ...) and the table reports median
times and the ratio to the bare read. Results go to ``benchmarks/results/data.json``.

Usage: ``python -m benchmarks data`` or ``python -m benchmarks.data [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from pipelines.sources.load import read_csv_bars

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
RESULTS = Path(__file__).parent / "results" / "data.json"


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data", description=__doc__)
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per variant")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(SAMPLE.glob("*.csv")):
            us_dates = Path(tmp) / f"{path.stem}_us.csv"
            frame = pd.read_csv(path)
            frame["Date"] = pd.to_datetime(frame["Date"]).dt.strftime("%m/%d/%Y")
            frame.to_csv(us_dates, index=False)
            variants = {
                "pandas read_csv": lambda p=path: pd.read_csv(p, index_col=0, parse_dates=True),
                "read_csv_bars": lambda p=path: read_csv_bars(p),
                "read_csv_bars MM/DD/YYYY": lambda p=us_dates: read_csv_bars(p),
            }
            for fn in variants.values():  # warm-up: imports, caches
                fn()
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.repeats):
                for name, fn in variants.items():
                    times[name].append(_time(fn))
            base = statistics.median(times["pandas read_csv"])
            for name, ts in times.items():
                rows.append(
                    {
                        "file": path.name,
                        "bars": len(frame),
                        "variant": name,
                        "median_ms": round(statistics.median(ts) * 1e3, 2),
                        "ratio": round(statistics.median(ts) / base, 2),
                    }
                )

    print(pd.DataFrame(rows).to_string(index=False))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "python": platform.python_version(),
                "pandas": pd.__version__,
                "repeats": args.repeats,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
