"""The report's multiple-testing section: corrected answers, cross-sectional skill, the portfolio.

``analyse`` computes, from what the report already read (stage files only):

- per instrument and pooled: SPA, White's reality check and StepM of every
  strategy against buy-and-hold (``pipelines.report.multiple_testing``), with the
  bootstrap of ``report.bootstrap`` (block, samples -> resamples) and ``seed``;
- across instruments: the candidate's Diebold-Mariano and Sharpe-difference
  p-values adjusted with Holm and Benjamini-Hochberg, its win counts and sign tests;
- with at least ``cross_section.MIN_INSTRUMENTS`` instruments: IC, rank IC
  and ICIR of each forecaster (``pipelines.report.cross_section``);
- when the backtest stage ran ``backtest.top_k``: the portfolios' metrics and
  SPA / StepM of the top-k portfolios against the equal-weight universe.

``render`` turns it into one HTML fragment (tables and sentences, no script),
``verdict_sentences`` into the sentences the verdict adds (which correction,
over how many tests), ``write_tables`` into CSV files beside the report.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.common.errors import DataError
from pipelines.common.outputs import read_stage_parquet, read_stage_summary
from pipelines.common.strategy_names import RANDOM_WALK, is_seed
from pipelines.config import Config
from pipelines.report.comparison import POOLED, Comparison, excess_returns, fmt
from pipelines.report.cross_section import MIN_INSTRUMENTS, information_coefficients
from pipelines.report.inputs import InstrumentData
from pipelines.report.multiple_testing import (
    AcrossInstruments,
    SuperiorityTest,
    across_instruments,
    superiority_frame,
    superiority_table,
    superiority_test,
)

# pipelines.execution.portfolio_unit.EQUAL_WEIGHT (not imported: the report loads no Backtrader)
EQUAL_WEIGHT = "equal_weight"
PORTFOLIO_KEYS = ("total_return", "sharpe", "max_drawdown", "trades", "turnover", "commissions")


@dataclass
class MultipleTesting:
    """Everything the section shows.

    Args:
        superiority: SPA / reality check / StepM per instrument, then pooled.
        across: the candidate's corrected per-instrument tests, or None without its rows.
        cross_section: IC table (one row per forecaster), or None below 3 instruments.
        portfolio: metrics of the top-k portfolios and the equal-weight universe, or None.
        portfolio_test: SPA / StepM of the top-k portfolios against the equal-weight one.
        alpha: the significance level; instruments: how many there are.
        candidate, label: the forecaster judged (``report.candidate``) and how it is called.
    """

    superiority: list[SuperiorityTest]
    across: AcrossInstruments | None
    cross_section: pd.DataFrame | None
    portfolio: pd.DataFrame | None
    portfolio_test: SuperiorityTest | None
    alpha: float
    instruments: int
    notes: list[str] = field(default_factory=list)
    candidate: str = ""
    label: str = ""


def _excess_by_scope(
    instruments: Sequence[InstrumentData], comparison: Comparison
) -> dict[str, dict[str, pd.Series]]:
    per_year = comparison.periods_per_year
    out = {
        inst.name: {
            n: excess_returns(r.returns, r.risk_free, per_year) for n, r in inst.runs.items()
        }
        for inst in instruments
    }
    out[POOLED] = {
        n: excess_returns(r.returns, r.risk_free, per_year)
        for n, r in comparison.pooled_runs.items()
    }
    return out


def _read_portfolio(cfg: Config, per_year: float) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """The backtest stage's portfolio metrics and daily excess returns (empty without top_k)."""
    directory = cfg.stage_directory("backtest")
    summary = read_stage_summary(directory / "summary.json", "backtest")
    entry = summary.get("portfolio") or {}
    rows, excess = {}, {}
    for name, item in (entry.get("strategies") or {}).items():
        path = directory / item["files"]["equity"]
        if not path.is_file():
            raise DataError(f"{path} not found: rerun the backtest stage")
        frame = read_stage_parquet(path, "backtest")
        returns = frame["equity"].astype(float).pct_change().iloc[1:]
        excess[name] = excess_returns(returns, frame["risk_free"].astype(float), per_year)
        rows[name] = {k: item["metrics"].get(k, math.nan) for k in PORTFOLIO_KEYS}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(PORTFOLIO_KEYS))
    return table.astype(float), excess


