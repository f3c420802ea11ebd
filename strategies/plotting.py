"""Backtrader's own chart of a backtest, saved as a PNG on a machine without a display.

Importing ``backtrader.plot`` calls ``matplotlib.use("TkAgg")``, which fails
(or opens windows) on a headless machine, so this module switches matplotlib
back to the file-only Agg backend right after that import. It never shows a
window: the plotter's ``show`` is a no-op and every figure is closed after it
is saved.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import matplotlib


def _plotter_class():
    import backtrader.plot

    # backtrader.plot has just asked for TkAgg; charts here only go to files.
    matplotlib.use("Agg", force=True)

    class FilePlot(backtrader.plot.Plot):
        """Backtrader's plotter that never opens a window."""

        def show(self):
            pass

    return FilePlot


def save_chart(
    result,
    path: str | Path,
    start: _dt.date | None = None,
    end: _dt.date | None = None,
    width: float = 16.0,
    height: float = 9.0,
    dpi: int = 100,
    style: str = "line",
) -> Path:
    """Save Backtrader's chart of a finished backtest as a PNG and return its path.

    Args:
        result: a ``BacktestResult`` from ``run_backtest(..., keep_cerebro=True)``.
        path: the PNG file to write (folders are created).
        start, end: dates bounding the chart (default: the measured period).
        width, height, dpi: figure size in inches and resolution.
        style: ``line``, ``bar`` or ``candle`` for the price panel.
    """
    cerebro = getattr(result, "cerebro", None)
    if cerebro is None:
        raise ValueError("save_chart needs run_backtest(..., keep_cerebro=True)")
    import matplotlib.pyplot as plt

    if start is None and len(result.equity):
        start = result.equity.index[0].to_pydatetime()
    if end is None and len(result.equity):
        end = result.equity.index[-1].to_pydatetime() + _dt.timedelta(days=1)
    plotter = _plotter_class()(style=style)
    figures = cerebro.plot(plotter=plotter, iplot=False, start=start, end=end)
    flat = [fig for group in figures if group for fig in group]
    if not flat:
        raise ValueError("Backtrader drew no chart (was the engine run with exactbars?)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig = flat[0]
        fig.set_size_inches(width, height)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    finally:
        for fig in flat:
            plt.close(fig)
    return path
