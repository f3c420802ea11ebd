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
# What the whole job (``pipelines run``) imports on top of that: the backtest and report
# stages' own modules, not the stage modules themselves, which import the tracking code.
ALL_STAGE_MODULES = [
    *TRAIN_STAGE_MODULES,
    "pipelines.execution.backtest_plan",
    "pipelines.execution.backtest_unit",
    "pipelines.execution.portfolio_unit",
    "pipelines.execution.unit_cache",
    "strategies.engine",
    "pipelines.report.html",
    "pipelines.report.inputs",
    "pipelines.report.multiple",
    "pipelines.report.stats",
    "pipelines.report.tables",
    "pipelines.report.tearsheet",
    "pipelines.report.verdict",
]


def driver_head(stage_modules: list[str], entry: str) -> str:
    """Python source that sets ``t0``, ``t1``, ``t2`` and imports ``tracking`` (and its
    ``overhead`` timer) and ``stage``.

    ``t1 - t0``: NumPy, pandas, PyYAML, the config module, TensorFlow, Keras
    and ``stage_modules``, which the stage needs whether or not it tracks;
    ``t2 - t1``: ``import pipelines.tracking`` (mlflow with it). Then
    ``entry`` (the stage's module, e.g. ``pipelines.stages.run``), imported as ``stage``.
    A module of ``stage_modules`` that loads mlflow would hide its import in ``t1 - t0``:
    the child then stops with an error naming it.
    """
    return f"""
import importlib, json, sys, time
t0 = time.perf_counter()
import numpy, pandas, yaml, pipelines.config
import tensorflow, keras
for _module in {stage_modules!r}:
    importlib.import_module(_module)
    if "mlflow" in sys.modules:
        sys.exit(f"benchmark set-up: {{_module}} imports mlflow, which would then not be "
                 "counted as MLflow's time: list the modules it imports instead")
t1 = time.perf_counter()
from pipelines import tracking
from pipelines.tracking import overhead
t2 = time.perf_counter()
stage = importlib.import_module({entry!r})
"""
