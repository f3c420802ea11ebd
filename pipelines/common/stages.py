"""The stages of one job, in order, and the folder each writes: the one list.

Read by the stage modules and the report (where a stage's files are), by
``pipelines.stages`` (the commands), and by ``pipelines.stages.depends``, which
writes the Makefile's stage rules from it. Imports nothing, so make can read it
before the virtual environment exists.
"""

from __future__ import annotations

#: The stages of one job, in order: each reads the files of the ones before it.
#: ``search`` tunes a forecaster; with ``search.trials: 0`` (the default) it is instant.
PIPELINE = ("data", "search", "train", "backtest", "report")

#: stage -> its folder under the run directory (``build/<name>/``), whose
#: ``summary.json`` is written last, so its presence means the stage finished. The report
#: writes under ``report.directory`` instead (its ``index.html``).
FOLDERS = {"data": "data", "search": "search", "train": "forecasts", "backtest": "backtests"}
