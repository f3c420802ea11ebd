"""Wall time of the whole job (``make all``) by stage, MLflow's share, and growth with instruments.

Runs ``python -m pipelines run`` (what ``make all`` runs when every stage is
out of date, as on a fresh clone) in a fresh process per measurement, with the
build and report directories in a temporary folder and a throwaway SQLite
MLflow store (created before the first measurement, so no run pays for
MLflow's schema migrations), so nothing of the project's own outputs or
store is touched. Inside that process it records:

- each stage's wall time (``data``, ``train``, ``backtest``, ``report``) and
  the time spent inside ``pipelines.tracking`` calls during it (every MLflow
  request is made there, in the stage's process; drawing the figures logged
  is matplotlib's time and is not counted);
- the time to import ``pipelines.tracking`` (and mlflow with it) after the
  stages' other modules (``benchmarks._mlflow_import``);
- MLflow's share: those calls plus that import, over the whole wall time (the
  goal's figure); beside it, the same in the driver's main thread only, and that plus
  the main thread's waits for the stages' background recording
  (``pipelines.execution.recorder``), a bound from above on what MLflow adds to the
  run's critical path (:func:`mlflow_shares`);

and, from outside, the whole process's wall time (imports included, as a user
sees it). Then the same job with the first 1 and 2 instruments of the config
(the full config gives the last point), to show how wall time grows with the
number of instruments. Goals: the whole default run under 3 minutes on the
2-core CPU machine, MLflow's share at most 4%, growth no faster than linear.

The full config runs ``--repeat`` times (default 3): the headline is the run
with the median share, and every run's share and wall time are printed and
saved beside it.

``python -m benchmarks pipeline``; ``python -m benchmarks.pipeline --config
configs/smoke.yaml --counts 1`` for a quick look. Writes
``benchmarks/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._mlflow_import import ALL_STAGE_MODULES, driver_head

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "pipeline.json"
GOAL_SECONDS = 180.0
GOAL_MLFLOW_SHARE = 0.04

# In the child process: the driver's waits for the background recording
# (``Recorder.waited_seconds``), summed over the stages that record beside their workers
# (train and backtest): the class itself is wrapped, so every stage's recorder counts.
RECORDER_WAITS = """
from pipelines.execution import recorder as _recorder
waited = [0.0]
_recorder_exit = _recorder.Recorder.__exit__
def _counted_exit(self, *exc):
    try:
        return _recorder_exit(self, *exc)
    finally:
        if self.background:
            waited[0] += self.waited_seconds
_recorder.Recorder.__exit__ = _counted_exit
"""

# Runs in the child process; prints one JSON line with its own measurements.
_DRIVER = (
    driver_head(ALL_STAGE_MODULES, "pipelines.stages.run")
    + RECORDER_WAITS
    + """overhead.reset_overhead()
