"""The backtest stage's MLflow records: a ``backtest`` run with one child per instrument x
strategy (metrics, the cost sweep's Sharpe ratios, the strategy's files, its equity
against buy-and-hold), and the FAILED children of failed units."""

from __future__ import annotations

import contextlib
import json
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
from pipelines.execution import executors
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
    """Log one strategy's metrics, params, files and charts to its child run; its equity
    is drawn against ``benchmark`` (name, equity)."""
    tags = {"gatecast.instrument": instrument, "gatecast.strategy": name, "gatecast.kind": kind}
    with tracking.child_run(f"{instrument}/{name}", tags=tags):
        record = json.loads((out_dir / item["files"]["metrics"]).read_text())
        tracking.log_params({"kind": kind, "strategy.class": item["class"]})
        tracking.log_params({f"strategy.{k}": v for k, v in record["params"].items()})
        tracking.log_metrics({k: v for k, v in item["metrics"].items() if v is not None})
        tracking.log_metrics(
            {f"sharpe_at_{bp}bp": v for bp, v in item["cost_sweep"].items() if v is not None}
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


def record_runs(cfg: Config, summary_path: Path, command: str | None = None) -> None:
    """Record the written backtests in MLflow: a ``backtest`` run, a child per strategy.

    Reads only the stage's files (``summary_path`` and those it lists), so the
    runs carry exactly what ``build/`` holds.
    """
    out_dir = summary_path.parent
    summary = read_stage_summary(summary_path, "backtest")
    forecasts = cfg.stage_directory("train")
    inputs = {f"{name}.parquet": forecasts / f"{name}.parquet" for name in summary["instruments"]}
    with tracking.pipeline_run(cfg, "backtest", inputs=inputs, command=command):
        for instrument, entry in summary["instruments"].items():
            strategies = entry["strategies"]
            benchmark = None
            if cfg.report.benchmark in strategies:
                files = strategies[cfg.report.benchmark]["files"]
                equity = read_stage_parquet(out_dir / files["equity"], "backtest")["equity"]
                benchmark = (cfg.report.benchmark, equity)
            for name, item in strategies.items():
                kind = cfg.strategy_kind(name)
                _record_strategy(out_dir, instrument, name, item, kind, benchmark)
        rows = [
            {"instrument": instrument, "name": name, "sharpe": item["metrics"].get("sharpe")}
            for instrument, entry in summary["instruments"].items()
            for name, item in entry["strategies"].items()
            if not is_seed(name)
        ]
        if rows:
            note = f"gatecast `backtest` stage of config `{cfg.name}`"
            log_league(
                pd.DataFrame(rows).astype({"sharpe": float}), "sharpe", True, "strategy", note
            )
        tracking.log_artifact(summary_path)


def record_failures(cfg: Config, failed: executors.UnitsFailed) -> None:
    """A ``backtest`` run, FAILED, with a FAILED child per failed unit naming its error.

    The finished units' runs are recorded by the rerun that completes the stage
    (their results wait in ``backtests/.units``): a strategy run carries the
    stage's files, and no file is written while a unit is missing.
    """
    with contextlib.suppress(executors.UnitsFailed), tracking.pipeline_run(cfg, "backtest"):
        for failure in failed.failures:
            name = failure.unit.split(" (", 1)[0]  # GSPC/lstm (build/.../GSPC.parquet)
            instrument, _, strategy = name.partition("/")
            tags = {"gatecast.instrument": instrument, "gatecast.strategy": strategy}
            tracking.failed_child_run(name, tags, str(failure))
        raise failed
