"""The report's interactive charts, drawn with Bokeh and embedded in the page offline.

Every chart function returns a Bokeh figure; ``embed`` serialises all of a page's
figures as one document (``bokeh.embed.components``), and the page inlines Bokeh's
own JavaScript once (``inline_resources``: the ``bokeh`` component only, 1.3 MB), so
it opens from a file with no network. Every chart zooms (wheel and box, along x for
time series), pans, resets, and shows the date and value under the cursor; a click
on a legend entry hides that series (its legend sits right of the plot, off the
lines). Strategies keep the colour and dash of ``pipelines.report.charts.STYLES``
(Okabe-Ito, the same as the PNGs). The per-instrument strategy charts (trades,
rolling Sharpe, distribution) hold every strategy, each series named
``pick_name(instrument, strategy, part)`` so that the page's strategy picker can
show the picked one. Arrays go as float32 (gate heatmaps as bytes) to keep the page
small: the default run's page is about 5 MB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from bokeh.document import Document
from bokeh.embed import components
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
from bokeh.resources import Resources

from pipelines.report.charts import (
    GATE_COLOURS,
    GATES,
    ordered,
    return_histograms,
    style,
    trade_points,
)

HEIGHT = 320
TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"
DATE = "@date{%F}"


def inline_resources() -> str:
    """Bokeh's JavaScript, inlined: the core component only (no widgets, tables, MathJax)."""
    return Resources(mode="inline", components=["bokeh"]).render_js()


def embed(figures: Sequence[Any]) -> tuple[str, list[str]]:
    """``components`` of every figure as one document: one script, each shared source once.

    The figures go into the document under one freeze: ``components`` alone adds them
    one root at a time, and Bokeh walks the whole document after each (quadratic).
    """
    document = Document()
    with document.models.freeze():
        for fig in figures:
            document.add_root(fig)
    script, divs = components(list(figures))
    return script, list(divs)


def _figure(title: str, y_label: str, *, height: int = HEIGHT, dates: bool = True, **kw):
    fig = figure(
        title=title,
        height=height,
        sizing_mode="stretch_width",
        x_axis_type="datetime" if dates else "linear",
        tools=TOOLS if dates else "pan,wheel_zoom,box_zoom,reset,save",
        active_scroll="xwheel_zoom" if dates else "wheel_zoom",
        **kw,
    )
    fig.yaxis.axis_label = y_label
    fig.toolbar.logo = None
    fig.title.text_font_size = "13px"
    return fig


def _legend_outside(fig) -> None:
    """Move the legend right of the plot (inside, it sat on the lines); clicks hide series."""
    if not fig.legend:
        return
    legend = fig.legend[0]
    legend.click_policy = "hide"
    legend.label_text_font_size = "11px"
    legend.spacing = 0
    legend.padding = 4
    fig.add_layout(legend, "right")


def _line_hover(fig, renderers, label: str, fmt: str = "{0.000}") -> None:
    """One hover for every line: the series' name, the date, and its value (``@$name``)."""
    fig.add_tools(
        HoverTool(
            renderers=renderers,
            tooltips=[("", "$name"), ("date", DATE), (label, "@$name" + fmt)],
            formatters={"@date": "datetime"},
        )
    )


def _strategy_lines(fig, frame: pd.DataFrame, label: str, fmt: str = "{0.000}") -> None:
    source = ColumnDataSource(frame.rename_axis("date").reset_index())
    renderers = []
    for name in ordered(list(frame.columns)):
        hue, dash = style(name)
        width = 2.4 if name == "lstm" else (1.8 if name == "buy_and_hold" else 1.3)
        renderers.append(
            fig.line(
                "date",
                name,
                source=source,
                color=hue,
                line_dash=dash,
                line_width=width,
                legend_label=name,
                name=name,
            )
        )
    _line_hover(fig, renderers, label, fmt)
    _legend_outside(fig)


def equity_chart(equity: Mapping[str, pd.Series], title: str):
    """Growth of 1 of every strategy from the out-of-sample start."""
    frame = pd.DataFrame(
        {n: s / s.dropna().iloc[0] for n, s in equity.items() if s.notna().any()}
    ).astype("float32")
    fig = _figure(title, "growth of 1")
    fig.add_layout(Span(location=1.0, dimension="width", line_color="#999999", line_width=1))
    _strategy_lines(fig, frame, "growth")
    return fig


