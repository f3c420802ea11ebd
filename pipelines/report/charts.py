"""Report charts, drawn with matplotlib's object API on the Agg canvas (no display needed).

Every function returns a ``matplotlib.figure.Figure`` built without pyplot, so
no global figure state leaks between charts and nothing depends on a GUI
backend; ``save_png`` writes one to disk.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipelines.common.strategy_names import SEED_COLUMN

# Fixed order, colour and dash of each strategy: one mapping for every chart, PNG and
# interactive. Colours are the Okabe-Ito palette (distinguishable with the common colour
# vision deficiencies), with its yellow darkened to read on white and a grey for the random
# walk; strategies that share a hue family also differ by dash, so nine lines stay apart.
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
STYLES: dict[str, tuple[str, str]] = {
    "lstm": ("#D55E00", "solid"),  # vermillion
    "sma": ("#0072B2", "solid"),  # blue
    "ema": ("#56B4E9", "dashed"),  # sky blue
    "kalman": ("#CC79A7", "solid"),  # reddish purple
    "ols": ("#009E73", "solid"),  # bluish green
    "random_walk": ("#999999", "dotted"),  # grey
    "sma_crossover": ("#E69F00", "dashdot"),  # orange
    "ema_crossover": ("#B59A00", "dashed"),  # Okabe-Ito yellow, darkened
    "buy_and_hold": ("#000000", "dashed"),  # black
}
# Any other name (a variant, a forecaster or strategy of the user's): a colour of a second
# qualitative palette (Tableau 10, without its grey) and a dash, chosen from a hash of the
# name, so that a name keeps its look across charts and runs, and nothing here lists it.
_MORE_COLOURS = (
    "#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F",
    "#EDC948", "#B07AA1", "#FF9DA7", "#9C755F",
)  # fmt: skip
_MORE_DASHES = ("solid", "dashed", "dotdash")
# Bokeh's dash names -> matplotlib's
MPL_DASH = {
    "solid": "-",
    "dashed": "--",
    "dotted": ":",
    "dashdot": "-.",
    "dotdash": (0, (6, 2, 1, 2)),
}
GATES = ("forget", "input", "output", "cell")
GATE_COLOURS = {"forget": "#0072B2", "input": "#009E73", "output": "#E69F00", "cell": "#CC79A7"}
DPI = 100


def style(strategy: str) -> tuple[str, str]:
    """(colour, Bokeh dash name) of a strategy; a forecaster's seeds (``<name>_seed<k>``)
    share its colour, dotted."""
    if seed := SEED_COLUMN.fullmatch(strategy):
        return style(seed.group(1))[0], "dotted"
    if strategy in STYLES:
        return STYLES[strategy]
    code = zlib.crc32(strategy.encode())
    return _MORE_COLOURS[code % len(_MORE_COLOURS)], _MORE_DASHES[code // 16 % len(_MORE_DASHES)]


def colour(strategy: str) -> str:
    """The colour of a strategy in every chart (LSTM seeds share the LSTM's)."""
    return style(strategy)[0]


def ordered(names: Sequence[str]) -> list[str]:
    """Strategy names in report order; other names (seeds, variants, a user's) last, sorted."""
    known = [n for n in STRATEGY_ORDER if n in names]
    return known + sorted(n for n in names if n not in STRATEGY_ORDER)


class Emphasis(NamedTuple):
    """Which lines a chart draws over the others: the report's candidate (thickest) and its
    benchmark (``report.candidate``, ``report.benchmark``); roles, not names."""

    candidate: str = ""
    benchmark: str = ""

    def width(self, strategy: str, base: float = 1.3) -> float:
        """Line width: the candidate's ~1.8x, the benchmark's ~1.4x the others'."""
        if strategy == self.candidate:
            return round(base * 1.8, 2)
        return round(base * 1.4, 2) if strategy == self.benchmark else base


def _style(strategy: str, emphasis: Emphasis | None = None) -> dict[str, object]:
    hue, dash = style(strategy)
    emphasis = emphasis or Emphasis()
    kwargs: dict[str, object] = {"color": hue, "linestyle": MPL_DASH[dash]}
    width = emphasis.width(strategy, 1.2)
    if strategy == emphasis.candidate:
        return {**kwargs, "linewidth": width, "zorder": 5}
    if strategy == emphasis.benchmark:
        return {**kwargs, "linewidth": width, "zorder": 4}
    return {**kwargs, "linewidth": width, "alpha": 0.9}


def new_png(
    width: float, height: float, *, left: float = 0.8, right: float = 0.25, hspace: float = 0.3
) -> Figure:
    """A figure with fixed margins (inches: ``left`` holds the y tick labels and label,
    ``right`` a legend beside the axes; ``hspace`` is between rows, a share of a row's
    height), not constrained layout: the layout engine costs about as much as drawing
    the lines, and the report draws dozens of these."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=0.55 / height, top=1 - 0.4 / height,
        hspace=hspace,
    )  # fmt: skip
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG and return the path."""
    path = Path(path)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def equity_chart(
    equity: Mapping[str, pd.Series], title: str, emphasis: Emphasis | None = None
) -> Figure:
    """Equity curves of every strategy, rebased to 1 at the first common date."""
    fig = new_png(11, 4.8)
    ax = fig.add_subplot()
    for name in ordered(list(equity)):
        series = equity[name].dropna()
        if series.empty or series.iloc[0] == 0:
            continue
        ax.plot(series.index, series / series.iloc[0], label=name, **_style(name, emphasis))
    ax.axhline(1.0, color="#999999", linewidth=0.6)
    ax.set_title(title)
    ax.set_ylabel("growth of 1")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncol=3, frameon=False)
    return fig


