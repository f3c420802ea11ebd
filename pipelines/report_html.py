"""The HTML report: league table, verdicts, charts and notes in one self-contained page.

``render_html`` draws every chart into the report's directory as a PNG and
writes ``index.html`` from ``templates/report.html.j2``, with the charts
embedded as base64 (no script, font or stylesheet from the network), so the
page opens anywhere, from a file or as an MLflow artifact. Every cell of the
league table carries its exact value (``data-value``) next to the rounded text.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from core.bars import format_timestamp
from core.periods import PERIODS_PER_YEAR
from pipelines import charts
from pipelines.comparison import POOLED, Comparison, finite, sorted_block
from pipelines.config import Config
from pipelines.report_inputs import InstrumentData, StrategyRun
from pipelines.strategy_names import BENCHMARK, LSTM, RANDOM_WALK, seed_columns, strategy_kind
from pipelines.verdict import verdict

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


def _png(fig: Any, directory: Path, filename: str, caption: str, embed: bool) -> dict[str, Any]:
    path = charts.save_png(fig, directory / filename)
    width, height = (int(round(v)) for v in fig.get_size_inches() * charts.DPI)
    src = filename
    if embed:
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return {
        "src": src,
        "file": filename,
        "alt": caption,
        "caption": caption,
        "width": width,
        "height": height,
    }


def _main_equity(runs: Mapping[str, StrategyRun]) -> dict[str, pd.Series]:
    return {n: r.equity for n, r in runs.items() if strategy_kind(n) != "seed"}


def _instrument_charts(
    inst: InstrumentData, comparison: Comparison, directory: Path, embed: bool
) -> list[dict[str, Any]]:
    out = []
    name = inst.name
    equity = _main_equity(inst.runs)
    out.append(
        _png(
            charts.equity_chart(equity, f"{name}: equity of every strategy (out of sample)"),
            directory,
            f"{name}_equity.png",
            f"{name}: growth of 1 for every strategy from the out-of-sample start, after costs.",
            embed,
        )
    )
    out.append(
        _png(
            charts.drawdown_chart(equity, f"{name}: drawdowns"),
            directory,
            f"{name}_drawdown.png",
            f"{name}: drawdown from the running peak.",
            embed,
        )
    )
    block = comparison.league[comparison.league["instrument"] == name].set_index("strategy")
    forecasters = block[(block["kind"] == "forecast")]["rmse"].dropna()
    shown = [n for n in (LSTM, RANDOM_WALK) if n in inst.frame]
    rest = forecasters.drop(index=[n for n in shown if n in forecasters.index])
    if not rest.empty:
        shown.append(rest.idxmin())
    if shown:
        oos = inst.frame.loc[inst.oos_start : inst.oos_end]
        fig = charts.forecast_chart(
            oos["close"],
            {n: oos[n] for n in shown},
            f"{name}: next-close forecasts against the actual close",
        )
        out.append(
            _png(
                fig,
                directory,
                f"{name}_forecast.png",
                f"{name}: forecasts of {', '.join(shown)} (the LSTM, the random walk and "
                "the most accurate other forecaster), each drawn on the date it forecasts.",
                embed,
            )
        )
    if inst.gates is not None and not inst.gates.empty:
        fig = charts.gates_chart(
            inst.gates,
            inst.frame["close"],
            f"{name}: LSTM gate activations over the out-of-sample dates",
            inst.fold_starts,
        )
        out.append(
            _png(
                fig,
                directory,
                f"{name}_gates.png",
                f"{name}: forget, input and output gates (mean over units) and cell state "
                "of the LSTM's last layer at each date; dotted lines: walk-forward refits.",
                embed,
            )
        )
    out.extend(_sweep_chart(comparison, name, directory, embed))
    return out


def _sweep_chart(
    comparison: Comparison, name: str, directory: Path, embed: bool
) -> list[dict[str, Any]]:
    sweep = comparison.sweep[comparison.sweep["instrument"] == name]
    sweep = sweep[sweep["strategy"].map(strategy_kind) != "seed"]
    if sweep.empty or sweep["cost_bp"].nunique() < 2:
        return []
    table = sweep.pivot(index="cost_bp", columns="strategy", values="sharpe")
    block = comparison.league[comparison.league["instrument"] == name]
    be = {r.strategy: r.break_even_bp for r in block.itertuples() if finite(r.break_even_bp)}
    fig = charts.cost_sweep_chart(table, f"{name}: Sharpe ratio against commission", be)
    label = "pooled" if name == POOLED else name
    return [
        _png(
            fig,
            directory,
            f"{label}_cost_sweep.png",
            f"{label}: annualised Sharpe ratio of each strategy as the commission grows "
            "(all else as configured); circles mark the break-even cost against buy-and-hold.",
            embed,
        )
    ]


def _per_year_words(comparison: Comparison) -> str:
    if comparison.interval == "daily" and comparison.periods_per_year == PERIODS_PER_YEAR:
        return "daily equity bars"
    return f"{comparison.interval} bars, measured from their timestamps or set in the config"


def _search_words(trials: int) -> str:
    if not trials:
        return ", no hyperparameter search (search.trials: 0)"
    return (
        f", plus the {trials} LSTM configuration{'s' if trials != 1 else ''} the hyperparameter "
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
        f"counted separately){_search_words(comparison.search_trials)}.",
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
        "LSTM: the 'lstm' strategy trades the mean forecast of the seeds; each seed's own "
        "forecasts are also backtested (mean ± std in the seeds table).",
    ]


def _seed_table(comparison: Comparison) -> tuple[list[str], list[dict[str, Any]]]:
    metrics = ["sharpe", "sortino", "cagr", "max_drawdown", "trades", "total_return"]
    rows = []
    for inst, summary in comparison.seeds.items():
        cells = []
        for m in metrics:
            mean, std = summary.get(m, (math.nan, math.nan))
            pct = m in {"cagr", "max_drawdown", "total_return"}
            scale, unit = (100, "%") if pct else (1, "")
            if not np.isfinite(mean):
                cells.append("–")
            elif np.isfinite(std):
                cells.append(f"{scale * mean:.2f}{unit} ± {scale * std:.2f}{unit}")
            else:
                cells.append(f"{scale * mean:.2f}{unit}")
        rows.append({"instrument": inst, "cells": cells})
    return metrics, rows


def _league_blocks(
    cfg: Config, comparison: Comparison, instruments: Sequence[InstrumentData]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The league table's blocks (pooled first) and the verdict of each, for the template."""
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
                "lstm"
                if row["strategy"] == LSTM
                else ("benchmark" if row["strategy"] == BENCHMARK else "")
            )
            cells = [_cell(c, row, alpha) for c in COLUMNS]
            rows.append({"strategy": row["strategy"], "css": css, "cells": cells})
        blocks.append({"key": key, "title": title, "rows": rows})
        sentences, outcome = verdict(block.set_index("strategy"), alpha, comparison.n_trials)
        verdicts.append({"instrument": title, "sentences": sentences, "css": outcome})
    return blocks, verdicts


