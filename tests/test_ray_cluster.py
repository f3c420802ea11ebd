"""``executor.address``: the smoke train stage on a Ray cluster that is already up, whose
worker nodes cannot see the project's files, and a node lost mid-stage.

The cluster is ``tools/ray_cluster.sh`` in namespaces of its own (network: loopback
only; PID: every Ray process ends with it; mount: its own /tmp/ray): a head with no CPUs,
which the driver joins, and two worker nodes of one CPU each, in mount namespaces where
an empty folder hides the project's directory and the editable install's path hook. One
cluster serves the module: ``drive`` runs inside it as the driver, and the tests check
what it left. It needs ``unshare`` with root (or user namespaces), ``ip`` and the ray
extra; elsewhere the tests skip, saying which is missing.

The smoke config is cut to one instrument and one fold (6 units: five classic
forecasters and the LSTM), to keep the module near a minute and a half on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from benchmarks.ray_cluster import CLUSTER, cluster_command
from pipelines.common.errors import ConfigError
from pipelines.config import load_config
from pipelines.execution.ray_executor import _NodeWatch
from pipelines.stages import train

REPO_ROOT = Path(__file__).resolve().parent.parent
# One instrument, one fold: the units of every forecaster, and few of them.
SETTINGS = ["data.instruments=[GSPC]", "walkforward.folds=1"]
# The GCS notices a dead node after 3 missed health checks a second apart (Ray's default
# is 5 checks 3 s apart), and a unit no live node can run is given up 2 s later.
FAST_FAILURE = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
WAIT_FOR_NODE = "executor.wait_for_node_seconds=2"
STAGE_SECONDS = 240
# Tries of the fault run (see ``drive``).
FAULT_ATTEMPTS = 3


def _argv(output: Path, *settings: str) -> list[str]:
    sets = [f"output_directory={output}", *SETTINGS, *settings]
    return ["--config", "configs/smoke.yaml", *[a for s in sets for a in ("--set", s)]]


# Inside the cluster, as its driver ------------------------------------------------------


def drive(root: Path) -> None:
    """What the tests check, done in the cluster: where the nodes stand, the stage once
    as it is, and once with both worker nodes killed, one after the other."""
    address = os.environ["RAY_ADDRESS"]
    (root / "probe.json").write_text(json.dumps(_probe_nodes(address)))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cluster = ["executor.kind=ray", f"executor.address={address}", WAIT_FOR_NODE]
    stage = [sys.executable, "-m", "pipelines", "train"]
    with (root / "clean.log").open("w") as log:
        clean = subprocess.run(
            [*stage, *_argv(root / "clean", *cluster)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=STAGE_SECONDS,
        )
    # The fault can only be made while the LSTM unit runs after the classic units are in.
    # On a loaded machine the LSTM unit may end first (nothing to kill, the stage ends
    # well): that try says nothing, and another, in a fresh folder, is made.
    for attempt in range(1, FAULT_ATTEMPTS + 1):
        folder, log_path = root / f"fault-try{attempt}", root / f"fault-try{attempt}.log"
        with log_path.open("w") as log:
            started = time.monotonic()
            faulty = subprocess.Popen(
                [*stage, *_argv(folder, *cluster)],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            # the classic units' results are kept as they arrive: kill only once they are in
            kept = folder / "smoke" / "forecasts" / ".units"
            kills = _kill_nodes_running_lstm(
                faulty, count=2, ready=lambda kept=kept: len(list(kept.glob("*.pkl"))) >= 5
            )
            code = faulty.wait(timeout=STAGE_SECONDS)
        ended = time.monotonic()
        if kills or code != 0:
            break
    result = {"clean": clean.returncode, "fault": code, "kills": kills, "attempts": attempt}
    result["fault_folder"], result["fault_log"] = folder.name, log_path.name
    result["fault_seconds"] = ended - started
    result["after_last_kill"] = ended - kills[-1]["at"] if kills else None
    (root / "drive.json").write_text(json.dumps(result))


def _probe_nodes(address: str) -> list[dict]:
    """On each worker node, with no code sent: what ``import pipelines`` does, what the
    node sees of the project's directory, the gatecast components its Python environment
    registers, and the Python its workers run."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    project = str(REPO_ROOT)

    def look() -> dict:  # defined here, so that it travels by value
        import os
        import sys
        from importlib.metadata import entry_points

        try:
            import pipelines  # noqa: F401

            imported = "imported"
        except ImportError as err:
            imported = f"{type(err).__name__}: {err}"
        return {
            "import": imported,
            "listing": os.listdir(project),
            "components": [ep.name for ep in entry_points(group="gatecast.forecasters")],
            "python": sys.executable,
        }

    ray.init(address=address, logging_level="ERROR")
    try:
        task = ray.remote(num_cpus=1)(look)
        nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
        refs = [
            task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], False))
            for n in nodes
        ]
        return ray.get([ref.remote() for ref in refs])
    finally:
        ray.shutdown()


