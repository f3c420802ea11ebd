"""The report's charts, section by section: Bokeh for the page, matplotlib PNGs beside it.

``Charts`` collects every Bokeh figure of the page so ``bokeh.embed.components``
serialises them in one document (one script; shared data sources once), and
writes the PNG twin of each chart into the report's directory as a file the
page links to. The per-instrument strategy charts (price with trades, rolling
Sharpe, return distribution) hold every strategy behind the page's picker; their
PNGs show them as the page opens (the picked strategy, with buy-and-hold).

Gates: ``<INST>.gates.parquet`` holds every unit's activations (long form,
``pipelines.execution.units.gates_long``). The section shows a heatmap of units x dates
per gate (units sorted by their mean forget gate), the spread of each gate per
walk-forward fold, and each gate's mean over units against the 20-bar realised
volatility of the close up to the same date, with the Spearman correlations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import registry
from core.bars import BAR_COLUMNS
from pipelines.common.strategy_names import RANDOM_WALK, is_seed
from pipelines.config import Config
from pipelines.report import bokeh as report_bokeh
from pipelines.report import bokeh_gates, charts, gate_charts, strategy_charts, tearsheet
from pipelines.report.comparison import POOLED, Comparison, finite
from pipelines.report.inputs import InstrumentData, StrategyRun
from pipelines.report.trade_view import trade_view

VOL_BARS = 20


class Charts:
    """The page's Bokeh figures in order, the group each is drawn with (``group`` when it
    was added: the pooled charts, an instrument's), and the PNG files written beside it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.figures: list[Any] = []
        self.groups: list[str] = []
        self.group = "page"
        self.pngs: list[str] = []

    def add(self, fig: Any, caption: str, png: Any = None, filename: str = "") -> dict[str, Any]:
        """Register a Bokeh figure (and optionally its matplotlib twin, saved as ``filename``)."""
        self.figures.append(fig)
        self.groups.append(self.group)
        chart = {
            "index": len(self.figures) - 1,
            "group": self.group,
            "caption": caption,
            "png": "",
            "div": "",
        }
        if png is not None:
            charts.save_png(png, self.directory / filename)
            self.pngs.append(filename)
            chart["png"] = filename
        return chart


def main_equity(runs: Mapping[str, StrategyRun]) -> dict[str, pd.Series]:
    """Equity of every strategy but the seeds of a stochastic forecaster."""
    return {n: r.equity for n, r in runs.items() if not is_seed(n)}


def equity_and_drawdown(
    out: Charts,
    equity: Mapping[str, pd.Series],
    label: str,
    what: str,
    emphasis: charts.Emphasis | None = None,
) -> list[dict[str, Any]]:
    """The equity and drawdown charts of one instrument (or pooled)."""
    title = f"{label}: {what}"
    return [
        out.add(
            report_bokeh.equity_chart(equity, title, emphasis),
            f"{label}: growth of 1 for every strategy from the out-of-sample start, after costs. "
            "Click a legend entry to hide a line; drag or scroll to zoom.",
            charts.equity_chart(equity, title, emphasis),
            f"{label}_equity.png",
        ),
        out.add(
            report_bokeh.drawdown_chart(equity, f"{label}: drawdowns", emphasis),
            f"{label}: drawdown from the running peak.",
            charts.drawdown_chart(equity, f"{label}: drawdowns", emphasis),
            f"{label}_drawdown.png",
        ),
    ]


def forecast(out: Charts, inst: InstrumentData, comparison: Comparison) -> list[dict[str, Any]]:
    """Forecasts of the candidate, the random walk and the most accurate other forecaster."""
    name = inst.name
    block = comparison.league[comparison.league["instrument"] == name].set_index("strategy")
    forecasters = block[(block["kind"] == "forecast")]["rmse"].dropna()
    shown = [n for n in (comparison.candidate, RANDOM_WALK) if n in inst.frame]
    rest = forecasters.drop(index=[n for n in shown if n in forecasters.index])
    if not rest.empty:
        shown.append(rest.idxmin())
    if not shown:
        return []
    oos = inst.frame.loc[inst.oos_start : inst.oos_end]
    title = f"{name}: next-close forecasts against the actual close"
    series = {n: oos[n] for n in shown}
    return [
        out.add(
            report_bokeh.forecast_chart(oos["close"], series, title),
            f"{name}: forecasts of {', '.join(shown)} (the {comparison.label}, the random walk "
            "and the most "
            "accurate other forecaster), each drawn on the date it forecasts.",
            charts.forecast_chart(oos["close"], series, title),
            f"{name}_forecast.png",
        )
    ]


