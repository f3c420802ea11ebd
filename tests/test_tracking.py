"""pipelines.tracking against a temporary MLflow store: store resolution, run layout, statuses."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelines import tracking
from pipelines.config import REPO_ROOT, load_config
from pipelines.tracking import overhead, provenance
from pipelines.tracking import store as tracking_store
from pipelines.tracking import uri as store_uri
from tests.servers import free_port, wait_until_answering


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


def _config(tmp_path: Path, experiment: str):
    return load_config(
        "configs/smoke.yaml",
        overrides={
            "output_directory": str(tmp_path / "build"),
            "data": {"instruments": ["GSPC"]},
            "tracking": {"experiment": f"gatecast-test-{experiment}"},
        },
    )


@pytest.fixture
def cfg(tmp_path: Path, request: pytest.FixtureRequest):
    return _config(tmp_path, request.node.name)


def _status(run_id: str) -> str:
    return tracking_store.client().get_run(run_id).info.status


def test_default_store_is_in_the_repo_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert store_uri.tracking_uri() == f"sqlite:///{REPO_ROOT / 'mlruns' / 'mlflow.db'}"
    assert store_uri.artifact_root() == REPO_ROOT / "mlruns" / "artifacts"


def test_models_are_registered_in_the_tracking_store_when_no_variable_is_set(tmp_path, monkeypatch):
    # MLflow's own default registry, with neither variable set, is a mlflow.db in the
    # working directory: models would be registered apart from their runs (make all broke).
    from pipelines.tracking import uri as store_uri

    database = tmp_path / "store" / "mlflow.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setattr(store_uri, "DEFAULT_TRACKING_URI", f"sqlite:///{database}")
    monkeypatch.chdir(tmp_path)
    client = tracking_store.client()
    experiment = client.create_experiment("gatecast-test-registry")
    run = client.create_run(experiment)
    logged = client.create_logged_model(experiment, name="model", source_run_id=run.info.run_id)
    client.create_registered_model("gatecast-test-registry")
    version = client.create_model_version(  # what log_model does
        "gatecast-test-registry", source=f"models:/{logged.model_id}", model_id=logged.model_id
    )
    assert str(version.version) == "1"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        names = connection.execute("SELECT name FROM model_versions").fetchall()
    assert names == [("gatecast-test-registry",)]
    assert not (tmp_path / "mlflow.db").exists()


def test_environment_takes_over(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert store_uri.tracking_uri() == "http://127.0.0.1:5999"
    assert store_uri.artifact_root() is None  # the server decides
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/x/runs.db")
    assert store_uri.artifact_root() == tmp_path / "x" / "artifacts"


def test_a_sqlite_store_is_opened_in_write_ahead_log_mode(tmp_path, monkeypatch, cfg):
    # A fresh store: the database file does not exist before the stage opens it.
    database = tmp_path / "fresh" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
    with tracking.pipeline_run(cfg, "train") as run:
        tracking.log_metrics({"rmse": 1.0})
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finished = tracking_store.client().get_run(run.run_id)
    assert finished.info.status == "FINISHED" and finished.data.metrics == {"rmse": 1.0}


def test_credentials_never_leave_the_uri():
    assert store_uri.display_uri("https://ann:secret@mlflow.example:8443/x") == (
        "https://mlflow.example:8443/x"
    )
    assert store_uri.display_uri("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"


def test_server_command_binds_loopback_and_serves_the_store(tmp_path):
    command = store_uri.server_command(port=5123, backend_uri=f"sqlite:///{tmp_path}/m.db")
    assert command[1:4] == ["-m", "mlflow", "server"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5123"
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path}/m.db"
    assert (
        command[command.index("--artifacts-destination") + 1] == (tmp_path / "artifacts").as_uri()
    )


def test_the_servers_leave_mlflows_job_runner_off_unless_the_user_turns_it_on(monkeypatch):
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    assert store_uri.server_environment()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    assert store_uri.server_environment()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


@pytest.mark.slow
def test_make_ui_serves_the_store_with_the_server_alone(tmp_path):
    """``make ui`` (``python -m pipelines.tracking ui``): the MLflow server and its one
    worker, without the job runner MLflow 3 starts by default (its huey consumers)."""
    import psutil

    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
    }
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", PYTHONPATH=str(REPO_ROOT))
    ui = subprocess.Popen(
        [sys.executable, "-m", "pipelines.tracking", "ui", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_answering(ui, f"http://127.0.0.1:{port}")
        time.sleep(2)  # MLflow starts its job runner beside the web server, not after it
        commands = [" ".join(p.cmdline()) for p in psutil.Process(ui.pid).children(recursive=True)]
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    assert not [c for c in commands if "huey" in c], commands
    assert len(commands) <= 3, commands  # mlflow server, uvicorn and its worker


def test_flatten_config_gives_every_key():
    cfg = load_config("configs/smoke.yaml")
    params = provenance.flatten_config(cfg)
    assert params["forecasters.lstm.units"] == "[8]"
    assert params["walkforward.test_bars"] == "100"
    assert params["data.instruments"] == '["GSPC", "GOOG"]'
    assert params["seed"] == "7"
    assert params["forecasters.kalman.trend"] == "false"
    assert params["experiment_name"] == "gatecast-smoke"


def test_parent_and_child_runs_carry_config_tags_metrics_and_artifacts(store, tmp_path):
    cfg = _config(tmp_path, "layout")
    data_file = REPO_ROOT / "data" / "sample" / "GSPC.csv"
    overhead.reset_overhead()
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
    assert overhead.mlflow_seconds() > 0

    client = tracking_store.client()
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    assert experiment.experiment_id == parent.experiment_id
    assert experiment.artifact_location == (store / "artifacts" / cfg.experiment_name).as_uri()
    # MLflow 3's model-training kind (3.17's UI still needs the link's workflowType)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

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
    assert tags["gatecast.host"] == socket.gethostname()
    assert tags["gatecast.pid"] == str(os.getpid())
    assert (
        tags["gatecast.input.GSPC.csv.sha256"] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    )
    assert run.data.params["forecasters.lstm.units"] == "[8]"
    assert run.data.params["output_directory"] == str(tmp_path / "build")
    assert run.data.params["stage"] == "train"  # a param too: the compare view diffs params

    # MLflow's own run context, as mlflow.start_run would set it
    assert tags["mlflow.user"]
    assert tags["mlflow.source.type"] == "LOCAL"

    sub = client.get_run(child.run_id)
    assert sub.info.status == "FINISHED"
    assert sub.data.tags["mlflow.source.type"] == "LOCAL"
    assert sub.info.run_name == "train/GSPC/sma"  # the stage comes first
    assert sub.data.tags["mlflow.parentRunId"] == parent.run_id
    assert sub.data.tags["gatecast.instrument"] == "GSPC"
    assert sub.data.tags["gatecast.stage"] == "train"
    assert sub.data.tags["gatecast.git.commit"] == tags["gatecast.git.commit"]
    assert sub.data.params == {**run.data.params, "instrument": "GSPC"}
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
    local = tracking_store.download_artifact(child.run_id, "forecasts.parquet", tmp_path / "dl")
    pd.testing.assert_frame_equal(pd.read_parquet(local), frame, check_freq=False)
    config = tracking_store.download_artifact(parent.run_id, "config.yaml", tmp_path / "dl2")
    assert yaml.safe_load(config.read_text())["forecasters"]["lstm"]["units"] == [8]
    png = tracking_store.download_artifact(child.run_id, "plots/loss.png", tmp_path / "dl3")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    found = tracking_store.find_runs(cfg.experiment_name, "tags.gatecast.stage = 'train'")
    assert {r.info.run_id for r in found} == {parent.run_id, child.run_id}
    assert [r.info.run_id for r in tracking_store.child_runs(parent.run_id)] == [child.run_id]


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
    failed = tracking_store.client().get_run(ids["child"])
    assert failed.data.metrics["rmse"] == 2.0
    assert failed.data.params["extra"] == "x"
    assert failed.data.params["seed"] == "7"
    assert failed.data.tags["gatecast.note"] == "half done"
    assert (
        tracking_store.client().get_run(ids["parent"]).data.params["forecasters.lstm.units"]
        == "[8]"
    )
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


def test_an_experiment_of_an_older_gatecast_gets_the_model_training_kind(store, cfg):
    client = tracking_store.client()
    experiment_id = client.create_experiment(cfg.experiment_name)  # no tags, as before
    with tracking.pipeline_run(cfg, "train") as run:
        assert run.experiment_id == experiment_id
    tags = client.get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_experiment_links_open_the_runs_of_the_model_training_view(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x.db")
    runs_view = "/#/experiments/7/runs?workflowType=machine_learning"
    assert store_uri.experiment_url("7") == "http://127.0.0.1:5000" + runs_view  # make ui
    assert store_uri.experiment_url("7", "http://h:8080/") == "http://h:8080" + runs_view
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://ann:secret@mlflow.example:8443")
    assert store_uri.experiment_url("7") == "https://mlflow.example:8443" + runs_view


def test_ui_prints_a_runs_view_link_per_experiment(store, cfg, capsys, monkeypatch):
    with tracking.pipeline_run(cfg, "train") as run:
        pass
    served = []
    monkeypatch.setattr(store_uri.subprocess, "call", lambda cmd, **_: served.append(cmd) or 0)
    # what `python -m pipelines.tracking ui` runs (pipelines/tracking/__main__.py)
    assert store_uri.main(["ui", "--port", "5123"], experiments=tracking_store.experiments) == 0
    out = capsys.readouterr().out
    assert served and served[0][served[0].index("--port") + 1] == "5123"
    link = f"http://127.0.0.1:5123/#/experiments/{run.experiment_id}/runs?workflowType=machine_learning"
    assert f"  {cfg.experiment_name}: {link}\n" in out


def test_model_lineage_and_description_say_where_a_model_came_from():
    tags = {
        "gatecast.run_id": "abc123",
        "gatecast.run_name": "train/GSPC/lstm",
        "gatecast.config": "smoke",
        "gatecast.git.commit": "f" * 40,
        "gatecast.git.dirty": "true",
        "gatecast.input.GSPC.parquet.sha256": "d" * 64,
        "gatecast.seed": "7",
    }
    fold = {"number": 1, "train_start": "2011-01-03T00:00:00", "train_end": "2012-03-01T00:00:00"}
    lineage = provenance.model_lineage(
        tags, "seed: 7\n", {"rmse": 12.345678, "theil_u2": 0.99}, fold
    )
    assert lineage["gatecast.lineage.run_id"] == "abc123"
    assert lineage["gatecast.lineage.git.commit"] == "f" * 40
    assert lineage["gatecast.lineage.git.dirty"] == "true"
    assert lineage["gatecast.lineage.config_sha256"] == hashlib.sha256(b"seed: 7\n").hexdigest()
    assert lineage["gatecast.lineage.data.GSPC.parquet"] == "d" * 64
    assert lineage["gatecast.lineage.fold.train_start"] == "2011-01-03T00:00:00"
    assert lineage["gatecast.metric.rmse"] == "12.3457"
    text = provenance.model_description(
        "lstm", "GSPC", 2, lineage, "http://ui/#/experiments/1/runs"
    )
    assert text.startswith("`lstm` forecast of GSPC's next close: the mean of 2 seed(s)")
    assert "trained on 2011-01-03 to 2012-03-01" in text
    assert "commit `ffffffffffff` (uncommitted changes)" in text
    assert "`GSPC.parquet` sha256 `dddddddddddd`" in text
    assert "rmse 12.3457, theil_u2 0.99" in text
    assert "http://ui/#/experiments/1/runs" in text


def test_a_model_version_keeps_its_own_instruments_data_hash():
    tags = {
        "gatecast.input.GSPC.parquet.sha256": "a" * 64,
        "gatecast.input.GOOG.parquet.sha256": "b" * 64,
        "gatecast.input.ORCL.csv.sha256": "c" * 64,
    }
    lineage = provenance.model_lineage(tags, "", {}, {}, instrument="GOOG")
    data = {k: v for k, v in lineage.items() if k.startswith("gatecast.lineage.data.")}
    assert data == {"gatecast.lineage.data.GOOG.parquet": "b" * 64}


def test_a_child_run_of_one_instrument_carries_only_its_own_input_files(store, tmp_path):
    """A universe's stage reads every instrument's files; its children must not each
    carry all of them (their tags would grow with the universe)."""
    cfg = _config(tmp_path, "inputs")
    files = {}
    for name in ("GSPC", "GOOG", "BRK.B"):
        files[f"{name}.csv"] = tmp_path / f"{name}.csv"
        files[f"{name}.csv"].write_text(name)
    with tracking.pipeline_run(cfg, "train", inputs=files) as parent:
        with tracking.child_run("GOOG/sma", tags={"gatecast.instrument": "GOOG"}) as goog:
            pass
        with tracking.child_run("BRK.B/sma", tags={"gatecast.instrument": "BRK.B"}) as brk:
            pass
        with tracking.child_run("cross_section") as pooled:
            pass
    client = tracking_store.client()

    def inputs(run_id: str) -> set[str]:
        return {k for k in client.get_run(run_id).data.tags if k.startswith("gatecast.input.")}

    assert inputs(parent.run_id) == {
        f"gatecast.input.{name}.csv.{what}"
        for name in ("GSPC", "GOOG", "BRK.B")
        for what in ("sha256", "path")
    }
    assert inputs(goog.run_id) == {"gatecast.input.GOOG.csv.sha256", "gatecast.input.GOOG.csv.path"}
    assert inputs(brk.run_id) == {
        "gatecast.input.BRK.B.csv.sha256",
        "gatecast.input.BRK.B.csv.path",
    }
    assert inputs(pooled.run_id) == inputs(parent.run_id)  # no instrument of its own: all


def test_a_run_link_follows_the_store_the_stage_used(monkeypatch):
    # a server: its own address (password masked); an embedded store: a link relative to
    # whatever UI serves it, no fixed host or port
    assert (
        store_uri.run_url("3", "r1", "https://ann:secret@mlflow.example:8443/")
        == "https://mlflow.example:8443/#/experiments/3/runs/r1"
    )
    assert store_uri.run_url("3", "r1", "sqlite:////tmp/x.db") == "#/experiments/3/runs/r1"


def test_logging_outside_a_run_is_a_clear_error(store):
    with pytest.raises(RuntimeError, match="no gatecast run is open"):
        tracking.log_metrics({"rmse": 1.0})


def test_uri_command_prints_the_store(store, capsys):
    assert store_uri.main(["uri"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == os.environ["MLFLOW_TRACKING_URI"]
    assert out[1] == str(store / "artifacts")


def test_opening_a_store_leaves_the_uri_variables_as_the_user_set_them(tmp_path, monkeypatch):
    """MLflow writes the URIs it is given into the environment; opening a store must not,
    or a later store of the same process would register its models in the first one."""
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    first, second = (f"sqlite:///{tmp_path / name / 'mlflow.db'}" for name in ("a", "b"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", first)
    tracking_store.client()
    assert mlflow.get_registry_uri() == first
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", second)
    assert store_uri.registry_uri() == second
    tracking_store.client()
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (second, second)
    assert os.environ["MLFLOW_TRACKING_URI"] == second


def test_a_run_sends_params_tags_and_metrics_in_one_request(store, cfg, monkeypatch):
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
    run = tracking_store.client().get_run(child.run_id)
    # the config's, "extra", and the stage and instrument as params
    assert len(run.data.params) == len(provenance.flatten_config(cfg)) + 3
    assert run.data.params["extra"] == "1"
    assert run.data.params["stage"] == "train" and run.data.params["instrument"] == "GSPC"
    assert run.data.tags["gatecast.seeds"] == "7,8"
    assert len(tracking_store.client().get_metric_history(child.run_id, "loss/fold3/seed0")) == 15


def test_a_failed_mlflow_call_reaches_the_stage_and_fails_its_runs(store, cfg, tmp_path):
    missing = tmp_path / "not-there.txt"
    ids = {}
    with (
        pytest.raises(
            tracking_store.TrackingError, match=r"not-there\.txt of run train/GSPC/"
        ) as caught,
        tracking.pipeline_run(cfg, "train") as parent,
    ):
        ids["parent"] = parent.run_id
        with tracking.child_run("GSPC/sma") as child:
            ids["child"] = child.run_id
            tracking.log_artifact(missing)
    assert _status(ids["child"]) == "FAILED"
    assert _status(ids["parent"]) == "FAILED"
    assert caught.value.__notes__[-1].startswith("MLflow: the train run and the runs it opened")


def test_sigterm_ends_the_runs_killed(store, cfg):
    ids = {}
    with pytest.raises(KeyboardInterrupt) as caught, tracking.pipeline_run(cfg, "report") as parent:
        ids["parent"] = parent.run_id
        with tracking.child_run("GSPC/sma") as child:
            ids["child"] = child.run_id
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
    assert [_status(ids["parent"]), _status(ids["child"])] == ["KILLED", "KILLED"]
    assert caught.value.__notes__[-1].endswith(f"KILLED in experiment {cfg.experiment_name}")
    # and SIGTERM is left as it was outside the run
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_store_mlflow_cannot_open_is_a_clear_error(cfg, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://nowhere")
    with (
        pytest.raises(
            tracking_store.TrackingError, match="open the tracking store at bogus-scheme://"
        ),
        tracking.pipeline_run(cfg, "train"),
    ):
        pytest.fail("the run must not open")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            "API request to http://alice:s3cret@127.0.0.1:5123/api/2.0/mlflow/runs/create failed "
            "with exception HTTPConnectionPool(host='127.0.0.1', port=5123): Max retries exceeded "
            "(Caused by NewConnectionError(': Failed to establish a new connection: "
            "[Errno 111] Connection refused'))",
            "Connection refused",
        ),
        (
            # the server killed while it was answering: seen in CI
            "API request to http://alice:s3cret@127.0.0.1:5123/api/2.0/mlflow/runs/create failed "
            "with exception ('Connection broken: IncompleteRead(0 bytes read, 3791 more "
            "expected)', IncompleteRead(0 bytes read, 3791 more expected))",
            "Connection broken",
        ),
        (
            "API request to http://alice:s3cret@127.0.0.1:5123/api/2.0/mlflow/runs/create failed "
            "with exception ('Connection aborted.', RemoteDisconnected('Remote end closed "
            "connection without response'))",
            "Connection aborted",
        ),
    ],
    ids=["refused", "broken-mid-answer", "closed-without-answer"],
)
def test_a_server_gone_mid_request_is_a_lost_store_in_one_masked_line(error, reason):
    uri = "http://alice:s3cret@127.0.0.1:5123"
    with (
        pytest.raises(tracking_store.TrackingError) as raised,
        tracking_store.store_errors(uri, "create run train/GSPC/sma"),
    ):
        raise mlflow.exceptions.MlflowException(error)
    assert raised.value.lost
    assert str(raised.value) == (
        "MLflow could not create run train/GSPC/sma: connection to http://127.0.0.1:5123 "
        f"failed ({reason})"
    )


# In fresh processes ---------------------------------------------------------------------------


def _python(code: list[str], uri: str, *, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, *code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# One tracked run of a stage (logging set up as the stages do), in a fresh process.
_ONE_RUN = """
import logging, os, pathlib, sys, time
from pipelines import tracking
from pipelines.config import load_config
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
cfg = load_config("configs/smoke.yaml", overrides={"output_directory": sys.argv[1],
                  "tracking": {"experiment": sys.argv[2]}})
