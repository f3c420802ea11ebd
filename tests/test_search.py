"""The search stage: Optuna trials scored inside the training data, nested MLflow runs, and the
trial count in the report's deflated Sharpe ratio."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from pipelines.common.errors import ConfigError, DataError
from pipelines.config import load_config
from pipelines.execution import search_unit
from pipelines.execution.search_unit import TrialResult
from pipelines.stages import search, train
from pipelines.tracking import store as tracking_store

# Two tiny trials on one instrument: one epoch, one narrow layer, short windows.
TINY = [
    "data.instruments=[GSPC]",
    "search.trials=2",
    "search.space.epochs=[1, 1]",
    "search.space.layers=[1, 1]",
    "search.space.units=[4, 8]",
    "search.space.window=[5, 15]",
    "search.space.batch_size=[32]",
]


def _overrides(out: Path, *extra: str) -> dict:
    from pipelines.config import parse_set

    return parse_set([f"output_directory={out}", *TINY, *extra])


def _cfg(out: Path, *extra: str):
    return load_config("configs/smoke.yaml", _overrides(out, *extra))


def _argv(out: Path, *extra: str) -> list[str]:
    sets = [f"output_directory={out}", *TINY, *extra]
    return ["--config", "configs/smoke.yaml", *[a for s in sets for a in ("--set", s)]]


def _summary(out: Path) -> dict:
    return json.loads((out / "smoke" / "search" / "summary.json").read_text())


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory):
    """One two-trial search (and the store it wrote to), shared by the tests of this module."""
    root = tmp_path_factory.mktemp("search")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'store' / 'mlflow.db'}")
        assert search.main(_argv(root / "build")) == 0
        yield root


@pytest.fixture
def store(searched: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{searched / 'store' / 'mlflow.db'}")
    return searched


# Config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"space": {"unit": [4, 8]}}, "unknown key 'search.space.unit'; did you mean 'units'?"),
        ({"space": {"units": [8, 4]}}, "search.space.units: low (8) must not be above high (4)"),
        ({"space": {"window": [1, 10]}}, "search.space.window: must lie within [2, 512]"),
        ({"space": {"dropout": [0.1]}}, "search.space.dropout: give [low, high]"),
        ({"space": {"batch_size": [32, 32]}}, "search.space.batch_size: give one or more"),
        ({"validation": {"fraction": 0.9}}, "search.validation.fraction: Input should be less"),
        ({"metric": "sharpe"}, "search.metric: Input should be 'theil_u2' or 'val_loss'"),
    ],
)
def test_a_bad_search_key_or_range_is_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("configs/smoke.yaml", {"search": override})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_search_instruments_must_be_configured_and_the_lstm_enabled(tmp_path):
    with pytest.raises(ConfigError, match=r"search.instruments: \['SPY'\] not in data"):
        search.check(_cfg(tmp_path, "search.instruments=[SPY]"))
    with pytest.raises(ConfigError, match="search.forecaster 'lstm' is not an enabled"):
        search.check(_cfg(tmp_path, "forecasters.lstm=null"))


def test_the_searched_forecaster_is_a_setting_and_the_space_must_fit_it(tmp_path):
    # any configured forecaster can be searched: here a second LSTM, by its own name
    cfg = _cfg(
        tmp_path,
        "forecasters.lstm_6={kind: lstm, units: [6], epochs: 2}",
        "search.forecaster=lstm_6",
    )
    search.check(cfg)
    assert search_unit.searched_params(cfg)["units"] == [6]
    chosen = search_unit.apply_params(cfg, {"units": [5, 5], "window": 12})
    assert chosen.forecasters["lstm_6"].params.units == [5, 5]
    assert chosen.forecasters["lstm"].params.units == cfg.forecasters["lstm"].params.units
    assert chosen.features.window == 12
    # a space setting the searched forecaster lacks is one line naming the key
    with pytest.raises(ConfigError, match=r"search.space.units: the searched forecaster 'ols' "):
        search.check(_cfg(tmp_path, "search.forecaster=ols"))


def test_a_config_without_the_lstm_searches_another_forecaster(tmp_path):
    # report.candidate keeps its default ("lstm") where the config does not set it, and a
    # trial's config must not turn that default into a choice of a disabled forecaster
    space = "{units: null, layers: null, dropout: null, learning_rate: null, epochs: null, "
    cfg = _cfg(
        tmp_path,
        "forecasters.lstm=null",
        "search.forecaster=ols",
        f"search.space={space}batch_size: null, window: [5, 15]}}",
    )
    search.check(cfg)
    chosen = search_unit.apply_params(cfg, {"window": 7})
    assert chosen.features.window == 7
    assert chosen.model_dump() == {**cfg.model_dump(), "features": chosen.features.model_dump()}


def test_validation_slices_that_leave_too_few_bars_are_refused(tmp_path):
    cfg = _cfg(tmp_path, "search.validation.folds=20", "search.validation.fraction=0.05")
    bars = {"GSPC": _bars(cfg)}
    with pytest.raises(ConfigError, match="search.validation: fraction 0.05"):
        search_unit.trial_inputs(cfg, bars)


# No search ------------------------------------------------------------------------------


def test_no_trials_chooses_the_config_and_opens_no_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    cfg = load_config("configs/smoke.yaml", {"output_directory": str(tmp_path)})
    assert cfg.search.trials == 0
    summary = search.search(cfg)
    assert summary == _summary(tmp_path)
    assert summary["source"] == "config"
    assert summary["trials_completed"] == 0
    assert summary["chosen"] == {
        "units": [8],
        "window": 10,
        "dropout": 0.0,
        "learning_rate": 0.001,
        "batch_size": 32,
        "epochs": 2,
    }
    assert not (tmp_path / "store.db").exists()  # not even a store was opened
    assert search.chosen_config(cfg) == (cfg, {})


# No look-ahead --------------------------------------------------------------------------


def _bars(cfg) -> pd.DataFrame:
    from pipelines.sources.load import load_instrument

    return load_instrument(cfg, "GSPC")


def test_a_trial_never_sees_a_test_fold_bar(tmp_path):
    """Poison every bar from the first test date on: the trial's score must not move."""
    from pipelines.execution import runtime
    from pipelines.execution.walkforward import make_folds

    cfg = _cfg(tmp_path)
    bars = _bars(cfg)
    first_test = make_folds(bars.index, cfg.walkforward)[0].test_start_date
    poisoned = bars.copy()
    later = poisoned.index >= first_test
    poisoned.loc[later, ["open", "high", "low", "close"]] = 1e9
    poisoned["volume"] = poisoned["volume"].where(~later, poisoned["volume"] * 1000)

    device = runtime.configure(cfg)
    params = {**search_unit.searched_params(cfg), "units": [4], "window": 5, "epochs": 1}
    # the control: a price jump inside the validation slice (50 bars before) does move it
    control = bars.copy()
    inside = control.index >= control.index[control.index.get_loc(first_test) - 50]
    control.loc[inside, ["open", "high", "low", "close"]] *= 1.5
    scores = []
    for given in (bars, poisoned, control):
        segments, folds = search_unit.trial_inputs(cfg, {"GSPC": given})
        assert segments["GSPC"].index[-1] < first_test
        assert all(f.test_end < len(segments["GSPC"]) for f in folds["GSPC"])
        trial_cfg = search_unit.apply_params(cfg, params)
        unit = search_unit.make_trial(0, params, trial_cfg, segments, folds, device, seed=7)
        scores.append(search_unit.run_trial(unit))
    assert math.isfinite(scores[0].score)
    assert scores[0].score == scores[1].score
    assert scores[0].scores == scores[1].scores
    assert scores[2].score != scores[0].score


