"""MLflow's cost in the train stage: seconds per stage and per run, and share of wall time.

Runs ``python -m pipelines train`` in a fresh process against a throwaway
SQLite store and measures, inside that process:

- importing ``pipelines.tracking`` (and mlflow with it) after TensorFlow and
  the stage's other modules;
- the time the stage spends inside ``pipelines.tracking``'s calls (counted by
  the module itself, every MLflow request included), split into opening the
  store and the stage's run, the runs (create, batch, end), the artifacts,
  and the LSTM models (saving the Keras seeds, logging, registering);
- drawing the PNG plots logged to the runs is matplotlib's work and is not counted;

and, from outside, the whole process's wall time. The stage runs on a fresh
store first (which also pays MLflow's one-time schema migrations), then
``--repeat`` times on that existing store, which is what every later run
costs; the median of those is the headline. Writes
``benchmarks/results/train.json``.

``python -m benchmarks train`` uses configs/default.yaml with a tiny LSTM
(4 units, 1 epoch), so that MLflow's part is as large as it gets: the share
it reports is an upper bound for the default config, whose LSTM trains for
much longer. ``python -m benchmarks.train --config configs/default.yaml
--full-lstm`` measures the default config as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._mlflow_import import TRAIN_STAGE_MODULES, driver_head

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results"
GOAL = 0.04
TINY_LSTM = ["forecasters.lstm.units=[4]", "forecasters.lstm.epochs=1"]

# Runs in the child process; prints one JSON line with its own measurements.
_DRIVER = (
    driver_head(TRAIN_STAGE_MODULES, "pipelines.stages.train")
    + """overhead.reset_overhead()
rc = stage.main(sys.argv[1:])
t3 = time.perf_counter()
print("GATECAST-BENCH " + json.dumps({
    "rc": rc,
    "in_process_seconds": t3 - t0,
    "tracking_start_seconds": t2 - t1,
    "tracking_seconds": overhead.mlflow_seconds(),
    "by_call": overhead.overhead_by_call(),
}))
"""
)

# pipelines.tracking's timed calls, grouped by what they pay for.
PER_RUN = ("child_run", "end_run", "log_metrics", "log_metric_history", "log_params", "set_tags")
ARTIFACTS = ("log_dataframe", "log_figure", "log_artifact", "log_text", "log_dict")


def _sum(by_call: dict[str, list], names: tuple[str, ...]) -> float:
    return sum(by_call[n][0] for n in names if n in by_call)


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
    r = json.loads(lines[-1].removeprefix("GATECAST-BENCH "))
    by_call = r["by_call"]
    r["wall_seconds"] = wall
    r["runs"] = by_call.get("child_run", [0, 0])[1] + by_call.get("pipeline_run", [0, 0])[1]
    r["models"] = by_call.get("log_model", [0, 0])[1]
    r["open_seconds"] = _sum(by_call, ("pipeline_run",))
    r["run_seconds"] = _sum(by_call, PER_RUN)
    r["artifact_seconds"] = _sum(by_call, ARTIFACTS)
    r["model_seconds"] = _sum(by_call, ("log_model",))
    r["mlflow_seconds"] = r["tracking_seconds"] + r["tracking_start_seconds"]
    r["mlflow_share"] = r["mlflow_seconds"] / wall
    return r


def _report(label: str, r: dict) -> None:
    wall = r["wall_seconds"]

    def line(text: str, seconds: float, extra: str = "") -> None:
        print(f"    {text:<44} {seconds:7.2f} s {100 * seconds / wall:6.2f} %  {extra}".rstrip())

    print(f"  {label}")
    print(f"    {'train stage wall time (whole process)':<44} {wall:7.2f} s")
    line("import pipelines.tracking (mlflow)", r["tracking_start_seconds"])
    line("open the store, the experiment, the stage's run", r["open_seconds"])
    runs = max(r["runs"], 1)
    line(
        f"runs: create, batch, end ({r['runs']})",
        r["run_seconds"],
        f"{1000 * r['run_seconds'] / runs:5.1f} ms per run",
    )
    line(
        "artifacts: forecasts, gates, plots",
        r["artifact_seconds"],
        f"{1000 * r['artifact_seconds'] / runs:5.1f} ms per run",
    )
    if r["models"]:
        line(
            f"LSTM models: save, log, register ({r['models']})",
            r["model_seconds"],
            f"{1000 * r['model_seconds'] / r['models']:5.0f} ms per model",
        )
    verdict = "met" if r["mlflow_share"] <= GOAL else "NOT met"
    line("MLflow in all", r["mlflow_seconds"], f"(goal <= {100 * GOAL:.0f} %: {verdict})")
    print("    tracking time by call:")
    for name, (seconds, count) in sorted(r["by_call"].items(), key=lambda kv: -kv[1][0]):
        print(f"      {name:22} {seconds:7.3f} s  {100 * seconds / wall:5.2f} %  x{count}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--full-lstm", action="store_true", help="keep the config's LSTM (default: a tiny one)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs on the existing store (default: 1)"
    )
    args = parser.parse_args(argv)
    overrides = ([] if args.full_lstm else TINY_LSTM) + args.set

    with tempfile.TemporaryDirectory(prefix="gatecast-bench-store-") as store:
        fresh = measure(args.config, overrides, Path(store))
        again = [measure(args.config, overrides, Path(store)) for _ in range(max(args.repeat, 1))]
    typical = sorted(again, key=lambda r: r["mlflow_seconds"])[len(again) // 2]
    print(f"config {args.config} {' '.join(overrides)}".rstrip())
    _report("first run (creates the MLflow store)", fresh)
    _report(
        f"run on the existing store (every later run; median of {len(again)} by MLflow time)",
        typical,
    )
    if len(again) > 1:
        seconds = [r["mlflow_seconds"] for r in again]
        print(
            f"  MLflow seconds over {len(again)} runs: min {min(seconds):.2f}, "
            f"median {statistics.median(seconds):.2f}, max {max(seconds):.2f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "config": args.config,
        "overrides": overrides,
        "goal": GOAL,
        "cpus": os.cpu_count(),
        "fresh_store": fresh,
        "existing_store": typical,
        "existing_store_runs": again,
    }
    (RESULTS / "train.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
