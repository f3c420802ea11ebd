"""MLflow's share of the train stage's wall time (goal: at most 3%).

Runs ``python -m pipelines train`` in a fresh process against a throwaway
SQLite store and measures, inside that process:

- ``mlflow import``: importing mlflow (after TensorFlow, pandas and NumPy,
  which the stage needs anyway);
- ``tracking calls``: wall time inside ``pipelines.tracking``'s calls (runs
  opened and closed, params, tags, metrics, artifacts, model logging and
  registration), counted by the module itself; the rendering of the PNG plots
  logged to the runs (matplotlib, not MLflow) is shown on its own line;

and, from outside, the whole process's wall time. The stage runs twice on the
same store: the first run also creates the SQLite store (a one-time cost of
MLflow's schema migrations), the second is what every later run costs. Prints
the shares and the tracking time per kind of call, and writes
``benchmarks/results/train.json``.

``python -m benchmarks train`` uses configs/smoke.yaml;
``python -m benchmarks.train --config configs/default.yaml --set ...`` any other.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results"
GOAL = 0.03

# Runs in the child process; prints one JSON line with its own measurements.
_DRIVER = """
import json, sys, time
t0 = time.perf_counter()
import numpy, pandas, tensorflow, keras
t1 = time.perf_counter()
import mlflow, mlflow.pyfunc
t2 = time.perf_counter()
from pipelines import tracking, train
tracking.reset_overhead()
rc = train.main(sys.argv[1:])
t3 = time.perf_counter()
print("GATECAST-BENCH " + json.dumps({
    "rc": rc,
    "in_process_seconds": t3 - t0,
    "mlflow_import_seconds": t2 - t1,
    "tracking_seconds": tracking.overhead_seconds(),
    "tracking_calls": tracking.overhead_calls(),
    "by_call": tracking.overhead_by_call(),
}))
"""


def measure(config: str, overrides: list[str], store: Path) -> dict:
    """One train-stage run in a fresh process against ``store``; its measurements."""
    with tempfile.TemporaryDirectory(prefix="gatecast-bench-") as tmp:
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(REPO_ROOT),
        }
        argv = ["--config", config, "--set", f"output_directory={tmp}/build"]
        for item in overrides:
            argv += ["--set", item]
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _DRIVER, *argv],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("GATECAST-BENCH ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"train stage failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n"
            f"{done.stderr[-4000:]}"
        )
    result = json.loads(lines[-1].removeprefix("GATECAST-BENCH "))
    result["wall_seconds"] = wall
    result["render_seconds"] = result["by_call"].get("render_figure", 0.0)
    result["mlflow_seconds"] = result["tracking_seconds"] - result["render_seconds"]
    result["tracking_share"] = result["mlflow_seconds"] / wall
    result["mlflow_share"] = (result["mlflow_seconds"] + result["mlflow_import_seconds"]) / wall
    result["with_plots_share"] = (
        result["tracking_seconds"] + result["mlflow_import_seconds"]
    ) / wall
    return result


def _report(label: str, r: dict) -> None:
    wall = r["wall_seconds"]
    print(f"  {label}")
    print(f"    train stage wall time (whole process)  {wall:8.2f} s")
    print(
        f"    inside MLflow tracking calls            {r['mlflow_seconds']:8.2f} s  "
        f"{100 * r['tracking_share']:5.2f} %  ({r['tracking_calls']} calls)"
    )
    print(
        f"    import mlflow                           {r['mlflow_import_seconds']:8.2f} s  "
        f"{100 * r['mlflow_import_seconds'] / wall:5.2f} %"
    )
    print(
        f"    MLflow in all                           "
        f"{r['mlflow_seconds'] + r['mlflow_import_seconds']:8.2f} s  "
        f"{100 * r['mlflow_share']:5.2f} %  (goal <= {100 * GOAL:.0f} %: "
        f"{'met' if r['mlflow_share'] <= GOAL else 'NOT met'})"
    )
    print(
        f"    + rendering the runs' PNG plots         {r['render_seconds']:8.2f} s  "
        f"{100 * r['with_plots_share']:5.2f} % with them"
    )
    print("    tracking time by call:")
    for name, seconds in sorted(r["by_call"].items(), key=lambda kv: -kv[1]):
        print(f"      {name:22} {seconds:7.3f} s  {100 * seconds / wall:5.2f} %")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__)
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gatecast-bench-store-") as store:
        fresh = measure(args.config, args.set, Path(store))
        warm = measure(args.config, args.set, Path(store))
    print(f"config {args.config} {' '.join(args.set)}".rstrip())
    _report("first run (creates the MLflow store)", fresh)
    _report("second run (existing store: every later run)", warm)
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "config": args.config,
        "overrides": args.set,
        "goal": GOAL,
        "fresh_store": fresh,
        "existing_store": warm,
    }
    (RESULTS / "train.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
