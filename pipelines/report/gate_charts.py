"""The LSTM gates' PNG charts (a forecaster that declares ``introspection``): a heatmap
per gate (units x dates), each gate's quantiles per fold, and the mean gates against
volatility. Drawn like every PNG of the report (``pipelines.report.charts``)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelines.report.charts import DPI, GATE_COLOURS, GATES, fixed_png, legend_right


def gate_matrix(gates: pd.DataFrame, gate: str) -> pd.DataFrame:
    """One gate of the long per-unit frame (``pipelines.execution.units.gates_long``) as
    dates x units.

    Units are in their own order (columns ``0..units-1``); dates ascending.
    """
    if gate not in gates.columns or not {"date", "unit"} <= set(gates.columns):
        raise ValueError(
            f"gates need columns date, unit and {gate!r} (pipelines.execution.units.gates_long), "
            f"got {list(gates.columns)}"
        )
    return gates.pivot(index="date", columns="unit", values=gate).sort_index()


def unit_order(gates: pd.DataFrame) -> list[int]:
    """Units sorted by their mean forget gate, so the heatmaps of every gate share one order
    and units that keep their memory sit together."""
    means = gate_matrix(gates, "forget").mean()
    return [int(u) for u in means.sort_values().index]


def gates_chart(
    gates: pd.DataFrame,
    close: pd.Series | None,
    title: str,
    fold_starts: Sequence[pd.Timestamp] = (),
) -> Figure:
    """Heatmaps of units x dates of the LSTM's forget, input and output gates and cell state.

    Units are sorted by their mean forget gate; each gate's colours span its 1st to 99th
    percentile (the cell state's, symmetric around 0).

    Args:
        gates: the long per-unit frame of ``pipelines.execution.units.gates_long`` (columns
            ``date``, ``unit``, ``forget``, ``input``, ``output``, ``cell``).
        close: the instrument's close on the same dates, drawn on top for context.
        title: chart title.
        fold_starts: walk-forward refits (a new model starts there), drawn as
            vertical lines.
    """
    present = [g for g in GATES if g in gates.columns]
    if not present:
        raise ValueError(f"gates need columns among {GATES}, got {list(gates.columns)}")
    order = unit_order(gates) if "forget" in present else None
    rows = len(present) + (1 if close is not None else 0)
    width, height = 11, 1.9 * rows + 0.6
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    # fixed margins (inches): the constrained layout took most of this chart's time
    fig.subplots_adjust(
        left=0.9 / width, right=1 - 0.2 / width, bottom=0.4 / height, top=1 - 0.4 / height,
        hspace=0.25,
    )  # fmt: skip
    axes = np.atleast_1d(fig.subplots(rows, 1, sharex=True))
    k = 0
    first = gate_matrix(gates, present[0])
    if close is not None:
        c = close.reindex(first.index)
        axes[0].plot(c.index, c, color="#000000", linewidth=1.0)
        axes[0].set_ylabel("close")
        axes[0].grid(alpha=0.3)
        k = 1
    for gate, ax in zip(present, axes[k:], strict=True):
        matrix = gate_matrix(gates, gate)
        if order is not None:
            matrix = matrix[order]
        dates = mdates.date2num(matrix.index.to_pydatetime())
        limits = (
            _percentiles(matrix.to_numpy()) if gate != "cell" else _symmetric(matrix.to_numpy())
        )
        image = ax.imshow(
            matrix.to_numpy().T, aspect="auto", origin="lower", interpolation="nearest",
            extent=(dates[0], dates[-1], -0.5, matrix.shape[1] - 0.5),
            cmap="viridis" if gate != "cell" else "RdBu_r", vmin=limits[0], vmax=limits[1],
        )  # fmt: skip
        fig.colorbar(image, ax=ax, pad=0.01, fraction=0.03)
        ax.set_ylabel(f"{gate} gate\nunit" if gate != "cell" else "cell state\nunit")
        ax.xaxis_date()
    for ax in axes:
        for start in fold_starts:
            ax.axvline(start, color="#ffffff" if ax is not axes[0] else "#999999",
                       linewidth=0.9, linestyle=":")  # fmt: skip
    axes[0].set_title(title)
    return fig


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    """1st and 99th percentile: the gates sit in a narrow band of [0, 1], and a colour
    scale over all of [0, 1] would show them flat."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    low, high = np.quantile(finite, [0.01, 0.99])
    return float(low), float(max(high, low + 1e-3))


def _symmetric(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    bound = float(np.quantile(np.abs(finite), 0.99)) if finite.size else 1.0
    bound = bound or 1.0
    return -bound, bound


def gate_folds_png(quantiles: pd.DataFrame, title: str) -> Figure:
    """Each gate's activations per fold: box (quartiles, median line) and whiskers (5-95%).

    Args:
        quantiles: rows (gate, fold), columns ``q05``, ``q25``, ``q50``, ``q75``, ``q95``.
    """
    fig, ax = fixed_png(11, 3.2, right=0.3)
    rows = sorted(quantiles.index, key=lambda key: (key[0], key[1]))
    for x, (gate, fold) in enumerate(rows):
        q = quantiles.loc[(gate, fold)]
        hue = GATE_COLOURS.get(gate, "#555555")
        ax.plot([x, x], [q["q05"], q["q95"]], color="#555555", linewidth=1.0)
        ax.bar(x, q["q75"] - q["q25"], bottom=q["q25"], width=0.6, color=hue,
               edgecolor="#333333", alpha=0.8)  # fmt: skip
        ax.plot([x - 0.3, x + 0.3], [q["q50"], q["q50"]], color="#000000", linewidth=1.2)
    ax.set_xticks(range(len(rows)), [f"{gate}\nfold {fold}" for gate, fold in rows], fontsize=7)
    ax.set_title(title)
    ax.set_ylabel("activation")
    ax.grid(alpha=0.3, axis="y")
    return fig


def gate_volatility_png(frame: pd.DataFrame, title: str, vol_label: str) -> Figure:
    """Each sigmoid gate's mean over units, less its average over dates, against ``vol``.

    Args:
        frame: one row per date: ``vol`` and one column per gate.
    """
    fig, ax = fixed_png(11, 3.6)
    for gate in (g for g in GATES if g in frame.columns and g != "cell"):
        ax.scatter(frame["vol"], frame[gate] - frame[gate].mean(), s=6, alpha=0.5,
                   color=GATE_COLOURS[gate], label=f"{gate} gate")  # fmt: skip
    ax.axhline(0.0, color="#999999", linewidth=0.6)
    ax.set_title(title)
    ax.set_xlabel(vol_label)
    ax.set_ylabel("mean − its average")
    ax.grid(alpha=0.3)
    legend_right(ax)
    return fig
