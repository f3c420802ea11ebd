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
import sys
import tempfile
import threading
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
    own_inputs,
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


class _OneLine(logging.Filter):
    """MLflow logs each database error with its traceback before raising it; the stage says
    it in one line (``TrackingError``), and ``-v`` shows the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return logging.getLogger("gatecast").isEnabledFor(logging.DEBUG)


logging.getLogger("mlflow.store.db.utils").addFilter(_OneLine())

# MLflow reserves the alias "latest"; "newest" always names the most recently trained version.
LATEST_ALIAS = "newest"
# Tags that are also params, named without the prefix, so the compare view can diff them.
DIFF_TAGS = ("gatecast.stage", "gatecast.instrument", "gatecast.forecaster", "gatecast.strategy")
FIGURE_DPI = 100  # PNGs logged with runs: enough to read a chart in the MLflow UI
T = TypeVar("T")


# Runs ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Stage:
    """What a stage's run and its children share: store, experiment, config, and whether
    the store was lost (a server that stopped answering: later calls fail at once)."""

    store: mlflow.MlflowClient
    uri: str
    experiment_id: str
    experiment_name: str
    params: dict[str, str]
    config_text: str
    lost: TrackingError | None = None

    @contextlib.contextmanager
    def call(self, what: str) -> Iterator[None]:
        """One MLflow call as one line of ``TrackingError``; after the store was found
        unreachable, none is made (each would wait out its own time-out)."""
        if self.lost is not None:
            raise TrackingError(f"{self.lost} (so did not {what})")
        try:
            with store_errors(self.uri, what):
                yield
        except TrackingError as err:
            if err.lost:
                self.lost = err
            raise


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
            with self.stage.call(f"log to run {self.name}"):
                self.stage.store.log_batch(
                    self.run_id,
                    metrics=metrics,
                    params=[Param(safe_key(k), v[:MAX_PARAM_LENGTH]) for k, v in params.items()],
                    tags=[RunTag(safe_key(k), v) for k, v in tags.items()],
                )


# Which runs are open. The stage's parent run is the current run of every thread (the
# driver may record in a background thread: pipelines.execution.recorder); a child run is
# current in the thread that opened it. _OPEN holds every run created and not yet ended,
# from the moment the store made it, so the end of a stage ends them all, whatever
# interrupted it and wherever.
_PARENT: list[RunHandle] = []
_LOCAL = threading.local()
_OPEN: dict[str, RunHandle] = {}
_OPEN_LOCK = threading.Lock()


def _stack() -> list[RunHandle]:
    """The child runs this thread opened, innermost last."""
    if not hasattr(_LOCAL, "runs"):
        _LOCAL.runs = []
    return _LOCAL.runs


def active_run() -> RunHandle:
    """The innermost run opened by ``pipeline_run`` or ``child_run`` (in this thread)."""
    runs = _stack() or _PARENT
    if not runs:
        raise RuntimeError("no gatecast run is open: use `with tracking.pipeline_run(cfg, stage)`")
    return runs[-1]


class StageClosed(RuntimeError):
    """A run was asked for after its stage ended (a recording thread that outlived it)."""


# Interruptions ------------------------------------------------------------------------------
# SIGTERM (a stopped make job) and SIGINT (Ctrl-C) become KeyboardInterrupt in the main
# thread, so the stage's runs end KILLED. Creating a run and ending one are held whole: a
# signal that arrives meanwhile is raised once the run is registered in _OPEN (or ended),
# so no run is left RUNNING because the signal came while the store was making it.
_HELD = [0]
_PENDING: list[int] = []


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Hold this block's interruptions (main thread) and raise them after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _HELD[0] += 1
    try:
        yield
    finally:
        _HELD[0] -= 1
        if not _HELD[0] and _PENDING:
            signum = _PENDING[0]
            _PENDING.clear()
            if sys.exc_info()[0] is None or not issubclass(sys.exc_info()[0], KeyboardInterrupt):
                raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGINT raise KeyboardInterrupt, or wait for ``_uninterrupted`` to end."""

    def interrupt(signum: int, frame: Any) -> None:
        if _HELD[0]:
            _PENDING.append(signum)
            return
        raise KeyboardInterrupt(f"signal {signum}")

    signals = (signal.SIGTERM, signal.SIGINT)
    try:
        previous = [signal.signal(s, interrupt) for s in signals]
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        for s, handler in zip(signals, previous, strict=True):
            signal.signal(s, handler)
        _PENDING.clear()


