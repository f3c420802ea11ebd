"""MLflow tracking for every stage: the one module of gatecast that imports mlflow.

Store
    By default an embedded store inside the repository, whatever the working
    directory: runs in ``sqlite:///<repo>/mlruns/mlflow.db``, artifacts under
    ``<repo>/mlruns/artifacts/<experiment>``. ``MLFLOW_TRACKING_URI`` (and
    MLflow's other variables, e.g. ``MLFLOW_REGISTRY_URI``) take over when set;
    with a ``sqlite:///.../x.db`` URI the artifacts go next to the database, in
    ``.../artifacts/<experiment>``; with a server the server decides.
    ``python -m pipelines.tracking ui`` (``make ui``) serves the store on
    127.0.0.1.

    A SQLite store that gatecast opens is switched to write-ahead logging
    (``PRAGMA journal_mode=WAL``, which SQLite keeps in the database file):
    a commit appends to ``mlflow.db-wal`` instead of writing a rollback
    journal and the database, which halves the cost of every MLflow call, and
    ``make ui`` can read while a stage writes. Commits stay durable (SQLite's
    default ``synchronous=FULL``). WAL needs the database on a local disk, not
    a network file system; for a shared store, run an MLflow server.

Run layout (what the MLflow UI shows)
    - one experiment per config: ``cfg.experiment_name`` (``gatecast-<name>``);
    - one parent run per invocation of a tracked stage, named after the stage
      (``train``, ``report``; the data and backtest stages write files only,
      and the report logs the backtests' results), tag ``gatecast.stage``;
    - one child run per instrument x forecaster (train) or instrument x
      strategy (report), named ``<INST>/<forecaster or strategy>``, tags
      ``gatecast.instrument`` and ``gatecast.forecaster`` / ``gatecast.strategy``.

    Every run, parent and child, carries the resolved config as params
    (flattened keys such as ``forecasters.lstm.units``) and as the artifact
    ``config.yaml``, and the tags ``gatecast.git.commit``, ``gatecast.git.dirty``,
    ``gatecast.command``, ``gatecast.version.<library>``, ``gatecast.seed`` and
    ``gatecast.input.<file>.sha256`` for every input data file; the train
    stage's runs also ``gatecast.device`` and ``gatecast.device_name``.

Metric conventions (the train stage; the report stage uses the same idea)
    - whole out-of-sample period: plain names (``rmse``, ``dm_pvalue``, ...),
      logged once at step 0, identical names across forecasters/strategies so
      the compare view lines them up;
    - walk-forward folds: ``fold/<metric>`` with ``step`` = fold index;
    - LSTM seeds: ``seed/<metric>`` with ``step`` = seed index ``k`` (seed
      ``cfg.seed + k``); the plain names score the seeds' mean forecast;
    - per-epoch losses: ``loss/fold<i>/seed<k>`` and ``val_loss/fold<i>/seed<k>``
      with ``step`` = epoch, each history logged in one batch.

Ending runs
    Leaving a run's ``with`` block normally ends it FINISHED; an exception ends
    every run the block opened FAILED, and Ctrl-C (KeyboardInterrupt) KILLED,
    so no run is ever left RUNNING. What a run had logged before it failed is
    kept, and the exception leaves ``pipeline_run`` with a note (PEP 678)
    saying how the runs ended and in which experiment, which the stage's
    one-line error (``pipelines.cli.run_stage``) shows.

Registered model (one per instrument)
    ``log_lstm_model`` logs the final walk-forward fold's LSTM (all seeds; the
    forecast is their mean, as in the ``lstm`` column) in MLflow's pyfunc
    format with an input example and a signature, as a logged model of the
    instrument's ``<INST>/lstm`` run, and registers it under the name

        ``<tracking.registered_model>-<INST>``

    (``tracking.registered_model`` from the config, default ``gatecast-lstm``:
    ``gatecast-lstm-GSPC``, ``gatecast-lstm-ORCL``, ...). Every train run adds
    a version and moves the alias ``newest`` to it; the alias is ``newest``
    because MLflow reserves ``latest``. In any Python process with the same
    tracking URI (``python -m pipelines.tracking uri`` prints it)::

        import mlflow
        model = mlflow.pyfunc.load_model("models:/gatecast-lstm-GSPC@newest")
        forecasts = model.predict(bars, params={"start": "2012-06-01"})

    ``bars`` has a ``date`` column and ``open, high, low, close, volume``; the
    result has one row per forecast date with ``lstm`` (the next close) and
    ``lstm_seed<k>``. A given version: ``models:/gatecast-lstm-GSPC/3``.

Overhead
    A run costs three store requests whatever it logs: one to create it (its
    tags included), one batch at the end with its params, tags and metrics
    (more only past the store's limits: 100 params, 100 tags, 1000 items),
    one to end it. Artifacts (``config.yaml`` first) go straight to the
    artifact location the store gave the run when it was created. Runs are
    created through the client, not ``mlflow.start_run``: the experiment, the
    run context and the config file are resolved once per stage. Time spent
    inside this module's calls is added up (``overhead_seconds``,
    ``overhead_by_call``, ``overhead_call_counts``; opening the store, a
    one-time cost per process, counts as ``open_store``; rendering PNGs is
    matplotlib's work and counts apart as ``render_figure``), so the benchmark
    can report MLflow's share of a stage's wall time and its cost per run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock
from urllib.parse import unquote, urlparse

# Before mlflow is imported: no download progress bars in the stage's console output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import numpy as np
import pandas as pd
import yaml
from mlflow.entities import (
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunStatus,
    RunTag,
)
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from pipelines.config import REPO_ROOT, Config

log = logging.getLogger("gatecast.tracking")

# MLflow's own INFO lines (store migrations, "View run at ...") would drown the stage's output.
for _name in ("mlflow", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)

STORE_DIRECTORY = REPO_ROOT / "mlruns"
DEFAULT_TRACKING_URI = f"sqlite:///{STORE_DIRECTORY / 'mlflow.db'}"
DEFAULT_ARTIFACT_ROOT = STORE_DIRECTORY / "artifacts"
# MLflow reserves the alias "latest"; "newest" always names the most recently trained version.
LATEST_ALIAS = "newest"
# PNGs logged with runs: enough to read a chart in the MLflow UI.
FIGURE_DPI = 100

# The REST API's limits per log_batch request (mlflow.utils.validation), which
# every store accepts.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000

VERSIONED_LIBRARIES = (
    "tensorflow",
    "keras",
    "backtrader",
    "mlflow",
    "pandas",
    "numpy",
    "statsmodels",
)

_KEY_BAD_CHARS = re.compile(r"[^\w./\- ]")

T = TypeVar("T")


# Overhead accounting -----------------------------------------------------------------


class _Clock:
    """Wall time spent inside tracking calls (outermost call only, so nesting counts once)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.by_call: dict[str, float] = {}
        self.count_by_call: dict[str, int] = {}
        self._depth = 0

    @contextlib.contextmanager
    def timing(self, what: str) -> Iterator[None]:
        self._depth += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                spent = time.perf_counter() - start
                self.seconds += spent
                self.calls += 1
                self.by_call[what] = self.by_call.get(what, 0.0) + spent
                self.count_by_call[what] = self.count_by_call.get(what, 0) + 1


