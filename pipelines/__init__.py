"""gatecast pipelines: the stages that make runs (data, train, backtest, report, run).

Imports flow one way: ``pipelines -> strategies, models``. Only
``pipelines.tracking`` imports mlflow.
"""
