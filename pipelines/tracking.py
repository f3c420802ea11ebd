"""MLflow tracking for every stage: what the stages call (``pipelines.recorder`` talks to MLflow).

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

Where the work is done
    This module never imports mlflow. Each call becomes an operation for the
    recorder (``pipelines.recorder``), which by default runs in a writer
    process of its own (config key ``tracking.writer``: ``process``, or
    ``inline`` to do the work in the stage's process; ``start_writer``
    starts it early, as ``python -m pipelines`` does before importing
    TensorFlow). The stage hands an operation over and goes on; it waits only for an id it reads
    (``RunHandle.run_id``, ``RegisteredModel.version``) and, at the end of
    ``pipeline_run``, until every run is written and ended. An MLflow
    failure reaches the stage as ``TrackingError`` at its next tracking call,
    or at the end of the block; the run concerned ends FAILED.

Overhead
    A run costs three store requests whatever it logs: one to create it (its
    tags included), one batch at the end with its params, tags and metrics
    (more only past the store's limits: 100 params, 100 tags, 1000 items),
    one to end it. Artifacts (``config.yaml`` first) go straight to the
    artifact location the store gave the run when it was created. Time the
    stage's process spends inside this module's calls is added up
    (``overhead_seconds``, ``overhead_by_call``, ``overhead_call_counts``:
    handing operations over, and waiting for ids and for the writer at the
    end of a stage as ``wait_for_id`` and ``settle``; starting the writer
    counts as ``open_store``; rendering PNGs is matplotlib's work and counts
    apart as ``render_figure``), so the benchmark can report MLflow's share
    of a stage's wall time; ``writer_stats`` gives the writer's own CPU time.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import hashlib
import importlib.metadata
import io
import itertools
import json
import logging
import multiprocessing
import os
import pickle
import queue
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import yaml

from pipelines.config import REPO_ROOT, Config

log = logging.getLogger("gatecast.tracking")

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


# Handing operations to the recorder -------------------------------------------------------


class TrackingError(RuntimeError):
    """MLflow could not record something (the message names the operation and the run)."""


class _Inline:
    """The recorder in this process: each operation is done when it is handed over."""

    def __init__(self) -> None:
        from pipelines.cli import loading_code

        with loading_code():
            from pipelines.recorder import Recorder

        self.recorder = Recorder()

    def send(self, op: str, *args: Any) -> None:
        self.recorder.handle(op, args)

    def ask(self, op: str, *args: Any) -> Any:
        return self.recorder.handle(op, args)

    def raise_reported(self) -> None:
        """Errors are raised where they happen here: nothing is waiting."""


class _Writer:
    """The recorder in a writer process (``python -m pipelines.recorder``), fed over a pipe.

    ``send`` pickles an operation and hands it over; a thread of this process
    writes it to the pipe, so the stage never blocks while the writer is busy
    (a pipe holds about 200 KB). ``ask`` waits for the answer (after
    everything handed over before it). A failed operation that nobody waits
    for is reported by the writer at once and raised here, as a
    ``TrackingError``, by the next ``send``, ``ask`` or ``raise_reported``.
    The writer runs at a lower CPU priority (``nice`` +10): on a machine
    whose cores the stage keeps busy, it works in the gaps and catches up at
    the end of the stage, when the stage waits for it.
    """

    def __init__(self) -> None:
        here, there = multiprocessing.Pipe()
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.recorder", str(there.fileno())],
            pass_fds=(there.fileno(),),
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        there.close()
        self.connection = here
        self.seq = 0
        self.reported: list[str] = []
        self.broken: BaseException | None = None
        self.outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.sender = threading.Thread(target=self._send_all, name="gatecast-mlflow", daemon=True)
        self.sender.start()

    def _send_all(self) -> None:
        while (data := self.outbox.get()) is not None:
            try:
                self.connection.send_bytes(data)
            except (OSError, ValueError) as err:  # the writer is gone; the stage hears of it
                self.broken = err
                return

    def alive(self) -> bool:
        return self.process.poll() is None and self.broken is None and not self.connection.closed

    def _gone(self) -> TrackingError:
        code = self.process.poll()
        said = f"; it reported: {self.reported[0]}" if self.reported else ""
        return TrackingError(
            f"the MLflow writer process (pid {self.process.pid}) exited with code {code}"
            f"{said}: the runs it had open may show as RUNNING in the MLflow UI"
        )

    def _post(self, op: str, args: tuple[Any, ...], wants_answer: bool) -> int:
        if self.broken is not None or self.connection.closed:
            raise self._gone() from self.broken
        self.seq += 1
        self.outbox.put(pickle.dumps((self.seq, op, args, wants_answer), pickle.HIGHEST_PROTOCOL))
        return self.seq

    def _receive(self) -> tuple[str, int, Any]:
        try:
            message = self.connection.recv()
        except (EOFError, OSError) as err:
            raise self._gone() from err
        if message[0] == "error":
            self.reported.append(message[2])
        return message

    def raise_reported(self) -> None:
        # A writer that died leaves its pipe readable: recv then says so (TrackingError).
        while not self.connection.closed and self.connection.poll():
            self._receive()
        if self.broken is not None:
            raise self._gone() from self.broken
        if self.reported:
            first, self.reported = self.reported[0], []
            raise TrackingError(first)

    def send(self, op: str, *args: Any) -> None:
        self._post(op, args, False)

    def ask(self, op: str, *args: Any) -> Any:
        seq = self._post(op, args, True)
        while True:
            kind, answered, payload = self._receive()
            if kind == "err" and answered == seq:
                raise TrackingError(payload)
            if kind == "ok" and answered == seq:
                return payload

    def close(self) -> None:
        """Let the writer finish what it was handed, then stop it."""
        try:
            if self.alive():
                self.ask("close")
            self.process.wait(timeout=60)
        except (TrackingError, subprocess.TimeoutExpired) as err:
            log.warning("the MLflow writer process did not stop cleanly: %s", err)
            self.process.kill()
        finally:
            self.outbox.put(None)
            self.sender.join(timeout=5)
            self.connection.close()


_WRITER: _Writer | None = None
_INLINE: _Inline | None = None


def _channel(mode: str) -> _Writer | _Inline:
    """The recorder for ``tracking.writer`` = ``mode``, started the first time."""
    global _WRITER, _INLINE
    if mode == "inline" or os.name == "nt":  # the writer's pipe is a POSIX file descriptor
        if _INLINE is None:
            _INLINE = _Inline()
        return _INLINE
    if _WRITER is None or not _WRITER.alive():
        _WRITER = _Writer()
    return _WRITER


def start_writer() -> None:
    """Start the writer process now, so it imports mlflow while the stage imports TensorFlow.

    ``python -m pipelines`` calls this before it imports a tracked stage; the
    writer opens the store of ``tracking_uri()`` as soon as it is up.
    """
    _channel("process")


@atexit.register
def close_writer() -> None:
    """Stop the writer process (after it has done what it was handed), if one runs."""
    global _WRITER
    if _WRITER is not None:
        _WRITER.close()
        _WRITER = None


def writer_stats() -> dict[str, float]:
    """The writer process's ``cpu_seconds`` so far, as of the end of the last stage ({} inline)."""
    return dict(_LAST_SETTLE)


