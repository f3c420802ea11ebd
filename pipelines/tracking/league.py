"""A stage's small league table on its parent run: the winner visible without picking
columns in the MLflow UI.

``log_league`` logs one metric per (component, instrument) as the table artifact
``league.json`` (MLflow's table format, ``{"columns": ..., "data": ...}``, as
``mlflow.log_table`` writes it) and as the run's description (Markdown), ranked by the
metric's mean over the instruments.
"""

from __future__ import annotations

import math

import pandas as pd

from pipelines import tracking


def league_markdown(frame: pd.DataFrame, metric: str, higher_is_better: bool, what: str) -> str:
    """``frame`` (columns ``instrument``, ``name``, ``metric``) as a Markdown table of
    ``metric``, one row per name ranked by its mean, one column per instrument."""
    table = frame.pivot_table(
        index="name", columns="instrument", values=metric, sort=False, dropna=False
    )
    table["mean"] = table.mean(axis=1)
    table = table.sort_values("mean", ascending=not higher_is_better)
    best = table.index[0] if len(table) else "none"
    header = f"| {what} | " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|---" * (len(table.columns) + 1) + "|"
    rows = [
        f"| {name} | " + " | ".join(_number(v) for v in row) + " |"
        for name, row in zip(table.index, table.to_numpy(), strict=True)
    ]
    order = "higher" if higher_is_better else "lower"
    intro = f"**{metric}** by {what} ({order} is better); best on the mean: **{best}**."
    return "\n".join([intro, "", header, rule, *rows])


def _number(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "–"


def log_league(
    frame: pd.DataFrame, metric: str, higher_is_better: bool, what: str, note: str
) -> None:
    """Log ``frame``'s league on the open run: the table and the run's description
    (``note``, then the ranked table)."""
    rows = frame[["instrument", "name", metric]]
    tracking.log_dict(
        {"columns": list(rows.columns), "data": rows.astype(object).values.tolist()},
        "league.json",
    )
    text = league_markdown(rows, metric, higher_is_better, what)
    tracking.set_tags({"mlflow.note.content": f"{note}\n\n{text}"})