def drawdown_chart(equity: Mapping[str, pd.Series], title: str):
    """Drawdown from the running peak of each equity curve, in percent."""
    frame = pd.DataFrame({n: 100 * (s / s.cummax() - 1.0) for n, s in equity.items()})
    fig = _figure(title, "drawdown (%)", height=260)
    _strategy_lines(fig, frame.astype("float32"), "drawdown %", "{0.0}")
    return fig


def forecast_chart(close: pd.Series, forecasts: Mapping[str, pd.Series], title: str):
    """Next-close forecasts drawn on the date they forecast, under the actual close.

    Every forecast is thin and translucent (the LSTM is not drawn over the
    others); zoom in to compare them bar by bar.
    """
    dates = close.index
    frame = pd.DataFrame({"close": close})
    for name, series in forecasts.items():
        values = series.reindex(dates).to_numpy()
        frame[name] = np.concatenate([[np.nan], values[:-1]])  # made at t, drawn at t + 1
    source = ColumnDataSource(frame.astype("float32").rename_axis("date").reset_index())
    fig = _figure(title, "price", height=380)
    renderers = []
    for name in ordered(list(forecasts)):
        hue, dash = style(name)
        renderers.append(
            fig.line(
                "date",
                name,
                source=source,
                color=hue,
                line_dash=dash,
                line_width=1.3,
                alpha=0.75,
                legend_label=f"{name} forecast",
                name=name,
            )
        )
    renderers.append(
        fig.line(
            "date",
            "close",
            source=source,
            color="#000000",
            line_width=1.6,
            legend_label="actual close",
            name="close",
        )
    )
    _line_hover(fig, renderers, "price", "{0.00}")
    _legend_outside(fig)
    return fig


def cost_sweep_chart(sweep: pd.DataFrame, title: str, break_even: Mapping[str, float]):
    """Sharpe ratio of each strategy against the commission; circles at the break-even cost."""
    fig = _figure(title, "Sharpe ratio (annualised)", dates=False, height=300)
    fig.xaxis.axis_label = "commission per trade (bp of traded value)"
    source = ColumnDataSource(sweep.astype("float32").rename_axis("bp").reset_index())
    renderers = []
    for name in ordered(list(sweep.columns)):
        hue, dash = style(name)
        line = fig.line(
            "bp",
            name,
            source=source,
            color=hue,
            line_dash=dash,
            line_width=1.6,
            legend_label=name,
            name=name,
        )
        fig.scatter("bp", name, source=source, color=hue, size=5, legend_label=name)
        renderers.append(line)
        be = break_even.get(name)
        if be is not None:
            y = float(np.interp(be, sweep.index.to_numpy(float), sweep[name].to_numpy(float)))
            fig.scatter(
                [be], [y], size=12, line_color=hue, fill_color=None, line_width=2, legend_label=name
            )
    fig.add_tools(
        HoverTool(
            renderers=renderers, tooltips=[("", "$name"), ("bp", "@bp"), ("Sharpe", "@$name{0.00}")]
        )
    )
    _legend_outside(fig)
    return fig


def pick_name(instrument: str, strategy: str, part: str) -> str:
    """The Bokeh name of a renderer that the page's strategy picker shows or hides."""
    return f"pick:{instrument}:{strategy}:{part}"


MARKERS = {"entry long": "triangle", "entry short": "inverted_triangle", "exit": "x"}


def _trade_points(log: pd.DataFrame) -> dict[str, Any]:
    """``charts.trade_points`` of a trade log with each point's Bokeh marker."""
    points = trade_points(log)
    points["marker"] = points["what"].map(MARKERS)
    return {column: points[column] for column in points.columns}


