"""The child-process scripts of ``make bench`` resolve every name they use.

The benchmarks run these scripts only under ``make bench``, so a renamed module would
otherwise go unnoticed until someone measures.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks._mlflow_import import ALL_STAGE_MODULES, driver_head

REPO = Path(__file__).resolve().parent.parent


def test_the_drivers_import_the_tracking_timer_and_their_stage():
    code = (
        driver_head(ALL_STAGE_MODULES, "pipelines.stages.run")
        + "overhead.reset_overhead()\n"
        + "assert callable(overhead.overhead_by_call) and callable(overhead.mlflow_seconds)\n"
        + "assert hasattr(stage, 'main') and t0 <= t1 <= t2\n"
        # the train benchmark's entry, in the same process (its imports are then cached)
        + "assert hasattr(importlib.import_module('pipelines.stages.train'), 'main')\n"
        + "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ok"]


def test_a_driver_whose_stage_modules_load_mlflow_stops_naming_the_module():
    """Otherwise MLflow's import would be timed as the stage's own and left out of its share."""
    code = driver_head(["pipelines.cli", "pipelines.stages.backtest"], "pipelines.stages.run")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    assert "pipelines.stages.backtest imports mlflow" in done.stderr.splitlines()[-1]


def test_the_scale_benchmarks_measured_process_runs_a_small_train_stage(tmp_path):
    """``benchmarks.scale.child`` (what every measurement of ``benchmarks scale`` and
    ``benchmarks.ray_cluster`` runs) on one instrument, classic forecasters only, two
    workers: its probe line comes out and summarises."""
    import json
    import os

    from benchmarks import scale

    argv = ["--config", "configs/smoke.yaml"]
    for item in (
        f"output_directory={tmp_path / 'build'}",
        "data.instruments=[GSPC]",
        "forecasters.lstm=null",
        *scale._executor_settings("local"),
    ):
        argv += ["--set", item]
    code = "import sys, benchmarks.scale as s; sys.exit(s.child(sys.argv[1:]))"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(scale.MARK)]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    probe = json.loads(lines[-1].removeprefix(scale.MARK))
    assert probe["records"] == 5 and probe["record_background"] is True
    summary = scale.summarise(probe)
    assert summary["units"] == probe["records"] * 2  # two folds of each forecaster
    assert 0 <= summary["record_waited_seconds"] <= summary["stage_seconds"]


def test_the_scale_overhead_names_the_workers_setup_within_the_first_units_wait():
    """The overhead counts the wait for the first unit whole; the part of it its worker spent
    in the driver's setup (TensorFlow's import) is also reported, and only the part that
    falls inside the wait: a setup that began before the units were handed over overlapped
    the driver's own preparation."""
    from benchmarks import scale

    def unit(start: float, end: float, pid: int, setup: list[float] | None) -> dict:
        return {"start": start, "end": end, "seconds": end - start, "pid": pid, "setup": setup}

    probe = {
        "kind": "ray",
        "workers": 2,
        "first_run": 5.0,  # the driver handed over its units
        "enter_seconds": 0.5,
        "exit_seconds": 0.3,
        "stage_seconds": 20.0,
        "units": [
            {**unit(10.0, 12.0, 1, [4.0, 9.5]), "arrived": 12.1, "rss_mb": 1.0},
            {**unit(10.5, 13.0, 2, [4.2, 10.4]), "arrived": 13.1, "rss_mb": 1.0},
            {**unit(12.5, 14.0, 1, [4.0, 9.5]), "arrived": 14.1, "rss_mb": 1.0},
        ],
        "record_seconds": 0.0,
        "record_waited_seconds": 0.0,
        "records": 0,
        "driver_peak_mb": 1.0,
    }
    summary = scale.summarise(probe)
    # waited 5 s for the first unit (5.0 -> 10.0), of it 4.5 s its worker's setup (5.0 -> 9.5)
    assert summary["first_unit_wait_seconds"] == 5.0
    assert summary["setup_in_wait_seconds"] == 4.5
    # overhead: 0.5 in + 5.0 wait + 0.3 out + the 0.5 s gap on worker 1 over 2 workers
    assert summary["overhead_share"] == pytest.approx((0.5 + 5.0 + 0.3 + 0.25) / 20.0)
    assert summary["overhead_less_setup_share"] == pytest.approx((0.5 + 0.5 + 0.3 + 0.25) / 20.0)
    # units that ran in the driver's own process carry no setup of a worker
    inline = {**probe, "units": [{**u, "setup": None} for u in probe["units"]]}
    assert scale.summarise(inline)["setup_in_wait_seconds"] == 0.0


