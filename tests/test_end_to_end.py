"""The whole job on the smoke config via `python -m pipelines run`, checked against MLflow."""

from __future__ import annotations

import json
import math
import re
import uuid

import numpy as np
import pandas as pd
import pytest

from pipelines.__main__ import main as pipelines_main
from pipelines.config import load_config, parse_set
from pipelines.stages import report
from pipelines.stages.backtest import run_backtests
from pipelines.tracking import store as tracking_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    experiment = f"gatecast-e2e-{uuid.uuid4().hex[:8]}"
    overrides = [
        f"output_directory={root / 'build'}",
        f"report.directory={root / 'reports'}",
        f"tracking.experiment={experiment}",
        f"tracking.registered_model=gatecast-e2e-{uuid.uuid4().hex[:8]}",
        "data.instruments=[GSPC]",
        "forecasters.lstm.seeds=2",
    ]
    argv = ["run", "--config", "configs/smoke.yaml"]
    for item in overrides:
        argv += ["--set", item]
    status = pipelines_main(argv)
    cfg = load_config("configs/smoke.yaml", overrides=parse_set(overrides))
    return status, cfg


def _report_run(cfg):
    runs = tracking_store.find_runs(
        cfg.experiment_name, "tags.`gatecast.stage` = 'report'", include_children=False
    )
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def test_run_finishes_and_writes_the_report(finished_run, capsys):
    status, cfg = finished_run
    assert status == 0
    out = cfg.report_directory
    assert (out / "index.html").is_file()
    league = pd.read_csv(out / "league.csv")
    strategies = set(league.loc[league["instrument"] == "GSPC", "strategy"])
    assert {"lstm", "lstm_seed0", "lstm_seed1", "sma", "ema", "kalman", "ols", "random_walk"} <= (
        strategies
    )
    assert {"sma_crossover", "ema_crossover", "buy_and_hold"} <= strategies
    assert _report_run(cfg).info.status == "FINISHED"


def test_league_table_matches_the_metrics_logged_in_mlflow(finished_run):
    _, cfg = finished_run
    league = pd.read_csv(cfg.report_directory / "league.csv")
    rows = league[league["instrument"] == "GSPC"].set_index("strategy")
    logged = _report_run(cfg).data.metrics  # the league, as <INST>/<strategy>/<metric>
    checked = 0
    for strategy, row in rows.iterrows():
        for key in report.METRIC_COLUMNS:
            name = f"GSPC/{strategy}/{key}"
            if np.isfinite(row[key]):
                assert logged[name] == pytest.approx(row[key], rel=1e-9, abs=1e-12), name
                checked += 1
            else:
                assert name not in logged or math.isnan(logged[name]), name
    assert checked > 100
    # each strategy's own run is the backtest stage's, with its files and chart
    backtest = tracking_store.find_runs(cfg.experiment_name, "tags.`gatecast.stage` = 'backtest'")
    names = {r.info.run_name for r in backtest}
    assert {f"backtest/GSPC/{s}" for s in rows.index} <= names

    # The forecast columns are those the train stage logged for each forecaster.
    train = tracking_store.find_runs(cfg.experiment_name, "tags.`gatecast.stage` = 'train'")
    train_children = {r.info.run_name: r for r in train if "mlflow.parentRunId" in r.data.tags}
    for forecaster in ("lstm", "sma", "ema", "kalman", "ols"):
        logged = train_children[f"train/GSPC/{forecaster}"].data.metrics
        for key in ("rmse", "theil_u2", "dm_statistic", "dm_p_value"):
            assert rows.loc[forecaster, key] == pytest.approx(logged[key], rel=1e-9), key


def test_trading_metrics_are_the_backtest_stages(finished_run):
    _, cfg = finished_run
    league = pd.read_csv(cfg.report_directory / "league.csv")
    rows = league[league["instrument"] == "GSPC"].set_index("strategy")
    summary = json.loads((cfg.run_directory / "backtests" / "summary.json").read_text())
    for strategy, item in summary["instruments"]["GSPC"]["strategies"].items():
        for key in ("sharpe", "sortino", "cagr", "max_drawdown", "trades"):
            expected = item["metrics"][key]
            if expected is None:
                assert math.isnan(rows.loc[strategy, key])
            else:
                assert rows.loc[strategy, key] == pytest.approx(expected, rel=1e-12), (
                    strategy,
                    key,
                )


def test_html_table_shows_the_league_values(finished_run):
    _, cfg = finished_run
    html = (cfg.report_directory / "index.html").read_text()
    league = pd.read_csv(cfg.report_directory / "league.csv")
    rows = league[(league["instrument"] == "GSPC") & (league["kind"] != "seed")]
    for row in rows.itertuples():
        pattern = (
            rf'data-instrument="GSPC" data-strategy="{row.strategy}">.*?'
            r'data-metric="sharpe" data-value="([^"]*)"'
        )
        found = re.search(pattern, html, flags=re.S)
        assert found, row.strategy
        if np.isfinite(row.sharpe):
            assert float(found.group(1)) == pytest.approx(row.sharpe, rel=1e-12)
        else:
            assert found.group(1) == ""
    assert "Bottom line: the LSTM" in html


