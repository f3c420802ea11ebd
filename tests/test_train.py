"""The train stage end to end on a tiny config, tracked in a temporary MLflow store."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow.models
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from models.baselines import KalmanForecaster
from pipelines import tracking
from pipelines.config import REPO_ROOT
from pipelines.execution.executors import LocalExecutor
from pipelines.stages import train
from pipelines.tracking import store as tracking_store

CLASSIC = ["random_walk", "sma", "ema", "kalman", "ols"]


def _argv(out: Path, *extra: str) -> list[str]:
    """A tiny version of configs/smoke.yaml: one instrument, two folds, a 2-seed 4-unit LSTM."""
    sets = [
        f"output_directory={out}",
        "data.instruments=[GSPC]",
        "forecasters.lstm.units=[4]",
        "forecasters.lstm.epochs=2",
        "forecasters.lstm.seeds=2",
        *extra,
    ]
    return ["--config", "configs/smoke.yaml", *[a for s in sets for a in ("--set", s)]]


def _summary(out: Path) -> dict:
    return json.loads((out / "smoke" / "forecasts" / "summary.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One train-stage run (and the store it wrote to) shared by the tests of this module."""
    root = tmp_path_factory.mktemp("train")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'store' / 'mlflow.db'}")
        assert train.main(_argv(root / "build")) == 0
        yield root


@pytest.fixture
def store(trained: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{trained / 'store' / 'mlflow.db'}")
    return trained


def test_outputs_hold_every_forecaster_on_the_out_of_sample_dates(store):
    summary = _summary(store / "build")
    entry = summary["instruments"]["GSPC"]
    assert entry["columns"] == [*CLASSIC, "lstm", "lstm_seed0", "lstm_seed1"]
    frame = pd.read_parquet(store / "build" / "smoke" / "forecasts" / "GSPC.parquet")
    oos_start = pd.Timestamp(entry["oos_start"])
    assert frame.index[-1] == pd.Timestamp(entry["oos_end"])
    before, after = frame.loc[frame.index < oos_start], frame.loc[oos_start:]
    assert len(after) == entry["oos_bars"] == 200  # 2 folds x 100 test bars
    for column in entry["columns"]:
        assert before[column].isna().all()
        assert after[column].notna().all()
    np.testing.assert_allclose(
        after["lstm"], (after["lstm_seed0"] + after["lstm_seed1"]) / 2, rtol=1e-12
    )
    # every forecaster is scored on the same dates (the last bar has no next close)
    assert {m["n"] for m in entry["metrics"].values()} == {199}
    assert entry["metrics"]["random_walk"]["theil_u2"] == pytest.approx(1.0)
    gates = pd.read_parquet(store / "build" / "smoke" / "forecasts" / "GSPC.gates.parquet")
    assert list(gates.columns) == ["date", "fold", "unit", "forget", "input", "output", "cell"]
    assert pd.DatetimeIndex(gates["date"].unique()).equals(after.index)
    assert len(gates) == len(after) * gates["unit"].nunique()
    assert summary["seeds"] == {"lstm": [7, 8]}
    assert summary["device"]["kind"] == "cpu"


def test_experiment_parent_and_child_runs(store):
    summary = _summary(store / "build")
    client = tracking_store.client()
    experiment = client.get_experiment_by_name("gatecast-smoke")
    assert experiment.experiment_id == summary["experiment_id"]
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "train"
    tags = parent.data.tags
    assert tags["gatecast.stage"] == "train"
    assert tags["gatecast.device"] == "cpu"
    assert tags["gatecast.device_name"]
    assert tags["gatecast.deterministic"] == "true"
    assert tags["gatecast.seed"] == "7"
    assert tags["gatecast.command"].startswith("python -m pipelines train --config")
    assert len(tags["gatecast.input.GSPC.csv.sha256"]) == 64
    assert parent.data.params["forecasters.lstm.seeds"] == "2"
    assert "wall_seconds" in parent.data.metrics
    assert "summary.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    children = tracking_store.child_runs(parent.info.run_id)
    names = [r.info.run_name for r in children]
    assert sorted(names) == sorted(f"train/GSPC/{n}" for n in [*CLASSIC, "lstm"])
    metrics = summary["instruments"]["GSPC"]["metrics"]
    for run in children:
        forecaster = run.info.run_name.split("/")[2]
        assert run.info.status == "FINISHED"
        assert run.data.tags["gatecast.forecaster"] == forecaster
        assert run.data.tags["gatecast.instrument"] == "GSPC"
        assert run.data.tags["gatecast.git.commit"] == tags["gatecast.git.commit"]
        # the stage (the parent's too), instrument and forecaster are params, for the compare view
        assert parent.data.params["stage"] == "train"
        assert run.data.params == {
            **parent.data.params,
            "instrument": "GSPC",
            "forecaster": forecaster,
        }
        # identical metric names across forecasters, matching summary.json
        for name in ("rmse", "mae", "theil_u2", "mase", "directional_accuracy", "dm_p_value"):
            logged, written = run.data.metrics[name], metrics[forecaster][name]
            assert (np.isnan(logged) and written is None) or logged == pytest.approx(written)
        steps = client.get_metric_history(run.info.run_id, "fold/rmse")
        assert sorted(m.step for m in steps) == [0, 1]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "forecasts.parquet"} <= artifacts


