"""The backtest stage on synthetic forecast files: outputs, no model imports, clear errors."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import types
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.tracking import store as tracking_store
from strategies import ExecutionSettings, run_backtest
from tests.test_engine import sample_bars

REPO = Path(__file__).resolve().parent.parent
FORECASTERS = ["random_walk", "sma", "ema", "kalman", "ols", "lstm"]
STRATEGIES = [*FORECASTERS, "sma_crossover", "ema_crossover", "buy_and_hold", "lstm_seed0"]


def write_forecasts(run_dir: Path, instruments=("GSPC", "GOOG"), oos_bar: int = 300) -> dict:
    """Forecast files in the format of docs/architecture.md, made without any model."""
    out = run_dir / "forecasts"
    out.mkdir(parents=True)
    summary = {}
    rng = np.random.default_rng(0)
    for ticker in instruments:
        bars = sample_bars(ticker).loc["2010-01-01":"2012-12-31"]
        close = bars["close"]
        frame = bars.copy()
        frame["random_walk"] = close
        frame["sma"] = close.rolling(10).mean()
        frame["ema"] = close.ewm(span=10, adjust=False).mean()
        frame["kalman"] = close.rolling(3).mean()
        frame["ols"] = 2 * close - close.shift(1)
        frame["lstm"] = close * (1 + rng.normal(0, 0.005, len(close)))
        frame["lstm_seed0"] = close * (1 + rng.normal(0, 0.005, len(close)))
        start = frame.index[oos_bar]
        frame.loc[frame.index < start, [*FORECASTERS, "lstm_seed0"]] = np.nan
        frame.to_parquet(out / f"{ticker}.parquet")
        summary[ticker] = {"oos_start": str(start.date()), "oos_end": str(frame.index[-1].date())}
    (out / "summary.json").write_text(json.dumps({"instruments": summary}))
    return summary


def run_stage_in_subprocess(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        "from pipelines.stages.backtest import main\n"
        "rc = main(sys.argv[1:])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'keras', 'tensorflow'})\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(rc)\n"
    )
    args = ["--config", "configs/smoke.yaml", "--set", f"output_directory={tmp_path}", *extra]
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> tuple[Path, dict, str]:
    """The stage run once in a fresh process on made-up forecasts of GSPC and GOOG: its
    output folder, the forecasts' summary and its MLflow experiment."""
    root = tmp_path_factory.mktemp("staged")
    summary_in = write_forecasts(root / "smoke")
    experiment = f"gatecast-test-backtest-runs-{uuid.uuid4().hex[:8]}"
    proc = run_stage_in_subprocess(root, "--set", f"tracking.experiment={experiment}")
    assert proc.returncode == 0, proc.stderr
    # no Keras loaded: the config names forecaster classes (the registry imports their
    # modules to validate their parameters), but none of them builds a network here
    assert "HEAVY []" in proc.stdout, proc.stdout
    return root, summary_in, experiment


def test_stage_backtests_every_strategy_without_models(staged):
    root, summary_in, _ = staged
    out = root / "smoke" / "backtests"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["instruments"]) == {"GSPC", "GOOG"}
    for ticker, entry in summary["instruments"].items():
        assert list(entry["strategies"]) == STRATEGIES
        assert entry["oos_start"] == summary_in[ticker]["oos_start"]
        assert entry["warmup_bars"] == 10 * 20  # smoke: EMA crossover slow 20
        for name in STRATEGIES:
            record = json.loads((out / ticker / f"{name}.json").read_text())
            assert record["start"] == summary_in[ticker]["oos_start"]
            equity = pd.read_parquet(out / ticker / f"{name}_equity.parquet")
            assert str(equity.index[0].date()) == summary_in[ticker]["oos_start"]
            assert record["metrics"]["total_return"] == pytest.approx(
                equity["equity"].iloc[-1] / equity["equity"].iloc[0] - 1
            )
            trades = pd.read_parquet(out / ticker / f"{name}_trades.parquet")
            assert record["metrics"]["trades"] == len(trades)
            assert equity["risk_free"].eq(0.0).all()  # smoke: a constant rate of 0
            # the cost sweep: every strategy but the seeds, at every point of the config
            item = entry["strategies"][name]
            if name == "lstm_seed0":
                assert item["cost_sweep"] == {} and "cost_sweep" not in item["files"]
                continue
            assert list(item["cost_sweep"]) == ["0", "10", "50"]
            # the configured commission (10 bp) is the stage's own backtest
            assert item["cost_sweep"]["10"] == record["metrics"]["sharpe"]
            sweep = pd.read_parquet(out / item["files"]["cost_sweep"])
            assert list(sweep.columns) == ["0", "10", "50"]
            pd.testing.assert_series_equal(
                sweep["10"], equity["returns"].iloc[1:], check_names=False, check_exact=True
            )
        assert summary["cost_sweep_bp"] == [0.0, 10.0, 50.0]
        # the random walk forecasts no change: it never trades
        assert entry["strategies"]["random_walk"]["metrics"]["trades"] == 0
        for charted in ("lstm", "sma_crossover"):
            png = out / ticker / f"{charted}.png"
            assert png.read_bytes()[:4] == b"\x89PNG"
        assert not (out / ticker / "buy_and_hold.png").exists()


