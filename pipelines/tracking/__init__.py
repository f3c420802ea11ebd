"""MLflow tracking for every stage, over MLflow's own client (``mlflow.MlflowClient``).

With ``pipelines.tracking.store`` (opening a store) and ``pipelines.tracking.pyfunc_model``
(the registered model), the only modules that import mlflow. Every call is made
in the stage's process, when it is made.

Store
    Where it is: ``pipelines.tracking.uri`` (``MLFLOW_TRACKING_URI``, else
    ``sqlite:///<repo>/mlruns/mlflow.db``; ``make ui`` serves it). How it is
    opened: ``pipelines.tracking.store``.
    The store is opened at a process's first ``pipeline_run``, after the
    config was validated, so a bad config creates nothing. A SQLite store is
    created under a file lock (MLflow creates its tables without one, and two
    first runs at once break the store) and set to write-ahead logging (kept
    in the file: cheaper writes, and ``make ui`` reads while a stage writes;
    it needs a local disk). A server is first asked once, with a 10 s
    timeout and no retry, so one that is not there stops the stage in
    seconds with a one-line ``TrackingError``; later requests retry as
    MLflow's ``MLFLOW_HTTP_REQUEST_*`` settings say. A password in the URI
    is never printed, logged or recorded (``display_uri``).

Runs
    One experiment per config (``cfg.experiment_name``, tagged as MLflow 3's
    model-training kind; ``experiment_url`` links to its runs); one parent run
    per tracked stage invocation, named after the stage (``train``,
    ``backtest``, ``report``); one child per instrument x forecaster or
    strategy, named ``<stage>/<INST>/<name>`` (``train/GSPC/lstm``,
    ``backtest/GSPC/lstm``). Stage, instrument and forecaster or strategy are
    params (``stage``, ``instrument``, ``forecaster``, ``strategy``) as well as
    tags (``gatecast.<the same>``), so the UI's compare view, "show diff only",
    shows them. Every run carries the resolved config as params and ``config.yaml``, and the
    tags ``gatecast.git.commit``, ``gatecast.git.dirty``, ``gatecast.command``,
    ``gatecast.version.<library>``, ``gatecast.seed``, ``gatecast.host``,
    ``gatecast.pid`` and ``gatecast.input.<file>.sha256``. Metrics: plain names
    for the whole out-of-sample period, ``fold/<m>`` (step = fold),
    ``seed/<m>`` (step = seed), ``loss/fold<i>/seed<k>`` (step = epoch).
    A run's params, tags and metrics wait until it ends and go in one
    ``log_batch`` (the client splits it at the store's limits); MLflow's
    asynchronous logging gained nothing on SQLite (a single writer), so it is
    not used. Artifacts are written at once.

    Leaving a run's ``with`` block ends it FINISHED; an exception FAILED,
    Ctrl-C or SIGTERM KILLED, and the exception gets a note (PEP 678) saying
    so, which the stage's one-line error shows. MLflow has no heartbeat: runs
    left RUNNING by a process of this host that is gone (``kill -9``) are
    marked KILLED, with one log line, when a process next opens the store.

Registered model
    ``log_model`` registers the final fold's forecaster (each seed) of every
    forecaster that declares ``export`` (``registered_model_name``). Each
    version carries its lineage as tags (``gatecast.lineage.*``: run, commit,
    config hash, data hashes, final fold; ``gatecast.metric.*``: the run's
    out-of-sample metrics) and says the same in its description. ``move_newest`` then moves the
    alias ``newest`` (MLflow reserves ``latest``) to the new versions, which
    the train stage does only once every output file but its summary is
    written, so a stage that failed never moves it. ``pipelines.tracking.pyfunc_model``
    says how to load a version.

Overhead
    ``mlflow_seconds`` adds up the wall time spent in this module's calls
    (less drawing figures), for the benchmark's "MLflow share".
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from pipelines.config import Config
from pipelines.tracking.overhead import timed, timing
from pipelines.tracking.provenance import (
    MAX_PARAM_LENGTH,
    config_yaml,
    flatten_config,
    run_tags,
    safe_key,
)
from pipelines.tracking.store import (
    TrackingError,
    experiment_id_of,
    open_store,
    store_errors,
)
from pipelines.tracking.uri import display_uri, tracking_uri

log = logging.getLogger("gatecast.tracking")
# Read by MLflow at each call: no progress bars, and no "View run at <URI>" lines, which
# would print a password in the URI (and cost a request per ended run).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# MLflow's own INFO lines (store migrations) would drown the stage's output.
for _name in ("mlflow", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# MLflow reserves the alias "latest"; "newest" always names the most recently trained version.
LATEST_ALIAS = "newest"
# Tags that are also params, named without the prefix, so the compare view can diff them.
DIFF_TAGS = ("gatecast.stage", "gatecast.instrument", "gatecast.forecaster", "gatecast.strategy")
FIGURE_DPI = 100  # PNGs logged with runs: enough to read a chart in the MLflow UI
T = TypeVar("T")


# Runs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stage:
    """What a stage's run and its children share: store, experiment, config."""

    store: mlflow.MlflowClient
    uri: str
    experiment_id: str
    experiment_name: str
    params: dict[str, str]
    config_text: str


