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
from bokeh.core.json_encoder import serialize_json
from bokeh.core.templates import MACROS, ROOT_DIV
from bokeh.document import Document
from bokeh.embed.util import OutputDocumentFor, standalone_docs_json_and_render_items
from bokeh.layouts import column
from bokeh.models import (
    ColumnDataSource,
    HoverTool,
    Span,
)
from bokeh.plotting import figure
from bokeh.resources import Resources

from pipelines.report.charts import (
    Emphasis,
    ordered,
    return_histograms,
    style,
)

HEIGHT = 320
TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"
DATE = "@date{%F}"


def inline_resources() -> str:
    """Bokeh's JavaScript, inlined: the core component only (no widgets, tables, MathJax)."""
    return Resources(mode="inline", components=["bokeh"]).render_js()


#: Drawn when its chart comes this near the screen (CSS margin of the observer).
RENDER_AHEAD = "800px 0px"

# One loader for every group: the first group's document is drawn at once, any other's
# the first time one of its charts comes near the screen, so the page's first charts do
# not wait for the rest (``gatecastDrawAll()`` draws every group).
_LOADER = """<script type="application/json" id="gatecast-bokeh">%s</script>
<script>
(function () {
  var groups = JSON.parse(document.getElementById("gatecast-bokeh").textContent);
  var drawn = {};
  function draw(name) {
    if (drawn[name] || !groups[name]) return;
    drawn[name] = true;
    var done = Bokeh.embed.embed_items(groups[name].docs_json, groups[name].render_items);
    // when each group was drawn, in ms from the page's start (the browser test reads it)
    Promise.resolve(done).then(function () { window.gatecastDrawn[name] = performance.now(); });
  }
  window.gatecastDrawn = {};
  window.gatecastDraw = draw;
  window.gatecastDrawAll = function () { Object.keys(groups).forEach(draw); };
  function start() {
    var marks = document.querySelectorAll("[data-bokeh-group]");
    if (marks.length) draw(marks[0].dataset.bokehGroup);  // the first charts: at once
    if (!("IntersectionObserver" in window)) {
      marks.forEach(function (el) { draw(el.dataset.bokehGroup); });
      return;
    }
    var seen = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (e.isIntersecting) { draw(e.target.dataset.bokehGroup); seen.unobserve(e.target); }
      });
    }, {rootMargin: "%s"});
    marks.forEach(function (el) { seen.observe(el); });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
</script>"""


def embed(figures: Sequence[Any], groups: Sequence[str]) -> tuple[str, list[str]]:
    """The page's figures as one Bokeh document per group (the pooled charts, each
    instrument's), each drawn when one of its charts nears the screen; returns the loader
    script and each figure's div, in the figures' order.

    Figures of a group share their sources and ranges (a strategy's trade view and its
    rolling Sharpe ratio); no model is shared across groups. Each group's figures go into
    their document under one freeze: adding them one root at a time makes Bokeh walk the
    whole document after each (quadratic).
    """
    payload: dict[str, Any] = {}
    divs: dict[int, str] = {}
    for group in dict.fromkeys(groups):
        members = [k for k, g in enumerate(groups) if g == group]
        models = [figures[k] for k in members]
        document = Document()
        with document.models.freeze():
            for fig in models:
                document.add_root(fig)
        with OutputDocumentFor(models):
            docs_json, [item] = standalone_docs_json_and_render_items(models)
        payload[group] = {"docs_json": docs_json, "render_items": [item.to_json()]}
        for k, root in zip(members, item.roots, strict=True):
            divs[k] = ROOT_DIV.render(root=root, macros=MACROS)
    data = serialize_json(payload, pretty=False).replace("</", "<\\/")
    return _LOADER % (data, RENDER_AHEAD), [divs[k] for k in range(len(figures))]


def new_figure(title: str, y_label: str, *, height: int = HEIGHT, dates: bool = True, **kw):
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