def sweep(out: Charts, comparison: Comparison, name: str) -> list[dict[str, Any]]:
    """Sharpe ratio against commission, with the break-even points."""
    table = comparison.sweep[comparison.sweep["instrument"] == name]
    table = table[~table["strategy"].map(is_seed)]
    if table.empty or table["cost_bp"].nunique() < 2:
        return []
    pivot = table.pivot(index="cost_bp", columns="strategy", values="sharpe")
    block = comparison.league[comparison.league["instrument"] == name]
    be = {r.strategy: r.break_even_bp for r in block.itertuples() if finite(r.break_even_bp)}
    label = "pooled" if name == POOLED else name
    title = f"{label}: Sharpe ratio against commission"
    return [
        out.add(
            report_bokeh.cost_sweep_chart(pivot, title, be),
            f"{label}: annualised Sharpe ratio of each strategy as the commission grows (all "
            "else as configured); circles mark the break-even cost against buy-and-hold.",
            charts.cost_sweep_chart(
                pivot, title, be, charts.Emphasis(comparison.candidate, comparison.benchmark)
            ),
            f"{label}_cost_sweep.png",
        )
    ]


def _gate_means(gates: pd.DataFrame, close: pd.Series, per_year: float) -> pd.DataFrame:
    """Per date: each gate's mean over units, and the realised volatility up to that date."""
    means = gates.groupby("date")[[g for g in charts.GATES if g in gates]].mean()
    log_returns = np.log(close.astype(float)).diff()
    vol = log_returns.rolling(VOL_BARS).std() * np.sqrt(per_year) * 100
    means["vol"] = vol.reindex(means.index)
    means["abs_return"] = 100 * log_returns.abs().reindex(means.index)
    return means


def gate_correlations(means: pd.DataFrame) -> list[dict[str, str]]:
    """Spearman correlation of each gate's mean with realised volatility and |return|."""
    rows = []
    for gate in (g for g in charts.GATES if g in means):
        cells = {"gate": gate}
        for column, label in (("vol", "vol"), ("abs_return", "abs_return")):
            pair = means[[gate, column]].dropna()
            rho = pair[gate].corr(pair[column], method="spearman") if len(pair) > 2 else np.nan
            cells[label] = f"{rho:+.2f}" if np.isfinite(rho) else "–"
        cells["n"] = f"{len(means[[gate, 'vol']].dropna())}"
        rows.append(cells)
    return rows


def gate_section(
    out: Charts, inst: InstrumentData, per_year: float, label: str
) -> dict[str, Any] | None:
    """Heatmaps of units x dates, the spread per fold, and gates against volatility."""
    gates = inst.gates
    if gates is None or gates.empty or not {"date", "unit"} <= set(gates.columns):
        return None
    name = inst.name
    order = gate_charts.unit_order(gates)
    figs = []
    present = [g for g in charts.GATES if g in gates]
    for k, gate in enumerate(present):
        matrix = gate_charts.gate_matrix(gates, gate)[order]
        label = "cell state" if gate == "cell" else f"{gate} gate"
        fig = bokeh_gates.gate_heatmap(matrix, gate, f"{name}: {label}", inst.fold_starts)
        png = None
        if k == 0:  # the matplotlib twin draws all gates in one figure
            png = gate_charts.gates_chart(
                gates, inst.frame["close"], f"{name}: {label} gates per unit", inst.fold_starts
            )
        figs.append(
            out.add(
                fig,
                f"{name}: {label} of each unit at each date (colours: 1st to 99th percentile).",
                png,
                f"{name}_gates.png",
            )
        )
    if len(figs) > 1:
        # one x-range: zooming one heatmap zooms them all; one PNG draws them all
        for chart in figs[1:]:
            out.figures[chart["index"]].x_range = out.figures[figs[0]["index"]].x_range
            chart["png"] = figs[0]["png"]
    quantiles = (
        gates.melt(
            id_vars=["fold"], value_vars=[g for g in present if g != "cell"], var_name="gate"
        )
        .groupby(["gate", "fold"])["value"]
        .quantile([0.05, 0.25, 0.5, 0.75, 0.95])
        .unstack()
    )
    quantiles.columns = ["q05", "q25", "q50", "q75", "q95"]
    title = f"{name}: gate activations per fold"
    folds = out.add(
        bokeh_gates.gate_folds_chart(quantiles, title),
        f"{name}: spread of every unit's activations per walk-forward fold (each fold is its "
        "own model): boxes are the quartiles, whiskers 5% to 95%.",
        gate_charts.gate_folds_png(quantiles, title),
        f"{name}_gate_folds.png",
    )
    means = _gate_means(gates, inst.frame["close"], per_year)
    title = f"{name}: mean gate activation against realised volatility"
    vol_frame = means.drop(columns=["abs_return", "cell"], errors="ignore")
    vol_label = f"realised volatility (%, annualised, {VOL_BARS} bars)"
    scatter = out.add(
        bokeh_gates.gate_volatility_chart(vol_frame, title, vol_label),
        f"{name}: each date's mean activation over units, as its deviation from its average "
        f"over the dates, against the annualised volatility of the last {VOL_BARS} bars' log "
        "returns (both known at that date).",
        gate_charts.gate_volatility_png(vol_frame, title, vol_label),
        f"{name}_gate_volatility.png",
    )
    return {
        "heatmaps": figs,
        "folds": folds,
        "scatter": scatter,
        "correlations": gate_correlations(means),
        "units": int(gates["unit"].nunique()),
    }