@dataclass(eq=False)
class RunHandle:
    """One open run of a stage; what it logs waits here until the run ends.

    Args:
        name: Its run name (``train``, ``GSPC/lstm``, ...).
        run_id: The MLflow run id.
        experiment_id: The MLflow experiment id.
        tracking_uri: The store's URI, password masked (safe to print).
        stage: The store, experiment and config its stage's runs share.
        tags: Tags its child runs inherit.
    """

    name: str
    run_id: str
    experiment_id: str
    tracking_uri: str
    stage: _Stage = field(repr=False)
    tags: dict[str, str] = field(repr=False)
    pending_metrics: list[Metric] = field(default_factory=list, repr=False)
    pending_params: dict[str, str] = field(default_factory=dict, repr=False)
    pending_tags: dict[str, str] = field(default_factory=dict, repr=False)
    # the run's artifact repository, resolved once: the client looks the run up again
    # for every file it logs
    repository: Any = field(default=None, repr=False)

    def flush(self) -> None:
        """Send the waiting params, tags and metrics (``log_batch`` splits them at the limits)."""
        metrics, self.pending_metrics = self.pending_metrics, []
        params, self.pending_params = self.pending_params, {}
        tags, self.pending_tags = self.pending_tags, {}
        if metrics or params or tags:
            with store_errors(self.stage.uri, f"log to run {self.name}"):
                self.stage.store.log_batch(
                    self.run_id,
                    metrics=metrics,
                    params=[Param(safe_key(k), v[:MAX_PARAM_LENGTH]) for k, v in params.items()],
                    tags=[RunTag(safe_key(k), v) for k, v in tags.items()],
                )


_STACK: list[RunHandle] = []


def active_run() -> RunHandle:
    """The innermost run opened by ``pipeline_run`` or ``child_run``."""
    if not _STACK:
        raise RuntimeError("no gatecast run is open: use `with tracking.pipeline_run(cfg, stage)`")
    return _STACK[-1]


def _start(stage: _Stage, name: str, tags: Mapping[str, str], own: Mapping[str, str]) -> RunHandle:
    """Create run ``name`` with ``tags`` and ``own`` (which its children do not inherit)."""
    with store_errors(stage.uri, f"create run {name} in experiment {stage.experiment_name}"):
        created = stage.store.create_run(stage.experiment_id, run_name=name, tags={**tags, **own})
        repository = get_artifact_repository(created.info.artifact_uri, tracking_uri=stage.uri)
        with tempfile.TemporaryDirectory(prefix="gatecast-config-") as tmp:
            (Path(tmp) / "config.yaml").write_text(stage.config_text)
            repository.log_artifact(f"{tmp}/config.yaml")
    uri = display_uri(stage.uri)
    handle = RunHandle(
        name,
        created.info.run_id,
        stage.experiment_id,
        uri,
        stage,
        dict(tags),
        repository=repository,
    )
    handle.pending_params.update(stage.params)
    merged = {**tags, **own}
    handle.pending_params.update({k.split(".", 1)[1]: merged[k] for k in DIFF_TAGS if k in merged})
    return handle


