"""Executors, the executor config, the train units, and one stage run two ways.

The executor tests run plain functions (no TensorFlow), so a process pool
starts in about a second; the last test trains the smoke config in this
process and in a pool of two and asks for identical numbers.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.common.errors import ConfigError
from pipelines.config import REPO_ROOT, load_config
from pipelines.config.sections import ExecutorConfig
from pipelines.execution import executors
from pipelines.execution.executors import LocalExecutor, SequentialExecutor, executor_for
from pipelines.execution.runtime import DeviceInfo
from pipelines.execution.units import make_units
from pipelines.execution.walkforward import make_folds
from pipelines.sources.load import load_instrument
from pipelines.tracking import store as tracking_store

# Functions the workers run: module level, so a spawned process can import them.


def square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x


def where_am_i(_: int) -> dict[str, str | int]:
    return {
        "pid": os.getpid(),
        "intra": os.environ.get("TF_NUM_INTRAOP_THREADS", ""),
        "inter": os.environ.get("TF_NUM_INTEROP_THREADS", ""),
        "setup": os.environ.get("GATECAST_TEST_SETUP", ""),
    }


def nap(job: tuple[Path, float]) -> float:
    path, seconds = job
    partial = path.with_suffix(".part")  # the test reads the pid once the name exists
    partial.write_text(str(os.getpid()))
    partial.rename(path)
    time.sleep(seconds)
    return seconds


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in {"Z", "X"}


def mark_setup() -> None:
    os.environ["GATECAST_TEST_SETUP"] = f"done in {os.getpid()}"


def mark_started(folder: Path) -> None:
    """A setup that also leaves a file named after its worker's pid in ``folder``."""
    mark_setup()
    (folder / str(os.getpid())).write_text("")


def wait_for_files(folder: Path, count: int, seconds: float = 90) -> set[int]:
    """The pids named in ``folder`` once there are ``count`` of them (fails after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while len(names := {int(p.name) for p in folder.iterdir()}) < count:
        assert time.monotonic() < deadline, f"{len(names)} of {count} workers started"
        time.sleep(0.1)
    return names


def started_then_sleep(folder: Path, seconds: float) -> None:
    """A setup that leaves its worker's pid in ``folder``, then takes ``seconds`` (as
    TensorFlow's import does)."""
    (folder / str(os.getpid())).write_text("")
    time.sleep(seconds)


#: A driver with a pool of 2 whose workers are busy for a minute in their set-up
#: (``start``) or in a unit (``unit``); the test kills it.
DRIVER = """
import functools, sys
from pathlib import Path
from pipelines.execution.executors import LocalExecutor
from tests.test_executors import nap, started_then_sleep

folder, phase = Path(sys.argv[1]), sys.argv[2]
setup = functools.partial(started_then_sleep, folder, 60 if phase == "start" else 0)
with LocalExecutor(2, setup=setup) as pool:
    units = [(folder.parent / f"unit{k}", 60) for k in range(2)]
    list(pool.run(nap, units))
"""


# Executors ----------------------------------------------------------------------------


def test_sequential_runs_in_order_and_only_when_asked():
    ran: list[int] = []

    def record(x: int) -> int:
        ran.append(x)
        return square(x)

    outcomes = SequentialExecutor().run(record, [1, 2, -3, 4])
    assert next(outcomes) == (1, 1)
    assert ran == [1]  # nothing runs ahead of the driver
    assert next(outcomes) == (2, 4)
    unit, error = next(outcomes)
    assert unit == -3 and isinstance(error, ValueError) and "negative: -3" in str(error)
    assert ran == [1, 2, -3]  # a driver that stops here never runs 4


def test_sequential_lets_an_interruption_through():
    def interrupted(x: int) -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(SequentialExecutor().run(interrupted, [1]))


def test_local_pool_returns_every_result_and_error():
    with LocalExecutor(2) as executor:
        outcomes = dict(executor.run(square, [3, -1, 5, 0, 7]))
    assert {k: v for k, v in outcomes.items() if k != -1} == {3: 9, 5: 25, 0: 0, 7: 49}
    assert isinstance(outcomes[-1], ValueError) and "negative: -1" in str(outcomes[-1])


def test_local_workers_cap_tensorflow_threads_and_run_the_setup():
    with LocalExecutor(2, setup=mark_setup, cores=6) as executor:
        assert executor.threads == 3
        assert "2 worker(s) x 3 TensorFlow thread(s)" in executor.describe()
        seen = [outcome for _, outcome in executor.run(where_am_i, range(6))]
    assert all(s["pid"] != os.getpid() for s in seen)
    assert {(s["intra"], s["inter"]) for s in seen} == {("3", "3")}
    assert all(s["setup"] == f"done in {s['pid']}" for s in seen)
    assert "GATECAST_TEST_SETUP" not in os.environ  # the driver is left alone