_LAST_SETTLE: dict[str, float] = {}
_TOKENS = itertools.count(1)


# Runs ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class RunHandle:
    """One open run of a stage (its MLflow id is asked for only when read).

    Args:
        token: How this process names the run to the recorder.
        name: Its run name (``train``, ``GSPC/lstm``, ...).
        tags: Tags every child run of this pipeline run inherits.
        params: Params every child run inherits (the flattened config).
        tracking_uri: The store the run lives in.
        experiment_name: The experiment's name.
        channel: The recorder the run's operations go to.
        spool: A folder of this stage for files handed to the recorder.
    """

    token: int
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    tracking_uri: str
    experiment_name: str
    channel: _Writer | _Inline = field(repr=False)
    spool: Path = field(repr=False)
    pending: list[tuple[str, float, int, int]] = field(default_factory=list, repr=False)
    pending_params: dict[str, str] = field(default_factory=dict, repr=False)
    pending_tags: dict[str, str] = field(default_factory=dict, repr=False)
    _ids: dict[str, str] = field(default_factory=dict, repr=False)

    def _answer(self, what: str) -> str:
        if what not in self._ids:
            with _CLOCK.timing("wait_for_id"):
                self._ids[what] = self.channel.ask(what, self.token)
        return self._ids[what]

    @property
    def run_id(self) -> str:
        """The MLflow run id (waits for the recorder to have created the run)."""
        return self._answer("run_id")

    @property
    def experiment_id(self) -> str:
        """The MLflow experiment id."""
        return self._answer("experiment_id")

    def queue(self, metrics: Sequence[tuple[str, float, int, int]]) -> None:
        """Hold metrics until the run ends (or a full batch is waiting): one request each."""
        self.pending.extend(metrics)
        if len(self.pending) >= MAX_METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        """Hand the waiting params, tags and metrics to the recorder, as one batch."""
        metrics, self.pending = self.pending, []
        params, self.pending_params = self.pending_params, {}
        tags, self.pending_tags = self.pending_tags, {}
        if metrics or params or tags:
            self.channel.send("batch", self.token, metrics, params, tags)