def drawdown_chart(
    equity: Mapping[str, pd.Series], title: str, emphasis: Emphasis | None = None
) -> Figure:
    """Drawdown from the running peak of each equity curve, in percent."""
    fig = new_png(11, 3.6)
    ax = fig.add_subplot()
    for name in ordered(list(equity)):
        series = equity[name].dropna()
        if series.empty:
            continue
        drawdown = series / series.cummax() - 1.0
        ax.plot(drawdown.index, 100 * drawdown, label=name, **_style(name, emphasis))
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
    forecasts, so the lines are directly comparable with the actual close. Every
    forecast is drawn thin and translucent under the close (the LSTM's emphasis of
    the other charts would hide the rest); the lower panel zooms into the last
    ``zoom`` bars, with a marker per forecast.
    """
    fig = new_png(11, 6.4)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 2])
    dates = close.index
    for ax, span in ((top, slice(None)), (bottom, slice(-zoom, None))):
        actual = close.iloc[span]
        ax.plot(
            actual.index, actual, color="#000000", linewidth=1.4, label="actual close", zorder=6
        )
        for name in ordered(list(forecasts)):
            f = forecasts[name].reindex(dates)
            shifted = pd.Series(f.to_numpy()[:-1], index=dates[1:]).iloc[span].dropna()
            if shifted.empty:
                continue
            hue, dash = style(name)
            marker = "o" if ax is bottom else None
            ax.plot(shifted.index, shifted, label=f"{name} forecast", color=hue,
                    linestyle=MPL_DASH[dash], linewidth=1.0, alpha=0.8, marker=marker,
                    markersize=2.5)  # fmt: skip
        ax.set_ylabel("price")
        ax.grid(alpha=0.3)
    top.set_title(title)
    bottom.set_title(f"the last {zoom} bars", fontsize=9, loc="left")
    top.legend(loc="upper left", fontsize=8, ncol=4, frameon=False)
    return fig


def cost_sweep_chart(
    sweep: pd.DataFrame,
    title: str,
    break_even: Mapping[str, float | None] | None = None,
    emphasis: Emphasis | None = None,
) -> Figure:
    """Annualised Sharpe ratio of each strategy against the commission (bp).

    Args:
        sweep: index = commission in bp, one column per strategy.
        title: chart title.
        break_even: optional break-even commission per strategy, marked with a dot.
    """
    fig = new_png(11, 4.4, right=1.6)
    ax = fig.add_subplot()
    for name in ordered(list(sweep.columns)):
        style = _style(name, emphasis)
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
    # outside the axes: inside, it sat on the lines
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
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


# The per-instrument strategy and gate charts. Their interactive twins hold every strategy
# behind a picker; the PNG shows the chart as the page opens (the picked strategy and
# buy-and-hold).


def fixed_png(width: float, height: float, right: float = 1.6) -> tuple[Figure, object]:
    """A one-axes ``new_png``, the legend's room on the right."""
    fig = new_png(width, height, right=right)
    return fig, fig.add_subplot()


