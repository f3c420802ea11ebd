"""The HTML report: verdicts, league table, interactive charts and tear sheets in one page.

``render_html`` writes ``index.html`` from ``templates/report.html.j2``:

- a table of contents; the verdicts with a legend of their colours; the league
  table (sortable by any column with a click on its header, the header stays on
  screen while scrolling, the strategy column stays while scrolling sideways on
  a phone), every cell carrying its exact value (``data-value``);
- Bokeh charts (``pipelines.report.page_charts``): pooled, then per instrument the
  equity, drawdowns, forecasts, cost sweep and the candidate's gates, and a strategy
  picker over one tear sheet per strategy (price with entries and exits,
  sortable trade list, monthly returns, drawdown periods, rolling Sharpe ratio,
  return distribution; ``pipelines.report.tearsheet``).

The page is self-contained and offline: Bokeh's JavaScript (its core component
only) and the page's own small script are inlined; no font, stylesheet, script
or image comes from the network. Each chart's PNG is written beside the
page (``<label>_<chart>.png``) and linked, not embedded, which keeps the default
run's page near 5 MB. The template's ``extra_sections`` block is where further
sections (multiple-testing results) go.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import numpy as np
import pandas as pd

from core.bars import format_timestamp
from core.periods import PERIODS_PER_YEAR
from pipelines.common.strategy_names import seed_columns
from pipelines.config import Config
from pipelines.report import bokeh as report_bokeh
from pipelines.report import page_charts as report_charts
from pipelines.report import tearsheet
from pipelines.report.charts import Emphasis, ordered
from pipelines.report.comparison import POOLED, Comparison, finite, sorted_block
from pipelines.report.inputs import InstrumentData
from pipelines.report.verdict import headline, universe_headline, verdict

TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class Column:
    """One column of the HTML league table."""

    key: str
    label: str
    group: str
    kind: str  # number, percent, int, pvalue, prob, ci, text
    help: str = ""


COLUMNS = (
    Column(
        "sharpe", "Sharpe", "trading", "number", "annualised Sharpe ratio of daily excess returns"
    ),
    Column("sortino", "Sortino", "trading", "number", "annualised Sortino ratio"),
    Column("cagr", "CAGR", "trading", "percent", "compound annual growth rate"),
    Column("max_drawdown", "max DD", "trading", "percent", "maximum drawdown"),
    Column("volatility", "vol", "trading", "percent", "annualised volatility"),
    Column("trades", "trades", "trading", "int", "round trips (an open position counts)"),
    Column("win_rate", "win rate", "trading", "percent", "share of trades with a net profit"),
    Column("exposure", "exposure", "trading", "percent", "share of bars with a position"),
    Column("psr", "PSR", "statistics", "prob", "probabilistic Sharpe ratio against 0"),
    Column("dsr", "DSR", "statistics", "prob", "deflated Sharpe ratio (selection-adjusted PSR)"),
    Column(
        "sharpe_diff",
        "ΔSharpe vs B&H [CI]",
        "statistics",
        "ci",
        "Sharpe ratio minus buy-and-hold's with its bootstrap interval",
    ),
    Column(
        "break_even",
        "break-even cost",
        "statistics",
        "text",
        "commission at which the Sharpe edge over buy-and-hold vanishes",
    ),
    Column("rmse", "RMSE", "forecast", "number", "root mean squared error of the next close"),
    Column("theil_u2", "Theil U2", "forecast", "number3", "RMSE / random walk's RMSE"),
    Column(
        "directional_accuracy",
        "dir. acc.",
        "forecast",
        "percent",
        "share of correctly forecast up/down moves",
    ),
    Column("dm_statistic", "DM", "forecast", "number", "Diebold-Mariano statistic vs random walk"),
    Column("dm_p_value", "DM p", "forecast", "pvalue", "Diebold-Mariano p-value vs random walk"),
)


def _cell(col: Column, row: pd.Series, alpha: float) -> dict[str, str]:
    value = row.get(col.key)
    raw = "" if not finite(value) else repr(float(value))
    css = ""
    if col.kind == "text":
        text = str(value or "")
    elif not finite(value):
        return {"key": col.key, "text": "–", "raw": "", "css": "na"}
    elif col.kind == "percent":
        text = f"{100 * value:.1f}%"
    elif col.kind == "int":
        text = f"{int(value)}"
    elif col.kind == "pvalue":
        text = f"{value:.3f}" if value >= 0.001 else "<0.001"
        # DM < 0: more accurate than the random walk; significance colours the direction.
        if value < alpha:
            css = "sig" if row.get("dm_statistic", 0.0) < 0 else "sigworse"
    elif col.kind == "prob":
        text = f"{value:.2f}"
        css = "sig" if value > 1 - alpha else ""
    elif col.kind == "ci":
        low, high = row.get("sharpe_diff_low"), row.get("sharpe_diff_high")
        text = f"{value:+.2f}"
        if finite(low) and finite(high):
            text += f" [{low:+.2f}, {high:+.2f}]"
            css = "sig" if low > 0 else ("sigworse" if high < 0 else "")
    elif col.kind == "number3":
        text = f"{value:.3f}"
    else:
        text = f"{value:.2f}" if abs(value) < 1e4 else f"{value:,.0f}"
    if col.key == "sharpe" and finite(row.get("sharpe_seed_std")):
        text += f" ({row['sharpe_seed_mean']:.2f} ± {row['sharpe_seed_std']:.2f})"
    return {"key": col.key, "text": text, "raw": raw, "css": css}


def _per_year_words(comparison: Comparison) -> str:
    if comparison.interval == "daily" and comparison.periods_per_year == PERIODS_PER_YEAR:
        return "daily equity bars"
    return f"{comparison.interval} bars, measured from their timestamps or set in the config"


def _search_words(trials: int, label: str) -> str:
    if not trials:
        return ", no hyperparameter search (search.trials: 0)"
    return (
        f", plus the {trials} {label} configuration{'s' if trials != 1 else ''} the "
        "hyperparameter "
        "search stage scored before choosing the one trained (search.trials)"
    )


def _notes(cfg: Config, comparison: Comparison) -> list[str]:
    boot = cfg.report.bootstrap
    return [
        "Every strategy trades the same out-of-sample dates with the same execution model: "
        f"market orders at the next bar's open, commission {1e4 * cfg.backtest.commission:g} bp, "
        f"slippage {1e4 * cfg.backtest.slippage:g} bp, {cfg.backtest.sizing.percent:g}% of equity "
        "per position. Conventions of every trading metric: the docstring of strategies/engine.py.",
        f"Bars per year: {comparison.periods_per_year:,.6g} ({_per_year_words(comparison)}). "
        f"Sharpe ratios are annualised with √{comparison.periods_per_year:,.6g} from per-bar "
        f"returns in excess of the risk-free rate ({cfg.data.risk_free.source}), which is "
        f"turned into a rate per bar; CAGR, volatility, Sortino and turnover use the same "
        "bars per year.",
        "PSR (Bailey & López de Prado 2012) is the probability that the true Sharpe ratio is "
        "above 0 given the sample's length, skewness and kurtosis. DSR (2014) is the PSR against "
        "the Sharpe ratio the best of N unskilled trials would reach by luck, from the variance "
        f"of the trials' Sharpe ratios. Here N = {comparison.n_trials}: every strategy "
        "configuration backtested in this experiment (strategies × instruments, each LSTM seed "
        f"counted separately){_search_words(comparison.search_trials, cfg.candidate_label)}.",
        f"ΔSharpe intervals: stationary bootstrap (Politis & Romano 1994) of the paired "
        f"per-bar excess returns, {boot.samples} resamples, mean block length {boot.block} bars, "
        f"{round(100 * (1 - cfg.report.significance))}% percentile interval; the same resampled "
        "bars for every strategy of an instrument.",
        "Break-even cost: the commission at which the strategy's Sharpe ratio falls to "
        "buy-and-hold's (which pays the commission too), interpolated on the sweep "
        f"{', '.join(f'{bp:g}' for bp in cfg.report.cost_sweep_bp)} bp; 'no edge' = behind "
        "buy-and-hold even at the lowest cost, '> max' = still ahead at the highest.",
        "Forecast metrics are those of the train stage on the out-of-sample dates: RMSE of the "
        "next close, Theil U2 = RMSE / random walk's RMSE, directional accuracy over bars where "
        "both the forecast and the close moved, Diebold-Mariano test with the "
        "Harvey-Leybourne-Newbold correction against the random walk (negative = more accurate).",
        "Pooled rows: a calendar-time equal-weight portfolio per strategy (each day, the mean "
        "return of the instruments in their out-of-sample period that day); trades and "
        "commissions are summed, exposure day-weighted. Pooled forecast accuracy uses each "
        "instrument's errors divided by its random walk's RMSE (RMSE itself, in price units, "
        "is not pooled).",
        f"{cfg.candidate_label}: the '{cfg.report.candidate}' strategy trades the mean "
        "forecast of the seeds of a stochastic forecaster; each seed's own forecasts are also "
        "backtested (mean ± std in the seeds table).",
    ]


SEED_METRICS = (
    ("sharpe", "Sharpe ratio", "number"),
    ("sortino", "Sortino ratio", "number"),
    ("cagr", "CAGR", "percent"),
    ("max_drawdown", "max drawdown", "percent"),
    ("trades", "trades", "count"),
    ("total_return", "total return", "percent"),
)


def _number(value: float, digits: int = 2) -> str:
    """``value`` rounded for people: no ``-0.00`` when the rounded value is zero."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _mean_std(mean: float, std: float, kind: str) -> str:
    """ "0.45 ± 0.12", "12.3% ± 1.5%", or for counts "103 ± 1" (integers as integers)."""
    if not np.isfinite(mean):
        return "–"
    if kind == "percent":
        text, spread = f"{_number(100 * mean, 1)}%", f"{100 * std:.1f}%"
    elif kind == "count":
        text = f"{round(mean):d}"
        spread = f"{round(std):d}" if np.isfinite(std) else ""  # one seed: no spread
    else:
        text, spread = _number(mean), f"{std:.2f}"
    return f"{text} ± {spread}" if np.isfinite(std) else text