def test_each_strategy_run_carries_its_files_metrics_and_charts(staged, tmp_path):

    root, _, experiment = staged
    (parent,) = tracking_store.find_runs(experiment, include_children=False)
    assert (parent.info.run_name, parent.info.status) == ("backtest", "FINISHED")
    client = tracking_store.client()
    assert "summary.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = {r.info.run_name: r for r in tracking_store.child_runs(parent.info.run_id)}
    tickers = ("GSPC", "GOOG")
    assert set(children) == {f"backtest/{t}/{s}" for t in tickers for s in STRATEGIES}

    out = root / "smoke" / "backtests"
    summary = json.loads((out / "summary.json").read_text())
    for ticker in tickers:
        for name, item in summary["instruments"][ticker]["strategies"].items():
            run = children[f"backtest/{ticker}/{name}"]
            assert run.info.status == "FINISHED"
            params = run.data.params
            assert (params["stage"], params["instrument"], params["strategy"]) == (
                "backtest",
                ticker,
                name,
            )
            assert params["strategy.class"] == item["class"]
            metrics = run.data.metrics
            for key in ("sharpe", "total_return", "max_drawdown", "trades"):
                if item["metrics"][key] is not None:
                    assert metrics[key] == pytest.approx(item["metrics"][key], rel=1e-12), key
            for bp, sharpe in item["cost_sweep"].items():  # None: no Sharpe (no trade)
                if sharpe is not None:
                    assert metrics[f"sharpe_at_{bp}bp"] == pytest.approx(sharpe, rel=1e-12)
            assert len([k for k in metrics if k.startswith("sharpe_at_")]) == len(
                [v for v in item["cost_sweep"].values() if v is not None]
            )
            # every file the stage wrote for it, and its equity and drawdown chart
            logged = {a.path for a in client.list_artifacts(run.info.run_id, "backtest")}
            assert logged == {f"backtest/{Path(f).name}" for f in item["files"].values()}
            assert {"equity", "trades", "metrics"} <= set(item["files"])
            if name != "lstm_seed0":
                assert "cost_sweep" in item["files"]
            plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
            assert plots == {"plots/equity.png"}
            if name in ("lstm", "sma_crossover"):  # and Backtrader's chart
                assert f"backtest/{name}.png" in logged
        # one run's files, downloaded, are the stage's own
        run_id = children[f"backtest/{ticker}/lstm"].info.run_id
        name = "backtest/lstm_trades.parquet"
        local = tracking_store.download_artifact(run_id, name, tmp_path / "dl" / ticker)
        pd.testing.assert_frame_equal(
            pd.read_parquet(local), pd.read_parquet(out / ticker / "lstm_trades.parquet")
        )
        png = tracking_store.download_artifact(run_id, "plots/equity.png", tmp_path / "dl" / ticker)
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_stage_metrics_equal_a_direct_run(tmp_path):
    from pipelines.config import load_config
    from pipelines.stages.backtest import run_backtests

    summary_in = write_forecasts(tmp_path / "smoke", instruments=("GSPC",))
    cfg = load_config(
        "configs/smoke.yaml",
        overrides={"output_directory": str(tmp_path), "data": {"instruments": ["GSPC"]}},
    )
    (planned,) = run_backtests(cfg, progress=False)
    frame = pd.read_parquet(tmp_path / "smoke" / "forecasts" / "GSPC.parquet")
    bt = cfg.backtest
    execution = ExecutionSettings(
        cash=bt.cash,
        commission=bt.commission,
        commission_fixed=bt.commission_fixed,
        slippage=bt.slippage,
        percent=bt.sizing.percent,
        fractional=bt.sizing.fractional,
        allow_short=bt.allow_short,
    )
    # The stage feeds only the warm-up before oos_start; the direct run feeds every bar.
    for name in ("lstm", "lstm_seed0"):
        direct = run_backtest(
            frame[["open", "high", "low", "close", "volume"]],
            "forecast",
            {"entry_threshold": bt.entry_threshold, "exit_threshold": bt.exit_threshold},
            execution,
            trade_start=summary_in["GSPC"]["oos_start"],
            forecast=frame[name],
        )
        staged = planned.results[name].backtest
        pd.testing.assert_series_equal(staged.equity, direct.equity, check_exact=True)
        pd.testing.assert_frame_equal(staged.orders, direct.orders, check_exact=True)
        assert staged.metrics == direct.metrics and staged.metrics["trades"] > 0
    assert planned.warmup == 200
    assert len(frame.loc[: summary_in["GSPC"]["oos_start"]]) > 200 + 1  # so the trim bites
    # Each cost-sweep point is the same backtest with only the commission changed.
    for bp in (0.0, 50.0):
        direct = run_backtest(
            frame[["open", "high", "low", "close", "volume"]],
            "forecast",
            {"entry_threshold": bt.entry_threshold, "exit_threshold": bt.exit_threshold},
            dataclasses.replace(execution, commission=bp / 1e4),
            trade_start=summary_in["GSPC"]["oos_start"],
            forecast=frame["lstm"],
        )
        swept = planned.results["lstm"]
        assert swept.sweep_sharpe[bp] == direct.metrics["sharpe"]
        pd.testing.assert_series_equal(
            swept.sweep_returns[bp], direct.returns, check_names=False, check_exact=True
        )
    sharpes = planned.results["lstm"].sweep_sharpe
    assert sharpes[0.0] > sharpes[10.0] > sharpes[50.0]  # costs only take away
    assert planned.results["lstm_seed0"].sweep_sharpe == {}  # the seeds are not swept