_STACK: list[RunHandle] = []


def active_run() -> RunHandle:
    """The innermost run opened by ``pipeline_run`` or ``child_run``."""
    if not _STACK:
        raise RuntimeError("no gatecast run is open: use `with tracking.pipeline_run(cfg, stage)`")
    active = _STACK[-1]
    active.channel.raise_reported()
    return active


def _end_status(exc: BaseException | None) -> str:
    if exc is None:
        return "FINISHED"
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED"
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return "FINISHED"
    return "FAILED"


def _source_name() -> str:
    # MLflow's default run context: the script that started this process.
    return sys.argv[0] if sys.argv and sys.argv[0] else "<console>"


def _mlflow_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}


def _close(handle: RunHandle, exc: BaseException | None) -> None:
    """Hand over what the run still holds and end it; keep the stage's own error first."""
    status = _end_status(exc)
    with _CLOCK.timing("end_run"):
        try:
            handle.flush()
            handle.channel.send("end", handle.token, status)
        except Exception as err:
            if exc is None:
                raise
            log.warning("could not mark MLflow run %s as %s: %s", handle.name, status, err)


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
    block carries a note saying so and naming the experiment. When the block
    is left, the recorder has written everything (the stage waits for it), and
    an MLflow failure it reported is raised as ``TrackingError``.

    Args:
        cfg: The resolved experiment config.
        stage: Stage name, also the run name (``train``, ``backtest``, ...).
        inputs: Input data files by label.
        tags: Extra tags for this run and its children.
        command: The command line to record; defaults to this process's.
    """
    if _STACK:
        raise RuntimeError(f"pipeline_run({stage!r}) inside the open run {_STACK[-1].name!r}")
    with _CLOCK.timing("open_store"):
        # The first stage of a process starts the writer, which imports mlflow
        # and opens the store on its own while this process goes on.
        channel = _channel(cfg.tracking.writer)
    with _CLOCK.timing("pipeline_run"):
        uri = tracking_uri()
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
        own = {
            **common,
            "gatecast.stage": stage,
            "mlflow.note.content": f"gatecast `{stage}` stage of config `{cfg.name}`",
        }
        handle = RunHandle(
            next(_TOKENS),
            stage,
            common,
            params,
            uri,
            cfg.experiment_name,
            channel,
            Path(tempfile.mkdtemp(prefix="gatecast-spool-")),
            pending_params=dict(params),
        )
    exc: BaseException | None = None
    try:
        with _CLOCK.timing("pipeline_run"):
            channel.send(
                "open_stage",
                handle.token,
                _mlflow_environment(),
                uri,
                cfg.experiment_name,
                stage,
                own,
                text,
                _source_name(),
            )
        with _running(handle):
            yield handle
    except BaseException as err:
        exc = err
        raise
    finally:
        try:
            _settle(channel, exc)
        except BaseException as err:
            if exc is None:
                exc = err
                raise
        finally:
            shutil.rmtree(handle.spool, ignore_errors=True)
            if exc is not None:
                exc.add_note(
                    f"MLflow: the {stage} run and the runs it opened are marked "
                    f"{_end_status(exc)} in experiment {cfg.experiment_name}"
                )


def _settle(channel: _Writer | _Inline, exc: BaseException | None) -> None:
    """Wait until the recorder has written and ended every run handed to it."""
    global _LAST_SETTLE
    with _CLOCK.timing("settle"):
        try:
            done = channel.ask("settle")
            # inline, the figure would be this process's own CPU time
            _LAST_SETTLE = done if isinstance(channel, _Writer) else {}
            channel.raise_reported()
        except Exception as err:
            if exc is None:
                raise
            log.warning("MLflow: %s", err)


@contextlib.contextmanager
def child_run(name: str, tags: Mapping[str, str] | None = None) -> Iterator[RunHandle]:
    """Open a child of the current pipeline run (e.g. ``GSPC/lstm``).

    The child inherits the parent's params, tags and ``config.yaml``; ``tags``
    adds its own (``gatecast.instrument``, ``gatecast.forecaster``, ...). Its
    params go to the store with its metrics, in one batch, when it ends.
    """
    parent = active_run()
    own = {k: str(v) for k, v in (tags or {}).items()}
    every = {**parent.tags, "gatecast.stage": _STACK[0].name, **own}
    handle = RunHandle(
        next(_TOKENS),
        name,
        {**parent.tags, **own},
        parent.params,
        parent.tracking_uri,
        parent.experiment_name,
        parent.channel,
        parent.spool,
        pending_params=dict(parent.params),
    )
    with _CLOCK.timing("start_run"):
        parent.channel.send("open_child", handle.token, parent.token, name, every)
    with _running(handle):
        yield handle


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
        _close(handle, exc)


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
        (_key(k), v, now, int(step or 0))
        for k, raw in metrics.items()
        if (v := _finite_float(raw)) is not None
    ]
    active_run().queue(batch)


@_timed
def log_metric_history(name: str, values: Sequence[float], first_step: int = 0) -> None:
    """Log a whole history (e.g. the loss of every epoch) as one metric, in one batch."""
    now = int(time.time() * 1000)
    batch = [(_key(name), float(v), now, first_step + k) for k, v in enumerate(values)]
    active_run().queue(batch)


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
    """Copy a file (or a directory's files) into the current run's artifacts.

    The copy is made by the recorder before the stage's run ends: leave the
    file in place until then.
    """
    run = active_run()
    run.channel.send("artifact", run.token, str(Path(path).resolve()), artifact_path)


@_timed
def log_text(text: str, artifact_file: str) -> None:
    """Write ``text`` as the artifact ``artifact_file`` of the current run."""
    run = active_run()
    run.channel.send("text", run.token, text, artifact_file)


@_timed
def log_dict(data: Mapping[str, Any], artifact_file: str) -> None:
    """Write ``data`` as a JSON (or YAML, by extension) artifact of the current run."""
    run = active_run()
    run.channel.send("mapping", run.token, dict(data), artifact_file)


@_timed
def log_dataframe(frame: pd.DataFrame, name: str, artifact_path: str | None = None) -> None:
    """Write ``frame`` (with its index) as the Parquet artifact ``<name>.parquet``."""
    filename = name if name.endswith(".parquet") else f"{name}.parquet"
    run = active_run()
    run.channel.send("dataframe", run.token, frame, filename, artifact_path)


def log_figure(
    fig: Any, name: str, artifact_path: str | None = "plots", dpi: int = FIGURE_DPI
) -> None:
    """Save a matplotlib figure as the PNG artifact ``<artifact_path>/<name>.png``.

    Rendering is matplotlib's work, not MLflow's: it is timed apart as ``render_figure``.
    """
    filename = name if name.endswith(".png") else f"{name}.png"
    run = active_run()
    png = io.BytesIO()
    with _CLOCK.timing("render_figure"):
        fig.savefig(png, format="png", dpi=dpi)
    with _CLOCK.timing("log_figure"):
        run.channel.send("file_bytes", run.token, png.getvalue(), filename, artifact_path)


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


@dataclass(eq=False)
class RegisteredModel:
    """Where ``log_lstm_model`` put the model (its version is asked for only when read).

    Args:
        name: Registered model name.
        alias: The alias moved to the new version.
        model_uri: ``models:/<name>@<alias>``.
    """

    name: str
    alias: str
    model_uri: str
    _ask: Callable[[], str] = field(repr=False)
    _version: str | None = field(default=None, repr=False)

    @property
    def version(self) -> str:
        """The new version (waits for the recorder to have registered it)."""
        if self._version is None:
            with _CLOCK.timing("wait_for_id"):
                self._version = str(self._ask())
        return self._version


def registered_model_name(cfg: Config, instrument: str) -> str:
    """``<tracking.registered_model>-<INST>``, e.g. ``gatecast-lstm-GSPC``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{cfg.tracking.registered_model}-{instrument}")


@_timed
def log_lstm_model(
    cfg: Config,
    instrument: str,
    forecasters: Sequence[Any],
    example_bars: pd.DataFrame,
) -> RegisteredModel:
    """Log the final fold's LSTM seeds as a pyfunc model of the current run and register it.

    The seeds are saved here (Keras); the recorder writes the MLflow model
    around them (signature, input example, pinned requirements, the package
    code; ``pipelines.recorder.Recorder.log_model``) and registers it.

    Args:
        cfg: The resolved config (names the registered model).
        instrument: The instrument the model was trained on.
        forecasters: Fitted ``LstmForecaster`` of each seed, in seed order.
        example_bars: A short slice of bars (enough history for a few
            forecasts), the model's input example and the base of its signature.
    """
    name = registered_model_name(cfg, instrument)
    run = active_run()
    seeds = Path(tempfile.mkdtemp(prefix="model-", dir=run.spool)) / SEEDS_ARTIFACT
    for k, forecaster in enumerate(forecasters):
        forecaster.save(seeds / f"seed{k}")
    model_token = next(_TOKENS)
    spec = {
        "name": name,
        "instrument": instrument,
        "config": cfg.name,
        "params": run.params,
        "seeds": str(seeds),
        "n_seeds": len(forecasters),
        "example": example_bars.rename_axis("date").reset_index(),
        "description": f"gatecast LSTM forecaster of {instrument} (config {cfg.name})",
    }
    channel = run.channel
    channel.send("log_model", run.token, model_token, spec)
    return RegisteredModel(
        name,
        LATEST_ALIAS,
        f"models:/{name}@{LATEST_ALIAS}",
        functools.partial(channel.ask, "model_version", model_token),
    )


# Queries (tests, the tracking CLI): in this process, after the stages have settled ----------


def client() -> Any:
    """An ``mlflow.MlflowClient`` on the current tracking (and registry) URI."""
    from pipelines import recorder

    return recorder.client(tracking_uri())


def find_runs(
    experiment_name: str, filter_string: str = "", *, include_children: bool = True
) -> list[Any]:
    """Runs of an experiment (newest first), e.g. ``filter_string="tags.gatecast.stage = 'train'"``.

    Returns ``mlflow.entities.Run`` objects; an unknown experiment gives ``[]``.
    """
    from pipelines import recorder

    return recorder.find_runs(
        tracking_uri(), experiment_name, filter_string, include_children=include_children
    )


def child_runs(parent_run_id: str) -> list[Any]:
    """The child runs of a parent run, by run name."""
    from pipelines import recorder

    return recorder.child_runs(tracking_uri(), parent_run_id)


def download_artifact(run_id: str, artifact_path: str, destination: str | Path) -> Path:
    """Download one artifact of a run into ``destination``; returns its local path."""
    from pipelines import recorder

    return recorder.download_artifact(tracking_uri(), run_id, artifact_path, destination)


def load_model(model_uri: str) -> Any:
    """``mlflow.pyfunc.load_model`` on the current store.

    E.g. ``load_model("models:/gatecast-lstm-GSPC@newest")``.
    """
    from pipelines import recorder

    return recorder.load_model(tracking_uri(), model_uri)


def __getattr__(name: str) -> Any:
    # Models logged before the recorder existed pickled pipelines.tracking.LstmPyfuncModel.
    if name == "LstmPyfuncModel":
        from pipelines.recorder import LstmPyfuncModel

        return LstmPyfuncModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
