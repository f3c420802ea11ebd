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
import functools
import logging
import os
import re
import signal
import sys
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
from pipelines.tracking import pyfunc_model
from pipelines.tracking import uri as store_uri
from pipelines.tracking.provenance import (  # noqa: F401  (config_yaml, ...: part of this module's API)
    MAX_PARAM_LENGTH,
    config_yaml,
    flatten_config,
    git_state,
    library_versions,
    model_description,
    model_lineage,
    run_tags,
    safe_key,
    sha256_file,
)
from pipelines.tracking.store import (  # noqa: F401  (find_runs, ...: part of this module's API)
    TrackingError,
    child_runs,
    client,
    download_artifact,
    experiment_id_of,
    experiments,
    find_runs,
    load_model,
    open_store,
    store_errors,
)
from pipelines.tracking.uri import (  # noqa: F401  (part of this module's API)
    DEFAULT_TRACKING_URI,
    artifact_root,
    display_uri,
    experiment_url,
    masked,
    registry_uri,
    server_command,
    sqlite_path,
    tracking_uri,
)

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


# Time spent in this module ------------------------------------------------------------------

_SECONDS: dict[str, float] = {}
_CALLS: dict[str, int] = {}
_DEPTH = [0]


@contextlib.contextmanager
def _timing(what: str) -> Iterator[None]:
    """Count the block's wall time as ``what`` (outermost block only, so nesting counts once)."""
    _DEPTH[0] += 1
    start = time.perf_counter()
    try:
        yield
    finally:
        _DEPTH[0] -= 1
        if _DEPTH[0] == 0:
            _SECONDS[what] = _SECONDS.get(what, 0.0) + time.perf_counter() - start
            _CALLS[what] = _CALLS.get(what, 0) + 1


