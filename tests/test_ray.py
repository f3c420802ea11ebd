"""``executor: {kind: ray}``: a local Ray on the loopback address, the smoke config's
numbers equal to the sequential run's, and one clear line when Ray is missing.

The tests that start Ray skip when the ``ray`` extra is not installed
(``make test`` installs it); the missing-Ray test always runs.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import load_config
from pipelines.config.sections import ExecutorConfig
from pipelines.execution.ray_executor import LOCAL_RAY_ENVIRONMENT, MISSING_RAY, RayExecutor
from pipelines.execution.runtime import DeviceInfo
from pipelines.execution.search_unit import make_trial
from pipelines.execution.units import make_units
from pipelines.execution.walkforward import make_folds
from pipelines.sources.load import load_instrument
from pipelines.stages import backtest, train
from tests.test_executors import mark_started, square, wait_for_files, where_am_i


@pytest.fixture
def ray_environment(monkeypatch):
    """Give back the process environment a local Ray changes."""
    for name in (*LOCAL_RAY_ENVIRONMENT, "GATECAST_TEST_SETUP"):
        monkeypatch.delenv(name, raising=False)


def test_missing_ray_is_one_clear_line(tmp_path, monkeypatch, capsys, ray_environment):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    argv = ["--config", "configs/smoke.yaml", "--set", f"output_directory={tmp_path}"]
    argv += ["--set", "forecasters.lstm=null", "--set", "executor={kind: ray}"]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {MISSING_RAY}"
    assert MISSING_RAY == "executor kind 'ray' needs the ray extra: pip install 'gatecast[ray]'"
    assert not (tmp_path / "smoke" / "forecasts" / "summary.json").exists()


def test_an_lstm_unit_asks_for_gpus_only_on_a_gpu():
    cfg = load_config("configs/smoke.yaml", {"executor": {"kind": "ray"}})
    bars = {"GSPC": load_instrument(cfg, "GSPC")}
    folds = {"GSPC": make_folds(bars["GSPC"].index, cfg.walkforward, 60)}
    gpu = DeviceInfo("gpu", "gpu", "test", "/GPU:0", True)
    cpu = DeviceInfo("cpu", "cpu", "test", "/CPU:0", True)

    def first(config, device, forecaster):
        units = make_units(config, bars, folds, device)
        return next(u for u in units if u.forecaster == forecaster), units

    (lstm, units), (sma, _) = first(cfg, gpu, "lstm"), first(cfg, gpu, "sma")
    assert lstm.gpus == 1.0
    assert sma.gpus is None
    assert first(cfg, cpu, "lstm")[0].gpus is None
    half = load_config(
        "configs/smoke.yaml", {"executor": {"kind": "ray", "gpus_per_lstm_unit": 0.5}}
    )
    assert first(half, gpu, "lstm")[0].gpus == 0.5
    # a search trial trains the LSTM: it asks for the same
    assert make_trial(0, {}, half, {}, {}, device=gpu, seed=0).gpus == 0.5
    assert make_trial(0, {}, half, {}, {}, device=cpu, seed=0).gpus is None
    # the units of one fold share its bars, so an executor ships them once
    assert len({id(u.bars) for u in units}) == len(folds["GSPC"])


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or address).is_loopback


def _listening_addresses(process) -> set[str]:
    found = set()
    for child in process.children(recursive=True):
        try:
            connections = child.net_connections(kind="inet")
        except Exception:  # ended meanwhile, or not ours to inspect
            continue
        found.update(c.laddr.ip for c in connections if c.status == "LISTEN")
    return found


@pytest.mark.slow
def test_a_local_ray_listens_on_loopback_and_returns_results_and_errors(
    ray_environment, monkeypatch, tmp_path
):
    ray = pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    from pipelines.execution import ray_executor

    monkeypatch.setattr(ray_executor, "UNITS_PER_WORKER", 2)
    # units from 100 up count towards recycling a worker, those below do not
    setup = functools.partial(mark_started, tmp_path)
    executor = RayExecutor(
        ExecutorConfig(kind="ray", workers=2), setup=setup, recycles=lambda u: u >= 100
    )
    assert "local, 2 CPU(s)" in executor.describe()
    with executor:
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        raylet = pytest.importorskip("ray._raylet")  # the ray extra, as above
        assert raylet.get_authentication_mode() == raylet.AuthenticationMode.TOKEN  # kept on
        addresses = _listening_addresses(psutil.Process())
        assert addresses and all(map(_is_loopback, addresses)), addresses
        wait_for_files(tmp_path, 1)  # entering started a worker, which ran the setup
        outcomes = dict(executor.run(square, [3, -1, 5]))
        seen = [outcome for _, outcome in executor.run(where_am_i, range(12))]
        recycled = [outcome for _, outcome in executor.run(where_am_i, range(100, 106))]
    assert not ray.is_initialized()  # the stage's Ray is shut down with it
    assert {k: v for k, v in outcomes.items() if k != -1} == {3: 9, 5: 25}
    assert isinstance(outcomes[-1], ValueError) and "negative: -1" in str(outcomes[-1])
    assert all(s["pid"] != os.getpid() for s in seen + recycled)
    assert {(s["intra"], s["inter"]) for s in seen + recycled} == {("1", "1")}
    assert all(s["setup"] == f"done in {s['pid']}" for s in seen + recycled)
    # 15 units that do not count ran on the 2 workers; 6 that count, 2 a worker, on 3 or more
    assert len({s["pid"] for s in seen}) <= 2
    assert len({s["pid"] for s in recycled}) >= 3


def _stage_argv(root: Path, executor: str) -> list[str]:
    sets = [f"output_directory={root}", f"executor={executor}"]
    return ["--config", "configs/smoke.yaml", *[a for s in sets for a in ("--set", s)]]


@pytest.mark.slow
def test_the_smoke_config_on_ray_gives_the_sequential_numbers(
    tmp_path, monkeypatch, ray_environment, smoke_sequential
):
    pytest.importorskip("ray")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    folders = {"sequential": smoke_sequential[0], "ray": tmp_path / "ray"}
    argv = _stage_argv(folders["ray"], "{kind: ray, workers: 2}")
    assert train.main(argv) == 0
    assert backtest.main([*argv, "--no-charts"]) == 0

    def read(name: str, stage: str) -> dict:
        return json.loads((folders[name] / "smoke" / stage / "summary.json").read_text())

    first, second = read("sequential", "forecasts"), read("ray", "forecasts")
    assert list(first["instruments"]) == list(second["instruments"]) == ["GSPC", "GOOG"]
    for inst, entry in first["instruments"].items():
        assert entry["metrics"] == second["instruments"][inst]["metrics"]
        for suffix in (".parquet", ".gates.parquet"):
            a, b = (folders[n] / "smoke" / "forecasts" / f"{inst}{suffix}" for n in folders)
            pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)
    first, second = read("sequential", "backtests"), read("ray", "backtests")
    for inst, body in first["instruments"].items():
        other = second["instruments"][inst]["strategies"]
        assert list(body["strategies"]) == list(other)
        for strategy, entry in body["strategies"].items():
            assert entry["metrics"] == other[strategy]["metrics"], (inst, strategy)
            assert entry["cost_sweep"] == other[strategy]["cost_sweep"], (inst, strategy)