def legend_right(ax) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def trade_points(log: pd.DataFrame) -> pd.DataFrame:
    """Entries then exits of a trade log, one row each: ``date``, ``price``, ``what``
    (``entry long``, ``entry short``, ``exit``) and ``pnl`` (net, exits only). An open
    trade has no exit."""
    long = log["size"] > 0
    closed = log[log["exit_date"].notna()]
    return pd.DataFrame(
        {
            "date": pd.to_datetime(pd.concat([log["entry_date"], closed["exit_date"]])),
            "price": pd.concat([log["entry_price"], closed["exit_price"]]).astype(float),
            "what": ["entry " + ("long" if x else "short") for x in long] + ["exit"] * len(closed),
            "pnl": [np.nan] * len(log) + list(closed["pnl_net"].astype(float)),
        }
    ).reset_index(drop=True)


def trades_png(close: pd.Series, trades: Mapping[str, pd.DataFrame], title: str) -> Figure:
    """The close with the entries (triangles: up long, down short) and exits (crosses) of
    each strategy in ``trades``."""
    fig, ax = fixed_png(11, 3.6)
    ax.plot(close.index, close, color="#000000", linewidth=1.0, label="close")
    markers = {"entry long": "^", "entry short": "v", "exit": "x"}
    for name in ordered(list(trades)):
        if trades[name].empty:
            continue
        points = trade_points(trades[name])
        for what, marker in markers.items():
            rows = points[points["what"] == what]
            if not rows.empty:
                ax.scatter(rows["date"], rows["price"], marker=marker, s=28, linewidths=1.2,
                           color=colour(name), label=f"{name}: {what}", zorder=5)  # fmt: skip
    ax.set_title(title)
    ax.set_ylabel("price")
    ax.grid(alpha=0.3)
    legend_right(ax)
    return fig


def rolling_sharpe_png(
    rolling: Mapping[str, pd.Series], title: str, emphasis: Emphasis | None = None
) -> Figure:
    """Rolling Sharpe ratio of each strategy in ``rolling``."""
    fig, ax = fixed_png(11, 3.0)
    for name in ordered(list(rolling)):
        series = rolling[name].dropna()
        ax.plot(series.index, series, label=name, **_style(name, emphasis))
    ax.axhline(0.0, color="#999999", linewidth=0.6)
    ax.set_title(title)
    ax.set_ylabel("Sharpe ratio")
    ax.grid(alpha=0.3)
    legend_right(ax)
    return fig


def return_histograms(
    returns: Mapping[str, pd.Series], bins: int = 40
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Common bin edges (in %, over the pooled 0.1-99.9th percentiles; values outside fall
    in the end bins) and each strategy's share of bars per bin, in %."""
    values = {n: 100 * r.dropna().to_numpy(float) for n, r in returns.items()}
    pooled = np.concatenate([v for v in values.values() if len(v)] or [np.zeros(1)])
    low, high = np.quantile(pooled, [0.001, 0.999])
    edges = np.linspace(low, high, bins + 1)
    shares = {}
    for name, v in values.items():
        counts, _ = np.histogram(np.clip(v, low, high), bins=edges)
        shares[name] = 100 * counts / max(counts.sum(), 1)
    return edges, shares


def distribution_png(returns: Mapping[str, pd.Series], title: str) -> Figure:
    """Histograms of each strategy's returns per bar on common bins."""
    edges, shares = return_histograms(returns)
    fig, ax = fixed_png(11, 3.0)
    for name in ordered(list(shares)):
        ax.stairs(shares[name], edges, fill=True, alpha=0.35, color=colour(name), label=name)
        ax.stairs(shares[name], edges, color=colour(name), linewidth=1.0)
    ax.set_title(title)
    ax.set_xlabel("return per bar (%)")
    ax.set_ylabel("share of bars (%)")
    ax.grid(alpha=0.3)
    legend_right(ax)
    return fig