def _kill_nodes_running_lstm(
    stage: subprocess.Popen, count: int, ready: Callable[[], bool]
) -> list[dict]:
    """Kill (SIGKILL) the raylet of a worker node while it runs the LSTM unit, ``count``
    times, each time on a node not killed before, once ``ready()`` (the other units are
    in: on a busy machine Ray may start the LSTM unit before them); what was killed and
    when."""
    import psutil

    own = os.readlink("/proc/self/ns/mnt")  # the worker nodes' raylets are in others
    kills: list[dict] = []
    deadline = time.monotonic() + STAGE_SECONDS
    while len(kills) < count and stage.poll() is None and time.monotonic() < deadline:
        if not ready():
            time.sleep(0.05)
            continue
        for process in psutil.process_iter(["cmdline", "ppid"]):
            if (process.info["cmdline"] or [""])[0] != "ray::_run_task":  # an LSTM unit
                continue
            try:
                raylet = psutil.Process(process.info["ppid"])
                hidden = os.readlink(f"/proc/{raylet.pid}/ns/mnt") != own
            except (psutil.Error, OSError):
                continue
            if raylet.name() == "raylet" and hidden:
                raylet.send_signal(signal.SIGKILL)
                kills.append({"raylet": raylet.pid, "at": time.monotonic()})
                break
        time.sleep(0.05)
    return kills


# The tests ------------------------------------------------------------------------------


def test_units_no_live_node_can_run_are_given_up_after_the_wait():
    nodes = [
        {"Alive": True, "Resources": {"CPU": 0.0}},  # the head
        {"Alive": False, "Resources": {"CPU": 2.0}},  # the node that ran the units
    ]
    watch = _NodeWatch(SimpleNamespace(nodes=lambda: nodes), seconds=0.2)
    one_cpu, two_cpus_a_gpu = (1.0, 0.0), (2.0, 1.0)
    assert watch.stranded({one_cpu}) == set()  # the wait starts
    time.sleep(0.25)
    assert watch.stranded({one_cpu}) == {one_cpu}
    nodes.append({"Alive": True, "Resources": {"CPU": 2.0}})  # a node joins: the wait ends
    assert watch.stranded({one_cpu, two_cpus_a_gpu}) == set()
    time.sleep(0.25)
    assert watch.stranded({one_cpu, two_cpus_a_gpu}) == {two_cpus_a_gpu}  # it has no GPU
    assert _NodeWatch(SimpleNamespace(nodes=lambda: []), seconds=None).stranded({one_cpu}) == set()