def _column_groups() -> list[tuple[str, int]]:
    groups: list[tuple[str, int]] = []
    for col in COLUMNS:
        if groups and groups[-1][0] == col.group:
            groups[-1] = (col.group, groups[-1][1] + 1)
        else:
            groups.append((col.group, 1))
    return groups


def _pooled_charts(
    comparison: Comparison, instruments: Sequence[InstrumentData], directory: Path, embed: bool
) -> list[dict[str, Any]]:
    if len(instruments) <= 1 or not comparison.pooled_runs:
        return []
    equity = _main_equity(comparison.pooled_runs)
    return [
        _png(
            charts.equity_chart(equity, "Pooled: equal-weight equity"),
            directory,
            "pooled_equity.png",
            "Pooled: growth of 1 of the equal-weight portfolio of each strategy.",
            embed,
        ),
        _png(
            charts.drawdown_chart(equity, "Pooled: drawdowns"),
            directory,
            "pooled_drawdown.png",
            "Pooled: drawdown from the running peak.",
            embed,
        ),
        *_sweep_chart(comparison, POOLED, directory, embed),
    ]


def render_html(
    cfg: Config,
    comparison: Comparison,
    instruments: Sequence[InstrumentData],
    directory: Path,
    *,
    config_path: str = "",
    embed: bool = True,
    multiple_html: str = "",  # pipelines.report_multiple.render
) -> Path:
    """Draw every chart into ``directory`` and write ``index.html`` there."""
    alpha = cfg.report.significance
    blocks, verdicts = _league_blocks(cfg, comparison, instruments)
    inst_ctx = []
    for inst in instruments:
        bars = len(inst.runs[next(iter(inst.runs))].returns) if inst.runs else 0
        inst_ctx.append(
            {
                "name": inst.name,
                "oos_start": format_timestamp(inst.oos_start),
                "oos_end": format_timestamp(inst.oos_end),
                "bars": bars,
                "charts": _instrument_charts(inst, comparison, directory, embed),
            }
        )
    pooled_charts = _pooled_charts(comparison, instruments, directory, embed)
    seed_metrics, seed_rows = _seed_table(comparison)
    seed_count = max((len(seed_columns(inst.frame.columns)) for inst in instruments), default=0)
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
        pooled_charts=pooled_charts,
        notes=_notes(cfg, comparison),
        multiple_html=multiple_html,
    )
    path = directory / "index.html"
    path.write_text(html, encoding="utf-8")
    return path