# The two-trial search -------------------------------------------------------------------


def test_each_trial_is_a_nested_run_with_its_params_and_score(store):
    summary = _summary(store / "build")
    assert summary["trials_completed"] == 2 and summary["trials_failed"] == 0
    parent = tracking_store.client().get_run(summary["parent_run_id"])
    assert parent.data.tags["gatecast.stage"] == "search"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_score"] == pytest.approx(summary["best_score"])
    assert parent.data.metrics["trials_completed"] == 2
    children = tracking_store.child_runs(summary["parent_run_id"])
    assert [r.info.run_name for r in children] == ["search/trial/0", "search/trial/1"]
    for run, entry in zip(children, summary["trial_list"], strict=True):
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == summary["parent_run_id"]
        assert run.info.experiment_id == parent.info.experiment_id
        assert run.data.metrics["score"] == pytest.approx(entry["score"])
        assert run.data.metrics["theil_u2/GSPC"] == pytest.approx(entry["scores"]["GSPC"])
        assert json.loads(run.data.params["trial.units"]) == entry["params"]["units"]
        assert int(run.data.params["trial.window"]) == entry["params"]["window"]
        # the config params it changes carry the trial's values
        assert int(run.data.params["features.window"]) == entry["params"]["window"]
    best = min(summary["trial_list"], key=lambda e: e["score"])
    assert summary["chosen"] == best["params"]
    assert summary["best_trial"] == best["number"]


def test_the_same_seed_gives_the_same_trials_and_another_seed_others(tmp_path):
    """The sampler's proposals depend on the seed and the scores told, in the order asked."""

    def proposals(seed: int) -> list[dict]:
        cfg = _cfg(tmp_path, "search.trials=14", f"search.seed={seed}")
        study, base, out = search.make_study(cfg), search_unit.searched_params(cfg), []
        for _ in range(cfg.search.trials):  # past TPE's 10 random start-up trials
            trial = study.ask()
            params = search.suggest(trial, cfg.search.space, base)
            study.tell(trial, params["units"][0] / 8 + abs(params["window"] - 9) / 10)
            out.append(params)
        return out

    assert proposals(3) == proposals(3)
    assert proposals(3) != proposals(4)


