"""The out-of-tree example package (``examples/gatecast-example``) comes in through the registry.

Its forecaster (``drift``) and strategy (``momentum_band``) are tested as a user's would
be: the classes on their own (the formula, no look-ahead, the band rule), then the
package installed into a folder of its own with pip and the stages run in fresh
processes with that folder on ``PYTHONPATH``. No gatecast module names either class and
this test process never registers them, so every row, run and column checked below got
there through the entry points of the package's ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.common.strategy_names import is_seed
from strategies.engine import ExecutionSettings, run_backtest
from tests.lookahead import assert_no_lookahead, synthetic_bars

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "gatecast-example"
CONFIG = EXAMPLE / "smoke.yaml"
FORECASTER, STRATEGY = "drift", "momentum_band"
BAND = 0.001  # the config's momentum_band.band
INSTRUMENTS = ("GSPC", "GOOG")
POOLED = "pooled"  # pipelines.report.comparison.POOLED
STAGE_TIMEOUT_S = 300


@pytest.fixture
def example_modules(monkeypatch: pytest.MonkeyPatch):
    """The package's modules imported from its source folder (for the class-level tests)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    # imported by name: the package is not a dependency of gatecast's (tests/test_environment.py)
    modules = ("gatecast_example.forecaster", "gatecast_example.strategy")
    return tuple(importlib.import_module(m) for m in modules)


# The classes on their own ------------------------------------------------------------------


def test_drift_forecasts_the_last_close_grown_by_the_mean_log_return(example_modules):
    forecaster_module, _ = example_modules
    rng = np.random.default_rng(3)
    bars = synthetic_bars(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 120))))
    drift = forecaster_module.DriftForecaster(window=5).fit(bars.iloc[:60])
    forecast = drift.predict(bars, bars.index[60])

    close = bars["close"]
    mean_log_return = np.log(close).diff().rolling(5).mean()
    expected = (close * np.exp(mean_log_return)).iloc[60:]
    assert forecast.name == FORECASTER
    assert forecast.index.equals(bars.index[60:])
    np.testing.assert_allclose(forecast.to_numpy(), expected.to_numpy(), rtol=1e-12)
    # the first forecast needs window + 1 bars up to and including it
    assert drift.min_history == 6
    drift.predict(bars, bars.index[5])
    with pytest.raises(ValueError, match="needs 6 bars"):
        drift.predict(bars, bars.index[4])
    with pytest.raises(ValueError, match="training segment has 5 bars"):
        drift.fit(bars.iloc[:5])
    assert_no_lookahead(drift, bars, train=60, cuts=[60, 80, 118])


def test_momentum_band_goes_long_above_the_band_and_flat_below_minus_it(example_modules):
    _, strategy_module = example_modules
    bars = synthetic_bars(np.full(40, 100.0))
    # expected return per bar: above the band on bars 5 and 20 (the first is before
    # trade_start), inside it on 25, below -band on 30
    expected = pd.Series(0.0, index=bars.index)
    expected.iloc[[5, 20]] = 2 * BAND
    expected.iloc[25] = -BAND / 2
    expected.iloc[30] = -2 * BAND
    forecast = bars["close"] * (1 + expected)
    result = run_backtest(
        bars,
        strategy_module.MomentumBand,
        {"band": BAND},
        ExecutionSettings(commission=0.0, slippage=0.0),
        trade_start=bars.index[10],
        forecast=forecast,
    )
    orders = result.orders
    assert list(orders["side"]) == ["buy", "sell"]
    # decided at a bar's close, filled at the next bar's open
    assert list(orders["date"]) == [bars.index[21], bars.index[31]]


# The package installed, the stages in fresh processes -----------------------------------------


@dataclass(frozen=True)
class Staged:
    """What the stages left: folders, the MLflow store and experiment, the check's process."""

    run_directory: Path
    report_directory: Path
    tracking_uri: str
    experiment: str
    check: subprocess.CompletedProcess