def analyse(
    cfg: Config, instruments: Sequence[InstrumentData], comparison: Comparison
) -> MultipleTesting:
    """Run the corrected tests, the cross-sectional skill and read the portfolio (see module)."""
    boot = dict(
        size=cfg.report.significance,
        block=cfg.report.bootstrap.block,
        reps=cfg.report.bootstrap.samples,
        seed=cfg.seed,
    )
    tests = superiority_table(
        _excess_by_scope(instruments, comparison), cfg.report.benchmark, **boot
    )
    across = across_instruments(comparison.league, cfg.report.candidate, cfg.report.significance)
    notes = []
    cross = None
    if len(instruments) >= MIN_INSTRUMENTS:
        frames = {inst.name: inst.frame.loc[inst.oos_start : inst.oos_end] for inst in instruments}
        columns = [
            c
            for c in instruments[0].frame.columns
            if c in cfg.forecasters.enabled() and c != RANDOM_WALK and not is_seed(c)
        ]
        cross = information_coefficients(frames, columns)
    else:
        notes.append(
            f"Cross-sectional skill (IC) needs at least {MIN_INSTRUMENTS} instruments; "
            f"this run has {len(instruments)}."
        )
    table, excess = pd.DataFrame(), {}
    if cfg.backtest.top_k is not None:
        table, excess = _read_portfolio(cfg, comparison.periods_per_year)
    portfolio_test = None
    if EQUAL_WEIGHT in excess and len(excess) > 1:
        portfolio_test = superiority_test(
            pd.DataFrame(excess).sort_index(), EQUAL_WEIGHT, scope="portfolio", **boot
        )
    return MultipleTesting(
        tests,
        across,
        cross,
        table if len(table) else None,
        portfolio_test,
        cfg.report.significance,
        len(instruments),
        notes,
        cfg.report.candidate,
        cfg.candidate_label,
    )


# Sentences ------------------------------------------------------------------------------


def _p(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.3f}"


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def verdict_sentences(result: MultipleTesting) -> list[str]:
    """Sentences for the verdict: the corrected answers, the correction and the number of tests."""
    level = f"{100 * result.alpha:g}%"
    out = []
    by_scope = {t.scope: t for t in result.superiority}
    pooled = by_scope.get(POOLED)
    if pooled is not None and pooled.tested:
        out.append(
            f"Corrected for testing {len(pooled.strategies)} strategies against buy-and-hold "
            f"(pooled): Hansen's SPA p = {_p(pooled.spa_consistent)} (White's reality check "
            f"p = {_p(pooled.reality_check)}); the Romano-Wolf StepM procedure, family-wise "
            f"error at {level}, names {_names(pooled.superior)} as better than buy-and-hold."
        )
    per_inst = [t for t in result.superiority if t.scope != POOLED and t.tested]
    if per_inst:
        found = sum(bool(t.superior) for t in per_inst)
        out.append(
            f"Per instrument, StepM finds a strategy that beats buy-and-hold on {found} of "
            f"{len(per_inst)} instrument(s)."
        )
    across = result.across
    if across is not None:
        m = across.tests.get("sharpe", 0)
        out.append(
            f"Over {m} instrument(s) the {result.label}'s Sharpe ratio beats buy-and-hold's "
            "significantly on "
            f"{across.significant('sharpe', 'holm')} after Holm's correction "
            f"({across.significant('sharpe', 'bh')} with Benjamini-Hochberg, "
            f"{across.significant('sharpe', 'raw')} uncorrected); its forecasts beat the random "
            f"walk (Diebold-Mariano, {across.tests.get('dm', 0)} tests) on "
            f"{across.significant('dm', 'holm')} after Holm "
            f"({across.significant('dm', 'raw')} uncorrected)."
        )
        w = across.sharpe_wins
        if w.n:
            out.append(
                f"The {result.label} has the higher Sharpe ratio on {w.wins} of {w.n} "
                "instrument(s) "
                f"(sign test against one half, p = {_p(w.pvalue)})."
            )
    return out


# HTML -------------------------------------------------------------------------------------


# Column names as a reader reads them; counts are shown as integers.
HEADERS = {
    "sharpe_diff": "Sharpe minus buy-and-hold",
    "sharpe_p_raw": "p",
    "sharpe_p_holm": "p (Holm)",
    "sharpe_p_bh": "p (BH)",
    "dm_statistic": "DM statistic",
    "dm_p_raw": "DM p",
    "dm_p_holm": "DM p (Holm)",
    "dm_p_bh": "DM p (BH)",
    "names_per_date": "names per date",
    "ic_mean": "IC mean",
    "ic_std": "IC std",
    "icir": "ICIR",
    "rank_ic_mean": "rank IC mean",
    "rank_ic_std": "rank IC std",
    "rank_icir": "rank ICIR",
}
COUNTS = {"strategies", "days", "dates", "trades", "instruments"}