def _seed_table(comparison: Comparison) -> tuple[list[str], list[dict[str, Any]]]:
    rows = []
    for inst, summary in comparison.seeds.items():
        cells = [
            _mean_std(*summary.get(key, (math.nan, math.nan)), kind)
            for key, _, kind in SEED_METRICS
        ]
        rows.append({"instrument": inst, "cells": cells})
    return [label for _, label, _ in SEED_METRICS], rows


def headlines(cfg: Config, league: pd.DataFrame, block: pd.DataFrame, key: str) -> list[str]:
    """The one-line verdicts of one block (indexed by strategy): across the instruments
    first for the pooled block, then the block's own (``verdict.headline``)."""
    args = (cfg.report.significance, cfg.report.candidate, cfg.candidate_label)
    lines = [headline(block, *args, cfg.report.benchmark)]
    if key == POOLED:
        lines.insert(0, universe_headline(league, *args, cfg.report.benchmark, POOLED))
    return lines


def pooled_windows_note(instruments: Sequence[InstrumentData]) -> str:
    """What the pooled figures mix when the instruments' out-of-sample windows differ
    (empty when they are the same)."""
    windows = {(inst.oos_start, inst.oos_end) for inst in instruments}
    if len(windows) <= 1:
        return ""
    spans = ", ".join(
        f"{inst.name} {format_timestamp(inst.oos_start)} to {format_timestamp(inst.oos_end)}"
        for inst in instruments
    )
    overlap = max(i.oos_start for i in instruments) <= min(i.oos_end for i in instruments)
    how = "only partly overlap" if overlap else "do not overlap"
    return (
        f"The instruments' out-of-sample windows {how} in time ({spans}): a pooled figure "
        "averages each instrument's own days with equal weights; it is not one portfolio "
        "held over one period."
    )


