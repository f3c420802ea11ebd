"""The start of a benchmark's child process that times importing the tracking code fairly.

The child imports what ``python -m pipelines <stage>`` imports, the stage's
own modules first: what they share with the tracking code (pydantic, yaml,
...) is loaded whether or not the stage tracks anything, so only what
``pipelines.tracking`` adds (mlflow and its dependencies) is charged to MLflow.
"""

from __future__ import annotations

# What the train stage imports besides numpy, pandas, TensorFlow and Keras.
TRAIN_STAGE_MODULES = [
    "pipelines.cli",
    "pipelines.report.charts",
    "pipelines.sources.load",
    "pipelines.common.outputs",
    "pipelines.execution.runtime",
    "pipelines.execution.walkforward",
    "models.lstm",
    "models.baselines",
    "models.metrics",
]
# What the whole job (``pipelines run``) imports on top of that.
ALL_STAGE_MODULES = [
    *TRAIN_STAGE_MODULES,
    "pipelines.stages.backtest",
    "pipelines.stages.report",
    "pipelines.report.stats",
]


def driver_head(stage_modules: list[str], entry: str) -> str:
    """Python source that sets ``t0``, ``t1``, ``t2`` and imports ``tracking`` (and its
    ``overhead`` timer) and ``stage``.

    ``t1 - t0``: NumPy, pandas, PyYAML, the config module, TensorFlow, Keras
    and ``stage_modules``, which the stage needs whether or not it tracks;
    ``t2 - t1``: ``import pipelines.tracking`` (mlflow with it). Then
    ``entry`` (the stage's module, e.g. ``pipelines.stages.run``), imported as ``stage``.
    """
    imports = "\n".join(f"import {module}" for module in stage_modules)
    return f"""
import importlib, json, sys, time
t0 = time.perf_counter()
import numpy, pandas, yaml, pipelines.config
import tensorflow, keras
{imports}
t1 = time.perf_counter()
from pipelines import tracking
from pipelines.tracking import overhead
t2 = time.perf_counter()
stage = importlib.import_module({entry!r})
"""
