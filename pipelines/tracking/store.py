"""Opening an MLflow store: created once under a lock, a server asked once, abandoned runs ended.

Part of the tracking code (with ``pipelines.tracking``, whose docstring says
what the stages see, and ``pipelines.tracking.pyfunc_model``): the only modules that
import mlflow.

- A SQLite store is created under a file lock (MLflow creates its tables
  without one, and two first runs at once break the store) and set to
  write-ahead logging.
- A server is first asked once, with a 10 s timeout and no retry, so one that
  is not there stops the stage in seconds with a one-line ``TrackingError``.
- Runs left RUNNING by a process of this host that is gone (``kill -9``: MLflow
  has no heartbeat) are marked KILLED, with one log line, when a process first
  opens the store.
- Every MLflow failure becomes one line of ``TrackingError``, password masked.
- Experiments carry the tag ``mlflow.experimentKind=custom_model_development``
  (MLflow 3's model-training view; 3.17's UI opens it only through links with
  ``?workflowType=machine_learning``, ``pipelines.tracking.uri.experiment_url``).
- Queries for tests and the tracking CLI: ``find_runs``, ``child_runs``,
  ``download_artifact``, ``load_model``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import sqlite3
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import psutil
from filelock import FileLock
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from pipelines.tracking.uri import (
    artifact_root,
    display_uri,
    masked,
    registry_uri,
    sqlite_path,
    tracking_uri,
)

log = logging.getLogger("gatecast.tracking")

# MLflow 3's experiment kind for runs of trained models (not GenAI traces).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}

# The first request to a server: fail in seconds when it is not there.
_FIRST_CONTACT = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


# Every later request to a server: given up within about 30 s when the server is gone or
# hangs (3 tries of at most 8 s each, the last after 2 s, with up to 1 s of jitter), where
# MLflow's own defaults wait 4 minutes for a server that is gone and 16 for one that hangs;
# a closed port fails in about 3 s. A user's own MLFLOW_HTTP_REQUEST_* settings win. Read by
# MLflow when it first builds its HTTP session, which is after this module is imported.
BOUNDED_REQUESTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "8",
}
for _key, _value in BOUNDED_REQUESTS.items():
    os.environ.setdefault(_key, _value)


class TrackingError(RuntimeError):
    """MLflow could not record something (the message names what, and the store).

    ``lost``: the store can take nothing more for now (a server that does not
    answer: refused, reset or timed out; or a full disk under the store), as
    opposed to refusing this one request.
    """

    def __init__(self, message: str, *, lost: bool = False) -> None:
        super().__init__(message)
        self.lost = lost


@contextlib.contextmanager
def store_errors(uri: str, what: str) -> Iterator[None]:
    """Turn any failure of MLflow into one line of ``TrackingError``, password masked."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as err:
        text = masked(" ".join(str(err).split()) or type(err).__name__, uri)
        where = display_uri(uri)
        # refused, timed out, or cut off mid-answer (a server killed while it replied)
        broken = re.search(
            r"Max retries exceeded|Read timed out|ConnectionError|Connection broken"
            r"|Connection aborted|RemoteDisconnected|IncompleteRead",
            text,
        )
        unreachable = bool(broken) and urlparse(uri).scheme in {"http", "https"}
        full = re.search(r"database or disk is full|No space left on device", text)
        if unreachable:
            why = re.search(
                r"\[Errno -?\d+\] ([^\"')]+)|(timed out)|(Connection broken|Connection aborted"
                r"|RemoteDisconnected|IncompleteRead)",
                text,
            )
            reason = f" ({next(g for g in why.groups() if g).strip()})" if why else ""
            message = f"MLflow could not {what}: connection to {where} failed{reason}"
        elif full:
            message = (
                f"MLflow could not {what}: the disk under {where} is full; free some space "
                "and run again"
            )
        else:
            message = f"MLflow could not {what} at {where}: {type(err).__name__}: {text}"
        # the original error's text may hold the password
        lost = unreachable or bool(full)
        raise TrackingError(message, lost=lost) from (None if where != uri else err)


@contextlib.contextmanager
def first_contact(uri: str) -> Iterator[None]:
    """Hold the SQLite store's creation lock, or ask a server with a short timeout."""
    path = sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        with FileLock(Path(tempfile.gettempdir()) / f"gatecast-store-{name}.lock", timeout=300):
            with contextlib.closing(sqlite3.connect(path, timeout=20)) as connection:
                connection.execute("PRAGMA journal_mode=WAL")
            yield
        return
    if urlparse(uri).scheme not in {"http", "https"}:
        yield
        return
    with _environment_kept(_FIRST_CONTACT):
        os.environ.update(_FIRST_CONTACT)
        yield


