"""`make server`: a team MLflow server on PostgreSQL, shared by two pipelines at once.

The server starts through ``python -m pipelines.tracking server`` (what ``make
server`` runs) in a temporary folder on a free port; two processes run the smoke
config's train and backtest stages against it at the same time, into one experiment
and one registered model, as two colleagues running the same config would.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipelines.tracking import team_server
from pipelines.tracking.uri import main as tracking_main
from tests.servers import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "gatecast-test-team"
MODEL = "gatecast-team"  # registered per instrument: gatecast-team-GSPC

# Each client: train then backtest (no charts) in one process, TensorFlow imported once.
_CLIENT = """
import sys
from pipelines.stages import backtest, train
argv = sys.argv[1:]
sys.exit(train.main(argv) or backtest.main([*argv, "--no-charts"]))
"""


def _smoke_lstm(folder: Path) -> Path:
    """The smoke config on GSPC with the random walk and the LSTM only (the registered
    model): what the server sees is the same, in half the time of the whole smoke config."""
    cfg = yaml.safe_load((REPO_ROOT / "configs" / "smoke.yaml").read_text())
    cfg["data"]["instruments"] = ["GSPC"]
    cfg["forecasters"] = {"random_walk": {}, "lstm": cfg["forecasters"]["lstm"]}
    path = folder / "smoke-lstm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _missing() -> str | None:
    try:
        team_server.postgres_bin()
    except team_server.ServerError:
        return "PostgreSQL's server programs are not installed (apt-get install -y postgresql)"
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (pip install -e '.[server]')"
    return None


needs_postgres = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def _tracking(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipelines.tracking ...`` as ``make server`` runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.tracking", *argv],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def server():
    """A started team server: (its folder, its URL, what ``server`` printed).

    In a folder of /tmp that the postgres user may pass through (pytest's own temporary
    folders are private to root when the tests run as root); stopped, and the folder
    removed, whatever the tests did.
    """
    root = Path(tempfile.mkdtemp(prefix="gatecast-server-"))
    root.chmod(0o711)
    folder = root / "server"
    port = free_port()
    try:
        started = _tracking("server", "--dir", str(folder), "--port", str(port))
        assert started.returncode == 0, started.stderr[-3000:]
        yield folder, f"http://127.0.0.1:{port}", started.stdout
    finally:
        _tracking("server-stop", "--dir", str(folder))
        team_server.stop(team_server.ServerFolder(folder))  # in case the command failed
        shutil.rmtree(root, ignore_errors=True)


@needs_postgres
def test_server_prints_the_uri_to_export(server):
    folder, url, said = server
    assert f"export MLFLOW_TRACKING_URI={url}\n" in said
    assert (folder / "postgres" / "data" / "PG_VERSION").is_file()
    assert (folder / "artifacts").is_dir() and (folder / "mlflow.log").is_file()


@needs_postgres
def test_starting_it_again_says_it_runs_and_prints_the_uri(server):
    folder, url, _ = server
    port = url.rsplit(":", 1)[1]
    again = _tracking("server", "--dir", str(folder), "--port", port)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert f"export MLFLOW_TRACKING_URI={url}\n" in again.stdout


@pytest.mark.slow
@needs_postgres
def test_two_pipelines_at_once_record_their_runs_and_models(server, tmp_path, monkeypatch):
    _, url, _ = server
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "PYTHONPATH": str(REPO_ROOT)}
    config = _smoke_lstm(tmp_path)
    clients = []
    for k in range(2):
        sets = [
            f"output_directory={tmp_path / f'build-{k}'}",
            f"tracking.experiment={EXPERIMENT}",
            f"tracking.registered_model={MODEL}",
        ]
        argv = ["--config", str(config), *[a for s in sets for a in ("--set", s)]]
        with (tmp_path / f"client-{k}.log").open("w") as log:
            clients.append(
                subprocess.Popen(
                    [sys.executable, "-c", _CLIENT, *argv],
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    for k, client in enumerate(clients):
        assert client.wait(timeout=600) == 0, (tmp_path / f"client-{k}.log").read_text()[-3000:]

    from pipelines.tracking import store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    runs = store.find_runs(EXPERIMENT)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    for client in clients:
        stages = {
            r.data.tags["gatecast.stage"]
            for r in parents
            if r.data.tags.get("gatecast.pid") == str(client.pid)
        }
        assert stages == {"train", "backtest"}, client.pid
    assert len(parents) == 4
    assert len(runs) > len(parents)  # each stage's children, one per forecaster and strategy
    assert {r.info.status for r in runs} == {"FINISHED"}

    name = f"{MODEL}-GSPC"
    registry = store.client()
    versions = registry.search_model_versions(f"name = '{name}'")
    trained = {r.info.run_id for r in runs if r.data.tags["gatecast.stage"] == "train"}
    assert len(versions) == 2 and {v.run_id for v in versions} <= trained
    newest = registry.get_model_version_by_alias(name, "newest")
    assert newest.version in {v.version for v in versions}

    # the model comes back through the server's proxied artifacts
    model = store.load_model(f"models:/{name}@newest")
    bars = pd.read_csv(REPO_ROOT / "data" / "sample" / "GSPC.csv")
    bars = bars[(bars["Date"] >= "2012-01-01") & (bars["Date"] <= "2012-12-31")]
    forecasts = model.predict(bars, params={"start": "2012-06-01"})
    assert len(forecasts) > 100 and forecasts["lstm"].notna().all()


@needs_postgres
def test_stop_ends_the_server_and_postgres(server):
    folder, url, _ = server
    stopped = _tracking("server-stop", "--dir", str(folder))
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.splitlines() == ["stopped the MLflow server", "stopped PostgreSQL"]
    host, port = url.removeprefix("http://").split(":")
    team_server.check_port(host, int(port))  # free again
    assert not team_server.postgres_running(
        team_server.ServerFolder(folder), team_server.postgres_bin()
    )
    again = _tracking("server-stop", "--dir", str(folder))
    assert again.returncode == 0 and "no team server was running" in again.stdout


def test_a_port_in_use_is_one_line_saying_how_to_choose_another(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["server", "--dir", str(tmp_path / "server"), "--port", str(port)]
        assert tracking_main(argv, commands=team_server.add_commands) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"make server: port {port} on 127.0.0.1 is in use by another program: stop it, "
        f"or choose another port (make server PORT={port + 1})\n"
    )
    assert not (tmp_path / "server").exists()


def test_missing_postgres_programs_say_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setattr(team_server, "POSTGRES_VERSIONS", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(team_server.ServerError, match=r"apt-get install -y postgresql"):
        team_server.postgres_bin()
