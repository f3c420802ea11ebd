"""Scaling out: executors side by side, growth with the universe, and a projection to 500.

``python -m benchmarks scale`` (part of ``make bench``) times the train stage
(where the units of work are: most of a whole run) in one run, each
measurement in a fresh process with its build folder in a temporary folder and
one throwaway SQLite MLflow store (created before the first measurement):

- **the default config** (``configs/default.yaml``) with each executor:
  ``sequential``, ``local`` with 2 workers and ``ray`` with 2 workers (CPUs);
  and once more sequentially as that file says to run it for hundreds of
  instruments (``tracking.charts=false``: :data:`AT_SCALE`), the source of the
  500-instrument projection's goal;
- **a synthetic universe** (``benchmarks.synthetic``, made once, block-bootstrapped
  from the bundled files) of 8, 16 and 32 instruments on ``configs/smoke.yaml``'s
  small settings made smaller (:data:`UNIVERSE_SETTINGS`: 420 bars, one fold of
  100 bars after 300 training bars, every forecaster, a 1-epoch LSTM of 8 units:
  6 units per instrument), sequential and with 2 workers on Ray (on the local
  pool where Ray is not available); the executors take turns within a repeat so
  a drift in the machine's load hits them alike.

The Ray executor is measured where ``executor: {kind: ray}`` is available;
elsewhere its rows say "ray executor not available" and the rest still runs.

Inside each measured process the benchmark wraps, without changing them, the
train stage's unit function (``pipelines.stages.train.run_train_unit``: each unit's
seconds inside the function, its worker's pid and memory after it), its
recording of a forecaster (``pipelines.tracking.train_runs.record``: the driver's serial
part) and its executor (``pipelines.execution.executors.executor_for``: start-up, when
each result reaches the driver, tear-down). From these it reports:

- units per second of each executor (from the driver handing over its units
  to the last result), and the speed-up of 2 workers over sequential on the
  universe of 32 (the stage's whole wall time, goal >= 1.4x; min/median/max
  over repeats);
- the executor's own overhead as a share of the stage's wall time (goal < 5% for
  Ray on the universe of 32): the start-up the driver waits for (entering the
  executor, e.g. ``ray.init``, plus the time from handing over the first units
  to the first one starting; the stage enters its executor before its own
  set-up, so a worker's start that overlaps the driver's is not counted) +
  tear-down (leaving it) + the idle gaps between consecutive units on each
  worker (scheduling, moving the bars and results through pipes or the object
  store), summed and divided by the workers; and, beside it, the same less the part of
  the first unit's wait its worker spent in the driver's setup (``timed_setup``:
  importing TensorFlow and Keras, which a sequential stage pays in the driver before
  its units), so the executor's own share is seen apart from the libraries' start;
- the stage's time per instrument from 8 to 32 (goal: flat within 15%);
- the driver's peak memory (``ru_maxrss`` of the measured process) and its
  growth per instrument from 8 to 32 with workers (goal <= 20 MB), and each
  worker's memory after every unit (goal: flat; the first
  ``pipelines.execution.units.CLEAR_KERAS_EVERY`` units, when TensorFlow and the first
  models load, are left out);
- the driver's recording per instrument (goal <= 0.3 s; one thread, so the serial
  part) and how much of it the stage waited for (with workers it records beside them:
  ``pipelines.execution.recorder``);
- a projection to 500 instruments on 1, 8 and 64 workers (the recording and the units
  overlap, so the slower sets the pace), against the ideal of unit time / 64 + the
  fixed start (goal within 1.5x, for the default workload at its settings for hundreds
  of instruments; the default config as it is and the small universe for reference),
  with its assumptions printed. Its recording per instrument is that of the
  instruments after the first, whose recording also pays the process's one-time
  costs (counted once, in the fixed part);
- Ray's overhead on the universe of 32 against a cluster that is already up
  (``benchmarks.ray_cluster``: ``--cluster-repeats``, default 5; goal < 5%), where
  namespaces and Ray allow.

Repeats: ``--repeats`` (default 5,3,5 for 8,16,32 instruments) and
``--default-repeats`` (default 1): the standard is 5 with min/median/max where
a ratio is quoted, which the speed-up and overhead on 32 instruments are; 16
instruments, which only feed the time per instrument, get 3, and the default
config 1, to keep the benchmark within 25 to 45 minutes on 2 cores. The output says
how many each used.
``--quick`` (sizes 2,4; one repeat; no default config) is for a look on a busy
machine. Writes ``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "scale.json"
MARK = "GATECAST-SCALE "
EXECUTORS = ("sequential", "local", "ray")
WORKERS = 2
GOAL_SPEEDUP = 1.4
GOAL_OVERHEAD_SHARE = 0.05
GOAL_PER_INSTRUMENT = 0.15
GOAL_DRIVER_MB_PER_INSTRUMENT = 20.0
GOAL_WORKER_GROWTH_MB = 20.0
GOAL_RECORD_SECONDS = 0.3  # the driver's serial recording per instrument
GOAL_PROJECTION_RATIO = 1.5  # T(64) against (unit time / 64 + the fixed start)
PROJECTION_INSTRUMENTS, PROJECTION_WORKERS = 500, (1, 8, 64)
UNIVERSE_BARS = 420
SETUP_TIMES = "GATECAST_BENCH_SETUP"  # a worker's setup start and end (time.time())
# On top of configs/smoke.yaml (100 test bars after 300 training bars, an LSTM of 8
# units, one seed): the synthetic universe's whole history, one fold, one epoch. Each
# LSTM fit costs seconds whatever its epochs, so the LSTM still dominates a unit's time.
UNIVERSE_SETTINGS = [
    "data.start=null",
    "data.end=null",
    "walkforward.folds=1",
    "forecasters.lstm.epochs=1",
    # as configs/default.yaml says for a universe of hundreds of instruments: no PNG charts
    # with the runs (the gates stay logged as data; the report draws its own)
    "tracking.charts=false",
]


# The default config as configs/default.yaml says to run it for hundreds of instruments: no
# PNG charts with the runs. Measured sequentially, it is the 500-instrument projection's
# source for the default workload (the goal's).
AT_SCALE = "default-at-scale"
AT_SCALE_SETTINGS = ["tracking.charts=false"]


# In the measured process --------------------------------------------------------------


def timed_train_unit(unit: Any) -> Any:
    """``pipelines.execution.units.run_train_unit`` that also carries its timing and memory back.

    Runs in whichever process the executor chose; the measurements ride on the
    result (``result.bench``), so nothing but the result crosses back.
    """
    import psutil

    from pipelines.execution.units import run_train_unit

    started = time.time()
    clock = time.perf_counter()
    result = run_train_unit(unit)
    setup = os.environ.get(SETUP_TIMES)
    result.bench = {
        "start": started,
        "seconds": time.perf_counter() - clock,
        "end": time.time(),
        "pid": os.getpid(),
        "unit": str(unit),
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
        # when this worker ran the driver's setup (None: the driver's own process)
        "setup": [float(t) for t in setup.split()] if setup else None,
    }
    return result


def timed_setup(setup: Any) -> Any:
    """The driver's worker setup (``runtime.configure_worker``: TensorFlow and Keras
    imported, the device and determinism set), its start and end kept in this process's
    environment for ``timed_train_unit`` (process-wide whichever way the code travelled)."""
    start = time.time()
    try:
        return setup()
    finally:
        os.environ[SETUP_TIMES] = f"{start} {time.time()}"


class _TimedExecutor:
    """An executor as ``pipelines.execution.executors.executor_for`` made it, with its
    timings noted."""

    def __init__(self, inner: Any, probe: dict) -> None:
        self._inner, self._probe = inner, probe
        probe.update(kind=inner.kind, workers=getattr(inner, "workers", None) or 1, units=[])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> _TimedExecutor:
        self._probe["entered"] = time.time()
        self._inner.__enter__()
        self._probe["enter_seconds"] = time.time() - self._probe["entered"]
        return self

    def __exit__(self, *exc: Any) -> Any:
        start = time.time()
        try:
            return self._inner.__exit__(*exc)
        finally:
            self._probe["exit_seconds"] = time.time() - start

    def run(self, fn: Any, units: Any) -> Any:
        self._probe.setdefault("first_run", time.time())  # the driver's units are ready
        for unit, outcome in self._inner.run(fn, units):
            bench = getattr(outcome, "bench", None)
            if bench is not None:
                self._probe["units"].append({**bench, "arrived": time.time()})
            yield unit, outcome


def child(argv: list[str]) -> int:
    """The measured process: the data stage, then the train stage with its parts timed."""
    import resource

    from pipelines.execution import executors
    from pipelines.stages import data, train

    needed = (
        (train, "run_train_unit"),
        (train, "record"),
        (train, "Recorder"),
        (executors, "executor_for"),
    )
    for module, name in needed:
        if not hasattr(module, name):
            print(f"benchmarks.scale: {module.__name__}.{name} is gone; update the benchmark")
            return 3
    if data.main(argv) != 0:
        return 4
    probe: dict[str, Any] = {"record_seconds": 0.0, "records": 0, "record_waited_seconds": 0.0}
    executor_for, record, recorder = executors.executor_for, train.record, train.Recorder

    class TimedRecorder(recorder):  # type: ignore[misc,valid-type]
        def __exit__(self, *exc: Any) -> None:
            try:
                super().__exit__(*exc)
            finally:
                probe["record_waited_seconds"] += self.waited_seconds
                probe["record_background"] = self.background

    def timed_executor_for(config: Any, setup: Any = None, **kwargs: Any) -> _TimedExecutor:
        if setup is not None:
            setup = functools.partial(timed_setup, setup)
        return _TimedExecutor(executor_for(config, setup=setup, **kwargs), probe)

    def timed_record(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return record(*args, **kwargs)
        finally:
            seconds = time.perf_counter() - start
            probe["record_seconds"] += seconds
            probe["records"] += 1
            # record(cfg, (instrument, forecaster), ...): per instrument, in recording order
            instrument = str((args[1] if len(args) > 1 else kwargs["key"])[0])
            by = probe.setdefault("record_by_instrument", {})
            by[instrument] = by.get(instrument, 0.0) + seconds

    train.run_train_unit, train.record = timed_train_unit, timed_record
    train.Recorder = TimedRecorder
    executors.executor_for = timed_executor_for
    start = time.perf_counter()
    rc = train.main(argv)
    probe["stage_seconds"] = time.perf_counter() - start
    probe["driver_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(MARK + json.dumps({"rc": rc, **probe}))
    return rc


# In the benchmark's own process ---------------------------------------------------------


def _env(store: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(REPO_ROOT),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }


def _executor_settings(kind: str) -> list[str]:
    if kind == "sequential":
        return ["executor.kind=sequential"]
    return [f"executor.kind={kind}", f"executor.workers={WORKERS}"]


def ray_unavailable() -> str | None:
    """Why ``executor: {kind: ray}`` cannot run here, or None when it can."""
    try:
        from pipelines.config import load_config, parse_set
        from pipelines.execution.executors import executor_for

        cfg = load_config("configs/smoke.yaml", overrides=parse_set(_executor_settings("ray")))
        if executor_for(cfg.executor).kind != "ray":
            return "ray executor not available (executor_for gave another kind)"
        import ray  # noqa: F401
    except Exception as err:  # a ConfigError, ValueError or ImportError: all mean "not here"
        return f"ray executor not available ({str(err).splitlines()[0]})"
    return None


def measure(config: str, settings: list[str], store: Path) -> dict:
    """One train stage in a fresh process; what ``child`` measured, and its unit summary."""
    with tempfile.TemporaryDirectory(prefix="gatecast-bench-scale-") as tmp:
        argv = ["--config", config, "--set", f"output_directory={tmp}/build"]
        for item in settings:
            argv += ["--set", item]
        code = "import sys, benchmarks.scale as s; sys.exit(s.child(sys.argv[1:]))"
        done = subprocess.run(
            [sys.executable, "-c", code, *argv],
            cwd=REPO_ROOT,
            env=_env(store),
            capture_output=True,
            text=True,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        tail = (done.stdout[-1500:] + "\n" + done.stderr[-3000:]).strip()
        raise RuntimeError(f"train stage failed (exit {done.returncode}): {tail}")
    return summarise(json.loads(lines[-1].removeprefix(MARK)))


def summarise(probe: dict) -> dict:
    """Units per second, overhead, memory and the serial part of one measured stage."""
    units = sorted(probe["units"], key=lambda u: u["start"])
    workers = max(1, probe["workers"])
    last_arrival = max(u["arrived"] for u in units)
    phase = last_arrival - probe["first_run"]
    gaps, per_worker = [], {}
    for unit in units:
        per_worker.setdefault(unit["pid"], []).append(unit)
    for own in per_worker.values():
        gaps += [b["start"] - a["end"] for a, b in zip(own, own[1:], strict=False)]
    # Start-up the driver waits for: entering the executor, then from handing over the
    # first units to the first one starting (a worker's start that overlapped the
    # driver's own preparation is not waited for).
    first = min(units, key=lambda u: u["start"])
    first_wait = max(0.0, first["start"] - probe["first_run"])
    startup = probe["enter_seconds"] + first_wait
    overhead = startup + probe["exit_seconds"] + sum(gaps) / workers
    # Of that wait, the part its worker spent in the driver's setup: importing TensorFlow
    # and Keras, which any process that fits the LSTM pays (a sequential stage in the
    # driver, before its units), not the executor's own doing.
    setup_in_wait = 0.0
    if first.get("setup"):
        began, ended = first["setup"]
        setup_in_wait = max(0.0, min(ended, first["start"]) - max(began, probe["first_run"]))
    return {
        "executor": probe["kind"],
        "workers": workers,
        "units": len(units),
        "stage_seconds": probe["stage_seconds"],
        "phase_seconds": phase,
        "units_per_second": len(units) / phase,
        "unit_seconds": sum(u["seconds"] for u in units),
        "startup_seconds": startup,
        "enter_seconds": probe["enter_seconds"],
        "first_unit_wait_seconds": first_wait,
        "exit_seconds": probe["exit_seconds"],
        "gap_seconds": sum(gaps),
        "median_gap_seconds": statistics.median(gaps) if gaps else 0.0,
        "overhead_seconds": overhead,
        "overhead_share": overhead / probe["stage_seconds"],
        "setup_in_wait_seconds": setup_in_wait,
        "overhead_less_setup_share": (overhead - setup_in_wait) / probe["stage_seconds"],
        "record_seconds": probe["record_seconds"],
        **steady_recording(probe.get("record_by_instrument", {})),
        "record_waited_seconds": probe["record_waited_seconds"],
        "record_background": probe.get("record_background", False),
        "records": probe["records"],
        "driver_peak_mb": probe["driver_peak_mb"],
        "worker_rss_mb": {str(pid): [u["rss_mb"] for u in own] for pid, own in per_worker.items()},
    }


def steady_recording(by_instrument: dict[str, float]) -> dict[str, float | None]:
    """The first instrument's recording and the mean of the others' (seconds).

    The first instrument recorded in a process also pays the process's one-time
    costs (MLflow's scan of the installed packages on its first model, its first
    registered model, matplotlib's fonts on its first chart); the others show what
    each further instrument costs, which is what a projection to more instruments
    multiplies. None with fewer than two instruments.
    """
    seconds = list(by_instrument.values())
    if len(seconds) < 2:
        return {"record_first_seconds": None, "record_steady_seconds": None}
    return {
        "record_first_seconds": seconds[0],
        "record_steady_seconds": sum(seconds[1:]) / (len(seconds) - 1),
    }


def make_universe(folder: Path, count: int) -> list[str]:
    """A synthetic universe of ``count`` instruments in ``folder``; their names."""
    from benchmarks.synthetic import read_sources, synthetic_universe, write_universe

    universe = synthetic_universe(read_sources("data/sample"), count, UNIVERSE_BARS, seed=0)
    write_universe(universe, folder)
    return list(universe)


def universe_kinds(kinds: list[str]) -> list[str]:
    """The universe's executors: sequential and 2 workers on Ray, or else the local pool."""
    parallel = [kind for kind in ("ray", "local") if kind in kinds]
    return ["sequential", *parallel[:1]]


def plan(args: argparse.Namespace, kinds: list[str]) -> list[tuple[str, int, int, str]]:
    """Every measurement, in order: (workload, instruments, repeat, executor)."""
    runs = []
    for repeat in range(args.default_repeats):
        runs += [("default", 4, repeat, kind) for kind in kinds]
        runs.append((AT_SCALE, 4, repeat, "sequential"))
    small = universe_kinds(kinds)
    for size, repeats in zip(args.sizes, args.repeats, strict=True):
        for repeat in range(repeats):
            order = small[repeat % len(small) :] + small[: repeat % len(small)]
            runs += [("universe", size, repeat, kind) for kind in order]
    return runs


def run_all(args: argparse.Namespace, kinds: list[str]) -> dict[str, dict]:
    """Measure every run of the plan; results keyed ``workload/instruments/executor``."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gatecast-bench-scale-store-") as tmp:
        store, universe = Path(tmp) / "store", Path(tmp) / "universe"
        store.mkdir()
        code = "import mlflow; mlflow.MlflowClient().search_experiments()"
        subprocess.run([sys.executable, "-c", code], env=_env(store), check=True)
        names = make_universe(universe, max(args.sizes))
        for workload, size, repeat, kind in plan(args, kinds):
            if workload == "default":
                config, settings = "configs/default.yaml", []
            elif workload == AT_SCALE:
                config, settings = "configs/default.yaml", AT_SCALE_SETTINGS
            else:
                config = "configs/smoke.yaml"
                settings = [
                    *UNIVERSE_SETTINGS,
                    f"data.directory={universe}",
                    f"data.instruments=[{','.join(names[:size])}]",
                ]
            key = f"{workload}/{size}/{kind}"
            print(f"  {key} repeat {repeat + 1} ...", end=" ", flush=True)
            result = measure(config, [*settings, *_executor_settings(kind)], store)
            print(
                f"{result['stage_seconds']:.1f} s, {result['units_per_second']:.2f} units/s",
                flush=True,
            )
            results.setdefault(key, {"instruments": size, "executor": kind, "runs": []})
            results[key]["runs"].append(result)
    return results


# Analysis -------------------------------------------------------------------------------


def spread(values: list[float]) -> dict:
    """min, median and max of ``values`` and how many there were."""
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
    }


def _median(entry: dict, field: str) -> float:
    return statistics.median(run[field] for run in entry["runs"])


def speedups(results: dict, workload: str, size: int, kinds: list[str]) -> dict[str, dict]:
    """Sequential stage time over each other executor's, repeat by repeat."""
    base = results.get(f"{workload}/{size}/sequential")
    out = {}
    for kind in kinds:
        other = results.get(f"{workload}/{size}/{kind}")
        if kind == "sequential" or base is None or other is None:
            continue
        pairs = zip(base["runs"], other["runs"], strict=False)
        out[kind] = spread([a["stage_seconds"] / b["stage_seconds"] for a, b in pairs])
    return out


def worker_growth(entry: dict) -> dict:
    """Each process's memory over its units after the warm-up: first vs last quarter (MB)."""
    from pipelines.execution.units import CLEAR_KERAS_EVERY

    growth, counts = [], []
    for run in entry["runs"]:
        for rss in run["worker_rss_mb"].values():
            after = rss[CLEAR_KERAS_EVERY:]
            if len(after) < 8:
                continue
            quarter = len(after) // 4
            growth.append(statistics.median(after[-quarter:]) - statistics.median(after[:quarter]))
            counts.append(len(rss))
    if not growth:
        return {"growth_mb": None, "units": 0}
    return {"growth_mb": max(growth), "units": min(counts), "processes": len(growth)}


def analyse(results: dict, sizes: list[int], kinds: list[str]) -> dict:
    """The goals' figures from the measurements."""
    small, large = min(sizes), max(sizes)
    out: dict[str, Any] = {"speedup": speedups(results, "universe", large, kinds)}
    out["default_speedup"] = speedups(results, "default", 4, kinds)
    for figure in ("overhead_share", "overhead_less_setup_share"):
        out[figure] = {
            kind: spread([r[figure] for r in results[f"universe/{large}/{kind}"]["runs"]])
            for kind in kinds
        }
    out["per_instrument_ratio"], out["driver_mb_per_instrument"], out["worker_growth"] = {}, {}, {}
    for kind in kinds:
        lo, hi = results[f"universe/{small}/{kind}"], results[f"universe/{large}/{kind}"]
        per = [_median(e, "stage_seconds") / e["instruments"] for e in (lo, hi)]
        out["per_instrument_ratio"][kind] = per[1] / per[0] if large > small else None
        peaks = [_median(e, "driver_peak_mb") for e in (lo, hi)]
        out["driver_mb_per_instrument"][kind] = (
            (peaks[1] - peaks[0]) / (large - small) if large > small else None
        )
        out["worker_growth"][kind] = worker_growth(hi)
    out["record"] = record_per_instrument(results, large, kinds)
    out["projection"] = {
        workload: projection(results, workload, size, kinds)
        for workload, size in ((AT_SCALE, 4), ("default", 4), ("universe", large))
        if f"{workload}/{size}/sequential" in results
    }
    return out


def projection(results: dict, workload: str, size: int, kinds: list[str]) -> dict:
    """Stage time for 500 instruments of this workload on 1, 8 and 64 workers.

    Per instrument, from the sequential run: the seconds inside units (u) and
    the driver's recording of each instrument after the first (r: one thread, so
    serial; the first also pays the process's one-time costs, see
    :func:`steady_recording`); the rest of that run (loading, start, writing
    outputs, and the first instrument's one-time part) as a constant (f). From the 2-worker runs
    of the largest universe (Ray's when measured): the median idle gap per unit
    on a worker (o). Sequentially the driver records between units:
    T(1) = f + N (u + r). With W workers it records beside them
    (``pipelines.execution.recorder``), so whichever is slower sets the pace:
    T(W) = f + N max(r, (u + n o) / W), n units per instrument. The goal
    compares T(64) with the ideal, f + N u / 64.
    """
    seq = results[f"{workload}/{size}/sequential"]
    u = _median(seq, "unit_seconds") / size
    r = _median(seq, "record_steady_seconds")
    one_time = _median(seq, "record_first_seconds") - r
    f = _median(seq, "stage_seconds") - (u + r) * size
    n = seq["runs"][0]["units"] / size
    parallel = [k for k in ("ray", "local") if k in kinds]
    large = max(e["instruments"] for key, e in results.items() if key.startswith("universe/"))
    source = f"universe/{large}/{parallel[0]}" if parallel else None
    o = _median(results[source], "median_gap_seconds") if source in results else 0.0
    seconds = {}
    for w in PROJECTION_WORKERS:
        if w == 1:
            seconds[w] = max(f, 0.0) + PROJECTION_INSTRUMENTS * (u + r)
        else:
            seconds[w] = max(f, 0.0) + PROJECTION_INSTRUMENTS * max(r, (u + n * o) / w)
    widest = max(PROJECTION_WORKERS)
    ideal = max(f, 0.0) + PROJECTION_INSTRUMENTS * u / widest
    return {
        "unit_seconds_per_instrument": u,
        "record_seconds_per_instrument": r,
        "record_one_time_seconds": one_time,
        "fixed_seconds": f,
        "units_per_instrument": n,
        "overhead_per_unit_seconds": o,
        "overhead_from": source,
        "seconds": seconds,
        "ideal_seconds": ideal,
        "ratio_to_ideal": seconds[widest] / ideal,
    }


def record_per_instrument(results: dict, size: int, kinds: list[str]) -> dict[str, dict]:
    """Per executor on the largest universe: the recording's seconds per instrument, and the
    driver's waiting for it (the part of it on the stage's critical path)."""
    out = {}
    for kind in kinds:
        entry = results.get(f"universe/{size}/{kind}")
        if entry is None:
            continue
        out[kind] = {
            "record": spread([r["record_seconds"] / size for r in entry["runs"]]),
            "waited": spread([r.get("record_waited_seconds", 0.0) / size for r in entry["runs"]]),
            "steady": (
                spread([r["record_steady_seconds"] for r in entry["runs"]])
                if all(r.get("record_steady_seconds") is not None for r in entry["runs"])
                else None
            ),
            "background": bool(entry["runs"][0].get("record_background")),
        }
    return out


# Output -----------------------------------------------------------------------------------


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def print_runs(results: dict) -> None:
    """One row per workload, size and executor: stage seconds, units/s, overhead, memory."""
    print(
        f"\n  {'run':<26} {'reps':>4} {'stage s (min-max)':>22} {'units/s':>8} "
        f"{'overhead':>9} {'record s':>9} {'driver MB':>10}"
    )
    for key, entry in results.items():
        s = spread([r["stage_seconds"] for r in entry["runs"]])
        print(
            f"  {key:<26} {s['n']:>4} {s['median']:8.1f} ({s['min']:.1f}-{s['max']:.1f})"
            f"{'':>2} {_median(entry, 'units_per_second'):8.2f} "
            f"{100 * _median(entry, 'overhead_share'):8.1f}% "
            f"{_median(entry, 'record_seconds'):9.2f} "
            f"{_median(entry, 'driver_peak_mb'):10.0f}"
        )


def print_goals(analysis: dict, sizes: list[int], kinds: list[str]) -> None:
    """Each goal of the issue, its figure and whether it is met."""
    small, large = min(sizes), max(sizes)
    for kind, s in analysis["speedup"].items():
        print(
            f"  speed-up of {kind} ({WORKERS} workers) over sequential, {large} instruments: "
            f"median {s['median']:.2f}x (min {s['min']:.2f}, max {s['max']:.2f}; {s['n']} repeats) "
            f"(goal >= {GOAL_SPEEDUP}x: {_verdict(s['median'] >= GOAL_SPEEDUP)})"
        )
    for kind, s in analysis["default_speedup"].items():
        print(
            f"  default config, {kind} over sequential: median {s['median']:.2f}x ({s['n']} runs)"
        )
    for kind, s in analysis["overhead_share"].items():
        if kind == "sequential":  # its "gaps" are the driver recording between units
            continue
        goal = f" (goal < {100 * GOAL_OVERHEAD_SHARE:.0f}%: " if kind == "ray" else " ("
        ok = s["median"] < GOAL_OVERHEAD_SHARE if kind == "ray" else None
        print(
            f"  {kind} overhead, {large} instruments: median {100 * s['median']:.1f}% of the "
            f"stage (min {100 * s['min']:.1f}%, max {100 * s['max']:.1f}%)"
            + (goal + _verdict(ok) + ")" if kind == "ray" else "")
        )
        less = analysis["overhead_less_setup_share"][kind]
        print(
            f"    less its worker's setup (importing TensorFlow and Keras) within the first "
            f"unit's wait: median {100 * less['median']:.1f}% (min {100 * less['min']:.1f}%, "
            f"max {100 * less['max']:.1f}%)"
        )
    for kind in kinds:
        ratio = analysis["per_instrument_ratio"][kind]
        mb = analysis["driver_mb_per_instrument"][kind]
        worker = analysis["worker_growth"][kind]
        if ratio is not None:
            ok = abs(ratio - 1) <= GOAL_PER_INSTRUMENT
            # With sequential units the driver holds TensorFlow's models too: no goal there.
            mb_ok = mb <= GOAL_DRIVER_MB_PER_INSTRUMENT if kind != "sequential" else None
            print(
                f"  {kind}: time per instrument at {large} / at {small}: {ratio:.2f} "
                f"(goal flat within {100 * GOAL_PER_INSTRUMENT:.0f}%: {_verdict(ok)}); driver peak "
                f"memory +{mb:.1f} MB per instrument (goal <= {GOAL_DRIVER_MB_PER_INSTRUMENT:.0f} "
                f"MB: {_verdict(mb_ok)})"
            )
        if worker["growth_mb"] is not None:
            # the goal is the workers'; sequentially the units run in the driver
            ok = worker["growth_mb"] <= GOAL_WORKER_GROWTH_MB if kind != "sequential" else None
            print(
                f"    {'driver' if kind == 'sequential' else 'worker'} memory over >= "
                f"{worker['units']} units: last quarter - first quarter after the warm-up, worst "
                f"of {worker['processes']} process(es): {worker['growth_mb']:+.1f} MB (goal flat, "
                f"<= {GOAL_WORKER_GROWTH_MB:.0f} MB, for workers: {_verdict(ok)})"
            )


def print_recording(analysis: dict, large: int) -> None:
    """The driver's serial recording per instrument and how much of it the stage waited for."""
    for kind, figures in analysis["record"].items():
        rec, waited, steady = figures["record"], figures["waited"], figures["steady"]
        where = "beside the units (background thread)" if figures["background"] else "inline"
        print(
            f"  {kind}: the driver's recording, {large} instruments: median "
            f"{rec['median']:.3f} s per instrument (min {rec['min']:.3f}, max {rec['max']:.3f}; "
            f"{rec['n']} repeats; goal <= {GOAL_RECORD_SECONDS} s: "
            f"{_verdict(rec['median'] <= GOAL_RECORD_SECONDS)}), {where}; the stage waited "
            f"{waited['median']:.3f} s per instrument for it"
        )
        if steady is not None:
            print(
                f"    each instrument after the first: median {steady['median']:.3f} s (min "
                f"{steady['min']:.3f}, max {steady['max']:.3f}); the first also pays the "
                "process's one-time costs"
            )


def print_projection(analysis: dict) -> None:
    """The 500-instrument projection and its assumptions."""
    about = {
        AT_SCALE: "the default config with no PNG charts, as configs/default.yaml says for "
        "hundreds of instruments: the goal's",
        "default": "the default config as it is (charts on), for reference",
        "universe": "the small synthetic universe, for reference (its units are so short "
        "that only recording in parallel could keep up with 64 workers)",
    }
    for workload, p in analysis["projection"].items():
        print(f"  {workload}: {about.get(workload, '')}")
        times = ", ".join(
            f"{w} worker{'s' if w > 1 else ''}: {p['seconds'][w] / 3600:.2f} h"
            for w in PROJECTION_WORKERS
        )
        print(f"  projection, {PROJECTION_INSTRUMENTS} instruments, {workload} workload: {times}")
        widest = max(PROJECTION_WORKERS)
        ok = p["ratio_to_ideal"] <= GOAL_PROJECTION_RATIO
        print(
            f"    {widest} workers: {p['ratio_to_ideal']:.2f}x the ideal (unit time / {widest} "
            f"+ the fixed start: {p['ideal_seconds'] / 3600:.2f} h; goal <= "
            f"{GOAL_PROJECTION_RATIO}x: {_verdict(ok)})"
        )
        print(
            f"    from: {p['unit_seconds_per_instrument']:.2f} s in units and "
            f"{p['record_seconds_per_instrument']:.3f} s of recording per instrument after "
            f"the first ({p['units_per_instrument']:.0f} units), {p['fixed_seconds']:.1f} s "
            f"fixed (of which {p['record_one_time_seconds']:.2f} s the first instrument's "
            "recording paid once), "
            f"{1000 * p['overhead_per_unit_seconds']:.1f} ms overhead per unit "
            f"({p['overhead_from'] or 'no parallel run'})"
        )
    print(
        "    assumptions: every worker is as fast as one core here and has one; units spread "
        "evenly (no straggler at the end); the per-unit overhead stays what 2 workers saw; "
        "with workers the driver records in one thread beside them, so the stage goes at the "
        "pace of the slower of the two (the recording's seconds measured sequentially, where "
        "it has a core to itself, each instrument after the first: the first's one-time "
        "costs are in the fixed part); the fixed part stays fixed; memory and the MLflow "
        "store keep up."
    )


def measure_cluster(repeats: int) -> dict | None:
    """Ray's overhead on the universe of 32 against a cluster that is already up
    (``benchmarks.ray_cluster``: a two-node cluster of ``tools/ray_cluster.sh`` whose
    worker node cannot see the project's files), printed; None when not asked for."""
    if repeats < 1:
        return None
    from benchmarks import ray_cluster

    print(f"\n  ray overhead against a running cluster, {repeats} repeats ...", flush=True)
    result = ray_cluster.run(repeats=repeats)
    ray_cluster.print_result(result)
    return result


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)

    def numbers(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x.strip()]

    parser.add_argument("--sizes", type=numbers, default=[8, 16, 32], help="universe sizes")
    parser.add_argument("--repeats", type=numbers, default=[5, 3, 5], help="repeats per size")
    parser.add_argument("--default-repeats", type=int, default=1, help="default config runs")
    parser.add_argument(
        "--executors", default=",".join(EXECUTORS), help="comma-separated (default: %(default)s)"
    )
    parser.add_argument(
        "--cluster-repeats",
        type=int,
        default=5,
        help="repeats against a running two-node Ray cluster (benchmarks.ray_cluster; 0: none)",
    )
    parser.add_argument("--quick", action="store_true", help="sizes 2,4 once, no default config")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.default_repeats = [2, 4], [1, 1], 0
        args.cluster_repeats = 0
    if len(args.repeats) != len(args.sizes) or min(args.sizes + args.repeats) < 1:
        parser.error("--repeats needs one count >= 1 per size in --sizes")
    args.executors = [k for k in args.executors.split(",") if k]
    if "sequential" not in args.executors or set(args.executors) - set(EXECUTORS):
        parser.error(f"--executors: sequential and any of {', '.join(EXECUTORS[1:])}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure, print the goals and the projection, and save everything to ``RESULTS``."""
    args = _parse_args(argv)
    kinds = list(args.executors)
    skipped = ray_unavailable() if "ray" in kinds else None
    if skipped:
        kinds.remove("ray")
        print(f"  ray: {skipped}; measuring {', '.join(kinds)}")
    repeats = ", ".join(f"{n} x {size}" for size, n in zip(args.sizes, args.repeats, strict=True))
    print(
        f"  repeats: default config {args.default_repeats}, universe {repeats} "
        "(the standard is 5; fewer where no ratio is quoted, to keep to the time budget)"
    )
    results = run_all(args, kinds)
    analysis = analyse(results, args.sizes, universe_kinds(kinds))
    print(f"\n  machine: {os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}")
    print_runs(results)
    print()
    print_goals(analysis, args.sizes, universe_kinds(kinds))
    print_recording(analysis, max(args.sizes))
    print_projection(analysis)
    cluster = measure_cluster(args.cluster_repeats if "ray" in kinds else 0)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "cpus": os.cpu_count(),
        "sizes": args.sizes,
        "repeats": args.repeats,
        "default_repeats": args.default_repeats,
        "executors": kinds,
        "skipped": {"ray": skipped} if skipped else {},
        "universe_bars": UNIVERSE_BARS,
        "results": results,
        "analysis": analysis,
        "cluster": cluster,
    }
    RESULTS.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
