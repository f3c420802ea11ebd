"""The trade view of an instrument's strategy section: what a strategy did, bar by bar.

One Bokeh column of panels sharing one date axis (zooming one zooms all):

- price: candlesticks (OHLC; pale green when the bar closed up), each strategy's signal
  lines (``strategies.base.Strategy.signal_lines``: a crossover's averages, a forecast),
  and each trade drawn from its entry to its exit (an open trade to the last close),
  dark green for a net profit, dark red for a loss, with its entry marked (triangle up long,
  down short);
- volume;
- the net P&L of each trade, a bar on its exit date (an open trade's on the last date);
- the equity (growth of 1) and its drawdown, the deepest drawdowns shaded.

Every strategy's series are there, named ``pick_name(instrument, strategy, part)``, so
the page's strategy picker shows the picked strategy's (and the benchmark's equity and
drawdown); a legend click shows any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from bokeh.layouts import column
from bokeh.models import BoxAnnotation, ColumnDataSource, HoverTool, Span

from pipelines.report.bokeh import DATE, legend_outside, new_figure, pick_name
from pipelines.report.charts import ordered, style
from pipelines.report.strategy_charts import source_of

# A trade's colour: dark green for a net profit, dark red for a loss (apart from every
# strategy's own colour, which its signal line keeps); the candles in paler tones.
UP, DOWN = "#1b7837", "#b2182b"
CANDLE_UP, CANDLE_DOWN = "#7fbf7b", "#ef8a62"
#: Parts of the trade view the picker shows for the benchmark too.
BENCHMARK_PARTS = ("equity", "drawdown")


def trade_segments(log: pd.DataFrame, last_date: pd.Timestamp, last_close: float) -> pd.DataFrame:
    """One row per trade: ``x0, y0`` (entry date and price), ``x1, y1`` (exit, or the last
    bar's date and close for an open trade), ``pnl`` (net), ``pnl_text`` (what the tooltip
    says, never NaN), ``colour`` (``UP`` for a profit, else ``DOWN``), ``side`` and
    ``status`` (``closed`` or ``open``)."""
    if log.empty:
        columns = ["x0", "y0", "x1", "y1", "pnl", "pnl_text", "colour", "side", "status"]
        return pd.DataFrame(columns=columns)
    open_ = log["exit_date"].isna()
    pnl = log["pnl_net"].astype(float)
    return pd.DataFrame(
        {
            "x0": pd.to_datetime(log["entry_date"]).to_numpy(),
            "y0": log["entry_price"].astype(float).to_numpy(),
            "x1": pd.to_datetime(log["exit_date"]).where(~open_, last_date).to_numpy(),
            "y1": log["exit_price"].astype(float).where(~open_, last_close).to_numpy(),
            "pnl": pnl.to_numpy(),
            "pnl_text": [
                (f"{v:+,.0f}" if np.isfinite(v) else "not marked")
                + (" (open, at the last close)" if o else "")
                for v, o in zip(pnl.to_numpy(), open_.to_numpy(), strict=True)
            ],
            "colour": np.where(pnl.to_numpy() > 0, UP, DOWN),
            "side": np.where(log["size"].to_numpy() > 0, "long", "short"),
            "status": np.where(open_.to_numpy(), "open", "closed"),
        }
    ).reset_index(drop=True)


def _candles(fig, bars: pd.DataFrame, width_ms: float) -> None:
    up = bars["close"] >= bars["open"]
    source = ColumnDataSource(
        {
            "date": bars.index,
            "low": bars["low"].astype("float32"),
            "high": bars["high"].astype("float32"),
            "top": np.maximum(bars["open"], bars["close"]).astype("float32"),
            "bottom": np.minimum(bars["open"], bars["close"]).astype("float32"),
            "colour": np.where(up, CANDLE_UP, CANDLE_DOWN),
        }
    )
    fig.segment("date", "high", "date", "low", source=source, color="colour", line_width=1)
    body = fig.vbar(
        "date", width_ms, "top", "bottom", source=source, fill_color="colour", line_color="colour"
    )
    fig.add_tools(
        HoverTool(
            renderers=[body],
            tooltips=[("date", DATE), ("high", "@high{0.00}"), ("low", "@low{0.00}")],
            formatters={"@date": "datetime"},
        )
    )


def trade_view(
    instrument: str,
    bars: pd.DataFrame,
    logs: Mapping[str, pd.DataFrame],
    equity: Mapping[str, pd.Series],
    signals: Mapping[str, Mapping[str, pd.Series]],
    shown: Sequence[str],
    title: str,
    benchmark: str = "",
    worst: Mapping[str, Sequence[tuple[pd.Timestamp, pd.Timestamp]]] | None = None,
):
    """The panels of the module docstring, as one column; returns (layout, shared x range).

    Args:
        bars: the instrument's bars over the out-of-sample dates (open ... volume).
        logs: strategy -> its trade log (``entry_date``, ``exit_date``, ``size``,
            ``entry_price``, ``exit_price``, ``pnl_net``; an open trade has no exit).
        equity: strategy -> its equity over the same dates.
        signals: strategy -> label -> a line on the bars' dates.
        shown: strategies whose series are visible at first.
        benchmark: the strategy whose equity and drawdown stay visible beside the picked one.
        worst: strategy -> (start, end) of its deepest drawdowns, shaded on the drawdown
            panel (the picked strategy's).
    """
    dates = bars.index
    step = (dates[-1] - dates[0]) / max(len(dates) - 1, 1)
    width_ms = 0.7 * step.total_seconds() * 1000
    price = new_figure(title, "price", height=360)
    _candles(price, bars, width_ms)
    trade_renderers = []
    for strategy in ordered(list(logs)):
        hue, dash = style(strategy)
        visible = strategy in shown
        for k, (label, line) in enumerate(signals.get(strategy, {}).items()):
            price.line(
                dates,
                line.reindex(dates).astype("float32").to_numpy(),
                color=hue,
                line_dash="dashed" if k else "solid",
                line_width=1.4,
                alpha=0.9,
                legend_label=f"{strategy}: {label}",
                visible=visible,
                name=pick_name(instrument, strategy, f"signal{k}"),
            )
        log = logs[strategy]
        if log.empty:
            continue
        segments = trade_segments(log, dates[-1], float(bars["close"].iloc[-1]))
        segments["marker"] = np.where(segments["side"] == "long", "triangle", "inverted_triangle")
        source = ColumnDataSource(segments)
        trade_renderers.append(
            price.segment(
                "x0",
                "y0",
                "x1",
                "y1",
                source=source,
                color="colour",
                line_width=3,
                alpha=0.8,
                legend_label=f"{strategy}: trades",
                visible=visible,
                name=pick_name(instrument, strategy, "trades"),
            )
        )
        price.scatter(
            "x0",
            "y0",
            source=source,
            marker="marker",
            size=8,
            color=hue,
            legend_label=f"{strategy}: trades",
            visible=visible,
            name=pick_name(instrument, strategy, "entries"),
        )
    if trade_renderers:
        price.add_tools(
            HoverTool(
                renderers=trade_renderers,
                tooltips=[
                    ("", "@side @status"),
                    ("entry", "@x0{%F} at @y0{0.00}"),
                    ("exit", "@x1{%F} at @y1{0.00}"),
                    ("net P&L", "@pnl_text"),
                ],
                formatters={"@x0": "datetime", "@x1": "datetime"},
            )
        )
    legend_outside(price)

    volume = new_figure("volume", "volume", height=120, x_range=price.x_range)
    up = (bars["close"] >= bars["open"]).to_numpy()
    colours = np.where(up, CANDLE_UP, CANDLE_DOWN)
    volume.vbar(dates, width_ms, bars["volume"].astype("float32").to_numpy(), color=colours)

    pnl = new_figure("net P&L per trade (on its exit date)", "P&L", height=160)
    pnl.x_range = price.x_range
    pnl.add_layout(Span(location=0.0, dimension="width", line_color="#999999", line_width=1))
    for strategy in ordered(list(logs)):
        if logs[strategy].empty:
            continue
        segments = trade_segments(logs[strategy], dates[-1], float(bars["close"].iloc[-1]))
        pnl.vbar(
            segments["x1"],
            width_ms,
            segments["pnl"].fillna(0.0),
            color=segments["colour"],
            legend_label=strategy,
            visible=strategy in shown,
            name=pick_name(instrument, strategy, "pnl"),
        )
    legend_outside(pnl)

    growth = new_figure("equity: growth of 1", "growth of 1", height=200, x_range=price.x_range)
    drawdown = new_figure("drawdown", "drawdown (%)", height=150, x_range=price.x_range)
    curves = pd.DataFrame({s: e.reindex(dates) for s, e in equity.items()})
    sources = {  # one source per panel: the dates sent once
        "equity": source_of(curves / curves.bfill().iloc[0]),
        "drawdown": source_of(100 * (curves / curves.cummax() - 1)),
    }
    for strategy in ordered(list(equity)):
        hue, dash = style(strategy)
        visible = strategy in shown or strategy == benchmark
        for fig, part in ((growth, "equity"), (drawdown, "drawdown")):
            fig.line(
                "date",
                strategy,
                source=sources[part],
                color=hue,
                line_dash=dash,
                line_width=1.6,
                legend_label=strategy,
                visible=visible,
                name=pick_name(instrument, strategy, part),
            )
    for strategy, periods in (worst or {}).items():
        hue, _ = style(strategy)
        for k, (start, end) in enumerate(periods):
            drawdown.add_layout(
                BoxAnnotation(
                    left=start,
                    right=end,
                    fill_color=hue,
                    fill_alpha=0.12,
                    visible=strategy in shown,
                    name=pick_name(instrument, strategy, f"worst{k}"),
                )
            )
    for fig in (growth, drawdown):
        legend_outside(fig)
    layout = column(price, volume, pnl, growth, drawdown, sizing_mode="stretch_width")
    return layout, price.x_range