def test_report_reads_the_seed_backtests_of_the_stage(staged):
    from pipelines.common.errors import DataError
    from pipelines.common.strategy_names import seed_columns
    from pipelines.config import load_config
    from pipelines.report.inputs import check_seeds, load_instruments

    cfg = load_config("configs/smoke.yaml", overrides={"output_directory": str(staged[0])})
    instruments = load_instruments(cfg)
    for inst in instruments:
        assert seed_columns(inst.frame.columns) == ["lstm_seed0"]
        assert "lstm_seed0" in inst.runs
    check_seeds(instruments)
    del instruments[1].runs["lstm_seed0"]  # backtests from before the stage ran the seeds
    with pytest.raises(
        DataError, match="GOOG lack the seed.*lstm_seed0.*rerun `python -m pipelines"
    ):
        check_seeds(instruments)


def test_report_reads_the_cost_sweep_of_the_stage(tmp_path):
    from pipelines.common.errors import DataError
    from pipelines.config import load_config
    from pipelines.report.inputs import load_cost_sweep, load_instruments
    from pipelines.stages.backtest import main

    write_forecasts(tmp_path / "smoke", instruments=("GSPC",))
    args = ["--config", "configs/smoke.yaml", "--set", f"output_directory={tmp_path}"]
    args += ["--set", "data.instruments=[GSPC]"]
    assert main([*args, "--set", "tracking.charts=false"]) == 0  # as --no-charts
    assert not list((tmp_path / "smoke" / "backtests").rglob("*.png"))
    overrides = {"output_directory": str(tmp_path), "data": {"instruments": ["GSPC"]}}
    cfg = load_config("configs/smoke.yaml", overrides=overrides)
    instruments = load_instruments(cfg)
    sweep = load_cost_sweep(cfg, instruments)
    assert list(sweep) == [0.0, 10.0, 50.0]
    runs = instruments[0].runs
    assert list(sweep[10.0]["GSPC"]) == [n for n in runs if n != "lstm_seed0"]
    for name, (sharpe, returns) in sweep[10.0]["GSPC"].items():
        expected = runs[name].metrics["sharpe"]
        assert sharpe == expected or (math.isnan(sharpe) and math.isnan(expected)), name
        np.testing.assert_array_equal(returns.to_numpy(), runs[name].returns.to_numpy())
    # a config whose sweep the stage did not run is refused, naming the file and the fix
    other = load_config(
        "configs/smoke.yaml", overrides={**overrides, "report": {"cost_sweep_bp": [0, 20]}}
    )
    with pytest.raises(
        DataError, match=r"backtests/summary.json.*cost_sweep_bp.*pipelines backtest"
    ):
        load_cost_sweep(other, instruments)
    # equity files from before the stage wrote each date's risk-free rate are refused too
    path = tmp_path / "smoke" / "backtests" / "GSPC" / "sma_equity.parquet"
    pd.read_parquet(path).drop(columns="risk_free").to_parquet(path)
    with pytest.raises(DataError, match=r"sma_equity.parquet: no 'risk_free' column; rerun"):
        load_instruments(cfg)


