"""Shared test set-up: quiet TensorFlow, and never touch the project's own MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests compare CPU numerics
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from pipelines.tracking import uri as store_uri
from tests.servers import free_port, wait_until_answering

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "data" / "sample"


# Session fixtures that are expensive to make: under pytest-xdist (``make test`` runs
# ``-n 2 --dist loadgroup``) the tests that use one run in one worker, so it is made once.
SHARED_FIXTURES = ("smoke_sequential", "mlflow_server")


# Fixtures wider than a test that cost nothing to make again in the other worker.
CHEAP_SHARED = ("_isolated_tracking_store",)


def _uses_a_wider_fixture(item: pytest.Item) -> bool:
    """Whether the test uses one of the suite's own fixtures made once per module (or
    class, package or session): those tests must run in one worker to share it."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:  # not a plain test function: keep it with its module
        return True
    for name in info.names_closure:
        for fixture in info.name2fixturedefs.get(name, ()):
            # baseid "": pytest's own and plugins' fixtures (tmp_path_factory, ...)
            if fixture.scope != "function" and fixture.baseid and name not in CHEAP_SHARED:
                return True
    return False


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the test ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group the tests for ``--dist loadgroup``: a test that uses a shared session fixture
    goes with the fixture's other users, and one that uses a module's (or another wider)
    fixture stays with its module, so each is made once; every other test is handed to
    whichever worker is free, one by one (xdist hands out the groups first, the largest
    first), which keeps the two workers busy to the end."""
    for item in items:
        shared = [f for f in SHARED_FIXTURES if f in getattr(item, "fixturenames", ())]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
        elif _uses_a_wider_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(autouse=True, scope="session")
def _isolated_tracking_store(tmp_path_factory: pytest.TempPathFactory):
    """Point MLflow at a throwaway SQLite store for the whole session.

    Tests that need their own store override MLFLOW_TRACKING_URI with monkeypatch.
    """
    store = tmp_path_factory.mktemp("mlflow")
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    yield
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def smoke_sequential(tmp_path_factory: pytest.TempPathFactory):
    """The smoke config's train and backtest (no charts) stages, run once sequentially in
    their own folder and SQLite store: what the tests of the other executors compare with.

    Yields (folder whose ``smoke/`` holds the stages' outputs, the store's URI); tests that
    compare MLflow runs point MLFLOW_TRACKING_URI at that store too.
    """
    from pipelines.stages import backtest, train

    root = tmp_path_factory.mktemp("smoke-sequential")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    argv = ["--config", "configs/smoke.yaml", "--set", f"output_directory={root / 'build'}"]
    argv += ["--set", "executor={kind: sequential}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        assert train.main(argv) == 0
        assert backtest.main([*argv, "--no-charts"]) == 0
    yield root / "build", uri


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """One ``mlflow server`` (``pipelines.tracking.uri.server_command``) on a free loopback port
    with its own SQLite store and artifact folder, for the tests that talk to a server;
    each uses its own experiment. Yields (its URL, its artifact folder)."""
    import signal
    import subprocess

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = store_uri.server_command(
        "127.0.0.1", port, f"sqlite:///{root / 'server.db'}", root / "artifacts"
    )
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        command,
        cwd=root,
        env=store_uri.server_environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(server, url, hint=f"; its log: {root / 'server.log'}")
        yield url, root / "artifacts"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