def trades_chart(
    instrument: str,
    close: pd.Series,
    trades: Mapping[str, pd.DataFrame],
    shown: Sequence[str],
    title: str,
):
    """The close with every strategy's entries (triangles: up long, down short) and exits.

    One figure per instrument: each strategy's markers are a legend entry (a click
    shows or hides them) and the page's strategy picker shows the picked one's.

    Args:
        close: the instrument's close over the out-of-sample dates.
        trades: strategy -> the backtest's trade log (``entry_date``, ``exit_date``,
            ``size``, ``entry_price``, ``exit_price``, ``pnl_net``; an open trade has no exit).
        shown: strategies whose markers are visible at first.
    """
    fig = _figure(title, "price", height=340)
    source = ColumnDataSource(
        pd.DataFrame({"close": close.astype("float32")}).rename_axis("date").reset_index()
    )
    line = fig.line("date", "close", source=source, color="#000000", line_width=1.2)
    fig.add_tools(
        HoverTool(
            renderers=[line],
            tooltips=[("date", DATE), ("close", "@close{0.00}")],
            formatters={"@date": "datetime"},
        )
    )
    markers = []
    for strategy in ordered(list(trades)):
        log = trades[strategy]
        if log.empty:
            continue
        hue, _ = style(strategy)
        points = ColumnDataSource(_trade_points(log))
        markers.append(
            fig.scatter(
                "date",
                "price",
                source=points,
                marker="marker",
                size=9,
                line_width=2,
                color=hue,
                fill_alpha=0.7,
                legend_label=strategy,
                visible=strategy in shown,
                name=pick_name(instrument, strategy, "trades"),
            )
        )
    if markers:
        fig.add_tools(
            HoverTool(
                renderers=markers,
                tooltips=[
                    ("", "@what"),
                    ("date", DATE),
                    ("price", "@price{0.00}"),
                    ("net P&L", "@pnl{0,0}"),
                ],
                formatters={"@date": "datetime"},
            )
        )
    _legend_outside(fig)
    return fig


def rolling_sharpe_chart(
    instrument: str, rolling: Mapping[str, pd.Series], shown: Sequence[str], title: str, x_range
):
    """Rolling Sharpe ratio of every strategy (``quantstats.stats.rolling_sharpe``); the
    strategies in ``shown`` visible at first, the others a legend click away."""
    fig = _figure(title, "Sharpe ratio", height=260, x_range=x_range)
    fig.add_layout(Span(location=0.0, dimension="width", line_color="#999999", line_width=1))
    frame = pd.DataFrame(dict(rolling)).astype("float32")
    source = ColumnDataSource(frame.rename_axis("date").reset_index())
    lines = []
    for strategy in ordered(list(frame.columns)):
        hue, dash = style(strategy)
        lines.append(
            fig.line(
                "date",
                strategy,
                source=source,
                color=hue,
                line_dash=dash,
                line_width=1.6,
                legend_label=strategy,
                visible=strategy in shown,
                name=pick_name(instrument, strategy, "rolling"),
            )
        )
    fig.add_tools(
        HoverTool(
            renderers=lines,
            tooltips=[("", "$name"), ("date", DATE)],
            formatters={"@date": "datetime"},
        )
    )
    _legend_outside(fig)
    return fig


def distribution_chart(
    instrument: str, returns: Mapping[str, pd.Series], shown: Sequence[str], title: str
):
    """Histograms of each strategy's returns per bar, on common bins (one legend entry each)."""
    edges, shares = return_histograms(returns)
    fig = _figure(title, "share of bars (%)", dates=False, height=260)
    fig.xaxis.axis_label = "return per bar (%)"
    quads = []
    for strategy in ordered(list(shares)):
        source = ColumnDataSource(
            {"left": edges[:-1], "right": edges[1:], "share": shares[strategy]}
        )
        hue, _ = style(strategy)
        quads.append(
            fig.quad(
                top="share",
                bottom=0,
                left="left",
                right="right",
                source=source,
                fill_color=hue,
                fill_alpha=0.35,
                line_color=hue,
                legend_label=strategy,
                visible=strategy in shown,
                name=pick_name(instrument, strategy, "distribution"),
            )
        )
    fig.add_tools(
        HoverTool(
            renderers=quads,
            tooltips=[
                ("", "$name"),
                ("return %", "@left{0.00} to @right{0.00}"),
                ("share %", "@share{0.0}"),
            ],
        )
    )
    _legend_outside(fig)
    return fig


def gate_heatmap(matrix: pd.DataFrame, gate: str, title: str, fold_starts: Sequence = ()):
    """Units x dates of one gate (``pipelines.report.charts.gate_matrix``), units in the
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
    fig = _figure(title, "unit (sorted by mean forget gate)", height=230)
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
    fig.add_tools(
        HoverTool(
            renderers=[image],
            tooltips=[("date", "$x{%F}"), ("row", "$y{0}"), (gate, "@image{custom}")],
            formatters={"$x": "datetime", "@image": decode},
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
    fig = _figure(title, "mean over units − its average", dates=False, height=300)
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
    _legend_outside(fig)
    return fig