def _league_blocks(
    cfg: Config,
    comparison: Comparison,
    instruments: Sequence[InstrumentData],
    corrected: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The league table's blocks (pooled first) and the verdict of each, for the template.

    ``corrected``: the multiple-testing sentences (``report_multiple.verdict_sentences``),
    which end the first verdict: the pooled one, or the only instrument's.
    """
    alpha = cfg.report.significance
    league = comparison.league
    blocks, verdicts = [], []
    order = (
        [POOLED] + [inst.name for inst in instruments]
        if len(instruments) > 1
        else [inst.name for inst in instruments]
    )
    for key in order:
        block = league[league["instrument"] == key]
        if block.empty:
            continue
        title = "Pooled across instruments (equal-weight)" if key == POOLED else key
        rows = []
        for _, row in sorted_block(block).iterrows():
            css = (
                "candidate"
                if row["strategy"] == cfg.report.candidate
                else ("benchmark" if row["strategy"] == cfg.report.benchmark else "")
            )
            cells = [_cell(c, row, alpha) for c in COLUMNS]
            rows.append({"strategy": row["strategy"], "css": css, "cells": cells})
        blocks.append({"key": key, "title": title, "rows": rows})
        indexed = block.set_index("strategy")
        sentences, outcome = verdict(
            indexed,
            alpha,
            comparison.n_trials,
            cfg.report.candidate,
            cfg.candidate_label,
            cfg.report.benchmark,
        )
        lines = headlines(cfg, league, indexed, key)
        if not verdicts:
            sentences = [*sentences, *corrected]
        verdicts.append(
            {
                "instrument": title,
                "pooled": key == POOLED,
                "headlines": lines,
                "sentences": sentences,
                "css": outcome,
            }
        )
    return blocks, verdicts


def _column_groups() -> list[tuple[str, int]]:
    groups: list[tuple[str, int]] = []
    for col in COLUMNS:
        if groups and groups[-1][0] == col.group:
            groups[-1] = (col.group, groups[-1][1] + 1)
        else:
            groups.append((col.group, 1))
    return groups


def _instrument_context(
    cfg: Config,
    inst: InstrumentData,
    comparison: Comparison,
    out: report_charts.Charts,
    trades: Mapping[str, pd.DataFrame],
) -> dict[str, Any]:
    name, per_year = inst.name, comparison.periods_per_year
    out.group = name  # this instrument's charts are drawn together, when first near the screen
    bars = len(inst.runs[next(iter(inst.runs))].returns) if inst.runs else 0
    equity = report_charts.main_equity(inst.runs)
    emphasis = Emphasis(cfg.report.candidate, cfg.report.benchmark)
    overview = report_charts.equity_and_drawdown(
        out, equity, name, "equity of every strategy (out of sample)", emphasis
    )
    overview += report_charts.forecast(out, inst, comparison)
    overview += report_charts.sweep(out, comparison, name)
    strategies = [n for n in ordered(list(equity)) if n in inst.runs]
    candidate = cfg.report.candidate
    picked = candidate if candidate in strategies else (strategies[0] if strategies else "")
    return {
        "name": name,
        "oos_start": format_timestamp(inst.oos_start),
        "oos_end": format_timestamp(inst.oos_end),
        "bars": bars,
        "charts": overview,
        "gates": report_charts.gate_section(out, inst, per_year, comparison.label),
        "strategies": report_charts.strategy_section(
            out,
            inst,
            trades,
            per_year,
            strategies,
            picked,
            cfg.report.benchmark,
            report_charts.signal_lines(cfg, inst, strategies),
        ),
        "default_strategy": picked,
    }


def _fill_divs(out: report_charts.Charts, contexts: Sequence[Any]) -> str:
    """Serialise every figure in one Bokeh document; put each div into its chart dict."""
    if not out.figures:
        return ""
    script, divs = report_bokeh.embed(out.figures, out.groups)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "index" in node and "div" in node:
                node["div"] = divs[node["index"]]
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(list(contexts))
    return script


def _toc(
    inst_ctx: Sequence[Mapping[str, Any]],
    label: str,
    pooled: bool,
    seeds: bool,
    multiple: bool = False,
) -> list[dict]:
    entries = [{"id": "verdicts", "title": "Verdict"}]
    if multiple:
        entries.append({"id": "multiple-testing", "title": "Many strategies, many instruments"})
    entries.append({"id": "league", "title": "League table"})
    if seeds:
        entries.append({"id": "seeds", "title": f"{label} across seeds"})
    if pooled:
        entries.append({"id": "pooled", "title": "Pooled across instruments"})
    for inst in inst_ctx:
        children = [{"id": f"inst-{inst['name']}-strategies", "title": "strategies"}]
        if inst["gates"]:
            children.insert(0, {"id": f"inst-{inst['name']}-gates", "title": f"{label} gates"})
        entries.append({"id": f"inst-{inst['name']}", "title": inst["name"], "children": children})
    entries.append({"id": "method", "title": "How these numbers were made"})
    return entries


def render_html(
    cfg: Config,
    comparison: Comparison,
    instruments: Sequence[InstrumentData],
    directory: Path,
    *,
    config_path: str = "",
    trades: Mapping[str, Mapping[str, pd.DataFrame]] | None = None,
    multiple_html: str = "",  # pipelines.report.multiple.render
    corrected: Sequence[str] = (),  # pipelines.report.multiple.verdict_sentences
) -> Path:
    """Draw every chart, write the PNGs and ``index.html`` into ``directory``.

    Args:
        trades: the backtests' trade logs, ``{instrument: {strategy: frame}}``
            (``pipelines.report.tearsheet.load_trade_logs``); missing ones show no trades.
    """
    alpha = cfg.report.significance
    blocks, verdicts = _league_blocks(cfg, comparison, instruments, corrected)
    out = report_charts.Charts(directory)
    pooled_charts: list[dict[str, Any]] = []
    out.group = POOLED
    if len(instruments) > 1 and comparison.pooled_runs:
        equity = report_charts.main_equity(comparison.pooled_runs)
        pooled_charts = report_charts.equity_and_drawdown(
            out,
            equity,
            "pooled",
            "equal-weight equity",
            Emphasis(cfg.report.candidate, cfg.report.benchmark),
        )
        pooled_charts += report_charts.sweep(out, comparison, POOLED)
    inst_ctx = [
        _instrument_context(cfg, inst, comparison, out, (trades or {}).get(inst.name, {}))
        for inst in instruments
    ]
    bokeh_script = _fill_divs(out, [pooled_charts, inst_ctx])
    seed_metrics, seed_rows = _seed_table(comparison)
    seed_count = max(
        (len(seed_columns(inst.frame.columns, cfg.report.candidate)) for inst in instruments),
        default=0,
    )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template(TEMPLATE).render(
        experiment=cfg.experiment_name,
        config_path=config_path or cfg.name,
        generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
        significance=alpha,
        level=1 - alpha,
        instruments=inst_ctx,
        verdicts=verdicts,
        league=blocks,
        columns=COLUMNS,
        column_groups=_column_groups(),
        seed_tables=seed_rows,
        seed_metrics=seed_metrics,
        seed_count=seed_count,
        candidate=cfg.report.candidate,
        benchmark=cfg.report.benchmark,
        label=cfg.candidate_label,
        pooled_charts=pooled_charts,
        pooled_note=pooled_windows_note(instruments),
        notes=_notes(cfg, comparison),
        multiple_html=multiple_html,
        toc=_toc(
            inst_ctx,
            cfg.candidate_label,
            bool(pooled_charts),
            bool(seed_rows),
            bool(multiple_html),
        ),
        bokeh_js=markupsafe.Markup(report_bokeh.inline_resources()),
        bokeh_script=markupsafe.Markup(bokeh_script),
        month_names=tearsheet.MONTHS,
        trade_headers=tearsheet.TRADE_HEADERS,
    )
    path = directory / "index.html"
    path.write_text(html, encoding="utf-8")
    return path