def test_the_scale_benchmarks_timed_executor_keeps_where_units_run():
    """The train stage records inline when its units run in its own process; the benchmark's
    wrapper must not turn a sequential run into one that records in the background."""
    from benchmarks import scale
    from pipelines.config.sections import ExecutorConfig
    from pipelines.execution import executors

    sequential = scale._TimedExecutor(executors.SequentialExecutor(), {})
    pool = scale._TimedExecutor(executors.executor_for(ExecutorConfig(kind="local", workers=2)), {})
    assert sequential.in_process is True and pool.in_process is False


def test_the_scale_projection_counts_the_first_instruments_one_time_recording_once():
    """The first instrument recorded in a process pays one-time costs (MLflow's first model,
    the first chart): the projection multiplies the others' recording by 500 and counts the
    first's excess once, in the fixed part."""
    from benchmarks import scale

    steady = scale.steady_recording({"A": 2.0, "B": 0.5, "C": 0.7})
    assert steady == {"record_first_seconds": 2.0, "record_steady_seconds": 0.6}
    assert scale.steady_recording({"A": 2.0})["record_steady_seconds"] is None

    run = {
        "unit_seconds": 30.0,  # 10 s of units per instrument
        "record_seconds": 3.2,
        **steady,
        "stage_seconds": 40.0,
        "units": 6,
        "median_gap_seconds": 0.0,
    }
    results = {"universe/3/sequential": {"instruments": 3, "runs": [run]}}
    p = scale.projection(results, "universe", 3, ["sequential"])
    assert p["record_seconds_per_instrument"] == 0.6
    assert abs(p["record_one_time_seconds"] - 1.4) < 1e-9
    # 40 s = 3 x (10 + 0.6) + f: the fixed part holds the first instrument's 1.4 s extra
    assert abs(p["fixed_seconds"] - 8.2) < 1e-9
    assert abs(p["seconds"][1] - (8.2 + 500 * 10.6)) < 1e-6
    assert abs(p["seconds"][64] - (8.2 + 500 * max(0.6, 10 / 64))) < 1e-6
    assert abs(p["ideal_seconds"] - (8.2 + 500 * 10 / 64)) < 1e-6


def test_the_store_growth_benchmark_times_every_run_in_blocks(tmp_path):
    """``benchmarks.store_growth`` on a few runs: one time per child run, blocks of them, the
    last block's median over the first's; the runs are in the store it made, all FINISHED."""
    import json

    from benchmarks import store_growth

    out = tmp_path / "store_growth.json"
    assert store_growth.main(["--runs", "6", "--block", "3", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [b["runs"] for b in record["blocks"]] == [[0, 2], [3, 5]]
    assert all(0 < b["min"] <= b["median"] <= b["max"] for b in record["blocks"])
    first, last = (b["median"] for b in (record["blocks"][0], record["blocks"][-1]))
    assert record["last_over_first"] == last / first

    runs = []
    real = store_growth.record_runs

    def keep(count, folder):
        seconds = real(count, folder)
        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("gatecast-smoke")
        runs.extend(client.search_runs([experiment.experiment_id]))
        return seconds

    store_growth.record_runs = keep
    try:
        assert store_growth.main(["--runs", "4", "--block", "2", "--out", str(out)]) == 0
    finally:
        store_growth.record_runs = real
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}  # 4 + the stage's
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4 and all(len(r.data.metrics) >= 36 for r in children)


def test_the_pipeline_benchmark_bounds_mlflow_three_ways():
    """All threads, main thread only, and main thread plus its waits for the background
    recording, each over the wall time; the driver's recorder wrapper resolves."""
    from benchmarks.pipeline import RECORDER_WAITS, mlflow_shares

    result = {
        "tracking_start_seconds": 0.5,
        "recorder_waited_seconds": 1.5,
        "stages": {
            "train": {"mlflow_seconds": 4.0, "mlflow_main_seconds": 1.0},
            "backtest": {"mlflow_seconds": 2.0, "mlflow_main_seconds": 2.0},
        },
    }
    shares = mlflow_shares(result, wall=100.0)
    assert shares["mlflow_seconds"] == 6.5 and shares["mlflow_share"] == 0.065
    assert shares["mlflow_main_seconds"] == 3.5 and shares["mlflow_main_share"] == 0.035
    assert shares["mlflow_critical_seconds"] == 5.0 and shares["mlflow_critical_share"] == 0.05

    from pipelines.execution.recorder import Recorder
    from pipelines.stages import backtest, train

    original, namespace = Recorder.__exit__, {}
    exec(RECORDER_WAITS, namespace)
    try:
        # both stages that record beside their workers are counted
        with train.Recorder(background=True) as first:
            first.submit(time.sleep, 0.05)
        with backtest.Recorder(background=True) as second:
            second.submit(time.sleep, 0.05)
        with train.Recorder(background=False) as inline:  # its waits are main-thread calls
            inline.submit(time.sleep, 0.05)
        waited = first.waited_seconds + second.waited_seconds
        assert first.waited_seconds > 0 and second.waited_seconds > 0
        assert namespace["waited"][0] == pytest.approx(waited)
    finally:
        Recorder.__exit__ = original