@pytest.mark.parametrize(
    ("executor", "message"),
    [
        ({"retries": 0}, "executor.retries is for Ray: set executor.kind: ray"),
        ({"wait_for_node_seconds": 5}, "executor.wait_for_node_seconds is for Ray"),
        ({"kind": "ray", "retries": -1}, "executor.retries: Input should be greater"),
        ({"kind": "ray", "wait_for_node_seconds": 0}, "executor.wait_for_node_seconds: Input"),
    ],
)
def test_the_retry_settings_are_for_ray(executor, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("configs/smoke.yaml", {"executor": executor})
    assert load_config("configs/smoke.yaml", {"executor": {"kind": "ray", "retries": 0}})


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cut smoke config's train stage run sequentially: the forecasts to match."""
    root = tmp_path_factory.mktemp("cluster-sequential")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        assert train.main(_argv(root / "build", "executor.kind=sequential")) == 0
    return root / "build"


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``drive`` run as the driver of a cluster of ``tools/ray_cluster.sh``; its folder."""
    pytest.importorskip("psutil")
    command = cluster_command()  # with the ray extra, unshare and ip, and namespaces to make
    if isinstance(command, str):
        pytest.skip(f"a local Ray cluster in namespaces of its own {command}")
    root = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, **FAST_FAILURE, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    code = f"import pathlib, tests.test_ray_cluster as t; t.drive(pathlib.Path({str(root)!r}))"
    driver = [sys.executable, "-c", code]
    with (root / "cluster.log").open("w") as log:
        done = subprocess.run(
            [*command, str(CLUSTER), "--nodes", "2", "--cpus", "1", "--", *driver],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=(2 + FAULT_ATTEMPTS) * STAGE_SECONDS,
        )
    assert done.returncode == 0, (root / "cluster.log").read_text()[-3000:]
    return root


def _same_forecasts(folder: Path, sequential: Path) -> None:
    for name in ("GSPC.parquet", "GSPC.gates.parquet"):
        a, b = (f / "smoke" / "forecasts" / name for f in (sequential, folder))
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)


@pytest.mark.slow
def test_the_smoke_stage_on_nodes_without_the_code_gives_the_sequential_forecasts(
    cluster_run, sequential
):
    probes = json.loads((cluster_run / "probe.json").read_text())
    assert len(probes) == 2
    for probe in probes:  # the code reached the nodes only with the job (py_modules)
        assert probe["import"] == "ModuleNotFoundError: No module named 'pipelines'", probe
        assert probe["listing"] == [], probe
        assert probe["components"] == [], probe  # gatecast is not installed there either
        assert not probe["python"].startswith(str(REPO_ROOT)), probe
    result = json.loads((cluster_run / "drive.json").read_text())
    log = (cluster_run / "clean.log").read_text()
    assert result["clean"] == 0, log[-3000:]
    assert "executor: ray (cluster at 127.0.0.1:" in log
    _same_forecasts(cluster_run / "clean", sequential)


@pytest.mark.slow
def test_a_node_lost_mid_stage_costs_only_its_units(cluster_run, sequential, tmp_path, caplog):
    result = json.loads((cluster_run / "drive.json").read_text())
    fault = cluster_run / result["fault_folder"]  # the try that made the fault (see drive)
    log = (cluster_run / result["fault_log"]).read_text()
    assert len(result["kills"]) == 2, log[-3000:]
    # the first node's LSTM unit ran again on the second node: Ray retried it
    assert "the task will be retried" in log
    # the second node's was lost: no node was left, and the stage said which unit
    assert result["fault"] == 1, log[-3000:]
    failed = re.search(r"(\d+) of 6 train units failed \(a rerun redoes only these\): (.*)", log)
    assert failed, log[-3000:]
    lost = int(failed.group(1))
    # the classic units were in before the kills: only the LSTM unit, running, was lost
    assert lost == 1, failed.group(0)
    assert failed.group(2).startswith(
        "GSPC/lstm fold 0 seed 0: NoNodeForUnit: no live Ray node has the 1 CPU(s)"
    ), failed.group(0)
    assert result["after_last_kill"] < 60  # no waiting for ever
    # the rerun (here sequential: the executor is no part of a unit's key) redoes only those
    with pytest.MonkeyPatch.context() as patch, caplog.at_level("INFO", "gatecast.cache"):
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{cluster_run / 'mlflow.db'}")
        assert train.main(_argv(fault, "executor.kind=sequential")) == 0
    assert f"train: reused {6 - lost} of 6 units" in caplog.text
    _same_forecasts(fault, sequential)