def _timed(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with _timing(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper


def mlflow_seconds() -> float:
    """Seconds spent in this module's calls (less drawing figures) since ``reset_overhead``."""
    return sum(_SECONDS.values())


def overhead_by_call() -> dict[str, tuple[float, int]]:
    """Seconds and number of calls per kind (``pipeline_run``, ``child_run``, ``end_run``, ...)."""
    return {what: (seconds, _CALLS[what]) for what, seconds in _SECONDS.items()}


def reset_overhead() -> None:
    """Start counting afresh."""
    _SECONDS.clear()
    _CALLS.clear()


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
        with _timing("end_run"):
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
    with _timing("pipeline_run"):
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
    with _timing("child_run"):
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


@_timed
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


@_timed
def log_metric_history(name: str, values: Sequence[float], first_step: int = 0) -> None:
    """Log a whole history (e.g. the loss of every epoch) as one metric, one value per step."""
    now = int(time.time() * 1000)
    active_run().pending_metrics.extend(
        Metric(safe_key(name), float(v), now, first_step + k) for k, v in enumerate(values)
    )


@_timed
def log_params(params: Mapping[str, Any]) -> None:
    """Log extra params to the current run (keys must not repeat the config's)."""
    active_run().pending_params.update({k: str(v) for k, v in params.items()})


@_timed
def set_tags(tags: Mapping[str, Any]) -> None:
    """Set tags on the current run (sent with its metrics when it ends)."""
    active_run().pending_tags.update({k: str(v) for k, v in tags.items()})


def _artifact(what: str, write: Callable[[RunHandle], None]) -> None:
    run = active_run()
    with store_errors(run.stage.uri, f"write the artifact {what} of run {run.name}"):
        write(run)


@_timed
def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Copy a file (or a directory's files) into the current run's artifacts."""
    path = Path(path)
    if path.is_dir():
        _artifact(path.name, lambda r: r.repository.log_artifacts(str(path), artifact_path))
    else:
        _artifact(path.name, lambda r: r.repository.log_artifact(str(path), artifact_path))


@_timed
def log_text(text: str, artifact_file: str) -> None:
    """Write ``text`` as the artifact ``artifact_file`` of the current run."""
    _artifact(artifact_file, lambda r: r.stage.store.log_text(r.run_id, text, artifact_file))


@_timed
def log_dict(data: Mapping[str, Any], artifact_file: str) -> None:
    """Write ``data`` as a JSON (or YAML, by extension) artifact of the current run."""
    _artifact(artifact_file, lambda r: r.stage.store.log_dict(r.run_id, dict(data), artifact_file))


def _log_file(name: str, artifact_path: str | None, write: Callable[[Path], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="gatecast-artifact-") as tmp:
        path = Path(tmp) / name
        write(path)
        _artifact(name, lambda r: r.repository.log_artifact(str(path), artifact_path))


@_timed
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
        with _timing("log_figure"):
            _artifact(filename, lambda r: r.repository.log_artifact(str(path), artifact_path))


# Registered models --------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredModel:
    """Where ``log_model`` put the model.

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


def registered_model_name(cfg: Config, instrument: str, forecaster: str) -> str:
    """``<tracking.registered_model>-<INST>`` for the report's candidate (e.g.
    ``gatecast-lstm-GSPC``), ``<tracking.registered_model>-<forecaster>-<INST>`` for
    any other forecaster that declares ``export``."""
    parts = [cfg.tracking.registered_model, instrument]
    if forecaster != cfg.report.candidate:
        parts.insert(1, forecaster)
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts))


@_timed
def log_model(
    cfg: Config,
    instrument: str,
    forecaster: str,
    forecasters: Sequence[Any],
    example_bars: pd.DataFrame,
    fold: Mapping[str, Any] | None = None,
) -> RegisteredModel:
    """Log the final fold's forecaster (each seed) as a pyfunc model of the current run
    and register it (``pipelines.tracking.pyfunc_model``).

    The new version carries its lineage (``provenance.model_lineage``: this
    run, its commit, config hash, input data hashes, ``fold`` and the metrics
    logged so far without a step, i.e. the whole out-of-sample ones) as tags
    and in its description.

    Args:
        cfg: The resolved config (names the registered model).
        instrument: The instrument the model was trained on.
        forecaster: Its name under ``forecasters:`` (names the model's output columns).
        forecasters: The fitted forecaster of each seed, in seed order.
        example_bars: A short slice of bars (enough history for a few
            forecasts), the model's input example and the base of its signature.
        fold: The final walk-forward fold (``Fold.as_dict()``), which trained it.
    """
    run, name = active_run(), registered_model_name(cfg, instrument, forecaster)
    metrics = {m.key: m.value for m in run.pending_metrics if "/" not in m.key and not m.step}
    lineage = model_lineage(
        {**run.tags, "gatecast.run_id": run.run_id, "gatecast.run_name": run.name},
        run.stage.config_text,
        metrics,
        fold or {},
    )
    with store_errors(run.stage.uri, f"log the model {name} of run {run.name}"):
        version = pyfunc_model.log_and_register(
            run.stage.store,
            run.run_id,
            run.experiment_id,
            name,
            forecaster,
            forecasters,
            example_bars,
            params=run.stage.params,
            tags={"gatecast.instrument": instrument, "gatecast.config": cfg.name},
            description=f"gatecast {forecaster} forecaster of {instrument} (config {cfg.name})",
            version_tags=lineage,
            version_description=model_description(
                forecaster, instrument, len(forecasters), lineage, experiment_url(run.experiment_id)
            ),
        )
    run.pending_tags.update(
        {"gatecast.registered_model": name, "gatecast.registered_version": version}
    )
    return RegisteredModel(name, version, LATEST_ALIAS, f"models:/{name}@{LATEST_ALIAS}")


@_timed
def move_newest(models: Sequence[RegisteredModel]) -> None:
    """Point each model's alias ``newest`` at its version (call once the stage's work is done)."""
    if not models:
        return
    stage = active_run().stage
    for model in models:
        with store_errors(stage.uri, f"move the alias {model.alias} of {model.name}"):
            stage.store.set_registered_model_alias(model.name, model.alias, model.version)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.tracking ui|uri`` (``pipelines.tracking.uri.main``), whose ``ui``
    prints a model-training-view link per experiment of the store."""
    return store_uri.main(argv, experiments=experiments)


if __name__ == "__main__":
    sys.exit(main())