def strategy_section(
    out: Charts,
    inst: InstrumentData,
    trades: Mapping[str, pd.DataFrame],
    per_year: float,
    names: Sequence[str],
    picked: str,
    benchmark: str,
    signals: Mapping[str, Mapping[str, pd.Series]] | None = None,
) -> dict[str, Any]:
    """Per strategy: tables for the picker, and three charts holding every strategy (price
    with trades, rolling Sharpe, return distribution) where the picker shows the picked one's
    series (and buy-and-hold's, for comparison) and the legend toggles any other."""
    name = inst.name
    close = inst.frame.loc[inst.oos_start : inst.oos_end, "close"]
    shown = [picked, benchmark]
    bench = inst.runs[benchmark].returns if benchmark in inst.runs else None
    stats = {
        s: tearsheet.strategy_stats(inst.runs[s], per_year, None if s == benchmark else bench)
        for s in names
    }
    logs = {s: trades.get(s, pd.DataFrame()) for s in names}
    price_title = f"{name}: each strategy's trades on the bars, with its signal"
    bars = inst.frame.loc[inst.oos_start : inst.oos_end, list(BAR_COLUMNS)]
    equity = {s: inst.runs[s].equity for s in names}
    worst = {s: _worst_periods(st.drawdowns, bars.index[-1]) for s, st in stats.items()}
    price, x_range = trade_view(
        name, bars, logs, equity, signals or {}, [picked], price_title, benchmark, worst
    )
    rolling_title = f"{name}: Sharpe ratio over the last {tearsheet.ROLLING_BARS} bars"
    rolling_series = {s: st.rolling_sharpe for s, st in stats.items()}
    window = f"over the last {tearsheet.ROLLING_BARS} bars"
    rolling = strategy_charts.rolling_chart(
        name,
        [
            (f"{name}: Sharpe ratio {window}", "Sharpe ratio", "rolling", rolling_series),
            (
                f"{name}: volatility {window}, annualised",
                "volatility",
                "rolling_vol",
                {s: st.rolling_volatility for s, st in stats.items()},
            ),
            (
                f"{name}: Sortino ratio {window}",
                "Sortino ratio",
                "rolling_sortino",
                {s: st.rolling_sortino for s, st in stats.items()},
            ),
            (
                f"{name}: beta to {benchmark} {window}",
                "beta",
                "rolling_beta",
                {s: st.rolling_beta for s, st in stats.items()},
            ),
        ],
        [picked],
        benchmark,
        x_range,
    )
    cumulative = strategy_charts.cumulative_chart(
        name, {s: st.returns for s, st in stats.items()}, benchmark, [picked], name, x_range
    )
    returns = {s: st.returns for s, st in stats.items()}
    distribution_title = f"{name}: returns per bar"
    distribution = report_bokeh.distribution_chart(name, returns, shown, distribution_title)
    # the PNGs show each chart as the page opens: the picked strategy (and buy-and-hold)
    shown_here = [s for s in shown if s in stats]
    tables = [
        {
            "strategy": s,
            "id": f"{name}-{s}",
            "monthly": tearsheet.monthly_rows(
                stats[s].monthly,
                stats[benchmark].monthly if benchmark in stats and s != benchmark else None,
            ),
            "benchmark": benchmark if benchmark in stats and s != benchmark else "",
            "drawdowns": tearsheet.drawdown_rows(stats[s].drawdowns),
            "trades": tearsheet.trade_rows(logs[s]) if not logs[s].empty else [],
            "metrics": tearsheet.metric_rows(inst.runs[s], logs[s]),
        }
        for s in names
    ]
    return {
        "price": out.add(
            price,
            f"{name}: the bars (candlesticks, volume) with the picked strategy's signal and "
            "trades, each drawn from entry to exit, green for a net profit and red for a loss; "
            "below, each trade's net P&L, the equity and its drawdown, on one date axis (zoom "
            "one, all follow). Click a legend entry to show another strategy's.",
            charts.trades_png(
                close,
                {picked: logs.get(picked, pd.DataFrame())},
                f"{name}: close with the entries and exits of {picked}",
            ),
            f"{name}_trades.png",
        ),
        "cumulative": out.add(
            cumulative,
            f"{name}: cumulative return of the picked strategy and {benchmark}, in linear and "
            f"log scale, and against {benchmark} scaled to the strategy's volatility "
            "(quantstats' vol-matched comparison: what is left is not leverage).",
            strategy_charts.cumulative_png(
                stats[picked].returns if picked in stats else pd.Series(dtype=float),
                stats[benchmark].returns if benchmark in stats else None,
                (picked, benchmark),
                f"{name}: {picked} against {benchmark}",
            ),
            f"{name}_cumulative.png",
        ),
        "rolling": out.add(
            rolling,
            f"{name}: annualised Sharpe ratio of the returns above the risk-free rate, "
            f"volatility, Sortino ratio and beta to {benchmark}, each over the last "
            f"{tearsheet.ROLLING_BARS} bars (quantstats), the picked strategy and {benchmark}.",
            charts.rolling_sharpe_png(
                {s: rolling_series[s] for s in shown_here},
                rolling_title,
                charts.Emphasis(picked, benchmark),
            ),
            f"{name}_rolling_sharpe.png",
        ),
        "distribution": out.add(
            distribution,
            f"{name}: distribution of the returns per bar (common bins).",
            charts.distribution_png({s: returns[s] for s in shown_here}, distribution_title),
            f"{name}_distribution.png",
        ),
        "tables": tables,
    }


