"""gatecast pipelines: the stages that make runs (data, train, backtest, report, run).

Imports flow one way: ``pipelines -> strategies, models -> core`` (checked by
the import-linter contracts in pyproject.toml). Only ``pipelines.tracking`` and
the registered model's wrapper ``pipelines.tracking.pyfunc_model`` import MLflow; units
of work (``pipelines.execution.units``, ``pipelines.execution.backtest_unit``) never do: the
driver records their results.
"""