timing = stage.run_stages(sys.argv[1:])
t3 = time.perf_counter()
print("GATECAST-BENCH " + json.dumps({
    "rc": timing.status,
    "in_process_seconds": t3 - t0,
    "tracking_start_seconds": t2 - t1,
    "recorder_waited_seconds": waited[0],
    "stages": {s.stage: {"seconds": s.seconds, "mlflow_seconds": s.mlflow_seconds,
                         "mlflow_main_seconds": s.mlflow_main_seconds}
               for s in timing.stages},
    "by_call": overhead.overhead_by_call(),
}))
"""
)


def _env(store: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(REPO_ROOT),
    }


def _create_store(store: Path) -> None:
    code = "import mlflow; mlflow.MlflowClient().search_experiments()"
    subprocess.run([sys.executable, "-c", code], env=_env(store), check=True, capture_output=True)


def measure(config: str, overrides: list[str], store: Path) -> dict:
    """One whole run in a fresh process; its measurements."""
    with tempfile.TemporaryDirectory(prefix="gatecast-bench-") as tmp:
        argv = [
            "--config", config,
            "--set", f"output_directory={tmp}/build",
            "--set", f"report.directory={tmp}/reports",
        ]  # fmt: skip
        for item in overrides:
            argv += ["--set", item]
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _DRIVER, *argv],
            cwd=REPO_ROOT,
            env=_env(store),
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("GATECAST-BENCH ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"pipeline failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n"
            f"{done.stderr[-4000:]}"
        )
    result = json.loads(lines[-1].removeprefix("GATECAST-BENCH "))
    if result["rc"]:
        raise RuntimeError(f"a stage failed (exit {result['rc']}):\n{done.stderr[-4000:]}")
    result["wall_seconds"] = wall
    result.update(mlflow_shares(result, wall))
    return result


def mlflow_shares(result: dict, wall: float) -> dict[str, float]:
    """MLflow's seconds and share of ``wall`` three ways, from one run's measurements.

    - ``mlflow``: its calls in every thread, plus importing the tracking code (the
      conservative figure, the goal's: it counts the background recording in full,
      though on a machine with cores to spare much of it overlaps the workers);
    - ``mlflow_main``: its calls in the driver's main thread only;
    - ``mlflow_critical``: those plus every second the main thread waited for the
      background recording (``Recorder.waited_seconds``), all of it counted as MLflow's
      though part of it is scoring and writing files: a bound from above on what MLflow
      adds to the run's critical path.
    """
    start = result["tracking_start_seconds"]
    every = sum(s["mlflow_seconds"] for s in result["stages"].values()) + start
    main = sum(s.get("mlflow_main_seconds", 0.0) for s in result["stages"].values()) + start
    critical = main + result.get("recorder_waited_seconds", 0.0)
    return {
        "mlflow_seconds": every,
        "mlflow_share": every / wall,
        "mlflow_main_seconds": main,
        "mlflow_main_share": main / wall,
        "mlflow_critical_seconds": critical,
        "mlflow_critical_share": critical / wall,
    }


def _instruments(config: str) -> list[str]:
    sys.path.insert(0, str(REPO_ROOT))
    from pipelines.config import load_config

    return list(load_config(config).data.instruments)


def main(argv: list[str] | None = None) -> int:
    """Time the whole run and its scaling; print the tables and save them to ``RESULTS``."""
    args = _parse_args(argv)
    instruments = _instruments(args.config)
    counts = sorted({int(c) for c in args.counts.split(",") if c.strip()} - {len(instruments)})
    if any(c < 1 or c > len(instruments) for c in counts):
        print(f"--counts must be between 1 and {len(instruments)} (instruments in the config)")
        return 2

    full, repeats, scaling = _measure_runs(args, instruments, counts)
    _print_whole_run(full, repeats)
    ratio = _print_scaling(scaling)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "config": args.config,
                "overrides": args.set,
                "cpus": os.cpu_count(),
                "whole_run": full,
                "repeats": [
                    {
                        "wall_seconds": r["wall_seconds"],
                        "mlflow_share": r["mlflow_share"],
                        "mlflow_main_share": r["mlflow_main_share"],
                        "mlflow_critical_share": r["mlflow_critical_share"],
                    }
                    for r in repeats
                ],
                "scaling": {str(k): v["wall_seconds"] for k, v in sorted(scaling.items())},
                "scaling_instruments": {str(k): instruments[:k] for k in sorted(scaling)},
                "per_instrument_ratio": ratio,
                "goals": {"seconds": GOAL_SECONDS, "mlflow_share": GOAL_MLFLOW_SHARE},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {RESULTS}")
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (``--help`` shows this module's docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--counts", default="1,2", help="instrument counts to time besides the full config"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the full config (default: %(default)s)"
    )
    return parser.parse_args(argv)


def _measure_runs(
    args: argparse.Namespace, instruments: list[str], counts: list[int]
) -> tuple[dict, list[dict], dict[int, dict]]:
    """The headline run, every run of the full config, and the run for each instrument count.

    All share one throwaway MLflow store, created before the first run.
    """
    with tempfile.TemporaryDirectory(prefix="gatecast-bench-store-") as store_dir:
        store = Path(store_dir)
        _create_store(store)
        print(
            f"whole run: {args.config} ({len(instruments)} instruments), fresh process", flush=True
        )
        repeats = []
        for k in range(max(args.repeat, 1)):
            repeats.append(measure(args.config, args.set, store))
            print(
                f"  run {k + 1}: {repeats[-1]['wall_seconds']:.1f} s, "
                f"MLflow {100 * repeats[-1]['mlflow_share']:.2f}%",
                flush=True,
            )
        # the median by MLflow's share (the upper one of an even count)
        full = sorted(repeats, key=lambda r: r["mlflow_share"])[len(repeats) // 2]
        scaling = {len(instruments): full}
        for count in counts:
            subset = "[" + ",".join(instruments[:count]) + "]"
            print(f"  ... {count} instrument(s): {subset}", flush=True)
            scaling[count] = measure(args.config, [*args.set, f"data.instruments={subset}"], store)
    return full, repeats, scaling


def _print_whole_run(full: dict, repeats: list[dict]) -> None:
    """Print the headline run by stage, its wall time and MLflow's share against the goals."""
    wall = full["wall_seconds"]
    in_stages = sum(s["seconds"] for s in full["stages"].values())
    print(f"\n  machine: {os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}")
    print(f"  {'stage':<24} {'seconds':>8} {'share':>7} {'mlflow s':>9}")
    for stage, s in full["stages"].items():
        print(
            f"  {stage:<24} {s['seconds']:8.1f} {100 * s['seconds'] / wall:6.1f}% "
            f"{s['mlflow_seconds']:9.2f}"
        )
    startup = wall - in_stages
    print(f"  {'imports and start-up':<24} {startup:8.1f} {100 * startup / wall:6.1f}%")
    goal_time = "met" if wall <= GOAL_SECONDS else "NOT met"
    goal_share = "met" if full["mlflow_share"] <= GOAL_MLFLOW_SHARE else "NOT met"
    print(f"  {'whole run (wall)':<24} {wall:8.1f}  (goal <= {GOAL_SECONDS:.0f} s: {goal_time})")
    calls = full["mlflow_seconds"] - full["tracking_start_seconds"]
    print(
        f"  MLflow: tracking calls {calls:.2f} s + start-up {full['tracking_start_seconds']:.2f} s "
        f"= {100 * full['mlflow_share']:.2f}% of the run "
        f"(goal <= {100 * GOAL_MLFLOW_SHARE:.0f}%: {goal_share}); in the main thread "
        f"(the rest overlaps the workers): {100 * full.get('mlflow_main_share', 0.0):.2f}%; "
        f"main thread + its waits for the background recording (at most what MLflow adds "
        f"to the critical path): {100 * full.get('mlflow_critical_share', 0.0):.2f}%"
    )
    by_call = sorted(full["by_call"].items(), key=lambda kv: -kv[1][0])
    print("    by call: " + ", ".join(f"{k} {v[0]:.2f} s x{v[1]}" for k, v in by_call[:6]))
    if len(repeats) > 1:
        shares = ", ".join(
            f"{100 * r['mlflow_share']:.2f}% ({100 * r.get('mlflow_main_share', 0.0):.2f}% main, "
            f"{100 * r.get('mlflow_critical_share', 0.0):.2f}% main + waits)"
            for r in repeats
        )
        walls = ", ".join(f"{r['wall_seconds']:.1f}" for r in repeats)
        print(
            f"  the table is the median of {len(repeats)} runs by MLflow's share: "
            f"shares {shares}; wall s {walls}"
        )


def _print_scaling(scaling: dict[int, dict]) -> float:
    """Print wall time by instrument count; the time per instrument at the most over the fewest."""
    print(f"\n  {'instruments':>11} {'wall s':>8} {'s/instrument':>13} {'x 1-instrument':>15}")
    base = scaling[min(scaling)]["wall_seconds"] / min(scaling)
    for count in sorted(scaling):
        w = scaling[count]["wall_seconds"]
        print(f"  {count:>11} {w:8.1f} {w / count:13.1f} {w / (base * min(scaling)):15.2f}")
    ratio = (scaling[max(scaling)]["wall_seconds"] / max(scaling)) / base
    linear = "met" if ratio <= 1.0 + 1e-9 else "NOT met"
    print(
        f"  time per instrument at {max(scaling)} vs {min(scaling)}: {ratio:.2f}x "
        f"(goal <= 1, i.e. no faster than linear: {linear})"
    )
    return ratio


if __name__ == "__main__":
    sys.exit(main())
