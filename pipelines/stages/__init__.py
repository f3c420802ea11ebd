"""The stages, in pipeline order, and the commands of ``python -m pipelines``: one registry.

Read by the entry point (``pipelines.__main__``), the whole-job stage
(``pipelines.stages.run``) and the Makefile's derived prerequisites
(``pipelines.stages.depends``). Imports only the stage list (``pipelines.common.stages``),
so each of them can read it cheaply.
"""

from __future__ import annotations

from pipelines.common.stages import PIPELINE

__all__ = ["COMMANDS", "PIPELINE"]

# command -> (module with ``main(argv) -> int``, one-line help)
COMMANDS = {
    "data": ("pipelines.stages.data", "load, validate and cache the bars; print a summary"),
    "search": (
        "pipelines.stages.search",
        "hyperparameter search of the LSTM (search.trials), in MLflow",
    ),
    "train": (
        "pipelines.stages.train",
        "walk-forward forecasts for every forecaster, tracked in MLflow",
    ),
    "backtest": ("pipelines.stages.backtest", "backtest every strategy on the saved forecasts"),
    "report": ("pipelines.stages.report", "league table, statistics and the HTML report"),
    "run": ("pipelines.stages.run", "the whole job: data, search, train, backtest, report"),
    "check": ("pipelines.stages.check", "look-ahead analysis of every forecaster and strategy"),
}
