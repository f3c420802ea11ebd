"""The report's tables as files and as text: league, cost sweep and seeds.

``write_tables`` writes ``league.csv`` and ``league.json`` (one row per
instrument x strategy plus the pooled rows; non-finite numbers as ``null`` in
JSON), ``cost_sweep.csv`` and ``seeds.csv``; ``console_table`` is the compact
league table the stage prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipelines.common.outputs import json_safe
from pipelines.report.comparison import POOLED, Comparison, finite, fmt, sorted_block
from pipelines.report.verdict import pvalue


def write_tables(comparison: Comparison, directory: Path) -> None:
    """``league.csv``, ``league.json``, ``cost_sweep.csv`` and ``seeds.csv`` in ``directory``."""
    comparison.league.to_csv(directory / "league.csv", index=False)
    records = [
        {k: json_safe(v) for k, v in row.items()}
        for row in comparison.league.to_dict(orient="records")
    ]
    (directory / "league.json").write_text(json.dumps(records, indent=1, allow_nan=False) + "\n")
    comparison.sweep.to_csv(directory / "cost_sweep.csv", index=False)
    seed_rows = [
        {"instrument": inst, "metric": m, "mean": mean, "std": std}
        for inst, summary in comparison.seeds.items()
        for m, (mean, std) in summary.items()
    ]
    pd.DataFrame(seed_rows, columns=["instrument", "metric", "mean", "std"]).to_csv(
        directory / "seeds.csv", index=False
    )


def console_table(
    league: pd.DataFrame,
    max_rows_per_instrument: int | None = None,
    candidate: str = "",
    benchmark: str = "",
) -> str:
    """A compact league table for the terminal, sorted by Sharpe ratio within instruments;
    with ``max_rows_per_instrument``, the candidate and the benchmark are always kept."""
    pieces = []
    order = [POOLED] + [i for i in dict.fromkeys(league["instrument"]) if i != POOLED]
    for key in order:
        block = sorted_block(league[league["instrument"] == key])
        if block.empty:
            continue
        if max_rows_per_instrument and key != POOLED:
            keep = set(block["strategy"].head(max_rows_per_instrument)) | {candidate, benchmark}
            block = block[block["strategy"].isin(keep)]
        pieces.append(block)
    if not pieces:
        return "(no results)"
    table = pd.concat(pieces)

    def ci(row: pd.Series) -> str:
        if not finite(row["sharpe_diff"]):
            return ""
        if not finite(row["sharpe_diff_low"]):
            return f"{row['sharpe_diff']:+.2f}"
        low, high = row["sharpe_diff_low"], row["sharpe_diff_high"]
        return f"{row['sharpe_diff']:+.2f} [{low:+.2f},{high:+.2f}]"

    shown = pd.DataFrame(
        {
            "instrument": table["instrument"],
            "strategy": table["strategy"],
            "sharpe": table["sharpe"].map(lambda v: fmt(v)),
            "cagr": table["cagr"].map(lambda v: f"{100 * v:.1f}%" if finite(v) else ""),
            "max_dd": table["max_drawdown"].map(lambda v: f"{100 * v:.1f}%" if finite(v) else ""),
            "trades": table["trades"].map(lambda v: f"{int(v)}" if finite(v) else ""),
            "dSharpe_vs_BH": table.apply(ci, axis=1),
            "dsr": table["dsr"].map(lambda v: fmt(v)),
            "theil_u2": table["theil_u2"].map(lambda v: fmt(v, 3) if finite(v) else ""),
            # as the page shows them: "<0.001" rather than 0.000
            "dm_p": table["dm_p_value"].map(lambda v: pvalue(v) if finite(v) else ""),
            "break_even": table["break_even"],
        }
    )
    return shown.to_string(index=False)