def test_entering_the_pool_starts_its_workers_before_any_unit(tmp_path):
    with LocalExecutor(2, setup=functools.partial(mark_started, tmp_path)) as executor:
        started = wait_for_files(tmp_path, 2)  # no unit asked for yet
        seen = [outcome for _, outcome in executor.run(where_am_i, range(4))]
    assert {s["pid"] for s in seen} <= started
    assert all(s["setup"] == f"done in {s['pid']}" for s in seen)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_leaving_on_an_error_stops_the_units_still_running(tmp_path):
    started = time.monotonic()
    naps = [(tmp_path / "first", 0.0), (tmp_path / "a", 300.0), (tmp_path / "b", 300.0)]
    with pytest.raises(RuntimeError, match="driver gave up"), LocalExecutor(2) as executor:
        for _unit, _seconds in executor.run(nap, naps):
            while not ((tmp_path / "a").exists() or (tmp_path / "b").exists()):
                time.sleep(0.1)  # a worker is asleep in a long unit
            raise RuntimeError("driver gave up")
    # a worker stopped between writing its pid and naming the file leaves a .part
    pids = [int(text) for path in tmp_path.iterdir() if (text := path.read_text())]
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    "workers, cores, threads", [(1, 8, 8), (2, 8, 4), (3, 8, 2), (4, 2, 1), (16, 2, 1)]
)
def test_threads_per_worker_share_the_cores(workers, cores, threads):
    assert executors.threads_per_worker(workers, cores) == threads


def test_local_executor_misuse_is_a_clear_error():
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        LocalExecutor(0)
    with pytest.raises(RuntimeError, match="with` block"):
        next(LocalExecutor(1).run(square, [1]))


# Config -------------------------------------------------------------------------------


def test_executor_config_defaults_to_sequential_and_builds_the_executor():
    cfg = load_config("configs/smoke.yaml")
    assert cfg.executor == ExecutorConfig(kind="sequential", workers=None)
    assert isinstance(executor_for(cfg.executor), SequentialExecutor)
    local = executor_for(ExecutorConfig(kind="local", workers=3))
    assert isinstance(local, LocalExecutor) and local.workers == 3
    assert executor_for(ExecutorConfig(kind="local")).workers == executors.available_cores()