def test_cost_sweep_reuse_equals_a_fresh_backtest(finished_run):
    # The configured commission is not re-run in the sweep; a fresh run must agree with it.
    _, cfg = finished_run
    sweep = pd.read_csv(cfg.report_directory / "cost_sweep.csv")
    base_bp = 1e4 * cfg.backtest.commission
    reused = sweep[(sweep["instrument"] == "GSPC") & np.isclose(sweep["cost_bp"], base_bp)]
    fresh = {b.instrument: b for b in run_backtests(cfg, progress=False, reuse=False)}["GSPC"]
    swept = {name: r for name, r in fresh.results.items() if r.sweep_sharpe}
    assert len(reused) == len(swept)
    for row in reused.itertuples():
        expected = swept[row.strategy].backtest.metrics["sharpe"]
        if math.isnan(expected):
            assert math.isnan(row.sharpe)
        else:
            assert row.sharpe == pytest.approx(expected, rel=1e-12)
    # and the zero-cost point is not worse than the configured cost for the LSTM strategy
    lstm = sweep[(sweep["instrument"] == "GSPC") & (sweep["strategy"] == "lstm")]
    lstm = lstm.set_index("cost_bp")["sharpe"]
    assert lstm.loc[0.0] >= lstm.loc[base_bp] or math.isnan(lstm.loc[0.0])


def test_run_from_a_later_stage_reuses_the_saved_outputs(finished_run, capsys, tmp_path):
    # What `make all` runs when only the report's inputs changed: the report
    # stage alone, on the train and backtest outputs already written. Its
    # report and runs go elsewhere, so the other tests' run is left as it was.
    _, cfg = finished_run
    other = f"gatecast-e2e-from-{uuid.uuid4().hex[:8]}"
    argv = ["run", "--config", "configs/smoke.yaml", "--from", "report"]
    for item in [
        f"output_directory={cfg.output_directory}",
        f"report.directory={tmp_path}",
        f"tracking.experiment={other}",
        "data.instruments=[GSPC]",
        "forecasters.lstm.seeds=2",
    ]:
        argv += ["--set", item]
    capsys.readouterr()
    assert pipelines_main(argv) == 0
    out = capsys.readouterr().out
    table = out[out.rindex("\nstage ") + 1 :].splitlines()[1:]
    firsts = [(r.split() or [""])[0] for r in table]
    ran = firsts[: firsts.index("total")]
    assert ran == ["report"]
    parents = tracking_store.find_runs(other, include_children=False)
    assert [r.data.tags["gatecast.stage"] for r in parents] == ["report"]
    assert (tmp_path / cfg.name / "index.html").is_file()
    # the output ends with the verdict's headlines and the report's path, said once
    verdicts = json.loads((tmp_path / cfg.name / "verdict.json").read_text())
    tail = out.rstrip().splitlines()
    assert out.count("report: ") == 1 and tail[-1].startswith("report: ")
    verdict_at = tail.index("Verdict:")
    expected = [f"  {k}: {line}" for k, v in verdicts.items() for line in v["headlines"]]
    assert tail[verdict_at + 1 : -1] == expected
    assert {"GSPC", "pooled"} <= set(verdicts) and verdicts["GSPC"]["outcome"] in (
        "win",
        "loss",
        "mixed",
    )
    assert "LSTM trading:" in expected[-1] or any("LSTM trading:" in line for line in expected)


def test_each_stages_run_carries_its_league_as_a_table_and_its_description(finished_run, tmp_path):
    _, cfg = finished_run
    summary = json.loads((cfg.stage_directory("backtest") / "summary.json").read_text())
    strategies = {n for n in summary["instruments"]["GSPC"]["strategies"] if "_seed" not in n}
    for stage, metric, names in [
        ("backtest", "sharpe", strategies),
        ("train", "theil_u2", {"random_walk", "sma", "ema", "kalman", "ols", "lstm"}),
    ]:
        (run,) = tracking_store.find_runs(
            cfg.experiment_name, f"tags.`gatecast.stage` = '{stage}'", include_children=False
        )
        path = tracking_store.download_artifact(run.info.run_id, "league.json", tmp_path / stage)
        table = json.loads(path.read_text())
        assert table["columns"] == ["instrument", "name", metric]
        assert {row[1] for row in table["data"]} == names
        note = run.data.tags["mlflow.note.content"]
        frame = pd.DataFrame(table["data"], columns=table["columns"])
        means = frame.groupby("name")[metric].mean()
        best = means.idxmax() if metric == "sharpe" else means.idxmin()
        assert f"best on the mean: **{best}**" in note
        assert all(f"| {name} |" in note for name in names)


def test_every_stages_run_records_the_command_that_ran_it(finished_run):
    # `run` ran every stage in one process: their runs say so, not "pipelines train ..."
    _, cfg = finished_run
    for stage in ("train", "backtest", "report"):
        (run,) = tracking_store.find_runs(
            cfg.experiment_name, f"tags.`gatecast.stage` = '{stage}'", include_children=False
        )
        command = run.data.tags["gatecast.command"]
        assert command.startswith("python -m pipelines run --config configs/smoke.yaml"), command