def test_the_search_reruns_to_the_same_trials(store, tmp_path):
    again = search.search(_cfg(tmp_path))
    first = _summary(store / "build")
    keep = ("number", "params", "score", "scores", "state")
    assert [{k: e[k] for k in keep} for e in again["trial_list"]] == [
        {k: e[k] for k in keep} for e in first["trial_list"]
    ]


def test_a_pool_of_two_workers_gives_the_sequential_search(store, tmp_path):
    """Two trials asked at once, run in two processes, told in the order asked."""
    pooled = search.search(_cfg(tmp_path, "executor.kind=local", "executor.workers=2"))
    first = _summary(store / "build")
    keep = ("number", "params", "score", "scores", "state")
    assert [{k: e[k] for k in keep} for e in pooled["trial_list"]] == [
        {k: e[k] for k in keep} for e in first["trial_list"]
    ]


def test_train_runs_the_chosen_configuration(store):
    summary = _summary(store / "build")
    cfg = _cfg(store / "build")
    chosen, tags = search.chosen_config(cfg)
    assert chosen.forecasters["lstm"].params.units == summary["chosen"]["units"]
    assert chosen.features.window == summary["chosen"]["window"]
    assert tags["gatecast.search.source"] == "search"
    assert tags["gatecast.search.run_id"] == summary["parent_run_id"]
    # the train stage itself (two forecasters to keep it short)
    others = [f"forecasters.{name}=null" for name in ("sma", "ema", "kalman", "ols")]
    assert train.main(_argv(store / "build", *others)) == 0
    forecasts = json.loads((store / "build" / "smoke" / "forecasts" / "summary.json").read_text())
    run = tracking_store.client().get_run(forecasts["instruments"]["GSPC"]["runs"]["lstm"])
    assert json.loads(run.data.params["forecasters.lstm.units"]) == summary["chosen"]["units"]
    assert int(run.data.params["features.window"]) == summary["chosen"]["window"]
    assert run.data.tags["gatecast.search.source"] == "search"


def test_train_refuses_a_search_made_for_other_settings(store):
    cfg = _cfg(store / "build", "search.space.units=[4, 6]")
    with pytest.raises(DataError, match="rerun the search stage"):
        search.chosen_config(cfg)


def test_the_deflated_sharpe_ratio_counts_the_search_trials(store):
    from pipelines.report import comparison
    from pipelines.report import html as report_html
    from tests.test_report import make_instrument, make_sweep

    instruments = [make_instrument("AAA", 1), make_instrument("BBB", 2, start="2021-01-01")]
    cfg = _cfg(store / "build")
    comp = comparison.compare(cfg, instruments, make_sweep(instruments))
    assert comp.search_trials == 2
    assert comp.n_trials == 12 + 2  # 6 strategies x 2 instruments, and the 2 trials
    assert (comp.league["dsr_trials"] == 14).all()
    without = comparison.compare(cfg, instruments, make_sweep(instruments), search_trials=0)
    lstm = comp.league["strategy"] == "lstm"
    assert (comp.league.loc[lstm, "dsr"] < without.league.loc[lstm, "dsr"]).all()
    notes = " ".join(report_html._notes(cfg, comp))
    assert "Here N = 14" in notes
    assert "plus the 2 LSTM configurations the hyperparameter search stage scored" in notes


def test_the_report_refuses_a_search_of_another_trial_count(store):
    from pipelines.report import inputs as report_inputs

    with pytest.raises(DataError, match="not the search of search.trials=3"):
        report_inputs.search_trials(_cfg(store / "build", "search.trials=3"))


# Failures -------------------------------------------------------------------------------


def _fake_trial(unit):
    if unit.number == 0:
        raise ValueError("the loss diverged")
    return TrialResult(0.5 + unit.number, {"GSPC": 0.5 + unit.number}, 1.0, 0.01)


def test_a_failed_trial_ends_its_run_failed_and_the_search_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setattr(search_unit, "run_trial", _fake_trial)
    summary = search.search(_cfg(tmp_path, "search.trials=3"))
    assert summary["trials_completed"] == 2 and summary["trials_failed"] == 1
    assert summary["trial_list"][0]["error"] == "ValueError: the loss diverged"
    assert summary["best_trial"] == 1
    runs = tracking_store.child_runs(summary["parent_run_id"])
    assert [(r.info.run_name, r.info.status) for r in runs] == [
        ("search/trial/0", "FAILED"),
        ("search/trial/1", "FINISHED"),
        ("search/trial/2", "FINISHED"),
    ]


def test_a_search_whose_every_trial_failed_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setattr(search_unit, "run_trial", _fake_trial)
    assert search.main(_argv(tmp_path, "search.trials=1")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: search failed: RuntimeError: every search trial failed")
    assert "trial 0: ValueError: the loss diverged" in err
    assert not (tmp_path / "smoke" / "search" / "summary.json").exists()
