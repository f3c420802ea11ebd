"""MLflow store growth: does recording a run get slower as the store fills up?

``python -m benchmarks store_growth`` (part of ``make bench``, about a minute and a
half on 2 cores) opens a stage run of ``configs/smoke.yaml`` in a fresh SQLite store
(WAL mode, as ``pipelines.tracking`` sets it up) and records ``--runs`` child runs
(default 2400) through ``pipelines.tracking``, as the train stage records a forecaster:
``child_run`` (which inherits the config's params, the parent's tags and
``config.yaml``) with 36 metrics. It times each run from opening to ending and reports
min / median / max of each block of ``--block`` runs (default 400), and the median of
the last block over that of the first.

The 500-instrument projection of ``benchmarks scale`` assumes the store keeps up:
500 instruments of 6 runs each put 3000 runs in it. This checks the part of that
assumption that the store's size decides, on one machine. Writes
``benchmarks/results/store_growth.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.scale import spread

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "store_growth.json"
METRICS = 36  # about what a forecaster's child run carries (scores, per fold, timings)


def record_runs(runs: int, folder: Path) -> list[float]:
    """Seconds of each of ``runs`` child runs recorded under one stage run, in a fresh
    SQLite store in ``folder``."""
    from pipelines import tracking
    from pipelines.config import load_config

    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        cfg = load_config("configs/smoke.yaml", {"output_directory": str(folder / "build")})
        seconds = []
        with tracking.pipeline_run(cfg, "train", command="benchmarks.store_growth"):
            for k in range(runs):
                start = time.perf_counter()
                tags = {"gatecast.instrument": f"SYN{k:05d}", "gatecast.forecaster": "sma"}
                with tracking.child_run(f"SYN{k:05d}/sma", tags=tags):
                    tracking.log_metrics({f"metric_{m}": m / 7 for m in range(METRICS)})
                seconds.append(time.perf_counter() - start)
        return seconds
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


def blocks(seconds: list[float], size: int) -> list[dict]:
    """min / median / max of each block of ``size`` runs, with the runs it covers."""
    out = []
    for first in range(0, len(seconds) - size + 1, size):
        out.append({"runs": [first, first + size - 1], **spread(seconds[first : first + size])})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_growth", description=__doc__)
    parser.add_argument("--runs", type=int, default=2400, help="child runs to record")
    parser.add_argument("--block", type=int, default=400, help="runs per block")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.block < 1 or args.runs < 2 * args.block:
        parser.error("--runs must be at least two --block's")
    with tempfile.TemporaryDirectory(prefix="gatecast-bench-store-") as tmp:
        seconds = record_runs(args.runs, Path(tmp))
    table = blocks(seconds, args.block)
    ratio = table[-1]["median"] / table[0]["median"]
    print(f"  {'runs':>13} {'min ms':>8} {'median ms':>10} {'max ms':>8}")
    for row in table:
        first, last = row["runs"]
        print(
            f"  {first:5d}-{last:<7d} {1000 * row['min']:8.1f} {1000 * row['median']:10.1f} "
            f"{1000 * row['max']:8.1f}"
        )
    print(
        f"  a run in the last block over one in the first (medians): {ratio:.2f} "
        f"({args.runs} child runs of {METRICS} metrics and the config's params, SQLite)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"runs": args.runs, "block": args.block, "blocks": table, "last_over_first": ratio}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
