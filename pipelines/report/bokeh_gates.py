"""The gate charts of the report's page, drawn with Bokeh (the conventions of
``pipelines.report.bokeh``): a heatmap per gate (units x dates), each gate's
quantiles per fold, and the mean gates against volatility."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    CustomJSHover,
    HoverTool,
    LinearColorMapper,
    Span,
)
from bokeh.palettes import RdBu11, Viridis256
from bokeh.plotting import figure

from pipelines.report.bokeh import DATE, legend_outside, new_figure
from pipelines.report.charts import GATE_COLOURS, GATES


def gate_heatmap(matrix: pd.DataFrame, gate: str, title: str, fold_starts: Sequence = ()):
    """Units x dates of one gate (``pipelines.report.gate_charts.gate_matrix``), units in the
    given order.

    The colour scale spans the 1st to 99th percentile of the values (symmetric around 0
    for the cell state). The values travel as bytes (0-255 over that scale): a quarter of
    float32's size, with the hover scaling them back.
    """
    values = matrix.to_numpy(dtype="float64").T  # units x dates
    dates = matrix.index
    finite = values[np.isfinite(values)]
    if gate == "cell":
        bound = float(np.quantile(np.abs(finite), 0.99)) if finite.size else 1.0
        low, high, palette = -(bound or 1.0), bound or 1.0, tuple(reversed(RdBu11))
    else:
        # the gates sit in a narrow band of [0, 1]: the colours span the 1st to 99th
        # percentile, so what moves shows (the colour bar gives the range)
        low, high = np.quantile(finite, [0.01, 0.99]) if finite.size else (0.0, 1.0)
        low, high, palette = float(low), float(max(high, low + 1e-3)), Viridis256
    scaled = np.round(255 * (np.clip(values, low, high) - low) / (high - low))
    coded = np.nan_to_num(scaled, nan=0).astype(np.uint8)
    mapper = LinearColorMapper(palette=palette, low=0, high=255)
    step = (dates[-1] - dates[0]) / max(len(dates) - 1, 1)
    fig = new_figure(title, "unit (sorted by mean forget gate)", height=230)
    fig.y_range.range_padding = 0
    fig.x_range.range_padding = 0
    image = fig.image(
        image=[coded],
        x=dates[0],
        y=-0.5,
        dw=dates[-1] - dates[0] + step,
        dh=coded.shape[0],
        color_mapper=mapper,
    )
    decode = CustomJSHover(code=f"return ({low!r} + value * {(high - low) / 255!r}).toFixed(3)")
    # the image spans calendar time evenly: the hover names the trading date of the column
    # under the cursor (never a weekend) and the unit of the row, not a row number
    x0_ms, step_ms = dates[0].value / 1e6, step.total_seconds() * 1000
    on_date = CustomJSHover(
        args={"dates": [d.strftime("%Y-%m-%d") for d in dates]},
        code=f"const k = Math.floor((value - {x0_ms!r}) / {step_ms!r}); "
        "return k >= 0 && k < dates.length ? dates[k] : '';",
    )
    of_unit = CustomJSHover(
        args={"units": [str(u) for u in matrix.columns]},
        code="const r = Math.round(value); return r >= 0 && r < units.length ? units[r] : '';",
    )
    fig.add_tools(
        HoverTool(
            renderers=[image],
            tooltips=[("date", "$x{custom}"), ("unit", "$y{custom}"), (gate, "@image{custom}")],
            formatters={"$x": on_date, "$y": of_unit, "@image": decode},
        )
    )
    colours = LinearColorMapper(palette=palette, low=low, high=high)
    fig.add_layout(ColorBar(color_mapper=colours, width=10), "right")
    for start in fold_starts:
        fig.add_layout(
            Span(
                location=pd.Timestamp(start),
                dimension="height",
                line_color="#ffffff",
                line_dash="dotted",
                line_width=1,
            )
        )
    return fig


def gate_folds_chart(quantiles: pd.DataFrame, title: str):
    """Distribution of each gate's activations per fold: box (quartiles) and whiskers (5-95%).

    Args:
        quantiles: rows (gate, fold), columns ``q05``, ``q25``, ``q50``, ``q75``, ``q95``.
    """
    labels = [f"fold {fold} · {gate}" for gate, fold in quantiles.index]
    frame = quantiles.reset_index()
    frame["label"] = labels
    frame["colour"] = [GATE_COLOURS[g] for g in frame["gate"]]
    source = ColumnDataSource(frame)
    order = sorted(labels, key=lambda s: (s.split(" · ")[1], s))
    fig = figure(
        title=title,
        height=260,
        sizing_mode="stretch_width",
        x_range=order,
        tools="pan,wheel_zoom,reset,save",
    )
    fig.toolbar.logo = None
    fig.title.text_font_size = "13px"
    fig.segment("label", "q05", "label", "q95", source=source, color="#555555")
    boxes = fig.vbar(
        "label", 0.6, "q50", "q75", source=source, fill_color="colour", line_color="#333333"
    )
    fig.vbar(
        "label",
        0.6,
        "q25",
        "q50",
        source=source,
        fill_color="colour",
        line_color="#333333",
        fill_alpha=0.6,
    )
    fig.xaxis.major_label_orientation = 0.9
    fig.yaxis.axis_label = "activation"
    fig.add_tools(
        HoverTool(
            renderers=[boxes],
            tooltips=[
                ("", "@label"),
                ("median", "@q50{0.000}"),
                ("quartiles", "@q25{0.000} to @q75{0.000}"),
                ("5-95%", "@q05{0.000} to @q95{0.000}"),
            ],
        )
    )
    return fig


def gate_volatility_chart(frame: pd.DataFrame, title: str, vol_label: str):
    """Mean of each gate over units, less its average over dates (y), against the realised
    volatility of the same date (x): the gates sit at different levels, so each is drawn as
    its deviation, and the hover gives the level itself.

    Args:
        frame: one row per date: ``vol`` (annualised realised volatility, in %, of the
            returns up to that date) and one column per sigmoid gate.
        vol_label: the x axis's label (how the volatility was measured).
    """
    frame = frame.copy()
    gates = [g for g in GATES if g in frame.columns and g != "cell"]
    for gate in gates:
        frame[f"{gate}_deviation"] = frame[gate] - frame[gate].mean()
    source = ColumnDataSource(frame.rename_axis("date").reset_index())
    fig = new_figure(title, "mean over units − its average", dates=False, height=300)
    fig.xaxis.axis_label = vol_label
    renderers = []
    for gate in gates:
        renderers.append(
            fig.scatter(
                "vol",
                f"{gate}_deviation",
                source=source,
                size=4,
                alpha=0.5,
                color=GATE_COLOURS[gate],
                legend_label=f"{gate} gate",
                name=gate,
            )
        )
    fig.add_tools(
        HoverTool(
            renderers=renderers,
            tooltips=[
                ("", "$name"),
                ("date", DATE),
                ("vol %", "@vol{0.0}"),
                ("mean", "@$name{0.000}"),
            ],
            formatters={"@date": "datetime"},
        )
    )
    legend_outside(fig)
    return fig
