"""Faults that must cost nothing: SIGTERM at any moment leaves no MLflow run RUNNING, a tracking
server that dies mid-stage ends the stage in bounded time with one line, and so does a full disk
under the store."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import REPO_ROOT
from pipelines.tracking.uri import server_environment
from tests.servers import free_port, wait_until_answering

# A stage that opens runs all the time, from its main thread and from a recording thread
# (pipelines.execution.recorder), the way the train stage does with a pool of workers. The
# script imports once and forks one stage per try (before any thread or store exists), each
# in an experiment of its own, and says "open <try> <pid>" once its parent run is open.
_BUSY_STAGES = """
import os, sys
from pipelines import tracking
from pipelines.config import load_config
from pipelines.execution.recorder import Recorder

def record(i):
    with tracking.child_run(f"R{i}/record", {"gatecast.instrument": f"R{i}"}):
        tracking.log_metrics({"m": float(i)})
        tracking.log_text("x", "x.txt")

def stage(k):
    cfg = load_config("configs/smoke.yaml", overrides={"output_directory": sys.argv[1],
                      "tracking": {"experiment": f"sigterm-{k}"}})
    with tracking.pipeline_run(cfg, "train"):
        print("open", k, os.getpid(), flush=True)
        with Recorder(background=True) as recorder:
            for i in range(100000):
                recorder.submit(record, i)
                with tracking.child_run(f"D{i}/driver"):
                    tracking.log_metrics({"m": float(i)})

tracking.store.open_store(tracking.tracking_uri())  # the store exists before the forks
tracking.store._CLIENTS.clear()  # each stage opens its own connection
children = []
for k in range(int(sys.argv[2])):
    pid = os.fork()
    if pid == 0:
        try:
            stage(k)
        except KeyboardInterrupt as err:
            print(f"stage {k}: KeyboardInterrupt: {err}", file=sys.stderr, flush=True)
            os._exit(130)
        os._exit(0)
    children.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
print("exit", *codes, flush=True)
"""


@pytest.mark.slow
def test_sigterm_at_any_moment_leaves_no_run_running(tmp_path):
    database = tmp_path / "mlflow.db"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{database}",
        "PYTHONPATH": str(REPO_ROOT),
    }
    # ten tries, each signalled at its own moment of its stage's first second, while runs
    # are being created, logged to and ended in two threads
    delays = np.linspace(0.0, 1.0, 10)
    driver = subprocess.Popen(
        [sys.executable, "-c", _BUSY_STAGES, str(tmp_path / "build"), str(len(delays))],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    opened = {}
    while len(opened) < len(delays):
        line = driver.stdout.readline().split()
        assert line and line[0] == "open", driver.stderr.read()
        opened[int(line[1])] = (int(line[2]), time.monotonic())
    for k, (pid, at) in sorted(opened.items()):
        time.sleep(max(0.0, at + delays[k] - time.monotonic()))
        os.kill(pid, signal.SIGTERM)
    out, err = driver.communicate(timeout=120)
    assert out.split() == ["exit", *["130"] * len(delays)], err[-3000:]
    with contextlib.closing(sqlite3.connect(database, timeout=20)) as connection:
        statuses = connection.execute(
            "SELECT experiments.name, runs.name, runs.status FROM runs "
            "JOIN experiments ON runs.experiment_id = experiments.experiment_id"
        ).fetchall()
    running = [(experiment, run) for experiment, run, status in statuses if status == "RUNNING"]
    assert not running, f"left RUNNING: {running}"
    killed = {experiment for experiment, run, status in statuses if run == "train"}
    assert killed == {f"sigterm-{k}" for k in range(len(delays))}
    assert {status for _, run, status in statuses if run == "train"} == {"KILLED"}


def _child_runs(database: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as connection:
            (count,) = connection.execute(
                "SELECT COUNT(*) FROM runs WHERE name LIKE 'train/%'"
            ).fetchone()
            return count
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_server_that_dies_mid_stage_ends_the_stage_within_a_minute_with_one_line(tmp_path):
    port, database = free_port(), tmp_path / "server.db"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{database}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=server_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    stage = None
    try:
        # answering, not only listening: the stage's first request would wait 10 s
        wait_until_answering(server, f"http://127.0.0.1:{port}")
        deadline = time.time() + 180
        env = {
            **os.environ,
            # a password in the URI must never be printed
            "MLFLOW_TRACKING_URI": f"http://alice:s3cret@127.0.0.1:{port}",
            "PYTHONPATH": str(REPO_ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        command = [sys.executable, "-m", "pipelines", "train", "--config", "configs/smoke.yaml"]
        command += ["--set", f"output_directory={tmp_path / 'build'}"]
        command += ["--set", "executor.kind=local", "--set", "executor.workers=2"]
        stage = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        while _child_runs(database) == 0:  # the stage is recording its first results
            assert stage.poll() is None, stage.communicate()[1].decode()[-3000:]
            assert time.time() < deadline, "no child run appeared"
            time.sleep(0.2)
        os.killpg(server.pid, signal.SIGKILL)
        killed = time.time()
        _, err = stage.communicate(timeout=120)
        took = time.time() - killed
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        if stage is not None and stage.poll() is None:
            stage.kill()
    text = err.decode()
    lines = [line for line in text.splitlines() if line.strip()]
    assert stage.returncode == 1, text[-3000:]
    assert took < 60, f"the stage took {took:.0f} s to end after the server died"
    assert "Traceback" not in text, text[-3000:]
    assert "s3cret" not in text
    assert lines[-1].startswith("error: train failed: TrackingError: MLflow could not "), text
    # refused if the kill fell between requests, broken if it fell while the server answered
    assert re.search(
        rf"127\.0\.0\.1:{port} failed \(Connection (refused|broken|aborted)\)",
        lines[-1],
    ), lines[-1]
    print(f"the stage ended {took:.1f} s after the server was killed")
    assert sum("MLflow could not" in line for line in lines) == 1, text[-3000:]


def _mount_tmpfs(folder: Path, kilobytes: int, remount: bool = False) -> bool:
    options = f"{'remount,' if remount else ''}size={kilobytes}k"
    command = ["mount", "-o", options, "tmpfs", str(folder)]
    if not remount:
        command[1:1] = ["-t", "tmpfs"]
    return subprocess.run(command, capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs (a disk to fill) needs root")
def test_a_full_disk_under_the_store_is_one_line_without_a_traceback(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, 8192):
        pytest.skip("could not mount a tmpfs here (a container without the capability)")
    try:
        uri = f"sqlite:///{disk / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO_ROOT)}
        made = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from pipelines.tracking import store; store.open_store({uri!r})",
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stderr
        used = sum(f.stat().st_size for f in disk.rglob("*") if f.is_file()) // 1024
        assert _mount_tmpfs(disk, used + 200, remount=True)  # room for a few runs only
        command = [sys.executable, "-m", "pipelines", "train", "--config", "configs/smoke.yaml"]
        command += ["--set", f"output_directory={tmp_path / 'build'}"]
        command += ["--set", "data.instruments=[GSPC]", "--set", "forecasters.lstm=null"]
        done = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
        )
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert sum("MLflow" in line and "full" in line for line in lines) == 1, done.stderr[-3000:]
    assert lines[-1].startswith("error: train failed: TrackingError: MLflow could not ")
    assert f"the disk under {uri} is full; free some space and run again" in lines[-1]