barrier, count = pathlib.Path(sys.argv[3]), int(sys.argv[4])
(barrier / f"ready-{os.getpid()}").touch()  # imported; start together with the others
deadline = time.time() + 120
while len(list(barrier.glob("ready-*"))) < count and time.time() < deadline:
    time.sleep(0.005)
with tracking.pipeline_run(cfg, "train") as parent:
    with tracking.child_run("GSPC/sma"):
        tracking.log_metrics({"rmse": 1.0})
        tracking.log_text("hello", "hello.txt")
print(parent.run_id)
"""


def _sqlite_runs(database: Path) -> dict[str, str]:
    """Run name -> status, read straight from the SQLite file (no MLflow in this process)."""
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as connection:
            return dict(connection.execute("SELECT name, status FROM runs").fetchall())
    except sqlite3.Error:  # not created yet
        return {}


@pytest.mark.slow
def test_runs_of_a_pipeline_killed_outright_are_marked_killed_by_the_next_run(tmp_path):
    database = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{database}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO_ROOT)}
    sets = [f"output_directory={tmp_path / 'build'}", "tracking.experiment=gatecast-test-kill9"]
    train = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "train", "--config", "configs/smoke.yaml"]
        + [a for s in sets for a in ("--set", s)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The driver records each forecaster's child run once its units are done, so the
        # parent stays open through training while children open and close: kill once the
        # parent and at least one child exist, whatever state the children are in.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(_sqlite_runs(database)) < 2:
            assert train.poll() is None, "train ended before it could be killed"
            time.sleep(0.05)
    finally:
        train.kill()
        train.wait()
    at_kill = _sqlite_runs(database)  # nobody can end a run now
    running = {name for name, status in at_kill.items() if status == "RUNNING"}
    assert "train" in running and len(at_kill) >= 2, at_kill

    done = _python(
        ["-c", _ONE_RUN, str(tmp_path / "b2"), "gatecast-test-next", str(tmp_path), "0"], uri
    )
    assert done.returncode == 0, done.stderr[-3000:]
    store = mlflow.MlflowClient(uri)
    runs = store.search_runs([store.get_experiment_by_name("gatecast-test-kill9").experiment_id])
    killed = [r for r in runs if r.info.run_name in running]
    assert {r.info.run_name: r.info.status for r in runs} == {
        name: "KILLED" if name in running else status for name, status in at_kill.items()
    }
    assert {r.data.tags["gatecast.pid"] for r in killed} == {str(train.pid)}
    assert {r.data.tags["gatecast.host"] for r in killed} == {socket.gethostname()}
    assert "RUNNING" not in _sqlite_runs(database).values()
    said = [line for line in done.stderr.splitlines() if "KILLED" in line]
    assert len(said) == 1, done.stderr
    assert f"{len(running)} run(s)" in said[0] and str(train.pid) in said[0]


@pytest.mark.slow
def test_two_first_runs_on_a_fresh_sqlite_store_both_finish(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    barrier = tmp_path / "barrier"  # each process starts once all have imported
    barrier.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO_ROOT)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _ONE_RUN, str(tmp_path / f"b{k}"), "gatecast-test-race"]
            + [str(barrier), "3"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(3)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
    ids = {out.split()[-1] for out, _ in outputs}
    store = mlflow.MlflowClient(uri)
    assert len(ids) == 3 and {store.get_run(i).info.status for i in ids} == {"FINISHED"}


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["train", "report", "run"])
def test_a_bad_config_creates_no_store_and_no_folder(tmp_path, stage):
    text = (REPO_ROOT / "configs" / "smoke.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"output_directory: {tmp_path / 'build'}\n" + text.replace("features:", "featres:")
    )
    uri = f"sqlite:///{tmp_path / 'mistyped' / 'mlflow.db'}"
    done = _python(["-m", "pipelines", stage, "--config", str(bad)], uri)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "featres" in done.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.slow
def test_an_unreachable_server_stops_the_stage_fast_with_one_masked_line(tmp_path):
    port = free_port()  # nothing listens there
    uri = f"http://ann:s3cret-pw@127.0.0.1:{port}"
    sets = ["--set", f"output_directory={tmp_path / 'build'}"]
    started = time.monotonic()
    done = _python(["-m", "pipelines", "train", "--config", "configs/smoke.yaml", *sets], uri)
    # the stage's own start-up (TensorFlow, the data) counts too
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert f"connection to http://127.0.0.1:{port} failed" in line, done.stderr[-3000:]
    assert "s3cret-pw" not in done.stdout + done.stderr


class _Proxy(http.server.BaseHTTPRequestHandler):
    """Passes requests on to a real MLflow server, recording the Authorization header."""

    target = ""
    seen: list[str] = []

    def _forward(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host"}}
        request = urllib.request.Request(
            self.target + self.path, data=body, headers=headers, method=self.command
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, data, kind = response.status, response.read(), response.headers
        except urllib.error.HTTPError as err:
            status, data, kind = err.code, err.read(), err.headers
        self.send_response(status)
        self.send_header("Content-Type", kind.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_a_password_in_the_uri_is_never_printed_logged_or_recorded(tmp_path, mlflow_server):
    _Proxy.target = mlflow_server[0]
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        uri = f"http://ann:s3cret-pw@127.0.0.1:{proxy.server_address[1]}"
        # a run that logs, then one that fails on a call the server refuses
        code = (
            _ONE_RUN
            + "from pipelines.tracking import uri\nuri.main(['uri'])\n"
            + (
                "with tracking.pipeline_run(cfg, 'train'):\n"
                "    tracking.log_artifact('/nonexistent/file.txt')\n"
            )
        )
        done = _python(
            ["-c", code, str(tmp_path / "b"), "gatecast-test-secret", str(tmp_path), "0"], uri
        )
        assert done.returncode == 1, done.stderr[-3000:]
        assert "TrackingError: MLflow could not write the artifact file.txt" in done.stderr
        assert "s3cret-pw" not in done.stdout + done.stderr
        assert any(seen.startswith("Basic ") for seen in _Proxy.seen)  # the password was used
        store = mlflow.MlflowClient(_Proxy.target)
        experiment = store.get_experiment_by_name("gatecast-test-secret")
        runs = store.search_runs([experiment.experiment_id])
        assert len(runs) == 3
        for run in runs:
            recorded = [*run.data.params.items(), *run.data.tags.items()]
            assert not [kv for kv in recorded if "s3cret-pw" in str(kv)]
    finally:
        proxy.shutdown()


def test_the_registered_model_reads_bars_as_a_user_has_them():
    from pipelines.tracking.pyfunc_model import bars_from_input

    as_read = pd.read_csv(REPO_ROOT / "data" / "sample" / "GSPC.csv", nrows=5)
    assert list(as_read.columns) == ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
    assert as_read["Volume"].dtype == np.int64
    bars = bars_from_input(as_read)
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert (bars.dtypes == np.float64).all()
    assert bars.index.name == "date" and bars.index[0] == pd.Timestamp("1999-01-04")
    assert bars["volume"].iloc[0] == 877000000.0
    # a DatetimeIndex instead of a date column, names in upper case
    indexed = as_read.set_index(pd.DatetimeIndex(as_read.pop("Date"))).rename(columns=str.upper)
    pd.testing.assert_frame_equal(bars_from_input(indexed), bars)


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("Volume", r"the input lacks column\(s\) volume; it needs date, open, high, low, close"),
        ("Date", "no 'date' column and no DatetimeIndex"),
    ],
)
def test_the_registered_model_names_a_missing_column(drop, message):
    from pipelines.tracking.pyfunc_model import bars_from_input

    as_read = pd.read_csv(REPO_ROOT / "data" / "sample" / "GSPC.csv", nrows=5)
    with pytest.raises(ValueError, match=message):
        bars_from_input(as_read.drop(columns=[drop]))