def legend_outside(fig) -> None:
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


def _strategy_lines(
    fig,
    frame: pd.DataFrame,
    label: str,
    fmt: str = "{0.000}",
    emphasis: Emphasis | None = None,
) -> None:
    source = ColumnDataSource(frame.rename_axis("date").reset_index())
    renderers = []
    emphasis = emphasis or Emphasis()
    for name in ordered(list(frame.columns)):
        hue, dash = style(name)
        width = emphasis.width(name)
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
    legend_outside(fig)


def equity_chart(equity: Mapping[str, pd.Series], title: str, emphasis: Emphasis | None = None):
    """Growth of 1 of every strategy from the out-of-sample start."""
    frame = pd.DataFrame(
        {n: s / s.dropna().iloc[0] for n, s in equity.items() if s.notna().any()}
    ).astype("float32")
    fig = new_figure(title, "growth of 1")
    fig.add_layout(Span(location=1.0, dimension="width", line_color="#999999", line_width=1))
    _strategy_lines(fig, frame, "growth", emphasis=emphasis)
    return fig


def drawdown_chart(equity: Mapping[str, pd.Series], title: str, emphasis: Emphasis | None = None):
    """Drawdown from the running peak of each equity curve, in percent."""
    frame = pd.DataFrame({n: 100 * (s / s.cummax() - 1.0) for n, s in equity.items()})
    fig = new_figure(title, "drawdown (%)", height=260)
    _strategy_lines(fig, frame.astype("float32"), "drawdown %", "{0.0}", emphasis)
    return fig


def forecast_chart(close: pd.Series, forecasts: Mapping[str, pd.Series], title: str):
    """Next-close forecasts drawn on the date they forecast, under the actual close, and
    below it each forecast's error in percent of the close (the x-axes are linked).

    Every forecast is thin and translucent (the LSTM is not drawn over the
    others); zoom in to compare them bar by bar.
    """
    dates = close.index
    frame = pd.DataFrame({"close": close})
    for name, series in forecasts.items():
        values = series.reindex(dates).to_numpy()
        frame[name] = np.concatenate([[np.nan], values[:-1]])  # made at t, drawn at t + 1
    source = ColumnDataSource(frame.astype("float32").rename_axis("date").reset_index())
    fig = new_figure(title, "price", height=380)
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
    legend_outside(fig)
    # a forecast of the next close sits on the close: its error, in its own panel linked
    # to the price's dates, is what tells the forecasters apart
    errors = pd.DataFrame(
        {name: 100 * (frame[name] / frame["close"] - 1) for name in forecasts}, index=dates
    )
    panel = new_figure("forecast error: forecast / actual close − 1", "error (%)", height=220)
    panel.x_range = fig.x_range
    panel.add_layout(Span(location=0.0, dimension="width", line_color="#999999", line_width=1))
    _strategy_lines(panel, errors.astype("float32"), "error %", "{0.00}")
    return column(fig, panel, sizing_mode="stretch_width")


def cost_sweep_chart(sweep: pd.DataFrame, title: str, break_even: Mapping[str, float]):
    """Sharpe ratio of each strategy against the commission; circles at the break-even cost."""
    fig = new_figure(title, "Sharpe ratio (annualised)", dates=False, height=300)
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
    legend_outside(fig)
    return fig


def pick_name(instrument: str, strategy: str, part: str) -> str:
    """The Bokeh name of a renderer that the page's strategy picker shows or hides."""
    return f"pick:{instrument}:{strategy}:{part}"


def distribution_chart(
    instrument: str, returns: Mapping[str, pd.Series], shown: Sequence[str], title: str
):
    """Histograms of each strategy's returns per bar, on common bins (one legend entry each)."""
    edges, shares = return_histograms(returns)
    fig = new_figure(title, "share of bars (%)", dates=False, height=260)
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
    legend_outside(fig)
    return fig