def signal_lines(
    cfg: Config, inst: InstrumentData, names: Sequence[str]
) -> dict[str, dict[str, pd.Series]]:
    """Strategy -> the lines its decisions follow (``Strategy.signal_lines``), over the
    out-of-sample dates: a configured strategy's own; a forecaster's column traded by
    ``backtest.forecast_strategy``, that forecast."""
    bars = inst.frame[[c for c in BAR_COLUMNS if c in inst.frame.columns]]
    out = {}
    for name in names:
        spec = cfg.backtest.strategies.get(name)
        if spec is not None:
            cls, params = spec.cls, spec.arguments()
            column = (spec.forecaster or cfg.report.candidate) if cls.trades_forecast else None
        elif name in inst.frame.columns:
            cls = registry.load(registry.STRATEGIES, cfg.backtest.forecast_strategy)
            params, column = {}, name
        else:
            continue
        forecast = inst.frame[column] if column in inst.frame.columns else None
        lines = cls.signal_lines(bars, params, forecast)
        out[name] = {k: v.loc[inst.oos_start : inst.oos_end] for k, v in lines.items()}
    return out


def _worst_periods(
    drawdowns: pd.DataFrame, last: pd.Timestamp
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """(start, end) of the deepest drawdowns (``tearsheet.DRAWDOWN_ROWS``); one still open
    at the last bar ends there."""
    out = []
    for record in drawdowns.to_dict(orient="records") if not drawdowns.empty else []:
        end = record.get("end")
        recovered = record.get("recovered", True) and end is not None and str(end) != "nan"
        out.append((pd.Timestamp(record["start"]), pd.Timestamp(end) if recovered else last))
    return out