def test_every_equity_chart_draws_the_benchmark_beside_the_strategy(tmp_path, monkeypatch):
    from pipelines.stages.backtest import main
    from pipelines.tracking import backtest_runs

    drawn = {}
    draw = backtest_runs._equity_figure

    def noted(curves, title):
        drawn[title] = list(curves)
        return draw(curves, title)

    monkeypatch.setattr(backtest_runs, "_equity_figure", noted)
    write_forecasts(tmp_path / "smoke", instruments=("GSPC",))
    args = ["--config", "configs/smoke.yaml", "--set", f"output_directory={tmp_path}"]
    assert main([*args, "--set", "data.instruments=[GSPC]"]) == 0
    # buy_and_hold is planned last and drawn alone; every other strategy against it
    assert drawn == {
        f"GSPC {name}": [name] if name == "buy_and_hold" else [name, "buy_and_hold"]
        for name in STRATEGIES
    }


def test_missing_forecasts_are_a_clear_error(tmp_path, capsys):
    from pipelines.stages.backtest import main

    rc = main(["--config", "configs/smoke.yaml", "--set", f"output_directory={tmp_path}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "forecasts/summary.json not found" in err and "pipelines train" in err


def test_unknown_instrument_in_summary_is_named(tmp_path, capsys):
    from pipelines.stages.backtest import main

    write_forecasts(tmp_path / "smoke", instruments=("GSPC",))
    rc = main(["--config", "configs/smoke.yaml", "--set", f"output_directory={tmp_path}"])
    assert rc == 2
    assert "no entry for instrument 'GOOG'" in capsys.readouterr().err


def test_a_process_pool_gives_the_sequential_results(tmp_path):
    from pipelines.config import load_config
    from pipelines.stages.backtest import run_backtests

    write_forecasts(tmp_path / "smoke")

    def results(kind: str, workers: int | None) -> dict:
        cfg = load_config(
            "configs/smoke.yaml",
            overrides={
                "output_directory": str(tmp_path),
                "executor": {"kind": kind, "workers": workers},
            },
        )
        return {
            (inst.instrument, name): result
            for inst in run_backtests(cfg, progress=False, reuse=False)  # both really run
            for name, result in inst.results.items()
        }

    sequential, pooled = results("sequential", None), results("local", 2)
    assert list(pooled) == list(sequential)  # same plan order, whatever finished first
    for key, result in sequential.items():
        other = pooled[key]
        pd.testing.assert_series_equal(other.backtest.equity, result.backtest.equity)
        pd.testing.assert_frame_equal(other.backtest.orders, result.backtest.orders)
        # Series.equals: NaN (a strategy that never trades) equals NaN
        assert pd.Series(other.backtest.metrics).equals(pd.Series(result.backtest.metrics))
        assert pd.Series(other.sweep_sharpe).equals(pd.Series(result.sweep_sharpe))


class _Replay:
    """An executor in this process that hands the units back in the order ``arrange``
    gives, each with a made-up result (nothing is backtested), noting each in ``events``;
    a unit named in ``broken`` comes back as an error."""

    in_process = True
    METRICS = {"total_return": 0.0, "sharpe": 0.0, "max_drawdown": 0.0, "trades": 0}

    def __init__(self, arrange, events, broken=()):
        self.arrange, self.events, self.broken = arrange, events, broken

    def run(self, fn, units):
        for unit in self.arrange(list(units)):
            self.events.append(("unit", unit.instrument, unit.name))
            if (unit.instrument, unit.name) in self.broken:
                yield unit, RuntimeError("injected fault")
            else:
                yield (
                    unit,
                    types.SimpleNamespace(backtest=types.SimpleNamespace(metrics=self.METRICS)),
                )


def _record_each(events):
    def record(inst, name):
        assert name in inst.results or name in inst.failures  # its unit is in
        events.append(("record", inst.instrument, name))

    return record


def _planned(tmp_path):
    from pipelines.config import load_config
    from pipelines.stages.backtest import plan_backtests

    write_forecasts(tmp_path / "smoke")
    cfg = load_config("configs/smoke.yaml", overrides={"output_directory": str(tmp_path)})
    return cfg, plan_backtests(cfg)


def test_each_strategy_is_recorded_once_its_unit_is_in_benchmark_first(tmp_path):
    from pipelines.stages.backtest import run_units

    cfg, planned = _planned(tmp_path)
    assert [inst.instrument for inst in planned] == ["GSPC", "GOOG"]
    names = list(planned[0].units)
    benchmark = cfg.report.benchmark
    assert benchmark in names and names.index(benchmark) > 0  # planned after others
    # every instrument's benchmark first: the other strategies' charts draw it
    order = [benchmark, *(n for n in names if n != benchmark)]
    expected = [(inst, name) for inst in ("GSPC", "GOOG") for name in order]

    # the units are handed out in that order, and each is recorded as soon as it is in
    events = []
    run_units(cfg, planned, _Replay(lambda u: u, events), False, False, _record_each(events))
    assert events == [(kind, *e) for e in expected for kind in ("unit", "record")]

    # GOOG's units first, GSPC's benchmark at the very end: nothing is recorded before
    # it, everything after it, in order; and each instrument's results are in plan order
    # whatever order they came back in
    cfg, planned = _planned(tmp_path / "again")
    events = []

    def arrange(units):
        gspc = [u for u in units if u.instrument == "GSPC"]
        goog = [u for u in units if u.instrument == "GOOG"]
        assert gspc[0].name == benchmark
        return [*gspc[1:], *reversed(goog), gspc[0]]

    run_units(cfg, planned, _Replay(arrange, events), False, False, _record_each(events))
    last = events.index(("unit", "GSPC", benchmark))
    assert last == len(names) * 2 - 1
    assert events[last + 1 :] == [("record", *e) for e in expected]
    assert [list(inst.results) for inst in planned] == [names, names]


def test_a_failed_unit_is_recorded_in_its_place_then_the_stage_fails(tmp_path):
    from pipelines.execution.executors import UnitsFailed
    from pipelines.stages.backtest import run_units

    cfg, planned = _planned(tmp_path)
    names = list(planned[0].units)
    events = []
    replay = _Replay(lambda u: u, events, broken={("GSPC", "kalman")})
    with pytest.raises(UnitsFailed, match=r"1 of 20 backtest units failed.*GSPC/kalman"):
        run_units(cfg, planned, replay, False, False, _record_each(events))
    benchmark = cfg.report.benchmark
    order = [benchmark, *(n for n in names if n != benchmark)]
    records = [e for e in events if e[0] == "record"]
    assert records == [("record", inst, name) for inst in ("GSPC", "GOOG") for name in order]
    assert "kalman" in planned[0].failures and "kalman" not in planned[0].results
    assert str(planned[0].failures["kalman"]).startswith("GSPC/kalman (")