_CLOCK = _Clock()


def _timed(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with _CLOCK.timing(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper


def overhead_seconds() -> float:
    """Seconds spent inside tracking calls since the last ``reset_overhead``."""
    return _CLOCK.seconds


def mlflow_seconds() -> float:
    """``overhead_seconds`` less the time spent drawing figures (matplotlib, not MLflow)."""
    return _CLOCK.seconds - _CLOCK.by_call.get("render_figure", 0.0)


def overhead_calls() -> int:
    """Number of (outermost) tracking calls since the last ``reset_overhead``."""
    return _CLOCK.calls


def overhead_by_call() -> dict[str, float]:
    """Seconds spent per kind of tracking call (``log_metrics``, ``start_run``, ...)."""
    return dict(_CLOCK.by_call)


def overhead_call_counts() -> dict[str, int]:
    """How many calls of each kind ``overhead_by_call`` adds up (``start_run``: runs opened)."""
    return dict(_CLOCK.count_by_call)


def reset_overhead() -> None:
    """Start counting tracking time afresh."""
    _CLOCK.seconds = 0.0
    _CLOCK.calls = 0
    _CLOCK.by_call = {}
    _CLOCK.count_by_call = {}


# Store --------------------------------------------------------------------------------


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded store in ``<repo>/mlruns``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def display_uri(uri: str | None = None) -> str:
    """The tracking URI without any user:password part, safe to print or write to files."""
    uri = uri or tracking_uri()
    parts = urlparse(uri)
    if parts.password is None and parts.username is None:
        return uri
    return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///") :]))


def artifact_root(uri: str | None = None) -> Path | None:
    """Where experiments created by gatecast keep artifacts, for an embedded store.

    ``<repo>/mlruns/artifacts`` for the default store, ``<dir>/artifacts`` for
    ``sqlite:///<dir>/<file>``; None for a server or any other store (it
    chooses the location itself).
    """
    uri = uri or tracking_uri()
    if uri == DEFAULT_TRACKING_URI:
        return DEFAULT_ARTIFACT_ROOT
    path = _sqlite_path(uri)
    return path.parent / "artifacts" if path is not None else None


def client() -> MlflowClient:
    """An MlflowClient on the current tracking (and registry) URI."""
    return MlflowClient(tracking_uri=tracking_uri())


def _use_store() -> str:
    uri = tracking_uri()
    path = _sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_ahead_log(path)
    mlflow.set_tracking_uri(uri)
    return uri


def _write_ahead_log(path: Path) -> None:
    """Switch the SQLite database at ``path`` (created if missing) to WAL journal mode.

    The mode is stored in the file, so this is a no-op after the first time.
    Any error is left to MLflow's own opening of the store, which reports it
    with the URI.
    """
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=20)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as err:
        log.debug("could not switch %s to WAL journal mode: %s", path, err)


def _experiment_id(mlflow_client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (or restored from the trash) when needed."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    root = artifact_root(uri)
    location = (root / name).as_uri() if root is not None else None
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # another process created it between the lookup and the create
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


# Run context --------------------------------------------------------------------------


def flatten_config(cfg: Config) -> dict[str, str]:
    """The resolved config as flat ``section.key`` -> string params."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[prefix] = text[:MAX_PARAM_LENGTH]

    walk("", cfg.model_dump(mode="json"))
    out["experiment_name"] = cfg.experiment_name
    return out


def config_yaml(cfg: Config) -> str:
    """The resolved config (defaults filled in) as YAML."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_state() -> dict[str, str]:
    """Commit and dirty flag of the working tree (``unknown`` outside a git checkout)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"gatecast.git.commit": "unknown", "gatecast.git.dirty": "unknown"}
    status = _git("status", "--porcelain")
    dirty = "unknown" if status is None else str(bool(status)).lower()
    return {
        "gatecast.git.commit": commit,
        "gatecast.git.dirty": dirty,
        "mlflow.source.git.commit": commit,
    }


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the results."""
    out = {}
    for name in VERSIONED_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _key(text: str) -> str:
    """A string made safe for an MLflow param/metric/tag key."""
    return _KEY_BAD_CHARS.sub("_", text)


@dataclass
class _Store:
    """What every run of one stage invocation shares: one client, the context, config.yaml.

    Args:
        client: The MlflowClient of the stage's store.
        context_tags: MLflow's own run-context tags (user, source), resolved once.
        config_file: The resolved config written once, copied into every run.
    """

    client: MlflowClient
    context_tags: dict[str, str]
    config_file: Path


@dataclass
class RunHandle:
    """One open MLflow run of a stage.

    Args:
        run_id: The MLflow run id.
        experiment_id: The experiment it belongs to.
        name: Its run name (``train``, ``GSPC/lstm``, ...).
        tags: Tags every child run of this pipeline run inherits.
        params: Params every child run inherits (the flattened config).
        config_text: The resolved config as YAML (logged as ``config.yaml``).
        tracking_uri: The store the run lives in.
        experiment_name: The experiment's name.
        artifact_uri: Where the run's artifacts go (from the store, when created).
    """

    run_id: str
    experiment_id: str
    name: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    config_text: str = ""
    tracking_uri: str = ""
    experiment_name: str = ""
    artifact_uri: str = ""
    pending: list[Metric] = field(default_factory=list, repr=False)
    pending_params: dict[str, str] = field(default_factory=dict, repr=False)
    pending_tags: dict[str, str] = field(default_factory=dict, repr=False)
    store: _Store | None = field(default=None, repr=False)
    artifact_repository: Any = field(default=None, repr=False)

    def queue(self, metrics: Sequence[Metric]) -> None:
        """Hold metrics until the run ends (or a full batch is waiting): one request each."""
        self.pending.extend(metrics)
        if len(self.pending) >= MAX_METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        """Send the waiting params, tags and metrics, in as few batches as the limits allow."""
        metrics, self.pending = self.pending, []
        params, self.pending_params = self.pending_params, {}
        tags, self.pending_tags = self.pending_tags, {}
        if metrics or params or tags:
            _log_batch(self.run_id, metrics, params, tags, self.store)


_STACK: list[RunHandle] = []


def active_run() -> RunHandle:
    """The innermost run opened by ``pipeline_run`` or ``child_run``."""
    if not _STACK:
        raise RuntimeError("no gatecast run is open: use `with tracking.pipeline_run(cfg, stage)`")
    return _STACK[-1]


def _end_status(exc: BaseException | None) -> str:
    if exc is None:
        return RunStatus.to_string(RunStatus.FINISHED)
    if isinstance(exc, KeyboardInterrupt):
        return RunStatus.to_string(RunStatus.KILLED)
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return RunStatus.to_string(RunStatus.FINISHED)
    return RunStatus.to_string(RunStatus.FAILED)


def _log_batch(
    run_id: str,
    metrics: Sequence[Metric] = (),
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    store: _Store | None = None,
) -> None:
    """Params, tags and metrics in as few requests as the store's batch limits allow."""
    param_list = [Param(_key(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in (params or {}).items()]
    tag_list = [RunTag(_key(k), str(v)) for k, v in (tags or {}).items()]
    metric_list = list(metrics)
    mlflow_client = store.client if store is not None else client()
    while param_list or tag_list or metric_list:
        p, param_list = (
            param_list[:MAX_PARAMS_TAGS_PER_BATCH],
            param_list[MAX_PARAMS_TAGS_PER_BATCH:],
        )
        t, tag_list = tag_list[:MAX_PARAMS_TAGS_PER_BATCH], tag_list[MAX_PARAMS_TAGS_PER_BATCH:]
        room = MAX_METRICS_PER_BATCH - len(p) - len(t)
        m, metric_list = metric_list[:room], metric_list[room:]
        mlflow_client.log_batch(run_id, metrics=m, params=p, tags=t)


@contextlib.contextmanager
def _open_run(
    store: _Store, experiment_id: str, name: str, tags: Mapping[str, str]
) -> Iterator[tuple[str, str]]:
    """Create a run (tags included, one request), yield its id and artifact URI, end it rightly.

    Runs are created and ended through the client, not ``mlflow.start_run``: no
    global active run, and none of the fluent API's per-run look-ups (the
    experiment, the run context) that a stage has already made once.
    """
    with _CLOCK.timing("start_run"):
        run = store.client.create_run(
            experiment_id, tags={**store.context_tags, **tags}, run_name=name
        )
    run_id = run.info.run_id
    exc: BaseException | None = None
    try:
        yield run_id, run.info.artifact_uri
    except BaseException as err:
        exc = err
        raise
    finally:
        status = _end_status(exc)
        with _CLOCK.timing("end_run"):
            try:
                store.client.set_terminated(run_id, status)
            except Exception as err:  # never hide the stage's own error behind this one
                if exc is None:
                    raise
                log.warning("could not mark MLflow run %s as %s: %s", name, status, err)


def _context_tags() -> dict[str, str]:
    """MLflow's run-context tags (``mlflow.user``, ``mlflow.source.*``), as start_run sets them."""
    from mlflow.tracking.context.git_context import GitRunContext
    from mlflow.tracking.context.registry import resolve_tags

    # The commit comes from git_state(); MLflow's git context would import GitPython for it.
    return {k: str(v) for k, v in resolve_tags({}, ignore=[GitRunContext]).items()}


@contextlib.contextmanager
def pipeline_run(
    cfg: Config,
    stage: str,
    *,
    inputs: Mapping[str, str | Path] | None = None,
    tags: Mapping[str, str] | None = None,
    command: str | None = None,
) -> Iterator[RunHandle]:
    """Open the parent run of one stage invocation in the config's experiment.

    Logs the resolved config (params and ``config.yaml``) and the tags listed
    in the module docstring; ``inputs`` maps a label (e.g. ``GSPC.parquet``)
    to an input data file whose SHA-256 is recorded; ``tags`` adds the stage's
    own (e.g. the device). The run, and every child opened inside, ends
    FINISHED, FAILED (exception) or KILLED (Ctrl-C); an exception leaving the
    block carries a note saying so and naming the experiment.

    Args:
        cfg: The resolved experiment config.
        stage: Stage name, also the run name (``train``, ``backtest``, ...).
        inputs: Input data files by label.
        tags: Extra tags for this run and its children.
        command: The command line to record; defaults to this process's.
    """
    if _STACK:
        raise RuntimeError(f"pipeline_run({stage!r}) inside the open run {_STACK[-1].name!r}")
    with contextlib.ExitStack() as cleanup:
        with _CLOCK.timing("open_store"):
            # The first client of a process imports and opens the store (SQLAlchemy,
            # MLflow's table models, the schema check): a one-time cost, timed apart.
            uri = _use_store()
            mlflow_client = MlflowClient(tracking_uri=uri)
        with _CLOCK.timing("pipeline_run"):
            experiment_id = _experiment_id(mlflow_client, cfg.experiment_name, uri)
            common = {
                "gatecast.config": cfg.name,
                "gatecast.seed": str(cfg.seed),
                "gatecast.command": command or shlex.join(sys.orig_argv),
                **git_state(),
                **{f"gatecast.version.{k}": v for k, v in library_versions().items()},
                **{k: str(v) for k, v in (tags or {}).items()},
            }
            for label, path in (inputs or {}).items():
                common[f"gatecast.input.{_key(label)}.sha256"] = sha256_file(path)
                common[f"gatecast.input.{_key(label)}.path"] = str(path)
            params = flatten_config(cfg)
            text = config_yaml(cfg)
            tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="gatecast-")))
            config_file = tmp / "config.yaml"
            config_file.write_text(text)
            store = _Store(mlflow_client, _context_tags(), config_file)
        own = {
            **common,
            "gatecast.stage": stage,
            "mlflow.note.content": f"gatecast `{stage}` stage of config `{cfg.name}`",
        }
        with _open_run(store, experiment_id, stage, own) as (run_id, artifact_uri):
            handle = RunHandle(
                run_id,
                experiment_id,
                stage,
                common,
                params,
                text,
                uri,
                cfg.experiment_name,
                artifact_uri=artifact_uri,
                pending_params=dict(params),
                store=store,
            )
            try:
                with _on_stack(handle):
                    with _CLOCK.timing("pipeline_run"):
                        _artifacts(handle).log_artifact(str(config_file))
                    yield handle
            except BaseException as err:
                err.add_note(
                    f"MLflow: the {stage} run and the runs it opened are marked "
                    f"{_end_status(err)} in experiment {cfg.experiment_name}"
                )
                raise


@contextlib.contextmanager
def child_run(name: str, tags: Mapping[str, str] | None = None) -> Iterator[RunHandle]:
    """Open a child of the current pipeline run (e.g. ``GSPC/lstm``).

    The child inherits the parent's params, tags and ``config.yaml``; ``tags``
    adds its own (``gatecast.instrument``, ``gatecast.forecaster``, ...). Its
    params go to the store with its metrics, in one batch, when it ends.
    """
    parent = active_run()
    store = parent.store
    assert store is not None
    own = {k: str(v) for k, v in (tags or {}).items()}
    every = {
        **parent.tags,
        "gatecast.stage": _root().name,
        **own,
        MLFLOW_PARENT_RUN_ID: parent.run_id,
    }
    with _open_run(store, parent.experiment_id, name, every) as (run_id, artifact_uri):
        handle = RunHandle(
            run_id,
            parent.experiment_id,
            name,
            {**parent.tags, **own},
            parent.params,
            parent.config_text,
            parent.tracking_uri,
            parent.experiment_name,
            artifact_uri=artifact_uri,
            pending_params=dict(parent.params),
            store=store,
        )
        with _on_stack(handle):
            with _CLOCK.timing("child_run"):
                _artifacts(handle).log_artifact(str(store.config_file))
            yield handle


@contextlib.contextmanager
def _on_stack(handle: RunHandle) -> Iterator[RunHandle]:
    """Make ``handle`` the current run; on the way out send what it still holds."""
    _STACK.append(handle)
    failed = False
    try:
        yield handle
    except BaseException:
        failed = True
        raise
    finally:
        try:
            with _CLOCK.timing("end_run_batch"):
                handle.flush()
        except Exception as err:
            if not failed:
                raise
            # keep the stage's own error, which is what the user needs to see
            log.warning("could not log the last metrics of MLflow run %s: %s", handle.name, err)
        finally:
            _STACK.remove(handle)


def _root() -> RunHandle:
    return _STACK[0]


# Logging ------------------------------------------------------------------------------


def _finite_float(value: Any) -> float | None:
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    return None


@_timed
def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log numeric metrics to the current run; non-numeric values are skipped.

    Metrics wait in the run's queue and go to the store in batches of up to
    1000 when the run ends, so a run costs one request for all its metrics.

    NaN is logged as NaN (e.g. a p-value that is undefined for a constant forecast).
    """
    now = int(time.time() * 1000)
    batch = [
        Metric(_key(k), v, now, int(step or 0))
        for k, raw in metrics.items()
        if (v := _finite_float(raw)) is not None
    ]
    active_run().queue(batch)


@_timed
def log_metric_history(name: str, values: Sequence[float], first_step: int = 0) -> None:
    """Log a whole history (e.g. the loss of every epoch) as one metric, in one batch."""
    now = int(time.time() * 1000)
    batch = [Metric(_key(name), float(v), now, first_step + k) for k, v in enumerate(values)]
    active_run().queue(batch)


def _artifacts(handle: RunHandle) -> Any:
    """The artifact repository of ``handle``'s run, made once per run.

    Built from the artifact URI the store returned when it created the run:
    MlflowClient.log_artifact would first fetch the whole run (its tags and
    params) from the store only to read that URI again.
    """
    if handle.artifact_repository is None:
        handle.artifact_repository = get_artifact_repository(
            handle.artifact_uri, tracking_uri=handle.tracking_uri
        )
    return handle.artifact_repository


def _run_client(handle: RunHandle) -> MlflowClient:
    return handle.store.client if handle.store is not None else client()


@_timed
def log_params(params: Mapping[str, Any]) -> None:
    """Log extra params to the current run (keys must not repeat the config's).

    They reach the store with the run's metrics, in the same batch, when the run ends.
    """
    active_run().pending_params.update({k: str(v) for k, v in params.items()})


@_timed
def set_tags(tags: Mapping[str, Any]) -> None:
    """Set tags on the current run (sent with its metrics when the run ends)."""
    active_run().pending_tags.update({k: str(v) for k, v in tags.items()})


@_timed
def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Copy a file (or a directory's files) into the current run's artifacts."""
    path = Path(path)
    repository = _artifacts(active_run())
    if path.is_dir():
        repository.log_artifacts(str(path), artifact_path)
    else:
        repository.log_artifact(str(path), artifact_path)


@_timed
def log_text(text: str, artifact_file: str) -> None:
    """Write ``text`` as the artifact ``artifact_file`` of the current run."""
    run = active_run()
    _run_client(run).log_text(run.run_id, text, artifact_file)


@_timed
def log_dict(data: Mapping[str, Any], artifact_file: str) -> None:
    """Write ``data`` as a JSON (or YAML, by extension) artifact of the current run."""
    run = active_run()
    _run_client(run).log_dict(run.run_id, dict(data), artifact_file)


@_timed
def log_dataframe(frame: pd.DataFrame, name: str, artifact_path: str | None = None) -> None:
    """Write ``frame`` (with its index) as the Parquet artifact ``<name>.parquet``."""
    filename = name if name.endswith(".parquet") else f"{name}.parquet"
    run = active_run()
    with tempfile.TemporaryDirectory(prefix="gatecast-") as tmp:
        path = Path(tmp) / filename
        frame.to_parquet(path)
        _artifacts(run).log_artifact(str(path), artifact_path)


def log_figure(
    fig: Any, name: str, artifact_path: str | None = "plots", dpi: int = FIGURE_DPI
) -> None:
    """Save a matplotlib figure as the PNG artifact ``<artifact_path>/<name>.png``.

    Rendering is matplotlib's work, not MLflow's: it is timed apart as ``render_figure``.
    """
    filename = name if name.endswith(".png") else f"{name}.png"
    run = active_run()
    with tempfile.TemporaryDirectory(prefix="gatecast-") as tmp:
        path = Path(tmp) / filename
        with _CLOCK.timing("render_figure"):
            fig.savefig(path, format="png", dpi=dpi)
        with _CLOCK.timing("log_figure"):
            _artifacts(run).log_artifact(str(path), artifact_path)


# The LSTM in MLflow's model format ------------------------------------------------------


def ensemble_forecast(
    forecasters: Sequence[Any], bars: pd.DataFrame, start: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Forecasts of each LSTM seed (``lstm_seed<k>``) and their mean (``lstm``).

    The train stage builds its ``lstm`` column with this same function, so the
    logged model reproduces it.
    """
    columns = {f"lstm_seed{k}": f.predict(bars, start) for k, f in enumerate(forecasters)}
    frame = pd.DataFrame(columns)
    frame.insert(0, "lstm", frame.mean(axis=1))
    return frame


def _bars_from_input(model_input: pd.DataFrame) -> pd.DataFrame:
    """Bars with a DatetimeIndex from a pyfunc input (a ``date`` column or a date index)."""
    frame = pd.DataFrame(model_input)
    if "date" in frame.columns:
        frame = frame.set_index(pd.DatetimeIndex(pd.to_datetime(frame.pop("date")), name="date"))
    elif not isinstance(frame.index, pd.DatetimeIndex):
        raise ValueError(
            "gatecast LSTM model: the input needs a 'date' column (or a DatetimeIndex) and the "
            "columns open, high, low, close, volume"
        )
    return frame.astype(np.float64)


# The pyfunc model's one artifact: the seeds' forecasters, saved as seed0, seed1, ...
SEEDS_ARTIFACT = "seeds"


class LstmPyfuncModel(mlflow.pyfunc.PythonModel):
    """The final walk-forward fold's LSTM seeds as an MLflow pyfunc model.

    ``predict(bars, params={"start": "YYYY-MM-DD"})`` takes bars with a ``date``
    column and ``open, high, low, close, volume``, and returns one row per
    forecast date ``t >= start`` (every date with enough history when
    ``start`` is empty): ``date``, ``lstm`` (mean of the seeds: the forecast
    of the next close) and ``lstm_seed<k>``.
    """

    def load_context(self, context: Any) -> None:
        from models.lstm import LstmForecaster

        # One artifact, a folder with seed0, seed1, ... in it (one copy for MLflow to
        # make, not one per seed).
        seeds = Path(context.artifacts[SEEDS_ARTIFACT])
        folders = sorted(seeds.glob("seed*"), key=lambda p: int(p.name.removeprefix("seed")))
        self.forecasters = [LstmForecaster.load(folder) for folder in folders]

    # MLflow infers no schema from a DataFrame hint; the signature logged with the model holds it.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        start = (params or {}).get("start") or None
        bars = _bars_from_input(model_input)
        frame = ensemble_forecast(self.forecasters, bars, pd.Timestamp(start) if start else None)
        return frame.rename_axis("date").reset_index()


def _output_example(example: pd.DataFrame, seeds: int) -> pd.DataFrame:
    """One row shaped as ``LstmPyfuncModel.predict`` returns it, for the model's signature.

    The signature needs the output's columns and types, not forecasts, so the
    model is not run for it (the tests check this schema against real output).
    """
    row = {"date": example["date"].iloc[-1:].to_numpy(), "lstm": [0.0]}
    row.update({f"lstm_seed{k}": [0.0] for k in range(seeds)})
    return pd.DataFrame(row)


@dataclass(frozen=True)
class RegisteredModel:
    """Where ``log_lstm_model`` put the model.

    Args:
        name: Registered model name.
        version: The new version.
        alias: The alias moved to it.
        model_uri: ``models:/<name>@<alias>``.
    """

    name: str
    version: str
    alias: str
    model_uri: str


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def registered_model_name(cfg: Config, instrument: str) -> str:
    """``<tracking.registered_model>-<INST>``, e.g. ``gatecast-lstm-GSPC``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{cfg.tracking.registered_model}-{instrument}")


@functools.cache
def _pip_requirements() -> tuple[str, ...]:
    # Pinned from this environment; spelling them out skips MLflow's slow
    # requirement inference (a subprocess that imports TensorFlow). Read once
    # per process: importlib.metadata parses each package's metadata again on
    # every call (15 ms for the set).
    names = ("mlflow", "tensorflow", "keras", "numpy", "pandas", "pyarrow", "pydantic", "pyyaml")
    out = []
    for name in names:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(name)
    return tuple(out)


# MLflow's function that compares a model's requirements with the installed
# packages, looked up by save_model in this module (see _no_requirement_check).
_REQUIREMENT_CHECK = ("mlflow.utils.environment", "warn_dependency_requirement_mismatches")


@contextlib.contextmanager
def _no_requirement_check() -> Iterator[None]:
    """Skip MLflow's check of the model's requirements against this environment.

    ``_pip_requirements`` reads the pins from this very environment, so the
    check cannot find a mismatch, and its first call in a process costs
    0.3-0.7 s (``importlib.metadata`` reads every installed distribution).
    When MLflow no longer has the function there, the check simply runs
    (``test_tracking`` fails then, so the skip is not lost unnoticed).
    """
    module_name, function_name = _REQUIREMENT_CHECK
    module = importlib.import_module(module_name)
    if not hasattr(module, function_name):
        yield
        return
    with mock.patch.object(module, function_name, lambda *args, **kwargs: None):
        yield


@_timed
def log_lstm_model(
    cfg: Config,
    instrument: str,
    forecasters: Sequence[Any],
    example_bars: pd.DataFrame,
) -> RegisteredModel:
    """Log the final fold's LSTM seeds as a pyfunc model and register it.

    The model is written with ``mlflow.pyfunc.save_model`` (signature, input
    example, pinned requirements, the package code) and its directory becomes
    the artifacts of a logged model of the run, the steps of
    ``mlflow.pyfunc.log_model`` without its serving-input check, which loads
    the model back and predicts on the example only to confirm that it loads
    (the tests load it in a fresh process and compare its forecasts).

    Args:
        cfg: The resolved config (names the registered model).
        instrument: The instrument the model was trained on.
        forecasters: Fitted ``LstmForecaster`` of each seed, in seed order.
        example_bars: A short slice of bars (enough history for a few
            forecasts), the model's input example and the base of its signature.
    """
    name = registered_model_name(cfg, instrument)
    run = active_run()
    mlflow_client = _run_client(run)
    example = example_bars.rename_axis("date").reset_index()
    signature = infer_signature(
        example, _output_example(example, len(forecasters)), params={"start": ""}
    )
    tags = {"gatecast.instrument": instrument, "gatecast.config": cfg.name}
    logged = mlflow_client.create_logged_model(
        run.experiment_id, name="model", source_run_id=run.run_id, tags=tags, params=run.params
    )
    try:
        with tempfile.TemporaryDirectory(prefix="gatecast-model-") as tmp:
            seeds = Path(tmp) / SEEDS_ARTIFACT
            for k, forecaster in enumerate(forecasters):
                forecaster.save(seeds / f"seed{k}")
            local = Path(tmp) / "model"
            # The pickled object is a bare instance of a class imported from this
            # package (shipped in code_paths); MLflow's generic warning about
            # pickled models says nothing useful here.
            with _quiet("mlflow.pyfunc"), _no_requirement_check():
                mlflow.pyfunc.save_model(
                    str(local),
                    python_model=LstmPyfuncModel(),
                    artifacts={SEEDS_ARTIFACT: str(seeds)},
                    code_paths=[str(REPO_ROOT / "models"), str(REPO_ROOT / "pipelines")],
                    input_example=(example, {"start": ""}),
                    signature=signature,
                    pip_requirements=list(_pip_requirements()),
                    mlflow_model=Model(
                        artifact_path=logged.artifact_location,
                        run_id=run.run_id,
                        model_uuid=logged.model_id,
                        model_id=logged.model_id,
                    ),
                )
            mlflow_client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        with contextlib.suppress(Exception):
            mlflow_client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    mlflow_client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    mlflow_client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=0)])

    # Registered through the client, not log_model(registered_model_name=...),
    # whose progress lines go straight to stderr. The registered model exists
    # after the first train run: add the version straight away, and create the
    # model only when the store says it is missing (asking first, or creating
    # it and catching "already exists", loads every earlier version of it).
    def new_version() -> Any:
        return mlflow_client.create_model_version(
            name,
            source=f"models:/{logged.model_id}",
            run_id=run.run_id,
            model_id=logged.model_id,
            tags={**tags, "gatecast.seeds": str(len(forecasters))},
        )

    try:
        created = new_version()
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise
        try:
            mlflow_client.create_registered_model(
                name,
                tags=tags,
                description=f"gatecast LSTM forecaster of {instrument} (config {cfg.name})",
            )
        except MlflowException as again:  # another process registered it meanwhile
            if again.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        created = new_version()
    version = str(created.version)
    mlflow_client.set_registered_model_alias(name, LATEST_ALIAS, version)
    set_tags({"gatecast.registered_model": name, "gatecast.registered_version": version})
    return RegisteredModel(name, version, LATEST_ALIAS, f"models:/{name}@{LATEST_ALIAS}")