def _install(root: Path) -> Path:
    """The package built from a copy of its folder (the source tree stays clean) and
    installed into ``root/site`` without network: the folder for ``PYTHONPATH``."""
    source = root / "source"
    shutil.copytree(
        EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    site = root / "site"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--disable-pip-version-check", "--quiet"]
    command += ["--target", str(site), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=STAGE_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    return site


def _stage(stage: str, env: dict[str, str], sets: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipelines", stage, "--config", str(CONFIG)]
    for item in sets:
        command += ["--set", item]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=STAGE_TIMEOUT_S
    )


@pytest.fixture(scope="session")  # once per worker, however its tests are interleaved
def staged(tmp_path_factory: pytest.TempPathFactory) -> Staged:
    """The example's smoke config through the whole job and the check, once."""
    root = tmp_path_factory.mktemp("example-package")
    site = _install(root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment = f"gatecast-example-{uuid.uuid4().hex[:8]}"
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "MLFLOW_TRACKING_URI": uri}
    sets = [
        f"output_directory={root / 'build'}",
        f"report.directory={root / 'reports'}",
        f"tracking.experiment={experiment}",
    ]
    # the whole job (data, search, train, backtest, report) in one fresh process, as
    # `make all` runs it; then the check in another
    done = _stage("run", env, sets)
    assert done.returncode == 0, f"run failed:\n{done.stderr[-4000:]}"
    check = _stage("check", env, sets)
    name = yaml.safe_load(CONFIG.read_text())["name"]
    return Staged(root / "build" / name, root / "reports" / name, uri, experiment, check)


@pytest.mark.slow
def test_the_forecast_files_have_the_drift_column(staged):
    summary = json.loads((staged.run_directory / "forecasts" / "summary.json").read_text())
    for instrument in INSTRUMENTS:
        entry = summary["instruments"][instrument]
        assert FORECASTER in entry["columns"]
        assert math.isfinite(entry["metrics"][FORECASTER]["rmse"])
        frame = pd.read_parquet(staged.run_directory / "forecasts" / f"{instrument}.parquet")
        oos = frame.loc[entry["oos_start"] :]
        assert oos[FORECASTER].notna().all()
        # the example's own formula, window 20 as configured
        close = frame["close"]
        expected = close * np.exp(np.log(close).diff().rolling(20).mean())
        np.testing.assert_allclose(oos[FORECASTER], expected.loc[oos.index], rtol=1e-12)


@pytest.mark.slow
def test_the_backtest_runs_the_forecast_and_the_strategy_on_it(staged):
    out = staged.run_directory / "backtests"
    summary = json.loads((out / "summary.json").read_text())
    forecast_summary = staged.run_directory / "forecasts" / "summary.json"
    oos = json.loads(forecast_summary.read_text())["instruments"]
    for instrument in INSTRUMENTS:
        strategies = summary["instruments"][instrument]["strategies"]
        assert {FORECASTER, STRATEGY} <= set(strategies)
        assert strategies[STRATEGY]["class"] == "MomentumBand"
        record = json.loads((out / instrument / f"{STRATEGY}.json").read_text())
        assert record["params"] == {"band": BAND}
        # every order follows the band rule on the drift forecast of the bar before its fill
        frame = pd.read_parquet(staged.run_directory / "forecasts" / f"{instrument}.parquet")
        expected = frame[FORECASTER] / frame["close"] - 1
        orders = pd.read_parquet(out / instrument / f"{STRATEGY}_orders.parquet")
        assert len(orders), f"{instrument}: momentum_band never traded"
        for order in orders.itertuples():
            decided = frame.index[frame.index.get_loc(order.date) - 1]
            assert decided >= pd.Timestamp(oos[instrument]["oos_start"])
            if order.side == "buy":
                assert expected.loc[decided] > BAND, order
            else:
                assert expected.loc[decided] < -BAND, order


@pytest.mark.slow
def test_mlflow_has_runs_for_the_forecaster_and_the_strategy(staged):
    client = mlflow.MlflowClient(tracking_uri=staged.tracking_uri)
    experiment = client.get_experiment_by_name(staged.experiment)
    assert experiment is not None

    def runs(filter_string: str) -> dict[str, object]:
        found = client.search_runs([experiment.experiment_id], filter_string, max_results=1000)
        return {run.info.run_name: run for run in found}

    trained = runs(f"tags.`gatecast.forecaster` = '{FORECASTER}'")
    traded = runs("tags.`gatecast.stage` = 'backtest'")
    for instrument in INSTRUMENTS:
        train = trained[f"train/{instrument}/{FORECASTER}"]
        assert train.info.status == "FINISHED"
        assert math.isfinite(train.data.metrics["rmse"])
        for name, kind in ((FORECASTER, "forecast"), (STRATEGY, "forecast-rule")):
            run = traded[f"backtest/{instrument}/{name}"]
            assert run.info.status == "FINISHED"
            assert run.data.tags["gatecast.strategy"] == name
            assert run.data.tags["gatecast.kind"] == kind
            assert "sharpe" in run.data.metrics


@pytest.mark.slow
def test_the_report_ranks_them_and_tests_them_with_the_rest(staged):
    league = pd.read_csv(staged.report_directory / "league.csv")
    for scope in (*INSTRUMENTS, POOLED):
        rows = league[league["instrument"] == scope].set_index("strategy")
        assert {FORECASTER, STRATEGY} <= set(rows.index), scope
        assert rows.loc[STRATEGY, "kind"] == "forecast-rule"
        assert rows.loc[FORECASTER, "kind"] == "forecast"
        if scope != POOLED:  # forecast metrics are per instrument
            assert math.isfinite(rows.loc[FORECASTER, "rmse"])

    # multiple_testing.csv names only the excluded and the superior strategies; every
    # other non-benchmark strategy of a scope is in its family, so the counts must add up
    tests = pd.read_csv(staged.report_directory / "multiple_testing.csv", keep_default_na=False)
    assert set(tests["scope"]) == {*INSTRUMENTS, POOLED}
    for test in tests.itertuples():
        scope = league[league["instrument"] == test.scope]["strategy"]
        compared = {s for s in scope if s != "buy_and_hold" and not is_seed(s)}
        assert {FORECASTER, STRATEGY} <= compared
        excluded = {s for s in test.excluded.split(", ") if s}
        assert test.strategies + len(excluded) == len(compared), test

    # report.candidate is drift: the corrected per-instrument tests are its
    across = pd.read_csv(staged.report_directory / "across_instruments.csv", index_col=0)
    assert set(across.index) == set(INSTRUMENTS)
    html = (staged.report_directory / "index.html").read_text()
    assert '<section id="multiple-testing">' in html
    assert "The Drift on each instrument" in html


@pytest.mark.slow
def test_check_finds_no_lookahead_in_either(staged):
    done = staged.check
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    rows = {tuple(line.split()[:2]): line.split() for line in done.stdout.splitlines()}
    for component, kind in ((FORECASTER, "forecaster"), (FORECASTER, "strategy")):
        assert rows[component, kind][5] == "ok", rows[component, kind]
    assert rows[STRATEGY, "strategy"][5] == "ok"
    assert rows[STRATEGY, "strategy"][2] == str(len(INSTRUMENTS))
