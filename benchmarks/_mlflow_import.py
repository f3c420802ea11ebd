"""The start of a benchmark's child process that times importing MLflow fairly.

The stage's own modules are imported first: what they share with mlflow
(pydantic, yaml, ...) is loaded whether or not the stage tracks anything, so
only what ``pipelines.tracking`` adds (mlflow, mlflow.pyfunc and their
imports) is charged to MLflow.
"""

from __future__ import annotations


def driver_head(stage_modules: list[str]) -> str:
    """Python source that sets ``t0``, ``t1``, ``t2`` and imports ``pipelines.tracking``.

    ``t1 - t0``: NumPy, pandas, TensorFlow, Keras and ``stage_modules``;
    ``t2 - t1``: ``import pipelines.tracking``.
    """
    imports = "\n".join(f"import {module}" for module in stage_modules)
    return f"""
import json, sys, time
t0 = time.perf_counter()
import numpy, pandas, tensorflow, keras
{imports}
assert "mlflow" not in sys.modules, "a stage module imported mlflow before the timing"
t1 = time.perf_counter()
from pipelines import tracking  # mlflow, mlflow.pyfunc and what they import
t2 = time.perf_counter()
"""
