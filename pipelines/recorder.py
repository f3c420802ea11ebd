"""The one module of gatecast that talks to MLflow: the recorder.

The stages call ``pipelines.tracking``, which turns every call into an
operation (open a run, log a batch, copy an artifact, log and register a
model, end a run) and hands it to a ``Recorder``, which carries it out
against the MLflow store. Nothing above this module changes when the store
does (the same split as Qlib's recorder).

Where the recorder runs (config key ``tracking.writer``)
    ``process`` (the default): in a writer process of its own,
    ``python -m pipelines.recorder FD``, which ``python -m pipelines`` starts
    before it imports a tracked stage (else the first ``pipeline_run`` of a
    process does) and every later stage of the process reuses. The stage
    hands an operation over a pipe and goes on at once; the writer imports
    mlflow, opens the store and does the SQLAlchemy work on another core
    while the stage imports TensorFlow, trains or renders, at ``nice`` +10 so
    that it takes only the CPU time the stage leaves idle. The stage waits
    for it only when it needs an answer (a run id, a model version) and at
    its end, when every run it opened is written and ended before the stage
    returns. An MLflow failure in the writer reaches the stage at its next
    tracking call (or at its end) as a ``TrackingError`` that names the
    operation and the run, and that run and its stage's run end FAILED. If
    the stage's process dies, the writer sees its pipe close and ends the
    runs still open KILLED.

    ``inline``: in the stage's own process, each operation done on the spot
    (errors are raised by the call that caused them). For debugging, and the
    baseline that ``python -m benchmarks.pipeline`` compares with
    (``--inline-repeat``).

Also here: the pyfunc form of the LSTM (``LstmPyfuncModel``) and the
read-only queries (``find_runs``, ``child_runs``, ``download_artifact``,
``load_model``) that ``pipelines.tracking`` exposes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import logging
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from unittest import mock

# Before mlflow is imported: no download progress bars in the stage's console output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.entities import (  # noqa: E402
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunStatus,
    RunTag,
)
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import Model, infer_signature  # noqa: E402
from mlflow.store.artifact.artifact_repository_registry import (  # noqa: E402
    get_artifact_repository,
)
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_SOURCE_NAME  # noqa: E402

from pipelines.config import REPO_ROOT  # noqa: E402
from pipelines.tracking import (  # noqa: E402
    LATEST_ALIAS,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    SEEDS_ARTIFACT,
    _bars_from_input,
    _key,
    _sqlite_path,
    artifact_root,
    ensemble_forecast,
    tracking_uri,
)

log = logging.getLogger("gatecast.recorder")

# MLflow's own INFO lines (store migrations, "View run at ...") would drown the stage's output.
for _name in ("mlflow", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)


# The store --------------------------------------------------------------------------------


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


def client(uri: str) -> MlflowClient:
    """An MlflowClient on ``uri`` (a SQLite store's folder is created, in WAL mode)."""
    path = _sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_ahead_log(path)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


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


def _context_tags() -> dict[str, str]:
    """MLflow's run-context tags (``mlflow.user``, ``mlflow.source.*``), as start_run sets them."""
    from mlflow.tracking.context.git_context import GitRunContext
    from mlflow.tracking.context.registry import resolve_tags

    # The commit comes from tracking.git_state(); MLflow's git context would import GitPython.
    return {k: str(v) for k, v in resolve_tags({}, ignore=[GitRunContext]).items()}


def _use_environment(environment: Mapping[str, str]) -> None:
    """Make this process's ``MLFLOW_*`` variables those of the stage's process."""
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        if key not in environment:
            del os.environ[key]
    os.environ.update(environment)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# The recorder -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stage:
    """What a stage's run and its children share: store, experiment, context tags, config."""

    client: MlflowClient
    tracking_uri: str
    experiment_id: str
    context: Mapping[str, str]
    config_file: Path


@dataclass
class _Run:
    """A run the recorder created: its id, where its artifacts go, how it is going."""

    name: str
    run_id: str
    artifact_uri: str
    stage: _Stage
    parent: _Run | None = None
    failed: bool = False
    ended: bool = False
    repository: Any = None

    def artifacts(self) -> Any:
        """The run's artifact repository, from the URI the store gave the run.

        MlflowClient.log_artifact would first fetch the whole run (its tags
        and params) from the store only to read that URI again.
        """
        if self.repository is None:
            self.repository = get_artifact_repository(
                self.artifact_uri, tracking_uri=self.stage.tracking_uri
            )
        return self.repository

    @property
    def client(self) -> MlflowClient:
        return self.stage.client


class Recorder:
    """Carries out ``pipelines.tracking``'s operations against MLflow stores.

    Runs and logged models are named by tokens that the stage's process
    chooses, so an operation never waits for the store to hand back an id;
    ``run_id``, ``experiment_id`` and ``model_version`` answer with the ids
    the store gave them. Every method is one operation; ``handle`` dispatches.
    """

    def __init__(self) -> None:
        self._clients: dict[tuple[str, frozenset[tuple[str, str]]], MlflowClient] = {}
        self._context: dict[str, str] | None = None
        self._runs: dict[int, _Run] = {}
        self._versions: dict[int, str] = {}
        self._files = Path(tempfile.mkdtemp(prefix="gatecast-recorder-"))

    def _run_of(self, args: Sequence[Any]) -> _Run | None:
        """The run an operation concerns (its first argument is the run's token), if created."""
        return self._runs.get(args[0]) if args and isinstance(args[0], int) else None

    def handle(self, op: str, args: Sequence[Any]) -> Any:
        """Carry out operation ``op``; a failure marks its run (and the stage's run) failed."""
        try:
            return getattr(self, op)(*args)
        except Exception:
            run = self._run_of(args)
            if run is None and op == "open_child":
                run = self._runs.get(args[1])
            while run is not None:
                run.failed = True
                run = run.parent
            raise

    def describe(self, op: str, args: Sequence[Any]) -> str:
        """``<op> of run <name>``, for an error message."""
        run = self._run_of(args)
        if run is not None:
            return f"{op} of run {run.name}"
        if op == "open_stage" and len(args) > 4:
            return f"open_stage (run {args[4]} of experiment {args[3]} at {args[2]})"
        return op

    def warm_up(self, uri: str) -> None:
        """Open the store at ``uri`` before the stage asks (a failure is left to open_stage)."""
        try:
            client(uri)
            import pyarrow.parquet  # noqa: F401  (the first Parquet artifact would import it)
        except Exception as err:
            log.debug("could not open %s ahead of the stage: %s", uri, err)

    # Runs

    def open_stage(
        self,
        token: int,
        environment: Mapping[str, str],
        uri: str,
        experiment_name: str,
        name: str,
        tags: Mapping[str, str],
        config_text: str,
        source_name: str,
    ) -> None:
        """Create the parent run of a stage (experiment created if needed), with config.yaml."""
        _use_environment(environment)
        key = (uri, frozenset(environment.items()))
        if key not in self._clients:
            self._clients[key] = client(uri)
        mlflow_client = self._clients[key]
        folder = self._files / f"stage-{token}"
        folder.mkdir()
        config_file = folder / "config.yaml"
        config_file.write_text(config_text)
        if self._context is None:
            self._context = _context_tags()
        stage = _Stage(
            mlflow_client,
            uri,
            _experiment_id(mlflow_client, experiment_name, uri),
            {**self._context, MLFLOW_SOURCE_NAME: source_name},
            config_file,
        )
        self._create(token, name, stage, tags)

    def open_child(self, token: int, parent_token: int, name: str, tags: Mapping[str, str]) -> None:
        """Create a child run of ``parent_token``'s run, with the parent's config.yaml."""
        parent = self._run(parent_token)
        every = {**tags, MLFLOW_PARENT_RUN_ID: parent.run_id}
        self._create(token, name, parent.stage, every, parent)

    def _create(
        self,
        token: int,
        name: str,
        stage: _Stage,
        tags: Mapping[str, str],
        parent: _Run | None = None,
    ) -> None:
        # One request, tags included: not mlflow.start_run, whose per-run look-ups
        # (the experiment, the run context) were made once for the stage.
        created = stage.client.create_run(
            stage.experiment_id, tags={**stage.context, **tags}, run_name=name
        )
        run = _Run(name, created.info.run_id, created.info.artifact_uri, stage, parent)
        self._runs[token] = run
        run.artifacts().log_artifact(str(stage.config_file))

    def batch(
        self,
        token: int,
        metrics: Sequence[tuple[str, float, int, int]],
        params: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> None:
        """Params, tags and metrics in as few requests as the store's batch limits allow."""
        run = self._run(token)
        param_list = [Param(_key(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        tag_list = [RunTag(_key(k), str(v)) for k, v in tags.items()]
        metric_list = [Metric(*m) for m in metrics]
        while param_list or tag_list or metric_list:
            p, param_list = (
                param_list[:MAX_PARAMS_TAGS_PER_BATCH],
                param_list[MAX_PARAMS_TAGS_PER_BATCH:],
            )
            t, tag_list = (
                tag_list[:MAX_PARAMS_TAGS_PER_BATCH],
                tag_list[MAX_PARAMS_TAGS_PER_BATCH:],
            )
            room = MAX_METRICS_PER_BATCH - len(p) - len(t)
            m, metric_list = metric_list[:room], metric_list[room:]
            run.client.log_batch(run.run_id, metrics=m, params=p, tags=t)

    def end(self, token: int, status: str) -> None:
        """End the run: ``status`` unless one of its operations failed (then FAILED)."""
        run = self._runs.get(token)
        if run is None or run.ended:  # never created: its creation's error was reported
            return
        if run.failed and status == RunStatus.to_string(RunStatus.FINISHED):
            status = RunStatus.to_string(RunStatus.FAILED)
        run.ended = True
        run.client.set_terminated(run.run_id, status)

    def abandon(self) -> None:
        """End every run still open KILLED (the stage's process went away)."""
        killed = RunStatus.to_string(RunStatus.KILLED)
        for run in self._runs.values():
            if not run.ended:
                run.ended = True
                try:
                    run.client.set_terminated(run.run_id, killed)
                except Exception as err:  # keep ending the others
                    log.warning("could not mark MLflow run %s KILLED: %s", run.name, err)
        shutil.rmtree(self._files, ignore_errors=True)

    # Artifacts

    def artifact(self, token: int, path: str, artifact_path: str | None) -> None:
        """Copy a file, or a folder's files, into the run's artifacts."""
        repository = self._run(token).artifacts()
        if Path(path).is_dir():
            repository.log_artifacts(path, artifact_path)
        else:
            repository.log_artifact(path, artifact_path)

    def text(self, token: int, text: str, artifact_file: str) -> None:
        """``text`` as the artifact ``artifact_file``."""
        run = self._run(token)
        run.client.log_text(run.run_id, text, artifact_file)

    def mapping(self, token: int, data: Mapping[str, Any], artifact_file: str) -> None:
        """``data`` as a JSON (or YAML, by extension) artifact."""
        run = self._run(token)
        run.client.log_dict(run.run_id, dict(data), artifact_file)

    def dataframe(
        self, token: int, frame: pd.DataFrame, filename: str, artifact_path: str | None
    ) -> None:
        """``frame`` (with its index) as the Parquet artifact ``filename``."""
        with tempfile.TemporaryDirectory(dir=self._files) as tmp:
            path = Path(tmp) / filename
            frame.to_parquet(path)
            self._run(token).artifacts().log_artifact(str(path), artifact_path)

    def file_bytes(self, token: int, data: bytes, filename: str, artifact_path: str | None) -> None:
        """``data`` (e.g. a rendered PNG) as the artifact ``filename``."""
        with tempfile.TemporaryDirectory(dir=self._files) as tmp:
            path = Path(tmp) / filename
            path.write_bytes(data)
            self._run(token).artifacts().log_artifact(str(path), artifact_path)

    # The registered LSTM

    def log_model(self, token: int, model_token: int, spec: Mapping[str, Any]) -> None:
        """Log the LSTM seeds saved in ``spec["seeds"]`` as a pyfunc model and register it.

        The model is written with ``mlflow.pyfunc.save_model`` (signature,
        input example, pinned requirements, the package code) and its folder
        becomes the artifacts of a logged model of the run: the steps of
        ``mlflow.pyfunc.log_model`` without its serving-input check, which
        loads the model back and predicts on the example only to confirm that
        it loads (the tests load it in a fresh process and compare forecasts).
        The version is ``model_version(model_token)``; the run gets the tags
        ``gatecast.registered_model`` and ``gatecast.registered_version``.
        """
        run = self._run(token)
        name: str = spec["name"]
        example: pd.DataFrame = spec["example"]
        signature = infer_signature(
            example, _output_example(example, spec["n_seeds"]), params={"start": ""}
        )
        tags = {"gatecast.instrument": spec["instrument"], "gatecast.config": spec["config"]}
        logged = run.client.create_logged_model(
            run.stage.experiment_id,
            name="model",
            source_run_id=run.run_id,
            tags=tags,
            params=spec["params"],
        )
        try:
            with tempfile.TemporaryDirectory(dir=self._files) as tmp:
                local = Path(tmp) / "model"
                # The pickled object is a bare instance of a class of this package
                # (shipped in code_paths); MLflow's generic warning about pickled
                # models says nothing useful here.
                with _quiet("mlflow.pyfunc"), _no_requirement_check():
                    mlflow.pyfunc.save_model(
                        str(local),
                        python_model=LstmPyfuncModel(),
                        artifacts={SEEDS_ARTIFACT: spec["seeds"]},
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
                run.client.log_model_artifacts(logged.model_id, str(local))
        except BaseException:
            with contextlib.suppress(Exception):
                run.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        run.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        run.client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=0)])

        # Registered through the client, not log_model(registered_model_name=...),
        # whose progress lines go straight to stderr. The registered model exists
        # after the first train run: add the version straight away, and create the
        # model only when the store says it is missing (asking first, or creating
        # it and catching "already exists", loads every earlier version of it).
        def new_version() -> Any:
            return run.client.create_model_version(
                name,
                source=f"models:/{logged.model_id}",
                run_id=run.run_id,
                model_id=logged.model_id,
                tags={**tags, "gatecast.seeds": str(spec["n_seeds"])},
            )

        try:
            created = new_version()
        except MlflowException as err:
            if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise
            try:
                run.client.create_registered_model(name, tags=tags, description=spec["description"])
            except MlflowException as again:  # another process registered it meanwhile
                if again.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise
            created = new_version()
        version = str(created.version)
        run.client.set_registered_model_alias(name, LATEST_ALIAS, version)
        self.batch(
            token,
            [],
            {},
            {"gatecast.registered_model": name, "gatecast.registered_version": version},
        )
        self._versions[model_token] = version

    # Answers

    def run_id(self, token: int) -> str:
        return self._run(token).run_id

    def experiment_id(self, token: int) -> str:
        return self._run(token).stage.experiment_id

    def model_version(self, model_token: int) -> str:
        if model_token not in self._versions:
            raise RuntimeError("the model was not registered (its error was reported first)")
        return self._versions[model_token]

    def settle(self) -> dict[str, float]:
        """Everything handed over before is done; this process's CPU time so far."""
        return {"cpu_seconds": time.process_time()}

    def _run(self, token: int) -> _Run:
        try:
            return self._runs[token]
        except KeyError:
            raise RuntimeError(
                "the run was never created in MLflow (its error was reported first)"
            ) from None


# The writer process -------------------------------------------------------------------


def serve(connection: Connection, recorder: Recorder | None = None) -> None:
    """Carry out the operations that arrive on ``connection`` until it closes.

    A message is ``(seq, op, args, wants_answer)``. An answer goes back as
    ``("ok", seq, result)`` or ``("err", seq, message)``; a failed operation
    that wants none is reported at once as ``("error", seq, message)``.
    """
    recorder = recorder or Recorder()
    try:
        while True:
            try:
                seq, op, args, wants_answer = connection.recv()
            except EOFError:
                return
            if op == "close":
                connection.send(("ok", seq, recorder.settle()))
                return
            try:
                result = recorder.handle(op, args)
            except Exception as err:
                message = f"MLflow could not {recorder.describe(op, args)}: " + _one_line(err)
                connection.send(("err" if wants_answer else "error", seq, message))
            else:
                if wants_answer:
                    connection.send(("ok", seq, result))
    finally:
        recorder.abandon()


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "(no message)"
    return f"{type(err).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.recorder FD``: the writer process (started by pipelines.tracking)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m pipelines.recorder FD (started by pipelines.tracking)")
        return 2
    # Ctrl-C reaches the whole process group: the stage ends its runs KILLED and
    # then closes the pipe; the writer finishes what it was handed first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Second to the stage for the CPU: the writer works in the gaps the stage
    # leaves, and catches up at the end of the stage, when the stage waits.
    with contextlib.suppress(OSError):
        os.nice(10)
    connection = Connection(int(argv[0]))
    recorder = Recorder()
    recorder.warm_up(tracking_uri())
    serve(connection, recorder)
    return 0


# The LSTM in MLflow's model format ------------------------------------------------------


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


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


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


# Queries (tests, the tracking CLI) ------------------------------------------------------


def find_runs(
    uri: str, experiment_name: str, filter_string: str = "", *, include_children: bool = True
) -> list[Any]:
    """Runs of an experiment (newest first); an unknown experiment gives ``[]``."""
    mlflow_client = client(uri)
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
    return [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]


def child_runs(uri: str, parent_run_id: str) -> list[Any]:
    """The child runs of a parent run, by run name."""
    mlflow_client = client(uri)
    parent = mlflow_client.get_run(parent_run_id)
    runs = mlflow_client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=5000,
    )
    return sorted(runs, key=lambda r: r.info.run_name)


def download_artifact(uri: str, run_id: str, artifact_path: str, destination: str | Path) -> Path:
    """Download one artifact of a run into ``destination``; returns its local path."""
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=artifact_path,
            dst_path=str(destination),
            tracking_uri=uri,
        )
    )


def load_model(uri: str, model_uri: str) -> Any:
    """``mlflow.pyfunc.load_model(model_uri)`` on the store at ``uri``."""
    client(uri)
    return mlflow.pyfunc.load_model(model_uri)


if __name__ == "__main__":
    sys.exit(main())
