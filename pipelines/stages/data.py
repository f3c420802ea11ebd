"""The ``data`` stage: every instrument of a config loaded, validated and cached.

Loads each instrument through :mod:`pipelines.sources.load`, then writes
``build/<name>/data/<INST>.parquet`` and ``summary.json`` and prints a summary.
Run it with ``python -m pipelines data --config configs/default.yaml``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from core.bars import format_timestamp
from core.periods import bar_interval
from pipelines.cli import config_from_args, run_stage, setup_logging, stage_parser
from pipelines.common.outputs import safe_child, shown, write_json, write_parquet
from pipelines.config import Config
from pipelines.sources.bar_policies import LoadInfo
from pipelines.sources.load import (
    GAP_DAYS,
    bars_per_year,
    fred_series,
    load_risk_free,
    load_with_info,
    min_bars_required,
)


def describe(bars: pd.DataFrame, info: LoadInfo) -> dict[str, Any]:
    """Summary of one instrument's bars: size, date range, interval and calendar gaps."""
    days = bars.index.normalize().unique()
    gaps = np.diff(days.asi8) / 86_400e9 if len(days) > 1 else np.array([])
    return {
        "bars": len(bars),
        "first": format_timestamp(bars.index[0]),
        "last": format_timestamp(bars.index[-1]),
        "interval": bar_interval(bars.index),
        f"gaps_over_{GAP_DAYS}_days": int((gaps > GAP_DAYS).sum()),
        "largest_gap_days": int(gaps.max()) if len(gaps) else 0,
        **asdict(info),
    }


def _table(rows: dict[str, dict[str, Any]]) -> str:
    table = pd.DataFrame(
        {
            "instrument": list(rows),
            "bars": [r["bars"] for r in rows.values()],
            "first": [r["first"] for r in rows.values()],
            "last": [r["last"] for r in rows.values()],
            "interval": [r["interval"] for r in rows.values()],
            f"gaps>{GAP_DAYS}d": [r[f"gaps_over_{GAP_DAYS}_days"] for r in rows.values()],
            "max gap (d)": [r["largest_gap_days"] for r in rows.values()],
            "dropped": [r["null_rows_dropped"] for r in rows.values()],
            "prices": [r["price_series"] for r in rows.values()],
        }
    )
    return table.to_string(index=False)


def run(cfg: Config) -> dict[str, Any]:
    """Load and validate every instrument, then write the Parquet files and summary.json.

    Nothing is written until every instrument has loaded, and each file is written
    atomically, so a failed run leaves no half-written outputs.
    """
    loaded = {name: load_with_info(cfg, name) for name in cfg.data.instruments}
    rf = cfg.data.risk_free
    risk_free: dict[str, Any] = {"source": rf.source}
    if rf.source == "constant":
        risk_free["rate"] = rf.rate
    else:
        for bars, _ in loaded.values():  # fails early if the series misses a date
            load_risk_free(cfg, bars.index)
        cached = fred_series(rf.series, cache_dir=cfg.resolve(cfg.data.cache_directory))
        first, last = (format_timestamp(cached.index[i]) for i in (0, -1))
        risk_free.update(series=rf.series, first=first, last=last)
    per_year = bars_per_year(cfg, {name: bars for name, (bars, _) in loaded.items()})
    out_dir = cfg.stage_directory("data")
    rows = {}
    for name, (bars, info) in loaded.items():
        path = safe_child(out_dir, name, ".parquet")
        write_parquet(path, bars)
        rows[name] = {**describe(bars, info), "parquet": shown(path)}
    summary = {
        "config": cfg.name,
        "min_bars_required": min_bars_required(cfg),
        "interval": next(iter(rows.values()))["interval"],
        "periods_per_year": per_year,
        "instruments": rows,
        "risk_free": risk_free,
    }
    write_json(out_dir / "summary.json", summary)
    print(_table(rows))
    notes = [f"{name}: {note}" for name, row in rows.items() for note in row["notes"]]
    notes += [f"{name}: long gap {gap}" for name, row in rows.items() for gap in row["long_gaps"]]
    for note in notes:
        print(f"note: {note}")
    print(f"bars per year: {per_year:g} ({_per_year_source(cfg, summary['interval'])})")
    print(f"wrote {len(rows)} instrument(s) and summary.json to {shown(out_dir)}")
    return summary


def _per_year_source(cfg: Config, interval: str) -> str:
    if cfg.data.periods_per_year is not None:
        return "data.periods_per_year"
    return "daily equity bars" if interval == "daily" else f"{interval} bars, measured"


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines data``: load, validate and cache the bars; print a summary."""
    parser = stage_parser(
        "data",
        "Load, validate and cache the bars of every instrument in the config; write "
        "build/<name>/data/<INSTRUMENT>.parquet and summary.json and print a summary table.",
    )
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        run(config_from_args(args))
        return 0

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