def _start(stage: _Stage, name: str, tags: Mapping[str, str], own: Mapping[str, str]) -> RunHandle:
    """Create run ``name`` with ``tags`` and ``own`` (which its children do not inherit)."""
    with _uninterrupted():
        with stage.call(f"create run {name} in experiment {stage.experiment_name}"):
            created = stage.store.create_run(
                stage.experiment_id, run_name=name, tags={**tags, **own}
            )
        handle = RunHandle(
            name,
            created.info.run_id,
            stage.experiment_id,
            display_uri(stage.uri),
            stage,
            dict(tags),
        )
        with _OPEN_LOCK:
            closed = not _PARENT and "mlflow.parentRunId" in own
            _OPEN[handle.run_id] = handle
    if closed:
        _end(handle, KeyboardInterrupt())
        raise StageClosed(f"run {name} was opened after its stage ended; it is marked KILLED")
    with stage.call(f"write the config of run {name}"):
        handle.repository = get_artifact_repository(
            created.info.artifact_uri, tracking_uri=stage.uri
        )
        with tempfile.TemporaryDirectory(prefix="gatecast-config-") as tmp:
            (Path(tmp) / "config.yaml").write_text(stage.config_text)
            handle.repository.log_artifact(f"{tmp}/config.yaml")
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
    with _uninterrupted():
        try:
            handle.flush()
        except TrackingError as err:
            status, failure = ("FAILED" if status == "FINISHED" else status), err
        try:
            with handle.stage.call(f"end run {handle.name}"):
                handle.stage.store.set_terminated(handle.run_id, status)
        except TrackingError as err:
            failure = failure or err
        finally:
            with _OPEN_LOCK:
                _OPEN.pop(handle.run_id, None)
    if failure is not None:
        if exc is None:
            raise failure
        if not handle.stage.lost:  # a lost store was said once, by the error that found it
            log.warning("could not record MLflow run %s as %s: %s", handle.name, status, failure)


@contextlib.contextmanager
def _running(handle: RunHandle) -> Iterator[RunHandle]:
    """Make ``handle`` the current child run of this thread; on the way out, end it
    (status from the exception)."""
    _stack().append(handle)
    exc: BaseException | None = None
    try:
        yield handle
    except BaseException as err:
        exc = err
        raise
    finally:
        _stack().remove(handle)
        with timing("end_run"):
            _end(handle, exc)


def _end_stage(parent: RunHandle, exc: BaseException | None) -> None:
    """End every run of the stage still open (children first, newest first), then the
    parent, all with the status ``exc`` gives; no run can be opened after this."""
    with _uninterrupted(), timing("end_run"):
        with _OPEN_LOCK:
            _PARENT.clear()
            children = [h for h in _OPEN.values() if h is not parent]
        for handle in reversed(children):
            _end(handle, exc if exc is not None else RuntimeError("left open"))
        _end(parent, exc)


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
    if _PARENT:
        raise RuntimeError(f"pipeline_run({stage!r}) inside the open run {_PARENT[-1].name!r}")
    handle: RunHandle | None = None
    with _signals_as_interrupts():
        try:
            with timing("pipeline_run"):
                common = run_tags(cfg, stage, inputs, tags, command)
                uri = tracking_uri()
                store = open_store(uri)
                with store_errors(uri, f"open experiment {cfg.experiment_name}"):
                    experiment_id = experiment_id_of(store, cfg.experiment_name, uri)
                shared = _Stage(
                    store,
                    uri,
                    experiment_id,
                    cfg.experiment_name,
                    flatten_config(cfg),
                    config_yaml(cfg),
                )
                note = {"mlflow.note.content": f"gatecast `{stage}` stage of config `{cfg.name}`"}
                with _uninterrupted():
                    handle = _start(shared, stage, common, note)
                    _PARENT.append(handle)
            yield handle
        except BaseException as err:
            if handle is not None:
                _end_stage(handle, err)
                if handle.stage.lost:
                    err.add_note(
                        f"MLflow: the {stage} run and the runs it opened stay RUNNING in the "
                        "store until the next run of this host marks them KILLED"
                    )
                else:
                    err.add_note(
                        f"MLflow: the {stage} run and the runs it opened are marked "
                        f"{_end_status(err)} in experiment {cfg.experiment_name}"
                    )
            raise
        _end_stage(handle, None)


@contextlib.contextmanager
def child_run(name: str, tags: Mapping[str, str] | None = None) -> Iterator[RunHandle]:
    """Open a child of the current run: ``child_run("GSPC/lstm")`` in the train stage is
    the run ``train/GSPC/lstm`` (the stage's name comes first).

    The child inherits the parent's params, tags (of the input files, only its
    instrument's where ``tags`` name one) and ``config.yaml``; ``tags``
    adds its own (``gatecast.instrument``, ``gatecast.forecaster``, ...), and
    those of ``DIFF_TAGS`` are params too (``instrument``, ``forecaster``, ...).
    """
    parent = active_run()
    with timing("child_run"):
        own = {k: str(v) for k, v in (tags or {}).items()}
        full_name = f"{parent.tags['gatecast.stage']}/{name}"
        # a child of one instrument keeps only its own input files' hashes
        inherited = own_inputs(parent.tags, own.get("gatecast.instrument"))
        handle = _start(
            parent.stage, full_name, {**inherited, **own}, {"mlflow.parentRunId": parent.run_id}
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
    with run.stage.call(f"write the artifact {what} of run {run.name}"):
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
