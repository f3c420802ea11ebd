"""pipelines.tracking against a temporary MLflow store: store resolution, run layout, statuses."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelines import recorder, tracking
from pipelines.config import REPO_ROOT, load_config


@pytest.fixture(scope="module")
def module_store(tmp_path_factory: pytest.TempPathFactory):
    """One SQLite store for this module (creating one costs seconds); tests use own experiments."""
    path = tmp_path_factory.mktemp("tracking-store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path / 'mlflow.db'}")
        yield path


@pytest.fixture
def store(module_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{module_store / 'mlflow.db'}")
    return module_store


def _config(tmp_path: Path, experiment: str, writer: str = "process"):
    return load_config(
        "configs/smoke.yaml",
        overrides={
            "output_directory": str(tmp_path / "build"),
            "data": {"instruments": ["GSPC"]},
            "tracking": {"experiment": f"gatecast-test-{experiment}", "writer": writer},
        },
    )


@pytest.fixture
def cfg(tmp_path: Path, request: pytest.FixtureRequest):
    return _config(tmp_path, request.node.name)


@pytest.fixture
def inline_cfg(tmp_path: Path, request: pytest.FixtureRequest):
    """The recorder in the test's own process (``tracking.writer: inline``)."""
    return _config(tmp_path, request.node.name, writer="inline")


def _status(run_id: str) -> str:
    return tracking.client().get_run(run_id).info.status


def test_default_store_is_in_the_repo_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{REPO_ROOT / 'mlruns' / 'mlflow.db'}"
    assert tracking.artifact_root() == REPO_ROOT / "mlruns" / "artifacts"


