"""A registered forecaster in MLflow's pyfunc format: what a model version holds and runs.

``pipelines.tracking.model_registry.log_model`` logs the final walk-forward fold's forecaster
(each seed of a stochastic one) of every forecaster that declares ``export``,
with ``log_and_register`` (``save`` writes the model's folder);
``mlflow.pyfunc.load_model`` brings back a ``ForecasterPyfuncModel`` in any
process, with or without gatecast installed (the model carries as its code the
project's modules that loading it runs, and names the forecaster's class, which
``load`` reads each seed back with)::

    model = mlflow.pyfunc.load_model("models:/gatecast-lstm-GSPC@newest")
    forecasts = model.predict(bars, params={"start": "2012-06-01"})

MLflow leaves the model's code first on ``sys.path``. That code is only the
modules loading the model runs (``model_code``), so a process that loads a model
and then runs gatecast's stages (and starts their worker processes) should load
it with ``pipelines.tracking.store.load_model``, which puts ``sys.path`` back.

``bars`` are the bars as a user has them: a ``date`` column (or a
DatetimeIndex) and ``open, high, low, close, volume``, names in any case
(``Date,Open,High,Low,Close,Adj Close,Volume`` as the bundled CSV files have
them; other columns are ignored), volume integer or not. The result has
``date``, ``<name>`` (the forecast of the next close: the mean of the seeds of a
stochastic forecaster) and, for a stochastic one, ``<name>_seed<k>``, one row
per forecast date. A missing column is a one-line
``ValueError`` naming it.

The signature has no input schema on purpose: MLflow matches input columns by
exact name and refuses int64 for a double column, so it would turn away the
bundled CSV as read; ``bars_from_input`` checks the input instead. The input
example shows the expected columns; the output schema and the ``start``
param are in the signature.

This module and ``pipelines.tracking`` are the only ones that import mlflow.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature, infer_signature

from pipelines.common.code import ROOT, code_files

BAR_COLUMNS = ("open", "high", "low", "close", "volume")

# The model's one artifact: a folder with the seeds' forecasters, saved as seed0, seed1, ...,
# and FORECASTER_FILE, which names the forecaster and its class.
SEEDS_ARTIFACT = "seeds"
FORECASTER_FILE = "forecaster.json"

# Pinned from this environment, which spares MLflow its requirement inference
# (a subprocess that imports TensorFlow).
_REQUIREMENTS = (
    "mlflow",
    "tensorflow",
    "keras",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "pyyaml",
)


def ensemble_forecast(
    name: str,
    forecasters: Sequence[Any],
    bars: pd.DataFrame,
    start: pd.Timestamp | None = None,
    stochastic: bool = True,
) -> pd.DataFrame:
    """Forecasts of each seed (``<name>_seed<k>``) and their mean (``<name>``); a
    deterministic forecaster's one column ``<name>``.

    The mean is the expression the train stage builds its ``<name>`` column
    with, so the logged model reproduces it.
    """
    if not stochastic:
        return pd.DataFrame({name: forecasters[0].predict(bars, start)})
    columns = {f"{name}_seed{k}": f.predict(bars, start) for k, f in enumerate(forecasters)}
    frame = pd.DataFrame(columns)
    frame.insert(0, name, frame.mean(axis=1))
    return frame


def bars_from_input(model_input: pd.DataFrame) -> pd.DataFrame:
    """Float bars ``open, high, low, close, volume`` by date from a pyfunc input.

    Column names in any case, surrounding spaces ignored; the dates from a
    ``date`` column or the frame's DatetimeIndex; other columns dropped.
    """
    frame = pd.DataFrame(model_input)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    wanted = "date, open, high, low, close, volume (any case)"
    if "date" in frame.columns:
        try:
            dates = pd.DatetimeIndex(pd.to_datetime(frame.pop("date")), name="date")
        except (ValueError, TypeError) as err:
            raise ValueError(f"gatecast model: the 'date' column is not dates: {err}") from None
        frame.index = dates
    elif isinstance(frame.index, pd.DatetimeIndex):
        frame.index = frame.index.rename("date")
    else:
        raise ValueError(
            f"gatecast model: the input has no 'date' column and no DatetimeIndex; "
            f"it needs {wanted}"
        )
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"gatecast model: the input lacks column(s) {', '.join(missing)}; it needs "
            f"{wanted}, and has {', '.join(map(str, frame.columns)) or 'none'}"
        )
    return frame[list(BAR_COLUMNS)].astype(np.float64)


class ForecasterPyfuncModel(mlflow.pyfunc.PythonModel):
    """The final walk-forward fold's forecaster (each seed) as an MLflow pyfunc model.

    ``predict(bars, params={"start": "YYYY-MM-DD"})`` takes bars with a ``date``
    column (or a DatetimeIndex) and ``open, high, low, close, volume`` in any
    case (``bars_from_input``), and returns one row per
    forecast date ``t >= start`` (every date with enough history when
    ``start`` is empty): ``date``, ``<name>`` (the forecast of the next close,
    the mean of the seeds) and ``<name>_seed<k>`` (``ensemble_forecast``). A
    forecast for ``t`` reads the bars up to ``t`` only.
    """

    def load_context(self, context: Any) -> None:
        seeds = Path(context.artifacts[SEEDS_ARTIFACT])
        about = json.loads((seeds / FORECASTER_FILE).read_text())
        module, _, qualname = about["class"].partition(":")
        cls = getattr(importlib.import_module(module), qualname)
        if cls.device:
            from pipelines.execution.runtime import import_tensorflow

            import_tensorflow()  # without TensorFlow's start-up lines (pipelines.execution.runtime)
        folders = sorted(seeds.glob("seed*"), key=lambda p: int(p.name.removeprefix("seed")))
        self.name, self.stochastic = about["name"], bool(cls.stochastic)
        self.forecasters = [cls.load(folder) for folder in folders]

    # MLflow infers no schema from a DataFrame hint; the signature logged with the model holds it.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        start = (params or {}).get("start") or None
        bars = bars_from_input(model_input)
        frame = ensemble_forecast(
            self.name,
            self.forecasters,
            bars,
            pd.Timestamp(start) if start else None,
            self.stochastic,
        )
        return frame.rename_axis("date").reset_index()


def save(
    directory: Path,
    name: str,
    cls: type,
    seeds: Sequence[bytes],
    example_bars: pd.DataFrame,
    mlflow_model: Model,
) -> None:
    """Write the seeds as a pyfunc model in ``directory`` (signature, input example, code).

    The signature is built from the example and the output's shape, without
    running the model (tests compare it with what ``predict`` returns).

    Args:
        directory: A folder that does not exist yet.
        name: The forecaster's name in the config (names the output columns).
        cls: The forecaster's class (``load`` reads each seed back).
        seeds: Each seed's fitted forecaster as its ``to_bytes``, in seed order
            (written with ``cls.save_bytes``: the driver rebuilds no model).
        example_bars: A short slice of bars, the input example.
        mlflow_model: MLflow's model metadata (which run and logged model it belongs to).
    """
    folder = directory.parent / f"{directory.name}-{SEEDS_ARTIFACT}"
    for k, data in enumerate(seeds):
        cls.save_bytes(data, folder / f"seed{k}")
    about = {"name": name, "class": f"{cls.__module__}:{cls.__qualname__}"}
    (folder / FORECASTER_FILE).write_text(json.dumps(about))
    example = example_bars.rename_axis("date").reset_index()
    output = {"date": example["date"].iloc[-1:].to_numpy(), name: [0.0]}
    if cls.stochastic:
        output.update({f"{name}_seed{k}": [0.0] for k in range(len(seeds))})
    # The pickled object is a bare instance of this module's class, whose code ships with
    # the model: MLflow's generic warning about pickled models says nothing useful here.
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    pyfunc_log.setLevel(logging.ERROR)
    try:
        code = directory.parent / f"{directory.name}-code"
        _save_model(directory, folder, example, output, mlflow_model, _code_paths(cls, code))
    finally:
        pyfunc_log.setLevel(level)


@functools.cache
def model_code(module: str) -> tuple[Path, ...]:
    """The project's files that loading a model of a forecaster from ``module`` runs:
    this module's imports and the forecaster's (``pipelines.common.code``), which is
    what the model ships as its code (a forecaster from an installed package of its
    own brings only this module's; that package must be installed where it is loaded)."""
    return tuple(sorted({*code_files(__name__), *code_files(module)}))


def _code_paths(cls: type, into: Path) -> list[str]:
    """``model_code`` as the top-level package folders MLflow copies into the model.

    The folders under ``into`` hold links to the project's files (MLflow copies
    what they point to): a model carries the few dozen files it runs, not the
    whole of ``core``, ``models`` and ``pipelines``, which are copied (and, to a
    team server, uploaded) file by file for every model.
    """
    files = model_code(cls.__module__)
    for path in files:
        link = into / path.relative_to(ROOT)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    return [str(into / top) for top in sorted({p.relative_to(ROOT).parts[0] for p in files})]


def _save_model(
    directory: Path,
    seeds: Path,
    example: pd.DataFrame,
    output: dict,
    mlflow_model: Model,
    code_paths: list[str],
) -> None:
    mlflow.pyfunc.save_model(
        str(directory),
        python_model=ForecasterPyfuncModel(),
        artifacts={SEEDS_ARTIFACT: str(seeds)},
        code_paths=code_paths,
        input_example=(example, {"start": ""}),
        signature=_signature(example, output),
        pip_requirements=list(_pip_requirements()),
        mlflow_model=mlflow_model,
    )


def _signature(example: pd.DataFrame, output: dict) -> ModelSignature:
    """The output schema and the ``start`` param; no input schema (see the module docstring)."""
    inferred = infer_signature(example, pd.DataFrame(output), params={"start": ""})
    return ModelSignature(inputs=None, outputs=inferred.outputs, params=inferred.params)


@functools.cache
def _pip_requirements() -> tuple[str, ...]:
    out = []
    for name in _REQUIREMENTS:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(name)
    return tuple(out)


def log_and_register(
    store: mlflow.MlflowClient,
    run_id: str,
    experiment_id: str,
    name: str,
    forecaster: str,
    cls: type,
    seeds: Sequence[bytes],
    example_bars: pd.DataFrame,
    *,
    params: Mapping[str, str],
    tags: Mapping[str, str],
    description: str,
    version_tags: Mapping[str, str] | None = None,
    version_description: str | None = None,
) -> str:
    """Log the seeds of ``forecaster`` (each one's ``to_bytes``, of class ``cls``) as a
    logged model of run ``run_id``, add a version of the registered model ``name``;
    return its number.

    The steps of ``mlflow.pyfunc.log_model`` through the client, on a run the
    caller opened, without its check that loads the model back and predicts
    (the tests load it in a fresh process and compare the forecasts).
    ``tags`` go on the registered model (when it is created), the logged
    model and the version; ``version_tags`` (its lineage) and
    ``version_description`` on the version only.
    """
    logged = store.create_logged_model(
        experiment_id, name="model", source_run_id=run_id, tags=dict(tags), params=dict(params)
    )
    try:
        with tempfile.TemporaryDirectory(prefix="gatecast-model-") as tmp:
            meta = Model(
                artifact_path=logged.artifact_location,
                run_id=run_id,
                model_uuid=logged.model_id,
                model_id=logged.model_id,
            )
            save(Path(tmp) / "model", forecaster, cls, seeds, example_bars, meta)
            store.log_model_artifacts(logged.model_id, str(Path(tmp) / "model"))
    except BaseException:
        with contextlib.suppress(Exception):
            store.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    store.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    store.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])

    def new_version() -> str:
        created = store.create_model_version(
            name,
            source=f"models:/{logged.model_id}",
            run_id=run_id,
            model_id=logged.model_id,
            tags={**tags, **(version_tags or {}), "gatecast.seeds": str(len(seeds))},
            description=version_description,
        )
        return str(created.version)

    try:  # the registered model exists after the first train run: no look-up first
        return new_version()
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise
    with contextlib.suppress(MlflowException):  # another process may have just created it
        store.create_registered_model(name, tags=dict(tags), description=description)
    return new_version()
