"""A strategy's tear-sheet charts against the benchmark, as quantstats draws them, in Bokeh.

- ``cumulative_chart``: cumulative return of each strategy and of the benchmark, in
  three linked panels: linear, log scale, and volatility-matched (the benchmark's
  returns scaled to the strategy's volatility, so the two curves differ by skill
  rather than by leverage: quantstats' ``vol_match``);
- ``rolling_chart``: rolling Sharpe ratio, volatility, Sortino ratio and beta to the
  benchmark over the same window, one linked panel each.

Every series is named ``pick_name(instrument, strategy, part)`` so the page's strategy
picker shows the picked strategy's (and the benchmark's curves) and hides the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, HoverTool, Span

from pipelines.report import charts
from pipelines.report.bokeh import legend_outside, new_figure, pick_name
from pipelines.report.charts import ordered, style


def vol_matched(returns: pd.Series, benchmark: pd.Series) -> pd.Series:
    """``benchmark``'s returns scaled to ``returns``' standard deviation (on common dates)."""
    both = pd.concat([returns, benchmark], axis=1, join="inner").dropna()
    spread = both.iloc[:, 1].std()
    scale = both.iloc[:, 0].std() / spread if spread > 0 else 1.0
    return (benchmark * scale).rename(benchmark.name)


def source_of(frame: pd.DataFrame) -> ColumnDataSource:
    """One data source for every line of ``frame`` (the dates sent once, values float32)."""
    data = {"date": frame.index}
    data.update({str(c): frame[c].astype("float32").to_numpy() for c in frame.columns})
    return ColumnDataSource(data)


def _lines(
    fig, source: ColumnDataSource, names: Sequence[str], instrument: str, part: str, visible
) -> list:
    renderers = []
    for strategy in ordered(list(names)):
        hue, dash = style(strategy)
        renderers.append(
            fig.line(
                "date",
                strategy,
                source=source,
                color=hue,
                line_dash=dash,
                line_width=1.6,
                legend_label=strategy,
                visible=strategy in visible,
                name=pick_name(instrument, strategy, part),
            )
        )
    fig.add_tools(
        HoverTool(
            renderers=renderers,
            tooltips=[("", "$name"), ("date", "$x{%F}"), ("value", "$y{0.000}")],
            formatters={"$x": "datetime"},
        )
    )
    legend_outside(fig)
    return renderers


def cumulative_chart(
    instrument: str,
    returns: Mapping[str, pd.Series],
    benchmark: str,
    shown: Sequence[str],
    title: str,
    x_range=None,
):
    """The three panels of the module docstring, as one linked column."""
    growth = pd.DataFrame({s: (1 + r.astype(float)).cumprod() for s, r in returns.items()})
    for strategy in [s for s in returns if s != benchmark and benchmark in returns]:
        scaled = vol_matched(returns[strategy].astype(float), returns[benchmark].astype(float))
        growth[f"{benchmark}~{strategy}"] = (1 + scaled).cumprod()
    source = source_of(growth)  # one source for the three panels
    names = list(returns)
    visible = {*shown, benchmark}
    linear = new_figure(f"{title}: growth of 1", "growth of 1", height=240, x_range=x_range)
    _lines(linear, source, names, instrument, "cum", visible)
    log = new_figure(
        f"{title}: growth of 1, log scale",
        "growth of 1 (log)",
        height=200,
        x_range=linear.x_range,
        y_axis_type="log",
    )
    _lines(log, source, names, instrument, "cum_log", visible)
    matched = new_figure(
        f"{title}: against {benchmark} scaled to the strategy's volatility",
        "growth of 1",
        height=200,
        x_range=linear.x_range,
    )
    matched.add_layout(Span(location=1.0, dimension="width", line_color="#999999"))
    if benchmark in returns:
        # each strategy beside the benchmark matched to its own volatility (a dashed line
        # in the strategy's colour, named as one of its own series)
        for strategy in ordered([s for s in returns if s != benchmark]):
            hue, _ = style(strategy)
            matched.line(
                "date",
                f"{benchmark}~{strategy}",
                source=source,
                color=hue,
                line_dash="dashed",
                line_width=1.2,
                legend_label=f"{benchmark}, matched to {strategy}",
                visible=strategy in shown,
                name=pick_name(instrument, strategy, "cum_vol_bench"),
            )
    others = [s for s in names if s != benchmark]
    _lines(matched, source, others, instrument, "cum_vol", visible)
    return column(linear, log, matched, sizing_mode="stretch_width")


def rolling_chart(
    instrument: str,
    panels: Sequence[tuple[str, str, str, Mapping[str, pd.Series]]],
    shown: Sequence[str],
    benchmark: str,
    x_range,
):
    """One linked panel per ``(title, y label, part, strategy -> series)``."""
    figures = []
    for title, label, part, series in panels:
        frame = pd.DataFrame({s: v for s, v in series.items() if len(v)})
        if frame.empty:
            continue
        fig = new_figure(title, label, height=200, x_range=x_range)
        fig.add_layout(Span(location=0.0, dimension="width", line_color="#999999"))
        _lines(fig, source_of(frame), list(frame.columns), instrument, part, {*shown, benchmark})
        figures.append(fig)
    return column(*figures, sizing_mode="stretch_width")


def cumulative_png(
    returns: pd.Series, benchmark: pd.Series | None, names: tuple[str, str], title: str
):
    """The PNG twin of ``cumulative_chart`` for one strategy: linear, log and
    volatility-matched growth of 1 against the benchmark (``names``: strategy, benchmark)."""
    # room on the left for the log axis's labels (1.02 x 10^0); the rows share the dates
    fig = charts.new_png(11, 7.0, left=1.35, hspace=0.12)
    axes = fig.subplots(3, 1, sharex=True)
    strategy, bench_name = names
    curves = {strategy: (1 + returns.astype(float)).cumprod()}
    if benchmark is not None:
        curves[bench_name] = (1 + benchmark.astype(float)).cumprod()
    for ax, scale, what in ((axes[0], "linear", "growth of 1"), (axes[1], "log", "log scale")):
        for name, curve in curves.items():
            ax.plot(curve.index, curve, label=name, color=charts.colour(name), linewidth=1.3)
        ax.set_yscale(scale)
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    ax = axes[2]
    ax.plot(curves[strategy].index, curves[strategy], color=charts.colour(strategy), label=strategy)
    if benchmark is not None:
        matched = (1 + vol_matched(returns.astype(float), benchmark.astype(float))).cumprod()
        ax.plot(matched.index, matched, color=charts.colour(bench_name), linestyle="--",
                label=f"{bench_name}, matched to {strategy}'s volatility")  # fmt: skip
    ax.set_ylabel("vol-matched")
    ax.grid(alpha=0.3)
    axes[0].set_title(title)
    for ax in axes:
        ax.legend(loc="upper left", fontsize=8, frameon=False)
    return fig