def _end_status(exc: BaseException | None) -> str:
    if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
        return "FINISHED"
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


def _end(handle: RunHandle, exc: BaseException | None) -> None:
    """Send what the run holds and end it; a failure to do so fails it (or is logged)."""
    status, failure = _end_status(exc), None
    try:
        handle.flush()
    except TrackingError as err:
        status, failure = ("FAILED" if status == "FINISHED" else status), err
    try:
        with store_errors(handle.stage.uri, f"end run {handle.name}"):
            handle.stage.store.set_terminated(handle.run_id, status)
    except TrackingError as err:
        failure = failure or err
    if failure is not None:
        if exc is None:
            raise failure
        log.warning("could not record MLflow run %s as %s: %s", handle.name, status, failure)


@contextlib.contextmanager
def _running(handle: RunHandle) -> Iterator[RunHandle]:
    """Make ``handle`` the current run; on the way out, end it (status from the exception)."""
    _STACK.append(handle)
    exc: BaseException | None = None
    try:
        yield handle
    except BaseException as err:
        exc = err
        raise
    finally:
        _STACK.remove(handle)
        with timing("end_run"):
            _end(handle, exc)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let a SIGTERM (e.g. a stopped make job) end the runs KILLED, like Ctrl-C."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    FINISHED, FAILED (exception) or KILLED (Ctrl-C, SIGTERM); an exception
    leaving the block carries a note saying so and naming the experiment.

    Args:
        cfg: The resolved experiment config.
        stage: Stage name, also the run name (``train``, ``report``, ...).
        inputs: Input data files by label.
        tags: Extra tags for this run and its children.
        command: The command line to record; defaults to this process's.
    """
    if _STACK:
        raise RuntimeError(f"pipeline_run({stage!r}) inside the open run {_STACK[-1].name!r}")
    with timing("pipeline_run"):
        common = run_tags(cfg, stage, inputs, tags, command)
        uri = tracking_uri()
        store = open_store(uri)
        with store_errors(uri, f"open experiment {cfg.experiment_name}"):
            experiment_id = experiment_id_of(store, cfg.experiment_name, uri)
        shared = _Stage(
            store, uri, experiment_id, cfg.experiment_name, flatten_config(cfg), config_yaml(cfg)
        )
        note = {"mlflow.note.content": f"gatecast `{stage}` stage of config `{cfg.name}`"}
        handle = _start(shared, stage, common, note)
    try:
        with _sigterm_as_interrupt(), _running(handle):
            yield handle
    except BaseException as err:
        err.add_note(
            f"MLflow: the {stage} run and the runs it opened are marked "
            f"{_end_status(err)} in experiment {cfg.experiment_name}"
        )
        raise


@contextlib.contextmanager
def child_run(name: str, tags: Mapping[str, str] | None = None) -> Iterator[RunHandle]:
    """Open a child of the current run: ``child_run("GSPC/lstm")`` in the train stage is
    the run ``train/GSPC/lstm`` (the stage's name comes first).

    The child inherits the parent's params, tags and ``config.yaml``; ``tags``
    adds its own (``gatecast.instrument``, ``gatecast.forecaster``, ...), and
    those of ``DIFF_TAGS`` are params too (``instrument``, ``forecaster``, ...).
    """
    parent = active_run()
    with timing("child_run"):
        own = {k: str(v) for k, v in (tags or {}).items()}
        full_name = f"{parent.tags['gatecast.stage']}/{name}"
        handle = _start(
            parent.stage, full_name, {**parent.tags, **own}, {"mlflow.parentRunId": parent.run_id}
        )
    with _running(handle):
        yield handle


class _Failed(Exception):
    """Ends a child run FAILED inside ``failed_child_run``; never leaves it."""


def failed_child_run(name: str, tags: Mapping[str, str], reason: str) -> None:
    """Open a child run ``name`` and end it FAILED at once, ``reason`` as its
    ``gatecast.failed_unit`` tag: the record of a unit that failed."""
    with contextlib.suppress(_Failed), child_run(name, {**tags, "gatecast.failed_unit": reason}):
        raise _Failed(reason)


# Logging ------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    try:
        return None if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None


@timed
def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log numeric metrics to the current run (sent when it ends); others are skipped.

    NaN is logged as NaN (e.g. a p-value that is undefined for a constant forecast).
    """
    now = int(time.time() * 1000)
    active_run().pending_metrics.extend(
        Metric(safe_key(k), v, now, int(step or 0))
        for k, raw in metrics.items()
        if (v := _number(raw)) is not None
    )


@timed
def log_metric_history(name: str, values: Sequence[float], first_step: int = 0) -> None:
    """Log a whole history (e.g. the loss of every epoch) as one metric, one value per step."""
    now = int(time.time() * 1000)
    active_run().pending_metrics.extend(
        Metric(safe_key(name), float(v), now, first_step + k) for k, v in enumerate(values)
    )


@timed
def log_params(params: Mapping[str, Any]) -> None:
    """Log extra params to the current run (keys must not repeat the config's)."""
    active_run().pending_params.update({k: str(v) for k, v in params.items()})


@timed
def set_tags(tags: Mapping[str, Any]) -> None:
    """Set tags on the current run (sent with its metrics when it ends)."""
    active_run().pending_tags.update({k: str(v) for k, v in tags.items()})


def _artifact(what: str, write: Callable[[RunHandle], None]) -> None:
    run = active_run()
    with store_errors(run.stage.uri, f"write the artifact {what} of run {run.name}"):
        write(run)


@timed
def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Copy a file (or a directory's files) into the current run's artifacts."""
    path = Path(path)
    if path.is_dir():
        _artifact(path.name, lambda r: r.repository.log_artifacts(str(path), artifact_path))
    else:
        _artifact(path.name, lambda r: r.repository.log_artifact(str(path), artifact_path))


@timed
def log_text(text: str, artifact_file: str) -> None:
    """Write ``text`` as the artifact ``artifact_file`` of the current run."""
    _artifact(artifact_file, lambda r: r.stage.store.log_text(r.run_id, text, artifact_file))


@timed
def log_dict(data: Mapping[str, Any], artifact_file: str) -> None:
    """Write ``data`` as a JSON (or YAML, by extension) artifact of the current run."""
    _artifact(artifact_file, lambda r: r.stage.store.log_dict(r.run_id, dict(data), artifact_file))


def _log_file(name: str, artifact_path: str | None, write: Callable[[Path], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="gatecast-artifact-") as tmp:
        path = Path(tmp) / name
        write(path)
        _artifact(name, lambda r: r.repository.log_artifact(str(path), artifact_path))


@timed
def log_dataframe(frame: pd.DataFrame, name: str, artifact_path: str | None = None) -> None:
    """Write ``frame`` (with its index) as the Parquet artifact ``<name>.parquet``."""
    filename = name if name.endswith(".parquet") else f"{name}.parquet"
    _log_file(filename, artifact_path, frame.to_parquet)


def log_figure(
    fig: Any, name: str, artifact_path: str | None = "plots", dpi: int = FIGURE_DPI
) -> None:
    """Save a matplotlib figure as the PNG artifact ``<artifact_path>/<name>.png``.

    Drawing it is matplotlib's work: ``mlflow_seconds`` counts only the logging.
    """
    filename = name if name.endswith(".png") else f"{name}.png"
    with tempfile.TemporaryDirectory(prefix="gatecast-figure-") as tmp:
        path = Path(tmp) / filename
        fig.savefig(path, format="png", dpi=dpi)
        with timing("log_figure"):
            _artifact(filename, lambda r: r.repository.log_artifact(str(path), artifact_path))