def test_lstm_run_has_losses_plots_model_and_seed_metrics(store):
    summary = _summary(store / "build")
    run_id = summary["instruments"]["GSPC"]["runs"]["lstm"]
    client = tracking_store.client()
    run = client.get_run(run_id)
    assert run.data.tags["gatecast.seeds"] == "7,8"
    for fold in (0, 1):
        for seed in (0, 1):
            for key in ("loss", "val_loss"):
                history = client.get_metric_history(run_id, f"{key}/fold{fold}/seed{seed}")
                assert 1 <= len(history) <= 2  # two epochs at most (early stopping)
                assert sorted(m.step for m in history) == list(range(len(history)))
    seed_rmse = client.get_metric_history(run_id, "seed/rmse")
    assert sorted(m.step for m in seed_rmse) == [0, 1]
    metrics = summary["instruments"]["GSPC"]["metrics"]
    assert {m.step: m.value for m in seed_rmse} == {
        0: pytest.approx(metrics["lstm_seed0"]["rmse"]),
        1: pytest.approx(metrics["lstm_seed1"]["rmse"]),
    }
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "forecasts.parquet", "gates.parquet", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert plots == {"plots/loss.png", "plots/gates.png"}

    model = summary["instruments"]["GSPC"]["model"]
    assert model["name"] == "gatecast-lstm-smoke-GSPC"
    version = client.get_model_version_by_alias(model["name"], "newest")
    assert str(version.version) == model["version"]
    assert version.run_id == run_id
    assert version.tags["gatecast.instrument"] == "GSPC"
    # its lineage: run, commit, config and data hashes, final fold, the run's metrics
    assert version.tags["gatecast.lineage.run_id"] == run_id
    assert version.tags["gatecast.lineage.run_name"] == "train/GSPC/lstm"
    assert version.tags["gatecast.lineage.git.commit"] == run.data.tags["gatecast.git.commit"]
    config_text = tracking_store.download_artifact(run_id, "config.yaml", store / "cfg").read_text()
    assert (
        version.tags["gatecast.lineage.config_sha256"]
        == hashlib.sha256(config_text.encode()).hexdigest()
    )
    data_hash = run.data.tags["gatecast.input.GSPC.csv.sha256"]
    assert version.tags["gatecast.lineage.data.GSPC.csv"] == data_hash
    last_fold = summary["instruments"]["GSPC"]["folds"][-1]
    assert version.tags["gatecast.lineage.fold.train_start"] == last_fold["train_start"]
    for key in ("rmse", "mae", "theil_u2"):
        assert float(version.tags[f"gatecast.metric.{key}"]) == pytest.approx(
            metrics["lstm"][key], rel=1e-5
        )
    assert version.description.startswith("`lstm` forecast of GSPC's next close")
    assert data_hash[:12] in version.description and run_id in version.description
    # a logged model of the run, finished, with its signature and input example
    assert version.source.startswith("models:/m-")
    model_id = version.source.removeprefix("models:/")
    logged = client.get_logged_model(model_id)
    assert logged.source_run_id == run_id
    assert str(logged.status) == "READY"
    assert logged.params["forecasters.lstm.seeds"] == "2"
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    info = mlflow.models.get_model_info(model["uri"])
    assert info.model_id == model_id
    assert info.run_id == run_id
    # no input schema: MLflow would refuse the bars as read from a CSV (pyfunc_model)
    assert info.signature.inputs is None
    assert "lstm" in info.signature.outputs.input_names()
    assert info.signature.params.to_dict()[0]["name"] == "start"
    assert info.saved_input_example_info["type"] == "dataframe"