# Queries (tests, the report stage) ---------------------------------------------------------


def find_runs(
    experiment_name: str, filter_string: str = "", *, include_children: bool = True
) -> list[Any]:
    """Runs of an experiment (newest first), e.g. ``filter_string="tags.gatecast.stage = 'train'"``.

    Returns ``mlflow.entities.Run`` objects; an unknown experiment gives ``[]``.
    """
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    runs = mlflow_client.search_runs(
        [experiment.experiment_id],
        filter_string=filter_string,
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    if include_children:
        return list(runs)
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def child_runs(parent_run_id: str) -> list[Any]:
    """The child runs of a parent run, by run name."""
    parent = client().get_run(parent_run_id)
    runs = client().search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=5000,
    )
    return sorted(runs, key=lambda r: r.info.run_name)


def download_artifact(run_id: str, artifact_path: str, destination: str | Path) -> Path:
    """Download one artifact of a run into ``destination``; returns its local path."""
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=artifact_path,
            dst_path=str(destination),
            tracking_uri=tracking_uri(),
        )
    )


def load_model(model_uri: str) -> Any:
    """``mlflow.pyfunc.load_model`` on the current store.

    E.g. ``load_model("models:/gatecast-lstm-GSPC@newest")``.
    """
    _use_store()
    return mlflow.pyfunc.load_model(model_uri)


