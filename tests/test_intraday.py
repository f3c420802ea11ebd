"""A run on hourly bars: bars per year measured, stated in the report, used by every figure.

The league's annualised figures are recomputed here by hand from the equity
curve the backtest stage wrote, with the bars per year measured from the
file's timestamps (not 252).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.stages import run

RATE = 0.02  # annual risk-free rate, turned into a rate per bar


def _hourly_file(folder: Path) -> Path:
    """70 weekdays of 24 hourly bars, as an FX feed exports them."""
    rng = np.random.default_rng(7)
    days = pd.bdate_range("2018-01-08", periods=70)
    stamps = pd.DatetimeIndex([d + pd.Timedelta(hours=h) for d in days for h in range(24)])
    close = 1.2 * np.exp(np.cumsum(rng.normal(0.0002, 0.002, len(stamps))))
    open_ = np.r_[1.2, close[:-1]]
    frame = pd.DataFrame(
        {
            "Date": stamps.strftime("%Y-%m-%d %H:%M:%S"),
            "Open": open_,
            "High": np.maximum(open_, close) * 1.0005,
            "Low": np.minimum(open_, close) * 0.9995,
            "Close": close,
            "Volume": 0,
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "EURUSD.csv", index=False)
    return folder / "EURUSD.csv"


@pytest.fixture(scope="module")
def hourly_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hourly")
    source = _hourly_file(root / "data")
    sets = [
        f"data.directory={source.parent}",
        "data.instruments=[EURUSD]",
        "data.start=null",
        "data.end=null",
        f"data.risk_free.rate={RATE}",
        "forecasters.lstm=null",
        "walkforward.train_bars=600",
        "walkforward.test_bars=400",
        "walkforward.folds=2",
        f"output_directory={root / 'build'}",
        f"report.directory={root / 'reports'}",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'store' / 'mlflow.db'}")
        argv = ["--config", "configs/smoke.yaml", *[a for s in sets for a in ("--set", s)]]
        assert run.main(argv) == 0
    bars = pd.read_csv(source, parse_dates=["Date"])
    return root, pd.DatetimeIndex(bars["Date"])


@pytest.mark.slow
def test_bars_per_year_are_measured_and_stated(hourly_run):
    root, stamps = hourly_run
    years = (stamps[-1] - stamps[0]) / pd.Timedelta(days=365.25)
    expected = (len(stamps) - 1) / years  # about 6,400 bars a year, not 252
    for stage in ("data", "backtests"):
        summary = json.loads((root / "build" / "smoke" / stage / "summary.json").read_text())
        assert summary["periods_per_year"] == pytest.approx(expected, rel=1e-12)
        assert summary["interval"] == "1h"
    html = (root / "reports" / "smoke" / "index.html").read_text()
    text = re.sub(r"<[^>]+>", "", html)
    assert f"Bars per year: {expected:,.6g} (1h bars" in text
    assert f"annualised with √{expected:,.6g} from per-bar returns" in text
    assert "√252" not in text and " days)" not in text
    backtests = json.loads((root / "build" / "smoke" / "backtests" / "summary.json").read_text())
    start = backtests["instruments"]["EURUSD"]["oos_start"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", start)  # the time is kept


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["buy_and_hold", "sma_crossover"])
def test_annualised_figures_recomputed_by_hand_from_the_equity_curve(hourly_run, strategy):
    root, _ = hourly_run
    per_year = json.loads((root / "build" / "smoke" / "backtests" / "summary.json").read_text())[
        "periods_per_year"
    ]
    equity = pd.read_parquet(
        root / "build" / "smoke" / "backtests" / "EURUSD" / f"{strategy}_equity.parquet"
    )["equity"]
    returns = equity.pct_change().dropna().to_numpy()
    n = len(returns)
    excess = returns - ((1 + RATE) ** (1 / per_year) - 1)
    by_hand = {
        "total_return": equity.iloc[-1] / equity.iloc[0] - 1,
        "cagr": (equity.iloc[-1] / equity.iloc[0]) ** (per_year / n) - 1,
        "volatility": returns.std(ddof=1) * math.sqrt(per_year),
        "sharpe": excess.mean() / excess.std(ddof=1) * math.sqrt(per_year),
    }
    league = pd.read_csv(root / "reports" / "smoke" / "league.csv")
    row = league[(league["instrument"] == "EURUSD") & (league["strategy"] == strategy)].iloc[0]
    for key, value in by_hand.items():
        assert row[key] == pytest.approx(value, rel=1e-9), key
    # the same curve with 252 bars a year would say something else entirely
    assert row["sharpe"] / (excess.mean() / excess.std(ddof=1) * math.sqrt(252)) > 5
