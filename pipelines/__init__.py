"""gatecast pipelines: the stages that make runs (data, train, backtest, report, run).

Imports flow one way: ``pipelines -> strategies, models``. Only
``pipelines.recorder`` talks to MLflow; the stages call ``pipelines.tracking``,
which hands the recorder its work (in a writer process by default).
"""