# `python -m pipelines.tracking ui` -------------------------------------------------------


def server_command(
    host: str = "127.0.0.1",
    port: int = 5000,
    backend_uri: str | None = None,
    artifacts: str | Path | None = None,
) -> list[str]:
    """The ``mlflow server`` command line serving a SQLite store and its artifacts."""
    backend_uri = backend_uri or tracking_uri()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    root = Path(artifacts) if artifacts else artifact_root(backend_uri)
    if root is not None:
        # runs created through the server keep their artifacts next to the others
        command += ["--artifacts-destination", root.as_uri()]
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.tracking",
        description="gatecast's MLflow store: serve it, or print where it is.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ui = sub.add_parser("ui", help="serve the tracking store with the MLflow UI")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    ui.add_argument("--port", type=int, default=5000, help="port (default: %(default)s)")
    sub.add_parser("uri", help="print the tracking URI and artifact root")
    args = parser.parse_args(argv)
    uri = tracking_uri()
    if args.command == "uri":
        print(uri)
        root = artifact_root(uri)
        print(root if root is not None else "(artifact root chosen by the tracking server)")
        return 0
    if urlparse(uri).scheme in {"http", "https", "databricks"}:
        print(f"MLFLOW_TRACKING_URI is {uri}: open that server's UI instead", file=sys.stderr)
        return 2
    path = _sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    print(f"MLflow UI for {uri} on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call(server_command(args.host, args.port, uri))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