@pytest.mark.parametrize(
    "section, message",
    [
        ({"kind": "dask"}, "executor.kind: Input should be 'sequential', 'local' or 'ray'"),
        ({"kind": "local", "address": "10.0.0.1:6379"}, "executor.address is for Ray"),
        ({"cpus_per_unit": 2}, "executor.cpus_per_unit is for Ray: set executor.kind: ray"),
        ({"kind": "ray", "cpus_per_unit": 0}, "executor.cpus_per_unit: Input should be greater"),
        ({"kind": "ray", "gpus_per_lstm_unit": -1}, "executor.gpus_per_lstm_unit: Input should"),
        ({"kind": "ray", "address": "h:1", "workers": 2}, "drop one of the two"),
        ({"kind": "local", "workers": 0}, "executor.workers: Input should be greater than"),
        ({"workers": 4}, "workers=4 needs a process pool: set executor.kind: local"),
        ({"kind": "local", "worker": 2}, "unknown key 'executor.worker'; did you mean 'workers'"),
    ],
)
def test_bad_executor_config_is_a_clear_error(section, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/smoke.yaml", {"executor": section})


# Units --------------------------------------------------------------------------------


def test_units_carry_their_fold_bars_only_in_the_sequential_order():
    cfg = load_config("configs/smoke.yaml", {"forecasters": {"lstm": {"seeds": 2}}})
    bars = {name: load_instrument(cfg, name) for name in cfg.data.instruments}
    folds = {name: make_folds(b.index, cfg.walkforward, 60) for name, b in bars.items()}
    device = DeviceInfo("cpu", "cpu", "test", "/CPU:0", True)
    units = make_units(cfg, bars, folds, device)
    per_instrument = 5 * 2 + 2 * 2  # five classic x two folds, two seeds x two folds
    assert len(units) == 2 * per_instrument
    assert [str(u) for u in units[8:14]] == [
        "GSPC/ols fold 0",
        "GSPC/ols fold 1",
        "GSPC/lstm fold 0 seed 0",
        "GSPC/lstm fold 1 seed 0",
        "GSPC/lstm fold 0 seed 1",
        "GSPC/lstm fold 1 seed 1",
    ]
    for unit in units:
        # from the training start to the test end: nothing after it reaches the unit
        assert unit.bars.index[0] == unit.fold.train_start_date
        assert unit.bars.index[-1] == unit.fold.test_end_date
        assert not hasattr(unit, "cfg")  # only what it reads: no whole config
    lstm = [u for u in units if u.forecaster == "lstm"]
    # the LSTM's row blocks are settled once by the driver, the same in every unit
    assert len({u.params["batch_shards"] for u in lstm}) == 1
    assert lstm[0].params["batch_shards"] >= 1
    assert [u.seed for u in lstm[:4]] == [7, 7, 8, 8]
    assert [u.gates for u in lstm[:4]] == [True, True, False, False]
    assert [u.export for u in lstm[:4]] == [False, True, False, True]


# One stage run, two executors -----------------------------------------------------------


def _train_in_a_fresh_process(root: Path, executor: dict) -> tuple[dict, str]:
    """``_train`` as a user runs it, in a process of its own; also whether that process,
    the driver, started TensorFlow."""
    argv = ["--config", "configs/smoke.yaml", "--set", f"output_directory={root}"]
    argv += ["--set", f"executor={json.dumps(executor)}"]
    script = (
        "import sys; from pipelines.stages import train; code = train.main(sys.argv[1:]); "
        "print('driver started tensorflow:', 'tensorflow' in sys.modules); sys.exit(code)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((root / "smoke" / "forecasts" / "summary.json").read_text())
    return summary, done.stdout


@pytest.mark.slow
def test_the_smoke_config_gives_identical_numbers_sequentially_and_in_a_pool_of_two(
    tmp_path, monkeypatch, smoke_sequential
):
    sequential, uri = smoke_sequential
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    first = json.loads((sequential / "smoke" / "forecasts" / "summary.json").read_text())
    second, printed = _train_in_a_fresh_process(tmp_path / "pool", {"kind": "local", "workers": 2})
    # on the CPU the workers start TensorFlow and the driver does not (runtime.configure_stage)
    assert "driver started tensorflow: False" in printed
    assert list(first["instruments"]) == list(second["instruments"]) == ["GSPC", "GOOG"]
    client = tracking_store.client()
    for name, entry in first["instruments"].items():
        other = second["instruments"][name]
        assert entry["columns"] == other["columns"]
        assert entry["metrics"] == other["metrics"]
        for suffix in (".parquet", ".gates.parquet"):
            a = pd.read_parquet(sequential / "smoke" / "forecasts" / f"{name}{suffix}")
            b = pd.read_parquet(tmp_path / "pool" / "smoke" / "forecasts" / f"{name}{suffix}")
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert np.isfinite(
            pd.read_parquet(tmp_path / "pool" / "smoke" / "forecasts" / f"{name}.parquet")[
                "lstm"
            ].dropna()
        ).all()
        for forecaster, run_id in entry["runs"].items():
            again = other["runs"][forecaster]
            assert run_id != again
            metrics = client.get_run(run_id).data.metrics
            assert {k: repr(v) for k, v in metrics.items() if "seconds" not in k} == {
                k: repr(v)
                for k, v in client.get_run(again).data.metrics.items()
                if "seconds" not in k
            }, forecaster
        for key in ("loss/fold0/seed0", "val_loss/fold1/seed0"):
            history = [m.value for m in client.get_metric_history(entry["runs"]["lstm"], key)]
            assert history
            assert history == [
                m.value for m in client.get_metric_history(other["runs"]["lstm"], key)
            ]


@pytest.mark.parametrize(
    ("signal_name", "phase"), [("SIGKILL", "start"), ("SIGKILL", "unit"), ("SIGTERM", "start")]
)
def test_no_pool_worker_outlives_its_driver(tmp_path, signal_name, phase):
    import signal
    import subprocess
    import sys

    folder = tmp_path / "pids"
    folder.mkdir()
    repo = Path(__file__).resolve().parent.parent
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(folder), phase], cwd=repo, env={**os.environ}
    )
    try:
        workers = wait_for_files(folder, 2)
        if phase == "unit":  # both units running
            wait_for_files_named(tmp_path, ["unit0", "unit1"])
        driver.send_signal(getattr(signal, signal_name))
        driver.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "pool workers outlived the driver"
    finally:
        driver.kill()
        for pid in wait_for_files(folder, 0):
            if _alive(pid):
                os.kill(pid, 9)


def wait_for_files_named(folder: Path, names: list[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not all((folder / n).exists() for n in names):
        assert time.monotonic() < deadline, f"not all of {names} appeared"
        time.sleep(0.1)