def _header(column: object) -> str:
    return HEADERS.get(str(column), str(column).replace("_", " "))


def _text(column: object, value: object, digits: int) -> str:
    if isinstance(value, bool | np.bool_):
        return "yes" if value else ""
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        if str(column) in COUNTS and math.isfinite(number):
            return f"{round(number):,d}"
        return fmt(number, digits)
    return str(value)


def _table(frame: pd.DataFrame, caption: str, digits: int = 3) -> str:
    columns = [frame.index.name or "", *frame]
    head = "".join(f"<th>{html.escape(_header(c))}</th>" for c in columns)
    body = []
    for key, row in frame.iterrows():
        cells = [f'<td class="name">{html.escape(str(key))}</td>']
        for column, value in row.items():
            cells.append(f"<td>{html.escape(_text(column, value, digits))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<table class="multiple"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _superiority_html(result: MultipleTesting) -> str:
    frame = superiority_frame(result.superiority).set_index("scope")
    frame = frame.rename(
        columns={
            "spa_p_consistent": "SPA p",
            "spa_p_lower": "SPA p (lower)",
            "spa_p_upper": "SPA p (upper)",
            "reality_check_p": "reality check p",
            "stepm_superior": "StepM: better than buy-and-hold",
            "n_obs": "days",
        }
    )
    return _table(
        frame, "Does any strategy beat buy-and-hold, and which? (losses: -excess returns)"
    )


def _across_html(across: AcrossInstruments, label: str) -> str:
    keep = ["sharpe_diff", "sharpe_p_raw", "sharpe_p_holm", "sharpe_p_bh"]
    keep += ["dm_statistic", "dm_p_raw", "dm_p_holm", "dm_p_bh"]
    frame = across.table[keep].rename_axis("instrument")
    return _table(frame, f"The {label} on each instrument, corrected over {len(frame)} instruments")


def render(result: MultipleTesting) -> str:
    """The section as one HTML fragment (``<section id="multiple-testing">``)."""
    parts = ['<section id="multiple-testing"><h2>Many strategies, many instruments</h2>']
    parts += [f"<p>{html.escape(s)}</p>" for s in verdict_sentences(result)]
    parts.append(_superiority_html(result))
    if result.across is not None:
        parts.append(_across_html(result.across, result.label))
    if result.cross_section is not None:
        parts.append(
            _table(
                result.cross_section,
                "Cross-sectional skill: IC and rank IC of forecast vs next-bar return",
            )
        )
    if result.portfolio is not None:
        parts.append(_table(result.portfolio, "Top-k portfolios and the equal-weight universe"))
        test = result.portfolio_test
        if test is not None and test.tested:
            parts.append(
                f"<p>Against the equal-weight universe: SPA p = {_p(test.spa_consistent)}, "
                f"reality check p = {_p(test.reality_check)}; StepM names "
                f"{html.escape(_names(test.superior))}.</p>"
            )
    parts += [f"<p>{html.escape(n)}</p>" for n in result.notes]
    parts.append("</section>")
    return "\n".join(parts)


def write_tables(result: MultipleTesting, directory: Path) -> None:
    """``multiple_testing.csv``, and where present ``across_instruments.csv``,
    ``cross_section.csv`` and ``portfolio.csv``, in ``directory``."""
    superiority_frame(result.superiority).to_csv(directory / "multiple_testing.csv", index=False)
    if result.across is not None:
        result.across.table.to_csv(directory / "across_instruments.csv")
    if result.cross_section is not None:
        result.cross_section.to_csv(directory / "cross_section.csv")
    if result.portfolio is not None:
        result.portfolio.to_csv(directory / "portfolio.csv")


def tracked_metrics(result: MultipleTesting) -> dict[str, Any]:
    """A few headline numbers for MLflow (finite only)."""
    out: dict[str, float] = {}
    for t in result.superiority:
        if t.tested:
            out[f"multiple/{t.scope}/spa_p"] = t.spa_consistent
            out[f"multiple/{t.scope}/stepm_superior"] = float(len(t.superior))
    candidate = result.candidate
    if result.across is not None:
        out[f"multiple/{candidate}_sharpe_wins"] = float(result.across.sharpe_wins.wins)
        out[f"multiple/{candidate}_sharpe_wins_holm"] = float(
            result.across.significant("sharpe", "holm")
        )
    if result.cross_section is not None and candidate in result.cross_section.index:
        ic = result.cross_section.loc[candidate, "rank_ic_mean"]
        out[f"multiple/{candidate}_rank_ic"] = float(ic)
    return {k: v for k, v in out.items() if math.isfinite(v)}
