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


def chart_figure(
    result,
    start: _dt.date | None = None,
    end: _dt.date | None = None,
    style: str = "line",
):
    """Backtrader's chart of a finished backtest as a matplotlib figure, with dates under
    its bottom panel (close it with ``matplotlib.pyplot.close`` when done).

    Args:
        result: a ``BacktestResult`` from ``run_backtest(..., keep_cerebro=True)``.
        start, end: dates bounding the chart (default: the measured period).
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
    for fig in flat[1:]:
        plt.close(fig)
    _date_axis(flat[0], plotter)
    return flat[0]


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
    """Save Backtrader's chart of a finished backtest (``chart_figure``) as a PNG and
    return its path.

    Args:
        result: a ``BacktestResult`` from ``run_backtest(..., keep_cerebro=True)``.
        path: the PNG file to write (folders are created).
        start, end: dates bounding the chart (default: the measured period).
        width, height, dpi: figure size in inches and resolution.
        style: ``line``, ``bar`` or ``candle`` for the price panel.
    """
    import matplotlib.pyplot as plt

    fig = chart_figure(result, start, end, style)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.set_size_inches(width, height)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _date_axis(fig, plotter) -> None:
    """Dates under the bottom panel: Backtrader plots against bar positions and, with
    today's matplotlib, leaves that axis without labels."""
    import backtrader as bt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    xreal = list(getattr(plotter.pinf, "xreal", []))
    if not xreal or not fig.axes:
        return

    def label(x: float, _pos: int) -> str:
        k = int(round(x))
        return bt.num2date(xreal[k]).strftime("%Y-%m-%d") if 0 <= k < len(xreal) else ""

    bottom = max(fig.axes, key=lambda ax: -ax.get_position().y0)
    bottom.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    bottom.xaxis.set_major_formatter(FuncFormatter(label))
    bottom.tick_params(axis="x", labelbottom=True, labelsize=8)
    for tick in bottom.get_xticklabels():
        tick.set_visible(True)
