"""Wall time of the walk-forward of each forecaster on one bundled instrument.

Loads one instrument with the config's data settings, makes the config's
walk-forward folds (configs/default.yaml: expanding, 250-bar test periods,
the last 4 folds) and runs ``pipelines.execution.walkforward.walk_forward`` for every
enabled forecaster: a fresh fit on each fold's training segment, then the
forecasts of its test period. The table reports fit and predict time summed
over the folds (median of ``--repeats`` runs for the classic forecasters; the
LSTM runs once, with one seed, and the train stage runs it once per seed),
and each forecaster's share of the total, so the slowest stage is visible.
When ``models.lstm`` cannot be imported the LSTM is skipped and the table
says so. Results go to
``benchmarks/results/walkforward.json``.

Usage: ``python -m benchmarks walkforward`` or
``python -m benchmarks.walkforward [--config FILE] [--instrument GSPC] [--repeats N]
[--forecasters sma,kalman] [--skip-lstm]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pandas as pd  # noqa: E402

from pipelines.config import Config, load_config  # noqa: E402
from pipelines.execution.walkforward import (  # noqa: E402
    Fold,
    make_folds,
    make_forecaster,
    required_train_bars,
    walk_forward,
)
from pipelines.sources.load import load_instrument  # noqa: E402

if TYPE_CHECKING:
    from pipelines.execution.runtime import DeviceInfo

RESULTS = Path(__file__).parent / "results" / "walkforward.json"
LSTM = "lstm"


def _lstm_context(cfg):
    """The train stage's device set-up (device, op determinism) for the LSTM run."""
    from pipelines.execution import runtime

    device = runtime.configure(cfg)
    runtime.seed_everything(cfg.seed)
    return runtime.device_scope(device), device


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    cfg = load_config(args.config)
    bars = load_instrument(cfg, args.instrument)
    names = args.forecasters.split(",") if args.forecasters else list(cfg.forecasters.enabled())
    notes = _drop_unavailable_lstm(names, args.skip_lstm)

    need = max(required_train_bars(make_forecaster(name, cfg)) for name in names)
    folds = make_folds(bars.index, cfg.walkforward, need)
    print(
        f"{args.instrument}: {len(bars)} bars {bars.index[0].date()} .. {bars.index[-1].date()}; "
        f"{len(folds)} folds ({cfg.walkforward.scheme}), out of sample "
        f"{folds[0].test_start_date.date()} .. {folds[-1].test_end_date.date()} "
        f"({folds[-1].test_end - folds[0].test_start + 1} bars)",
        flush=True,
    )

    rows = []
    device = None
    for name in names:
        row, lstm_device = _time_forecaster(name, cfg, bars, folds, args.repeats)
        rows.append(row)
        if name == LSTM:
            device = lstm_device

    table = _print_table(rows, notes)
    _write_results(args, bars, folds, device, table, notes)
    print(f"results: {RESULTS}")
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (``--help`` shows this module's docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.walkforward", description=__doc__)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--instrument", default="GSPC")
    parser.add_argument("--repeats", type=int, default=3, help="runs per classic forecaster")
    parser.add_argument("--forecasters", default=None, help="comma list; default: all enabled")
    parser.add_argument("--skip-lstm", action="store_true", help="leave the LSTM out")
    return parser.parse_args(argv)


def _drop_unavailable_lstm(names: list[str], skip_lstm: bool) -> list[str]:
    """Remove the LSTM from ``names`` (in place) when skipped or not importable; the notes why."""
    notes: list[str] = []
    if LSTM in names:
        if skip_lstm:
            names.remove(LSTM)
            notes.append("lstm: skipped (--skip-lstm)")
        else:
            try:
                import models.lstm  # noqa: F401
            except ImportError as err:
                names.remove(LSTM)
                notes.append(f"lstm: skipped, models.lstm could not be imported ({err})")
    return notes


def _time_forecaster(
    name: str, cfg: Config, bars: pd.DataFrame, folds: list[Fold], repeats: int
) -> tuple[dict, DeviceInfo | None]:
    """Fit and predict seconds of one forecaster's walk-forward, and the LSTM's device.

    The classic forecasters run ``repeats`` times and the run with the median
    total is kept; the LSTM runs once, inside the train stage's device set-up
    (its device is returned; None for the others).
    """
    scope: contextlib.AbstractContextManager = contextlib.nullcontext()
    device = None
    if name == LSTM:
        scope, device = _lstm_context(cfg)
    repeats = 1 if name == LSTM else max(1, repeats)
    fits, predicts = [], []
    with scope:
        for _ in range(repeats):
            result = walk_forward(bars, lambda n=name: make_forecaster(n, cfg), folds)
            fits.append(sum(result.fit_seconds))
            predicts.append(sum(result.predict_seconds))
    totals = [f + p for f, p in zip(fits, predicts, strict=True)]
    best = totals.index(statistics.median_low(totals))
    print(f"  {name}: {totals[best]:.3f} s", flush=True)
    row = {
        "forecaster": name,
        "runs": repeats,
        "fit_s": fits[best],
        "predict_s": predicts[best],
        "total_s": totals[best],
    }
    return row, device


def _print_table(rows: list[dict], notes: list[str]) -> pd.DataFrame:
    """Print the timings with each forecaster's share of the total; the table printed."""
    table = pd.DataFrame(rows).set_index("forecaster")
    total = table["total_s"].sum()
    table["share_%"] = 100.0 * table["total_s"] / total
    print()
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"all forecasters: {total:.2f} s; slowest: {table['total_s'].idxmax()}")
    for note in notes:
        print(note)
    return table


def _write_results(
    args: argparse.Namespace,
    bars: pd.DataFrame,
    folds: list[Fold],
    device: DeviceInfo | None,
    table: pd.DataFrame,
    notes: list[str],
) -> None:
    """Save the machine, the folds, the LSTM's device and the table to ``RESULTS``."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "config": args.config,
                "instrument": args.instrument,
                "bars": len(bars),
                "folds": [f.as_dict() for f in folds],
                "lstm_device": None if device is None else device.kind,
                "rows": table.reset_index().to_dict(orient="records"),
                "notes": notes,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
