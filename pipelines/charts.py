"""Report charts, drawn with matplotlib's object API on the Agg canvas (no display needed).

Every function returns a ``matplotlib.figure.Figure`` built without pyplot, so
no global figure state leaks between charts and nothing depends on a GUI
backend; ``save_png`` writes one to disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Fixed order and colours, so one strategy looks the same in every chart.
STRATEGY_ORDER = (
    "lstm",
    "sma",
    "ema",
    "kalman",
    "ols",
    "random_walk",
    "sma_crossover",
    "ema_crossover",
    "buy_and_hold",
)
_COLOURS = {
    "lstm": "#d62728",
    "sma": "#1f77b4",
    "ema": "#17becf",
    "kalman": "#9467bd",
    "ols": "#8c564b",
    "random_walk": "#7f7f7f",
    "sma_crossover": "#2ca02c",
    "ema_crossover": "#bcbd22",
    "buy_and_hold": "#000000",
}
_GATES = ("forget", "input", "output", "cell")
DPI = 100


def colour(strategy: str) -> str:
    """The colour of a strategy in every chart (LSTM seeds share the LSTM's)."""
    if strategy.startswith("lstm"):
        return _COLOURS["lstm"]
    return _COLOURS.get(strategy, "#e377c2")


def ordered(names: Sequence[str]) -> list[str]:
    """Strategy names in report order; unknown names (e.g. LSTM seeds) last, sorted."""
    known = [n for n in STRATEGY_ORDER if n in names]
    return known + sorted(n for n in names if n not in STRATEGY_ORDER)


def _style(strategy: str) -> dict[str, object]:
    if strategy == "lstm":
        return {"color": colour(strategy), "linewidth": 2.2, "zorder": 5}
    if strategy == "buy_and_hold":
        return {"color": colour(strategy), "linewidth": 1.6, "linestyle": "--", "zorder": 4}
    return {"color": colour(strategy), "linewidth": 1.0, "alpha": 0.85}


def _new(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG and return the path."""
    path = Path(path)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def equity_chart(equity: Mapping[str, pd.Series], title: str) -> Figure:
    """Equity curves of every strategy, rebased to 1 at the first common date."""
    fig = _new(11, 4.8)
    ax = fig.add_subplot()
    for name in ordered(list(equity)):
        series = equity[name].dropna()
        if series.empty or series.iloc[0] == 0:
            continue
        ax.plot(series.index, series / series.iloc[0], label=name, **_style(name))
    ax.axhline(1.0, color="#999999", linewidth=0.6)
    ax.set_title(title)
    ax.set_ylabel("growth of 1")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncol=3, frameon=False)
    return fig


def drawdown_chart(equity: Mapping[str, pd.Series], title: str) -> Figure:
    """Drawdown from the running peak of each equity curve, in percent."""
    fig = _new(11, 3.6)
    ax = fig.add_subplot()
    for name in ordered(list(equity)):
        series = equity[name].dropna()
        if series.empty:
            continue
        drawdown = series / series.cummax() - 1.0
        ax.plot(drawdown.index, 100 * drawdown, label=name, **_style(name))
    ax.set_title(title)
    ax.set_ylabel("drawdown (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, ncol=3, frameon=False)
    return fig


def forecast_chart(
    close: pd.Series, forecasts: Mapping[str, pd.Series], title: str, zoom: int = 60
) -> Figure:
    """Next-close forecasts against the close they forecast.

    A forecast made at ``t`` is drawn at ``t + 1``, the bar whose close it
    forecasts, so the lines are directly comparable with the actual close. The
    lower panel zooms into the last ``zoom`` bars.
    """
    fig = _new(11, 6.4)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 2])
    dates = close.index
    for ax, span in ((top, slice(None)), (bottom, slice(-zoom, None))):
        actual = close.iloc[span]
        ax.plot(actual.index, actual, color="#000000", linewidth=1.4, label="actual close")
        for name in ordered(list(forecasts)):
            f = forecasts[name].reindex(dates)
            shifted = pd.Series(f.to_numpy()[:-1], index=dates[1:]).iloc[span].dropna()
            if shifted.empty:
                continue
            style = _style(name)
            style.pop("linestyle", None)
            ax.plot(shifted.index, shifted, label=f"{name} forecast", **style)
        ax.grid(alpha=0.3)
    top.set_title(title)
    top.set_ylabel("price")
    bottom.set_ylabel(f"last {zoom} bars")
    top.legend(loc="upper left", fontsize=8, ncol=4, frameon=False)
    return fig


def gates_chart(
    gates: pd.DataFrame,
    close: pd.Series | None,
    title: str,
    fold_starts: Sequence[pd.Timestamp] = (),
) -> Figure:
    """The LSTM's forget, input and output gates and its cell state over time.

    Args:
        gates: one row per date with columns ``forget``, ``input``, ``output``
            (sigmoid gates in [0, 1], averaged over units) and ``cell``.
        close: the instrument's close on the same dates, drawn on top for context.
        title: chart title.
        fold_starts: walk-forward refits (a new model starts there), drawn as
            vertical lines.
    """
    present = [g for g in _GATES if g in gates.columns]
    if not present:
        raise ValueError(f"gates need columns among {_GATES}, got {list(gates.columns)}")
    rows = len(present) + (1 if close is not None else 0)
    fig = _new(11, 1.7 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, 1, sharex=True))
    k = 0
    if close is not None:
        c = close.reindex(gates.index)
        axes[0].plot(c.index, c, color="#000000", linewidth=1.0)
        axes[0].set_ylabel("close")
        k = 1
    palette = {"forget": "#1f77b4", "input": "#2ca02c", "output": "#ff7f0e", "cell": "#9467bd"}
    for gate, ax in zip(present, axes[k:], strict=True):
        values = gates[gate]
        ax.plot(values.index, values, color=palette[gate], linewidth=0.9)
        if gate != "cell":
            ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(gate if gate == "cell" else f"{gate} gate")
        ax.grid(alpha=0.3)
    for ax in axes:
        for start in fold_starts:
            ax.axvline(start, color="#999999", linewidth=0.8, linestyle=":")
    axes[0].set_title(title)
    return fig


def cost_sweep_chart(
    sweep: pd.DataFrame, title: str, break_even: Mapping[str, float | None] | None = None
) -> Figure:
    """Annualised Sharpe ratio of each strategy against the commission (bp).

    Args:
        sweep: index = commission in bp, one column per strategy.
        title: chart title.
        break_even: optional break-even commission per strategy, marked with a dot.
    """
    fig = _new(11, 4.4)
    ax = fig.add_subplot()
    for name in ordered(list(sweep.columns)):
        style = _style(name)
        ax.plot(sweep.index, sweep[name], marker="o", markersize=3, label=name, **style)
        be = (break_even or {}).get(name)
        if be is not None and name in sweep:
            y = float(np.interp(be, sweep.index.to_numpy(float), sweep[name].to_numpy(float)))
            ax.plot([be], [y], marker="o", markersize=8, markerfacecolor="none", color=colour(name))
    ax.axhline(0.0, color="#999999", linewidth=0.6)
    ax.set_title(title)
    ax.set_xlabel("commission per trade (bp of traded value)")
    ax.set_ylabel("Sharpe ratio (annualised)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, ncol=3, frameon=False)
    return fig


def loss_chart(histories: Sequence[Sequence[Mapping[str, list[float]]]], title: str) -> Figure:
    """Training and validation loss per epoch: one panel per fold, one line pair per seed.

    Args:
        histories: ``histories[fold][seed]`` = ``{"loss": [...], "val_loss": [...]}``.
        title: Figure title.
    """
    folds = len(histories)
    width, height = 3.2 * folds + 1, 3.4
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins (inches) rather than constrained layout, which costs more
    # than drawing the lines: this chart is rendered once per instrument.
    fig.subplots_adjust(
        left=0.75 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.65 / height
    )
    axes = np.atleast_1d(fig.subplots(1, folds, sharey=True, gridspec_kw={"wspace": 0.06}))
    for number, (ax, seeds) in enumerate(zip(axes, histories, strict=True)):
        for k, history in enumerate(seeds):
            epochs = np.arange(1, len(history["loss"]) + 1)
            ax.plot(epochs, history["loss"], color=f"C{k}", label=f"seed {k} train")
            ax.plot(
                epochs, history["val_loss"], color=f"C{k}", linestyle="--", label=f"seed {k} val"
            )
        ax.set_title(f"fold {number}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("MSE (scaled returns)")
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(title)
    return fig
