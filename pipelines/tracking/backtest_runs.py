"""The backtest stage's MLflow records: one child of its ``backtest`` run per instrument x
strategy (metrics, the cost sweep's Sharpe ratios, the strategy's files, its equity
against buy-and-hold), a FAILED child per failed unit, and the stage's league."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines import tracking
from pipelines.common.outputs import (
    read_stage_parquet,
    read_stage_summary,
)
from pipelines.common.strategy_names import is_seed
from pipelines.config import Config
from pipelines.report import charts
from pipelines.tracking.league import log_league


def _record_strategy(
    out_dir: Path,
    instrument: str,
    name: str,
    item: dict[str, Any],
    kind: str,
    benchmark: tuple[str, pd.Series] | None,
) -> None:
    """Log one strategy's metrics, params, files and charts to its child run, from the
    files its entry of summary.json (``item``) lists; its equity is drawn against
    ``benchmark`` (name, equity)."""
    tags = {"gatecast.instrument": instrument, "gatecast.strategy": name, "gatecast.kind": kind}
    with tracking.child_run(f"{instrument}/{name}", tags=tags):
        # the strategy's own file: what build/ holds, undefined numbers written as null
        record = json.loads((out_dir / item["files"]["metrics"]).read_text())
        tracking.log_params({"kind": kind, "strategy.class": record["class"]})
        tracking.log_params({f"strategy.{k}": v for k, v in record["params"].items()})
        tracking.log_metrics({k: v for k, v in record["metrics"].items() if v is not None})
        tracking.log_metrics(
            {f"sharpe_at_{bp}bp": v for bp, v in record["cost_sweep"].items() if v is not None}
        )
        for relative in item["files"].values():
            tracking.log_artifact(out_dir / relative, "backtest")
        equity = read_stage_parquet(out_dir / item["files"]["equity"], "backtest")["equity"]
        curves = {name: equity}
        if benchmark is not None and name != benchmark[0]:
            curves[benchmark[0]] = benchmark[1]
        tracking.log_figure(_equity_figure(curves, f"{instrument} {name}"), "equity")


def _equity_figure(curves: dict[str, pd.Series], title: str) -> Any:
    """Growth of 1 and drawdown of each curve (the strategy, then the benchmark, dashed),
    one small PNG.

    One figure, not the report's two wide ones: drawing is most of the
    recording's time (a fixed layout: constrained layout doubled it).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    growth, drawdown = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    for i, (name, series) in enumerate(curves.items()):
        style = {"color": charts.colour(name), "linewidth": 1.2 if len(curves) == 1 else 1.0}
        if i > 0:
            style["linestyle"] = "--"
        growth.plot(series.index, series / series.iloc[0], label=name, **style)
        drawdown.plot(series.index, 100 * (series / series.cummax() - 1), **style)
    others = list(curves)[1:]
    growth.set_title(title + (f" against {others[0]}" if others else ""))
    growth.set_ylabel("growth of 1")
    drawdown.set_ylabel("drawdown (%)")
    for ax in (growth, drawdown):
        ax.grid(alpha=0.3)
    growth.legend(loc="upper left", fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.93, bottom=0.07, hspace=0.12)
    return fig


def record_strategy(
    cfg: Config,
    out_dir: Path,
    instrument: str,
    name: str,
    strategies: Mapping[str, dict[str, Any]],
) -> None:
    """Record the instrument's strategy ``name`` as a child of the open ``backtest`` run,
    from its files only, so its run carries exactly what ``build/`` holds.

    ``strategies`` maps the instrument's strategies written so far to their entries of
    summary.json; where it holds ``report.benchmark``, the equity chart draws it too.
    """
    benchmark = None
    if cfg.report.benchmark in strategies and name != cfg.report.benchmark:
        files = strategies[cfg.report.benchmark]["files"]
        equity = read_stage_parquet(out_dir / files["equity"], "backtest")["equity"]
        benchmark = (cfg.report.benchmark, equity)
    kind = cfg.strategy_kind(name)
    _record_strategy(out_dir, instrument, name, strategies[name], kind, benchmark)


def record_failure(instrument: str, name: str, error: str) -> None:
    """A FAILED child of the open ``backtest`` run for a strategy whose unit raised
    ``error``."""
    tags = {"gatecast.instrument": instrument, "gatecast.strategy": name}
    tracking.failed_child_run(f"{instrument}/{name}", tags, error)


def record_summary(cfg: Config, summary_path: Path) -> None:
    """The open ``backtest`` run's league of Sharpe ratios and the stage's summary.json."""
    summary = read_stage_summary(summary_path, "backtest")
    rows = [
        {"instrument": instrument, "name": name, "sharpe": item["metrics"].get("sharpe")}
        for instrument, entry in summary["instruments"].items()
        for name, item in entry["strategies"].items()
        if not is_seed(name)
    ]
    if rows:
        note = f"gatecast `backtest` stage of config `{cfg.name}`"
        log_league(pd.DataFrame(rows).astype({"sharpe": float}), "sharpe", True, "strategy", note)
    tracking.log_artifact(summary_path)
