"""The start of a benchmark's child process that times importing the tracking code fairly.

The child imports what ``python -m pipelines <stage>`` imports, the way it
imports it: with the cyclic garbage collector paused
(``pipelines.cli.loading_code``), as ``pipelines.__main__`` and
``pipelines.run`` import a stage. The stage's own modules are imported
first: what they share with the tracking code (pydantic, yaml, ...) is loaded
whether or not the stage tracks anything, so only what ``pipelines.tracking``
adds is charged to MLflow. mlflow itself is imported by the writer process
(``pipelines.recorder``), not here; the driver records whether the stage's
process imported it after all (``mlflow_in_stage_process``).
"""

from __future__ import annotations

# What the train stage imports besides numpy, pandas, TensorFlow and Keras.
TRAIN_STAGE_MODULES = [
    "pipelines.cli",
    "pipelines.charts",
    "pipelines.data",
    "pipelines.outputs",
    "pipelines.runtime",
    "pipelines.walkforward",
    "models.lstm",
    "models.baselines",
    "models.metrics",
]
# What the whole job (``pipelines run``) imports on top of that.
ALL_STAGE_MODULES = [
    *TRAIN_STAGE_MODULES,
    "pipelines.backtest",
    "pipelines.report",
    "pipelines.stats",
]


def driver_head(stage_modules: list[str], entry: str) -> str:
    """Python source that sets ``t0``, ``t1``, ``t2`` and starts the tracking code.

    As ``python -m pipelines`` starts a tracked stage: the tracking code and
    the writer process first, then TensorFlow and the stage's modules, which
    the writer's start-up overlaps. ``t1 - t0``: NumPy, pandas, PyYAML and
    the config module, which the stage needs whether or not it tracks; ``t2 -
    t1``: ``import pipelines.tracking`` and ``tracking.start_writer()`` (no
    mlflow in this process). Then TensorFlow, Keras, ``stage_modules`` and
    ``entry`` (the stage's module, e.g. ``pipelines.run``), imported as ``stage``.
    """
    imports = "\n".join(f"    import {module}" for module in stage_modules)
    return f"""
import importlib, json, sys, time
from pipelines.cli import loading_code
t0 = time.perf_counter()
with loading_code():
    import numpy, pandas, yaml, pipelines.config
    t1 = time.perf_counter()
    from pipelines import tracking
    tracking.start_writer()
    t2 = time.perf_counter()
    import tensorflow, keras
{imports}
    stage = importlib.import_module({entry!r})
    assert "mlflow" not in sys.modules, "a stage module imported mlflow"
"""