def test_environment_takes_over(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri() == "http://127.0.0.1:5999"
    assert tracking.artifact_root() is None  # the server decides
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/x/runs.db")
    assert tracking.artifact_root() == tmp_path / "x" / "artifacts"


def test_a_sqlite_store_is_opened_in_write_ahead_log_mode(tmp_path, monkeypatch, cfg):
    # A fresh store: the database file does not exist before the stage opens it.
    database = tmp_path / "fresh" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
    with tracking.pipeline_run(cfg, "train") as run:
        tracking.log_metrics({"rmse": 1.0})
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finished = tracking.client().get_run(run.run_id)
    assert finished.info.status == "FINISHED" and finished.data.metrics == {"rmse": 1.0}


def test_the_skipped_requirement_check_is_the_one_save_model_calls():
    # If MLflow moves or renames the check, the skip silently stops working: fail here.
    from mlflow.utils import environment

    module_name, function_name = recorder._REQUIREMENT_CHECK
    assert module_name == environment.__name__
    original = getattr(environment, function_name)
    assert function_name in environment._process_pip_requirements.__code__.co_names
    with recorder._no_requirement_check():
        assert getattr(environment, function_name)(["surely-not-installed==1.0"]) is None
    assert getattr(environment, function_name) is original


def test_credentials_never_leave_the_uri():
    assert tracking.display_uri("https://ann:secret@mlflow.example:8443/x") == (
        "https://mlflow.example:8443/x"
    )
    assert tracking.display_uri("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"


def test_server_command_binds_loopback_and_serves_the_store(tmp_path):
    command = tracking.server_command(port=5123, backend_uri=f"sqlite:///{tmp_path}/m.db")
    assert command[1:4] == ["-m", "mlflow", "server"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5123"
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path}/m.db"
    assert (
        command[command.index("--artifacts-destination") + 1] == (tmp_path / "artifacts").as_uri()
    )


def test_flatten_config_gives_every_key():
    cfg = load_config("configs/smoke.yaml")
    params = tracking.flatten_config(cfg)
    assert params["forecasters.lstm.units"] == "[8]"
    assert params["walkforward.test_bars"] == "100"
    assert params["data.instruments"] == '["GSPC", "GOOG"]'
    assert params["seed"] == "7"
    assert params["forecasters.kalman.trend"] == "false"
    assert params["experiment_name"] == "gatecast-smoke"


@pytest.mark.parametrize("writer", ["process", "inline"])
def test_parent_and_child_runs_carry_config_tags_metrics_and_artifacts(store, tmp_path, writer):
    cfg = _config(tmp_path, f"layout-{writer}", writer)
    data_file = REPO_ROOT / "data" / "sample" / "GSPC.csv"
    tracking.reset_overhead()
    with (
        tracking.pipeline_run(
            cfg,
            "train",
            inputs={"GSPC.csv": data_file},
            tags={"gatecast.device": "cpu"},
            command="x y",
        ) as parent,
        tracking.child_run("GSPC/sma", tags={"gatecast.instrument": "GSPC"}) as child,
    ):
        tracking.log_metrics({"rmse": 1.5, "dm_p_value": float("nan"), "note": "skipped"})
        for fold in range(3):
            tracking.log_metrics({"fold/rmse": fold + 0.5}, step=fold)
        # more values than one batch may carry
        tracking.log_metric_history("loss/fold0/seed0", np.linspace(1, 0, 2500))
        frame = pd.DataFrame(
            {"x": [1.0, 2.0]}, index=pd.DatetimeIndex(["2020-01-01", "2020-01-02"])
        )
        tracking.log_dataframe(frame, "forecasts")
        fig = Figure()
        FigureCanvasAgg(fig)
        fig.add_subplot().plot([1, 2, 3])
        tracking.log_figure(fig, "loss")
    assert tracking.overhead_seconds() > 0
    assert tracking.overhead_calls() > 0

    client = tracking.client()
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    assert experiment.experiment_id == parent.experiment_id
    assert experiment.artifact_location == (store / "artifacts" / cfg.experiment_name).as_uri()

    run = client.get_run(parent.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "train"
    tags = run.data.tags
    assert tags["gatecast.stage"] == "train"
    assert tags["gatecast.command"] == "x y"
    assert tags["gatecast.seed"] == "7"
    assert tags["gatecast.device"] == "cpu"
    assert len(tags["gatecast.git.commit"]) == 40
    assert tags["gatecast.git.dirty"] in {"true", "false"}
    for library in (
        "tensorflow",
        "keras",
        "backtrader",
        "mlflow",
        "pandas",
        "numpy",
        "statsmodels",
    ):
        assert tags[f"gatecast.version.{library}"]
    assert tags["gatecast.version.mlflow"] == mlflow.__version__
    assert (
        tags["gatecast.input.GSPC.csv.sha256"] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    )
    assert run.data.params["forecasters.lstm.units"] == "[8]"
    assert run.data.params["output_directory"] == str(tmp_path / "build")

    # MLflow's own run context, as mlflow.start_run would set it
    assert tags["mlflow.user"]
    assert tags["mlflow.source.type"] == "LOCAL"

    sub = client.get_run(child.run_id)
    assert sub.info.status == "FINISHED"
    assert sub.data.tags["mlflow.source.type"] == "LOCAL"
    assert sub.info.run_name == "GSPC/sma"
    assert sub.data.tags["mlflow.parentRunId"] == parent.run_id
    assert sub.data.tags["gatecast.instrument"] == "GSPC"
    assert sub.data.tags["gatecast.stage"] == "train"
    assert sub.data.tags["gatecast.git.commit"] == tags["gatecast.git.commit"]
    assert sub.data.params == run.data.params
    assert sub.data.metrics["rmse"] == 1.5
    assert np.isnan(sub.data.metrics["dm_p_value"])
    assert "note" not in sub.data.metrics
    folds = client.get_metric_history(child.run_id, "fold/rmse")
    assert sorted((m.step, m.value) for m in folds) == [(0, 0.5), (1, 1.5), (2, 2.5)]
    loss = client.get_metric_history(child.run_id, "loss/fold0/seed0")
    assert len(loss) == 2500
    assert sorted(m.step for m in loss) == list(range(2500))

    artifacts = {a.path for a in client.list_artifacts(child.run_id)}
    assert {"config.yaml", "forecasts.parquet", "plots"} <= artifacts
    assert [a.path for a in client.list_artifacts(child.run_id, "plots")] == ["plots/loss.png"]
    local = tracking.download_artifact(child.run_id, "forecasts.parquet", tmp_path / "dl")
    pd.testing.assert_frame_equal(pd.read_parquet(local), frame, check_freq=False)
    config = tracking.download_artifact(parent.run_id, "config.yaml", tmp_path / "dl2")
    assert yaml.safe_load(config.read_text())["forecasters"]["lstm"]["units"] == [8]
    png = tracking.download_artifact(child.run_id, "plots/loss.png", tmp_path / "dl3")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    found = tracking.find_runs(cfg.experiment_name, "tags.gatecast.stage = 'train'")
    assert {r.info.run_id for r in found} == {parent.run_id, child.run_id}
    assert [r.info.run_id for r in tracking.child_runs(parent.run_id)] == [child.run_id]


def test_an_exception_ends_every_open_run_failed(store, cfg):
    ids = {}
    with (
        pytest.raises(RuntimeError, match="boom") as caught,
        tracking.pipeline_run(cfg, "train") as parent,
    ):
        ids["parent"] = parent.run_id
        with tracking.child_run("GSPC/random_walk") as done:
            ids["done"] = done.run_id
            tracking.log_metrics({"rmse": 1.0})
        with tracking.child_run("GSPC/lstm") as child:
            ids["child"] = child.run_id
            tracking.log_metrics({"rmse": 2.0})
            tracking.log_params({"extra": "x"})
            tracking.set_tags({"gatecast.note": "half done"})
            raise RuntimeError("boom")
    assert _status(ids["parent"]) == "FAILED"
    assert _status(ids["child"]) == "FAILED"
    assert _status(ids["done"]) == "FINISHED"
    # the exception says so, for the stage's one-line error
    assert caught.value.__notes__ == [
        f"MLflow: the train run and the runs it opened are marked FAILED in experiment "
        f"{cfg.experiment_name}"
    ]
    # what was logged before the failure is kept
    failed = tracking.client().get_run(ids["child"])
    assert failed.data.metrics["rmse"] == 2.0
    assert failed.data.params["extra"] == "x"
    assert failed.data.params["seed"] == "7"
    assert failed.data.tags["gatecast.note"] == "half done"
    assert tracking.client().get_run(ids["parent"]).data.params["forecasters.lstm.units"] == "[8]"
    assert mlflow.active_run() is None
    # and the next invocation starts cleanly
    with tracking.pipeline_run(cfg, "train") as again:
        pass
    assert _status(again.run_id) == "FINISHED"


def test_ctrl_c_ends_the_runs_killed(store, cfg):
    ids = {}
    with pytest.raises(KeyboardInterrupt) as caught, tracking.pipeline_run(cfg, "train") as parent:
        ids["parent"] = parent.run_id
        with tracking.child_run("GSPC/lstm") as child:
            ids["child"] = child.run_id
            raise KeyboardInterrupt
    assert _status(ids["parent"]) == "KILLED"
    assert _status(ids["child"]) == "KILLED"
    assert caught.value.__notes__[-1].endswith(f"KILLED in experiment {cfg.experiment_name}")


def test_logging_outside_a_run_is_a_clear_error(store):
    with pytest.raises(RuntimeError, match="no gatecast run is open"):
        tracking.log_metrics({"rmse": 1.0})


def test_uri_command_prints_the_store(store, capsys):
    assert tracking.main(["uri"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == os.environ["MLFLOW_TRACKING_URI"]
    assert out[1] == str(store / "artifacts")


def test_a_run_sends_params_tags_and_metrics_in_one_request(store, inline_cfg, monkeypatch):
    # inline: the recorder's requests are made in this process, where they can be counted
    cfg = inline_cfg
    requests: dict[str, int] = {}
    original = mlflow.MlflowClient.log_batch

    def counting(self, run_id, *args, **kwargs):
        requests[run_id] = requests.get(run_id, 0) + 1
        return original(self, run_id, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", counting)
    with (
        tracking.pipeline_run(cfg, "train") as parent,
        tracking.child_run("GSPC/lstm", tags={"gatecast.instrument": "GSPC"}) as child,
    ):
        tracking.log_metrics({"rmse": 1.0, "mae": 0.5})
        for fold in range(4):
            tracking.log_metric_history(f"loss/fold{fold}/seed0", np.linspace(1, 0, 15))
            tracking.log_metrics({"fold/rmse": 1.0}, step=fold)
        tracking.set_tags({"gatecast.seeds": "7,8"})
        tracking.log_params({"extra": "1"})
    assert requests == {parent.run_id: 1, child.run_id: 1}
    run = tracking.client().get_run(child.run_id)
    assert len(run.data.params) == len(tracking.flatten_config(cfg)) + 1
    assert run.data.tags["gatecast.seeds"] == "7,8"
    assert len(tracking.client().get_metric_history(child.run_id, "loss/fold3/seed0")) == 15


def test_a_failure_in_the_writer_reaches_the_stage_and_fails_its_run(store, cfg, tmp_path):
    missing = tmp_path / "not-there.txt"
    ids = {}
    with (
        pytest.raises(tracking.TrackingError, match=r"artifact of run GSPC/sma") as caught,
        tracking.pipeline_run(cfg, "train") as parent,
    ):
        ids["parent"] = parent.run_id
        with tracking.child_run("GSPC/sma") as child:
            ids["child"] = child.run_id
            tracking.log_artifact(missing)
    assert "not-there.txt" in str(caught.value)
    assert _status(ids["child"]) == "FAILED"
    assert _status(ids["parent"]) == "FAILED"
    assert caught.value.__notes__[-1].startswith("MLflow: the train run and the runs it opened")


def _run_stage_script(tmp_path: Path, experiment: str, body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh Python with ``cfg`` (the smoke config) and ``tracking`` set up."""
    code = f"""
import os, signal, sys
from pipelines import tracking
from pipelines.config import load_config
cfg = load_config("configs/smoke.yaml", overrides={{
    "output_directory": {str(tmp_path / "build")!r},
    "tracking": {{"experiment": {experiment!r}}}}})
{body}"""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def test_the_stage_process_never_imports_mlflow(store, tmp_path):
    # What the stages run in their own process; mlflow lives in the writer process.
    body = """
with tracking.pipeline_run(cfg, "train") as parent:
    with tracking.child_run("GSPC/sma"):
        tracking.log_metrics({"rmse": 1.0})
print(parent.run_id)
assert "mlflow" not in sys.modules, "the stage's process imported mlflow"
"""
    done = _run_stage_script(tmp_path, "gatecast-test-no-mlflow", body)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.split()[-1]
    assert _status(run_id) == "FINISHED"
    assert [r.data.metrics for r in tracking.child_runs(run_id)] == [{"rmse": 1.0}]


def test_runs_of_a_killed_stage_end_killed(store, tmp_path):
    # SIGKILL gives the stage no chance to end its runs: the writer sees its pipe
    # close and ends them KILLED.
    body = """
with tracking.pipeline_run(cfg, "train") as parent:
    with tracking.child_run("GSPC/lstm") as child:
        print(parent.run_id, child.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
"""
    done = _run_stage_script(tmp_path, "gatecast-test-killed", body)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    ids = done.stdout.split()
    assert len(ids) == 2, done.stdout
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and {_status(i) for i in ids} == {"RUNNING"}:
        time.sleep(0.2)
    assert [_status(i) for i in ids] == ["KILLED", "KILLED"]


def test_a_dead_writer_is_a_clear_error(store, cfg):
    with (
        pytest.raises(tracking.TrackingError, match="writer process .* exited"),
        tracking.pipeline_run(cfg, "train") as parent,
    ):
        assert parent.run_id  # the writer is up
        tracking._WRITER.process.kill()
        tracking._WRITER.process.wait()
        with tracking.child_run("GSPC/sma"):
            tracking.log_metrics({"rmse": 1.0})
    # the next stage starts a new writer
    with tracking.pipeline_run(cfg, "train") as again:
        pass
    assert _status(again.run_id) == "FINISHED"


def test_a_store_the_writer_cannot_open_is_a_clear_error(cfg, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://nowhere")
    with (
        pytest.raises(tracking.TrackingError, match="open_stage .*bogus-scheme://") as caught,
        tracking.pipeline_run(cfg, "train"),
        tracking.child_run("GSPC/sma"),
    ):
        tracking.log_metrics({"rmse": 1.0})
    assert caught.value.__notes__[-1].startswith("MLflow: the train run and the runs it opened")