def test_charts_off_leaves_out_the_pngs_and_nothing_else(store, tmp_path, monkeypatch):
    """``tracking.charts: false`` (for big universes) drops the LSTM's loss and gate PNGs;
    it is no input of any unit, so a rerun on the same build reuses every one."""
    build = tmp_path / "build"
    shutil.copytree(store / "build", build)

    def no_unit(unit):
        raise AssertionError(f"{unit} ran again: the charts setting must not be a unit input")

    monkeypatch.setattr(train, "run_train_unit", no_unit)
    own = ["tracking.experiment=gatecast-smoke-no-charts", "tracking.registered_model=no-charts"]
    assert train.main(_argv(build, "tracking.charts=false", *own)) == 0
    run_id = _summary(build)["instruments"]["GSPC"]["runs"]["lstm"]
    artifacts = {a.path for a in tracking_store.client().list_artifacts(run_id)}
    assert {"config.yaml", "forecasts.parquet", "gates.parquet"} <= artifacts
    assert "plots" not in artifacts  # with charts on (the test above): loss.png and gates.png
    name = "GSPC.parquet"
    pd.testing.assert_frame_equal(
        pd.read_parquet(build / "smoke" / "forecasts" / name),
        pd.read_parquet(store / "build" / "smoke" / "forecasts" / name),
        check_exact=True,
    )


@pytest.mark.slow
def test_register_all_keeps_every_folds_model_and_none_keeps_none(store, tmp_path):
    """``tracking.register``: every fold's model, the final fold's under ``newest``; or none
    (and then no unit serialises its model)."""
    client = tracking_store.client()
    one_seed = ["forecasters.lstm.seeds=1", "forecasters.random_walk=null"]
    own = ["tracking.experiment=gatecast-smoke-register", "tracking.registered_model=every"]
    build = tmp_path / "all"
    assert train.main(_argv(build, "tracking.register=all", *one_seed, *own)) == 0
    model = _summary(build)["instruments"]["GSPC"]["model"]
    versions = client.search_model_versions(f"name = '{model['name']}'")
    folds = {v.version: int(v.tags["gatecast.lineage.fold.number"]) for v in versions}
    assert sorted(folds.values()) == [0, 1]  # one version per fold
    newest = client.get_model_version_by_alias(model["name"], "newest")
    assert folds[newest.version] == 1 and str(newest.version) == model["version"]

    build = tmp_path / "none"
    own = ["tracking.experiment=gatecast-smoke-register", "tracking.registered_model=nothing"]
    assert train.main(_argv(build, "tracking.register=none", *one_seed, *own)) == 0
    summary = _summary(build)["instruments"]["GSPC"]
    assert summary["model"] is None
    assert client.search_model_versions("name = 'nothing-GSPC'") == []
    assert "gatecast.registered_model" not in client.get_run(summary["runs"]["lstm"]).data.tags