@contextlib.contextmanager
def _environment_kept(names: Iterable[str]) -> Iterator[None]:
    """Put the environment variables ``names`` back as they were when the block ends."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_CLIENTS: dict[str, mlflow.MlflowClient] = {}
_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _point_mlflow_at(uri: str) -> None:
    """Set MLflow's process-wide tracking and registry URIs to the store ``uri``.

    MLflow also writes them into ``os.environ``, where they would outlive a later
    change of ``MLFLOW_TRACKING_URI`` in this process and be read back as the
    user's ``MLFLOW_REGISTRY_URI`` (``registry_uri``): the environment is put back.
    """
    with _environment_kept(_URI_VARIABLES):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(registry_uri(uri))


def open_store(uri: str) -> mlflow.MlflowClient:
    """The client of ``uri``; the first time in a process, the store is created or checked.

    MLflow's process-wide tracking and registry URIs are set to the store too:
    registering a version whose source is a logged model (``models:/m-...``)
    looks that model up through them, and with neither ``MLFLOW_TRACKING_URI``
    nor ``MLFLOW_REGISTRY_URI`` set MLflow would look in a ``mlflow.db`` of the
    working directory instead.
    """
    _point_mlflow_at(uri)
    if uri not in _CLIENTS:
        with store_errors(uri, "open the tracking store"):
            with first_contact(uri):
                opened = mlflow.MlflowClient(tracking_uri=uri, registry_uri=registry_uri(uri))
                opened.search_experiments(max_results=1)  # creates a new store's tables
            end_abandoned_runs(opened)
        _CLIENTS[uri] = opened
    return _CLIENTS[uri]


def client() -> mlflow.MlflowClient:
    """An ``mlflow.MlflowClient`` on the current tracking (and registry) URI."""
    return open_store(tracking_uri())


def process_gone(pid: str, run: Any) -> bool:
    """Whether process ``pid`` of this host, which started ``run`` (a RunInfo), is gone."""
    try:
        process = psutil.Process(int(pid))
        # a pid used again by a process that started after the run is not the run's
        started = process.create_time() * 1000
        return process.status() == psutil.STATUS_ZOMBIE or started > run.start_time
    except psutil.NoSuchProcess:
        return True
    except (ValueError, psutil.Error):  # not a pid, or not ours to inspect: leave the run alone
        return False


def end_abandoned_runs(store: mlflow.MlflowClient) -> None:
    """Mark KILLED the runs left RUNNING by processes of this host that are gone."""
    host = socket.gethostname()
    quoted = host.replace("'", "\\'")
    experiments = [e.experiment_id for e in store.search_experiments(view_type=ViewType.ALL)]
    running = experiments and store.search_runs(
        experiments,
        filter_string=f"attributes.status = 'RUNNING' and tags.`gatecast.host` = '{quoted}'",
        run_view_type=ViewType.ALL,
        max_results=5000,
    )
    gone = [r for r in running or [] if process_gone(r.data.tags.get("gatecast.pid", ""), r.info)]
    for run in gone:
        store.set_terminated(run.info.run_id, "KILLED")
    if gone:
        log.warning(
            "MLflow: marked KILLED %d run(s) left RUNNING by killed process(es) %s of %s: %s",
            len(gone),
            ", ".join(sorted({r.data.tags["gatecast.pid"] for r in gone})),
            host,
            ", ".join(sorted(f"{r.info.run_name} ({r.info.run_id})" for r in gone)),
        )


def experiment_id_of(store: mlflow.MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (or restored from the trash) when needed."""
    experiment = store.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            store.restore_experiment(experiment.experiment_id)
        for key, value in EXPERIMENT_KIND.items():
            if experiment.tags.get(key) != value:  # an experiment of an older gatecast
                store.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    root = artifact_root(uri)
    try:
        return store.create_experiment(
            name,
            artifact_location=(root / name).as_uri() if root is not None else None,
            tags=EXPERIMENT_KIND,
        )
    except MlflowException:
        experiment = store.get_experiment_by_name(name)  # another process created it meanwhile
        if experiment is None:
            raise
        return experiment.experiment_id


# Queries (tests, the tracking CLI) ----------------------------------------------------------


def find_runs(
    experiment_name: str, filter_string: str = "", *, include_children: bool = True
) -> list[Any]:
    """Runs of an experiment (newest first), e.g. ``filter_string="tags.gatecast.stage = 'train'"``.

    Returns ``mlflow.entities.Run`` objects; an unknown experiment gives ``[]``.
    """
    store = client()
    experiment = store.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    runs = store.search_runs(
        [experiment.experiment_id],
        filter_string=filter_string,
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    return [r for r in runs if include_children or "mlflow.parentRunId" not in r.data.tags]


def child_runs(parent_run_id: str) -> list[Any]:
    """The child runs of a parent run, by run name."""
    store = client()
    runs = store.search_runs(
        [store.get_run(parent_run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=5000,
    )
    return sorted(runs, key=lambda r: r.info.run_name)


def download_artifact(run_id: str, artifact_path: str, destination: str | Path) -> Path:
    """Download one artifact of a run into ``destination``; returns its local path."""
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id,
        artifact_path=artifact_path,
        dst_path=str(destination),
        tracking_uri=tracking_uri(),
    )
    return Path(path)


def load_model(model_uri: str) -> Any:
    """``mlflow.pyfunc.load_model`` on the current store (``models:/gatecast-lstm-GSPC@newest``),
    leaving this process's ``sys.path`` as it was.

    MLflow puts a model's code (``pipelines.tracking.pyfunc_model``: the modules
    loading it runs, not the whole project) first on ``sys.path`` for good. The
    loaded model keeps running its own code (the packages it imported remember
    where they came from), and this process, and any process it starts, goes on
    importing the rest of gatecast from where it did before.
    """
    client()  # which also points MLflow's process-wide URIs at the store
    path = list(sys.path)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    finally:
        sys.path[:] = path


def experiments() -> list[tuple[str, str]]:
    """(id, name) of every active experiment of the current store, in id order."""
    found = client().search_experiments(view_type=ViewType.ACTIVE_ONLY)
    return sorted(((e.experiment_id, e.name) for e in found), key=lambda e: (len(e[0]), e[0]))
