"""Failures stay small: a failed unit fails alone, and a rerun redoes only that unit.

One unit is made to fail by replacing the unit function in the stage's module
(what the sequential executor calls); nothing of the kind exists in a config.
The train stage runs the classic forecasters only (no TensorFlow), so the
module takes seconds.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd

from pipelines.execution.unit_cache import FOLDER
from pipelines.stages import backtest, train
from pipelines.tracking import store as tracking_store
from tests.test_backtest_stage import write_forecasts

BROKEN_TRAIN = "GSPC/kalman fold 1"
BROKEN_BACKTEST = ("GOOG", "sma_crossover")


class Counted:
    """The real unit function, counting its calls by unit; raises for ``broken`` units."""

    def __init__(self, real, broken=lambda unit: False):
        self.real, self.broken, self.calls = real, broken, []

    def __call__(self, unit):
        self.calls.append(unit)
        if self.broken(unit):
            raise RuntimeError("injected fault")
        return self.real(unit)


def _train_argv(out: Path) -> list[str]:
    sets = [f"output_directory={out}", "forecasters.lstm=null"]
    return ["--config", "configs/smoke.yaml", *[a for s in sets for a in ("--set", s)]]


def _forecasts(out: Path) -> Path:
    return out / "smoke" / "forecasts"


def test_a_failed_train_unit_fails_alone_and_a_rerun_redoes_only_it(
    tmp_path, monkeypatch, capsys, caplog
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = tmp_path / "build"
    faulty = Counted(train.run_train_unit, lambda unit: str(unit) == BROKEN_TRAIN)
    monkeypatch.setattr(train, "run_train_unit", faulty)
    started = time.time() * 1000
    assert train.main(_train_argv(out)) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: train failed: UnitsFailed: 1 of 20 train units failed")
    assert f"{BROKEN_TRAIN}: RuntimeError: injected fault" in line
    assert len(faulty.calls) == 20  # the others all ran
    assert not (_forecasts(out) / "summary.json").exists()
    assert not (_forecasts(out) / "GSPC.parquet").exists()  # no half-written stage output

    runs = [
        r for r in tracking_store.find_runs("gatecast-smoke") if r.info.start_time >= started - 1
    ]
    status = {r.info.run_name: r.info.status for r in runs}
    assert status.pop("train") == "FAILED"
    assert status.pop("train/GSPC/kalman") == "FAILED"
    assert status == {
        f"train/{i}/{f}": "FINISHED"
        for i in ("GSPC", "GOOG")
        for f in ("random_walk", "sma", "ema", "kalman", "ols")
        if (i, f) != ("GSPC", "kalman")
    }
    failed = next(r for r in runs if r.info.run_name == "train/GSPC/kalman")
    assert "injected fault" in failed.data.tags["gatecast.failed_unit"]
    finished = next(r for r in runs if r.info.run_name == "train/GOOG/kalman")
    assert "rmse" in finished.data.metrics  # recorded with its outputs

    again = Counted(faulty.real)
    monkeypatch.setattr(train, "run_train_unit", again)
    with caplog.at_level(logging.INFO, logger="gatecast.cache"):
        assert train.main(_train_argv(out)) == 0
    assert [str(u) for u in again.calls] == [BROKEN_TRAIN]
    assert "train: reused 19 of 20 units" in caplog.text

    monkeypatch.setattr(train, "run_train_unit", faulty.real)
    assert train.main(_train_argv(tmp_path / "clean")) == 0
    first = json.loads((_forecasts(out) / "summary.json").read_text())
    clean = json.loads((_forecasts(tmp_path / "clean") / "summary.json").read_text())
    for name in ("GSPC", "GOOG"):
        assert first["instruments"][name]["metrics"] == clean["instruments"][name]["metrics"]
        pd.testing.assert_frame_equal(
            pd.read_parquet(_forecasts(out) / f"{name}.parquet"),
            pd.read_parquet(_forecasts(tmp_path / "clean") / f"{name}.parquet"),
            check_exact=True,
        )
    # the finished stage keeps the entries of its own units only
    assert len(list((_forecasts(out) / FOLDER).glob("*.pkl"))) == 20


def test_a_changed_input_invalidates_only_the_units_it_feeds(tmp_path, monkeypatch):
    out = tmp_path / "build"
    assert train.main(_train_argv(out)) == 0
    counted = Counted(train.run_train_unit)
    monkeypatch.setattr(train, "run_train_unit", counted)
    assert train.main([*_train_argv(out), "--set", "forecasters.sma.window=12"]) == 0
    assert sorted(str(u) for u in counted.calls) == [
        "GOOG/sma fold 0",
        "GOOG/sma fold 1",
        "GSPC/sma fold 0",
        "GSPC/sma fold 1",
    ]


def _backtest_argv(out: Path) -> list[str]:
    return ["--config", "configs/smoke.yaml", "--set", f"output_directory={out}", "--no-charts"]


def _tag(runs, name: str) -> str:
    """The failed-unit tag of the run called ``name``."""
    (run,) = [r for r in runs if r.info.run_name == name]
    return run.data.tags["gatecast.failed_unit"]


def _strategy_metrics(out: Path) -> dict:
    summary = json.loads((out / "smoke" / "backtests" / "summary.json").read_text())
    return {
        (inst, name): entry["metrics"]
        for inst, body in summary["instruments"].items()
        for name, entry in body["strategies"].items()
    }


def test_a_failed_backtest_unit_fails_alone_and_a_rerun_redoes_only_it(
    tmp_path, monkeypatch, capsys, caplog
):
    for root in ("build", "clean"):
        write_forecasts(tmp_path / root / "smoke")
    out = tmp_path / "build"
    stale = out / "smoke" / "backtests" / "summary.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    faulty = Counted(backtest.run_unit, lambda u: (u.instrument, u.name) == BROKEN_BACKTEST)
    monkeypatch.setattr(backtest, "run_unit", faulty)
    started = time.time() * 1000
    assert backtest.main(_backtest_argv(out)) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    total = len(faulty.calls)
    assert total == 20  # ten strategies on each of two instruments, every one run
    assert line.startswith(f"error: backtest failed: UnitsFailed: 1 of {total} backtest units")
    assert "GOOG/sma_crossover (" in line and "RuntimeError: injected fault" in line
    assert not stale.exists()
    # the failed unit's run says so and the stage's run ended FAILED; the other 19 were
    # recorded as they came in, none left RUNNING
    runs = tracking_store.find_runs("gatecast-smoke", "tags.`gatecast.stage` = 'backtest'")
    status = {r.info.run_name: r.info.status for r in runs if r.info.start_time >= started - 1}
    failed = {"backtest": "FAILED", "backtest/GOOG/sma_crossover": "FAILED"}
    finished = {f"backtest/{u.instrument}/{u.name}": "FINISHED" for u in faulty.calls}
    del finished["backtest/GOOG/sma_crossover"]
    assert len(finished) == total - 1
    assert status == {**finished, **failed}
    assert "RuntimeError: injected fault" in _tag(runs, "backtest/GOOG/sma_crossover")

    again = Counted(faulty.real)
    monkeypatch.setattr(backtest, "run_unit", again)
    with caplog.at_level(logging.INFO, logger="gatecast.cache"):
        assert backtest.main(_backtest_argv(out)) == 0
    assert [(u.instrument, u.name) for u in again.calls] == [BROKEN_BACKTEST]
    assert f"backtest: reused {total - 1} of {total} units" in caplog.text

    monkeypatch.setattr(backtest, "run_unit", faulty.real)
    assert backtest.main(_backtest_argv(tmp_path / "clean")) == 0
    rerun, clean = _strategy_metrics(out), _strategy_metrics(tmp_path / "clean")
    assert list(rerun) == list(clean)
    for key, metrics in clean.items():
        assert rerun[key] == metrics, key  # JSON: NaN was written as null
    for name in ("sma_crossover_equity.parquet", "lstm_trades.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(out / "smoke" / "backtests" / "GOOG" / name),
            pd.read_parquet(tmp_path / "clean" / "smoke" / "backtests" / "GOOG" / name),
            check_exact=True,
        )


def test_a_damaged_cache_entry_is_run_again(tmp_path, monkeypatch):
    write_forecasts(tmp_path / "smoke")
    assert backtest.main(_backtest_argv(tmp_path)) == 0
    entries = sorted((tmp_path / "smoke" / "backtests" / FOLDER).glob("*.pkl"))
    assert len(entries) == 20
    entries[0].write_bytes(b"")  # cut short
    entries[1].write_bytes(b"not a pickle")
    counted = Counted(backtest.run_unit)
    monkeypatch.setattr(backtest, "run_unit", counted)
    assert backtest.main(_backtest_argv(tmp_path)) == 0
    assert len(counted.calls) == 2  # the two damaged entries' units, and only they