def test_loading_a_model_in_process_leaves_the_import_path_as_it_was(store):
    """MLflow puts a model's code (only the modules loading it runs) first on sys.path;
    ``store.load_model`` puts it back, so the process and the pools it starts go on
    importing the rest of gatecast, and the model still predicts."""
    entry = _summary(store / "build")["instruments"]["GSPC"]
    bars = pd.read_parquet(store / "build" / "smoke" / "forecasts" / "GSPC.parquet")
    before = list(sys.path)
    model = tracking_store.load_model(entry["model"]["uri"])
    assert sys.path == before
    start = entry["folds"][-1]["test_start"]
    out = model.predict(bars[["open", "high", "low", "close", "volume"]], params={"start": start})
    assert len(out) > 0 and out["lstm"].notna().all()
    # a spawned worker unpickles pipelines.execution.executors, which the model does not ship
    with LocalExecutor(1) as executor:
        assert [outcome for _, outcome in executor.run(abs, [-3])] == [3]


def test_a_fresh_process_loads_the_registered_model_and_reproduces_the_forecasts(store, tmp_path):
    """Outside the repository (no PYTHONPATH): the model carries its own code."""
    summary = _summary(store / "build")
    entry = summary["instruments"]["GSPC"]
    last = entry["folds"][-1]
    bars = pd.read_parquet(store / "build" / "smoke" / "forecasts" / "GSPC.parquet")
    bars = bars.loc[
        last["train_start"] : last["test_end"], ["open", "high", "low", "close", "volume"]
    ]
    bars.rename_axis("date").reset_index().to_parquet(tmp_path / "bars.parquet")
    script = textwrap.dedent(
        f"""
        import json, sys, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model({entry["model"]["uri"]!r})
        bars = pd.read_parquet("bars.parquet")
        out = model.predict(bars, params={{"start": {last["test_start"]!r}}})
        out.to_parquet("predicted.parquet")
        ran = [m.__file__ for name, m in sorted(sys.modules.items())
               if name.split(".")[0] in ("core", "models", "strategies", "pipelines")
               and getattr(m, "__file__", None)]
        json.dump(ran, open("ran.json", "w"))
        schema = model.metadata.get_output_schema()
        pd.Series([str(c.type) for c in schema.inputs], index=schema.input_names()).to_json(
            "output_schema.json"
        )
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # every project module that loading and predicting ran came from the model's own code
    ran = json.loads((tmp_path / "ran.json").read_text())
    assert any(path.endswith("models/lstm.py") for path in ran), ran
    outside = [path for path in ran if Path(path).is_relative_to(REPO_ROOT)]
    assert outside == [], f"run from the repository, not from the model's code: {outside}"
    predicted = pd.read_parquet(tmp_path / "predicted.parquet")
    # The signature's output schema is written without running the model: it must
    # describe what predict really returns.
    schema = pd.read_json(tmp_path / "output_schema.json", typ="series")
    assert list(schema.index) == list(predicted.columns)
    assert schema["date"] == "DataType.datetime"
    assert set(schema.drop("date")) == {"DataType.double"}
    predicted = predicted.set_index("date")

    logged = tracking_store.download_artifact(
        entry["runs"]["lstm"], "forecasts.parquet", tmp_path / "dl"
    )
    logged = pd.read_parquet(logged)
    logged = logged.loc[logged["fold"] == last["number"]]
    assert predicted.index.equals(logged.index)
    for column in ("lstm", "lstm_seed0", "lstm_seed1"):
        np.testing.assert_allclose(predicted[column], logged[column], rtol=0, atol=1e-6)


def test_same_seed_same_metrics_on_cpu(store, tmp_path):
    assert train.main(_argv(store / "build2")) == 0
    first, second = _summary(store / "build"), _summary(store / "build2")
    assert second["parent_run_id"] != first["parent_run_id"]
    assert second["instruments"]["GSPC"]["metrics"] == first["instruments"]["GSPC"]["metrics"]
    client = tracking_store.client()

    def scores(run_id: str) -> dict[str, float]:
        # wall-clock timings differ between runs by nature; NaN is compared as a value
        metrics = client.get_run(run_id).data.metrics
        return {k: repr(v) for k, v in metrics.items() if "seconds" not in k}

    for name, run_id in first["instruments"]["GSPC"]["runs"].items():
        again = second["instruments"]["GSPC"]["runs"][name]
        assert len(scores(run_id)) >= 10
        assert scores(run_id) == scores(again), name
    lstm = first["instruments"]["GSPC"]["runs"]["lstm"]
    lstm_again = second["instruments"]["GSPC"]["runs"]["lstm"]
    for key in ("loss/fold1/seed1", "val_loss/fold0/seed0"):
        history = [m.value for m in client.get_metric_history(lstm, key)]
        assert history == [m.value for m in client.get_metric_history(lstm_again, key)]
    # the newest version now carries the alias
    model = second["instruments"]["GSPC"]["model"]
    assert int(model["version"]) == int(first["instruments"]["GSPC"]["model"]["version"]) + 1
    alias = client.get_model_version_by_alias(model["name"], "newest")
    assert str(alias.version) == model["version"]


def _classic_argv(out: Path) -> list[str]:
    return _argv(out, "forecasters.lstm=null")


def test_a_failing_forecaster_fails_alone_and_a_rerun_succeeds(
    store, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "build"
    (out / "smoke" / "forecasts").mkdir(parents=True)
    stale = out / "smoke" / "forecasts" / "summary.json"
    stale.write_text("{}")

    def boom(self, train):
        raise RuntimeError("simulated crash in the Kalman filter")

    monkeypatch.setattr(KalmanForecaster, "fit", boom)
    started = time.time() * 1000
    assert train.main(_classic_argv(out)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: train failed: UnitsFailed: 2 of 10 train units failed")
    crash = "RuntimeError: simulated crash in the Kalman filter"
    for fold in (0, 1):  # every failed unit by name, with its error
        assert f"GSPC/kalman fold {fold}: {crash}" in line
    assert "marked FAILED in experiment gatecast-smoke" in line
    assert line.endswith("-v shows the traceback)")
    assert not stale.exists()  # make must not take the stage for done

    runs = [
        r
        for r in tracking_store.find_runs("gatecast-smoke")
        if r.info.start_time >= started - 1 and "forecasters.ols.lags" in r.data.params
    ]
    # this test's runs: the classic forecasters only (a disabled forecaster has no params)
    runs = [r for r in runs if not any(k.startswith("forecasters.lstm") for k in r.data.params)]
    by_name = {r.info.run_name: r.info.status for r in runs}
    assert by_name["train"] == "FAILED"
    assert by_name["train/GSPC/kalman"] == "FAILED"
    assert by_name["train/GSPC/random_walk"] == "FINISHED"  # finished before the crash
    assert by_name["train/GSPC/ols"] == "FINISHED"  # and the units after it still ran
    assert "RUNNING" not in by_name.values()

    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'store' / 'mlflow.db'}")
    assert train.main(_classic_argv(out)) == 0
    summary = _summary(out)
    parent = tracking_store.client().get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert summary["instruments"]["GSPC"]["columns"] == CLASSIC


def test_ctrl_c_ends_the_runs_killed(store, tmp_path, monkeypatch, capsys):
    def interrupt(self, train):
        raise KeyboardInterrupt

    monkeypatch.setattr(KalmanForecaster, "fit", interrupt)
    started = time.time() * 1000
    assert train.main(_classic_argv(tmp_path / "build")) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("interrupted: train stopped")
    assert "marked KILLED in experiment gatecast-smoke" in line
    runs = [
        r for r in tracking_store.find_runs("gatecast-smoke") if r.info.start_time >= started - 1
    ]
    by_name = {r.info.run_name: r.info.status for r in runs}
    assert by_name["train"] == "KILLED"
    assert by_name["train/GSPC/kalman"] == "KILLED"


@pytest.mark.slow
def test_against_a_real_mlflow_server(tmp_path, monkeypatch, mlflow_server):
    url, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    out = tmp_path / "build"
    argv = _argv(out, "forecasters.lstm.seeds=1", "forecasters.lstm.epochs=1")
    argv += ["--set", "tracking.experiment=gatecast-test-server"]
    assert train.main(argv) == 0
    summary = _summary(out)

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("gatecast-test-server")
    runs = client.search_runs([experiment.experiment_id])
    names = {r.info.run_name: r for r in runs}
    assert set(names) == {"train", *(f"train/GSPC/{n}" for n in [*CLASSIC, "lstm"])}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert names["train"].info.run_id == summary["parent_run_id"]
    lstm = names["train/GSPC/lstm"]
    assert client.get_metric_history(lstm.info.run_id, "loss/fold1/seed0")
    assert "forecasts.parquet" in {a.path for a in client.list_artifacts(lstm.info.run_id)}
    version = client.get_model_version_by_alias("gatecast-lstm-smoke-GSPC", "newest")
    assert version.run_id == lstm.info.run_id
    # the artifacts went through the server into its artifact store
    assert any(artifacts.rglob("MLmodel"))


def test_gpu_request_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    # conftest hides every GPU (CUDA_VISIBLE_DEVICES="")
    assert train.main(_argv(tmp_path / "build", "device=gpu")) == 2
    err = capsys.readouterr().err
    assert "device: gpu, but TensorFlow sees no GPU" in err


def test_a_stage_that_fails_while_writing_forecasts_does_not_move_newest(
    store, tmp_path, monkeypatch, capsys
):
    client = MlflowClient()
    name = _summary(store / "build")["instruments"]["GSPC"]["model"]["name"]
    before = client.get_model_version_by_alias(name, tracking.LATEST_ALIAS).version
    versions = {v.version for v in client.search_model_versions(f"name='{name}'")}
    real_write = train.atomic_write

    def fail_on_gates(path, write):
        if path.name.endswith(".gates.parquet"):
            raise OSError(f"simulated full disk writing {path.name}")
        real_write(path, write)

    monkeypatch.setattr(train, "atomic_write", fail_on_gates)
    assert train.main(_argv(tmp_path / "build")) == 1
    assert "simulated full disk writing GSPC.gates.parquet" in capsys.readouterr().err
    registered = {v.version for v in client.search_model_versions(f"name='{name}'")}
    assert len(registered - versions) == 1  # the failed stage's model was registered ...
    # ... but newest still names the last finished stage's version
    assert client.get_model_version_by_alias(name, tracking.LATEST_ALIAS).version == before
    assert not (tmp_path / "build" / "smoke" / "forecasts" / "summary.json").exists()


@pytest.mark.slow
def test_without_a_device_forecaster_no_process_starts_tensorflow(tmp_path):
    """Starting TensorFlow costs seconds in every process: a config whose forecasters all
    compute without it (none declares ``device``) searches (the OLS forecaster's window),
    trains on a pool of two workers, and backtests, with TensorFlow unimportable in the
    driver and in every worker."""
    blocked = tmp_path / "blocked" / "tensorflow"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("this process imported tensorflow")\n')
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(blocked.parent), str(REPO_ROOT)]),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    argv = _argv(
        tmp_path / "build",
        "forecasters.lstm=null",
        "executor={kind: local, workers: 2}",
        "search={trials: 2, forecaster: ols, space: {units: null, layers: null, "
        "epochs: null, batch_size: null, dropout: null, learning_rate: null, window: [5, 15]}}",
    )
    script = (
        "import sys; from pipelines.stages import backtest, search, train; args = sys.argv[1:]; "
        "sys.exit(search.main(args) or train.main(args) or backtest.main([*args, '--no-charts']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tensorflow" not in done.stderr
    searched = json.loads((tmp_path / "build" / "smoke" / "search" / "summary.json").read_text())
    assert searched["trials_completed"] == 2 and 5 <= searched["chosen"]["window"] <= 15
    summary = _summary(tmp_path / "build")
    assert list(summary["instruments"]["GSPC"]["metrics"]) == CLASSIC
    assert summary["device"]["kind"] == "cpu"
