"""Walk-forward folds, forecasters from the config, the refit-per-fold runner, scoring."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pandas as pd
import pytest

from models.base import Forecaster
from models.baselines import (
    EmaForecaster,
    KalmanForecaster,
    OlsForecaster,
    RandomWalkForecaster,
    SmaForecaster,
)
from pipelines.common.errors import ConfigError, DataError
from pipelines.config import load_config
from pipelines.config.sections import WalkForwardConfig
from pipelines.execution.walkforward import (
    Fold,
    make_folds,
    make_forecaster,
    required_train_bars,
    score_forecasts,
    walk_forward,
)
from pipelines.sources.load import read_csv_bars
from tests.conftest import SAMPLE_DIR


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return read_csv_bars(SAMPLE_DIR / "GSPC.csv").iloc[:520]


@pytest.fixture(scope="module")
def smoke():
    return load_config("configs/smoke.yaml")


def wf(**kwargs) -> WalkForwardConfig:
    return WalkForwardConfig(**{"train_bars": 200, "test_bars": 100, **kwargs})


# Folds --------------------------------------------------------------------------------


def check_tiling(folds: list[Fold], index: pd.DatetimeIndex, config: WalkForwardConfig) -> None:
    n = len(index)
    assert folds[-1].test_end == n - 1
    assert [f.number for f in folds] == list(range(len(folds)))
    for before, after in itertools.pairwise(folds):
        assert after.test_start == before.test_end + 1  # no overlap, no gap
    for fold in folds:
        assert 1 <= fold.test_bars <= config.test_bars
        assert fold.train_end == fold.test_start - config.embargo - 1
        assert fold.train_bars >= config.train_bars
        if config.scheme == "rolling":
            assert fold.train_bars == config.train_bars
        else:
            assert fold.train_start == 0
        assert (fold.train_start_date, fold.train_end_date) == (
            index[fold.train_start],
            index[fold.train_end],
        )
        assert (fold.test_start_date, fold.test_end_date) == (
            index[fold.test_start],
            index[fold.test_end],
        )
    # every out-of-sample position belongs to exactly one test period
    covered = np.concatenate([np.arange(f.test_start, f.test_end + 1) for f in folds])
    assert np.array_equal(covered, np.arange(folds[0].test_start, n))
    # only the oldest fold may be short
    assert all(f.test_bars == config.test_bars for f in folds[1:])


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
@pytest.mark.parametrize("embargo", [0, 7])
@pytest.mark.parametrize("n", [301, 520, 607, 900])
@pytest.mark.parametrize("test_bars", [1, 37, 100])
def test_all_folds_tile_the_out_of_sample_span(scheme, embargo, n, test_bars):
    index = pd.bdate_range("2000-01-03", periods=n, name="date")
    config = wf(scheme=scheme, embargo=embargo, test_bars=test_bars)
    folds = make_folds(index, config)
    check_tiling(folds, index, config)
    # with folds=null the out-of-sample span starts right after the first training segment
    assert folds[0].test_start == config.train_bars + embargo
    assert folds[0].train_bars == config.train_bars


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
@pytest.mark.parametrize("embargo", [0, 5])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_folds_n_keeps_the_last_n_full_test_periods(scheme, embargo, count):
    index = pd.bdate_range("2000-01-03", periods=560, name="date")
    config = wf(scheme=scheme, embargo=embargo, folds=count)
    folds = make_folds(index, config)
    check_tiling(folds, index, config)
    assert len(folds) == count
    assert all(f.test_bars == 100 for f in folds)
    everything = make_folds(index, wf(scheme=scheme, embargo=embargo))
    assert folds == [
        Fold(**{**vars(f), "number": f.number - len(everything) + count})
        for f in everything[-count:]
    ]


def test_fold_layout_by_hand():
    index = pd.bdate_range("2000-01-03", periods=450, name="date")
    # 450 bars, train 200, embargo 10 -> out of sample from 210: 240 bars = 40 + 100 + 100
    folds = make_folds(index, wf(scheme="rolling", embargo=10))
    assert [(f.train_start, f.train_end, f.test_start, f.test_end) for f in folds] == [
        (0, 199, 210, 249),
        (40, 239, 250, 349),
        (140, 339, 350, 449),
    ]
    assert folds[1].as_dict()["test_start"] == index[250].isoformat()


def test_a_rebased_fold_addresses_the_same_bars_in_its_slice(bars):
    fold = make_folds(bars.index, wf(scheme="rolling", embargo=5))[-1]
    part = bars.iloc[fold.train_start : fold.test_end + 1]
    local = fold.rebased(fold.train_start)
    assert (local.train_start, local.test_end) == (0, len(part) - 1)
    assert part.iloc[local.train_slice].equals(bars.iloc[fold.train_slice])
    assert part.iloc[local.test_slice].equals(bars.iloc[fold.test_slice])
    assert local.as_dict() == fold.as_dict()
    with pytest.raises(ValueError, match="offset .* must lie in 0"):
        fold.rebased(fold.train_start + 1)


def test_windows_longer_than_the_data_are_a_clear_error():
    index = pd.bdate_range("2000-01-03", periods=205, name="date")
    with pytest.raises(DataError, match=r"walkforward.train_bars=200 \+ walkforward.embargo=5"):
        make_folds(index, wf(embargo=5))


def test_too_many_folds_leave_the_training_segment_too_short():
    index = pd.bdate_range("2000-01-03", periods=450, name="date")
    with pytest.raises(DataError, match=r"walkforward.folds=3 .* first training segment 150 bars"):
        make_folds(index, wf(folds=3))
    assert len(make_folds(index, wf(folds=2))) == 2


def test_train_bars_below_what_the_forecasters_need_is_a_clear_error():
    index = pd.bdate_range("2000-01-03", periods=450, name="date")
    with pytest.raises(ConfigError, match=r"walkforward.train_bars=200 .* the 260 training bars"):
        make_folds(index, wf(), min_history=260)


def test_folds_need_sorted_dates():
    index = pd.DatetimeIndex(pd.bdate_range("2000-01-03", periods=450)[::-1])
    with pytest.raises(DataError, match="strictly increasing"):
        make_folds(index, wf())


# make_forecaster ------------------------------------------------------------------------


def test_make_forecaster_uses_the_config(smoke):
    names = [name for name in smoke.forecasters.enabled() if name != "lstm"]
    built = {name: make_forecaster(name, smoke) for name in names}
    assert isinstance(built["random_walk"], RandomWalkForecaster)
    assert isinstance(built["sma"], SmaForecaster) and built["sma"].window == 10
    assert isinstance(built["ema"], EmaForecaster) and built["ema"].span == 10
    assert isinstance(built["kalman"], KalmanForecaster) and built["kalman"].trend is False
    assert isinstance(built["ols"], OlsForecaster) and built["ols"].lags == 3
    assert built["ols"].window is None
    for name, forecaster in built.items():
        assert forecaster.name == name
        assert make_forecaster(name, smoke) is not forecaster  # fresh every time


def test_make_forecaster_builds_the_lstm_from_the_config(smoke):
    pytest.importorskip("models.lstm")
    lstm = make_forecaster("lstm", smoke, seed=123)
    assert lstm.name == "lstm"
    assert (lstm.window, lstm.units, lstm.epochs, lstm.seed) == (10, [8], 2, 123)
    assert make_forecaster("lstm", smoke).seed == smoke.seed


def test_unconfigured_forecaster_names_are_a_clear_error(smoke):
    with pytest.raises(ConfigError, match=r"'kalmann' is not configured.*did you mean 'kalman'"):
        make_forecaster("kalmann", smoke)
    with pytest.raises(ConfigError, match=r"configured: random_walk, sma, ema, kalman, ols, lstm"):
        make_forecaster("arima", smoke)


def test_disabled_forecasters_are_a_clear_error():
    cfg = load_config("configs/smoke.yaml", overrides={"forecasters": {"ols": None}})
    with pytest.raises(ConfigError, match=r"'ols' is not configured.*add forecasters.ols"):
        make_forecaster("ols", cfg)


def test_required_train_bars_covers_fit_and_warm_up():
    assert required_train_bars(SmaForecaster(30)) == 30
    assert required_train_bars(KalmanForecaster()) == KalmanForecaster.min_fit_bars
    ols = OlsForecaster(lags=4, window=50)
    assert required_train_bars(ols) == ols.min_history == 50 + 4 + 1


# walk_forward ---------------------------------------------------------------------------


class _Spy(RandomWalkForecaster):
    """Records what the runner shows it."""

    def fit(self, train):
        self.train_index_ = train.index
        return super().fit(train)

    def predict(self, bars, start):
        self.predict_index_ = bars.index
        self.start_ = start
        return super().predict(bars, start)


def test_each_fold_fits_a_fresh_forecaster_on_its_training_bars_only(bars):
    folds = make_folds(bars.index, wf(scheme="rolling", embargo=3))
    result = walk_forward(bars, _Spy, folds)
    assert len(result.forecasters) == len(folds)
    assert len({id(f) for f in result.forecasters}) == len(folds)
    for fold, spy in zip(folds, result.forecasters, strict=True):
        assert spy.train_index_.equals(bars.index[fold.train_start : fold.train_end + 1])
        assert spy.predict_index_[-1] == fold.test_end_date
        assert spy.start_ == fold.test_start_date
    assert result.last_forecaster is result.forecasters[-1]
    assert len(result.fit_seconds) == len(result.predict_seconds) == len(folds)


def test_forecasts_cover_the_whole_out_of_sample_span_once(bars):
    folds = make_folds(bars.index, wf(test_bars=60))
    result = walk_forward(bars, lambda: SmaForecaster(10), folds)
    assert result.name == "sma" and result.forecasts.name == "sma"
    assert result.forecasts.index.equals(bars.index[folds[0].test_start :])
    assert np.isfinite(result.forecasts.to_numpy()).all()
    # each fold's piece is what that fold's forecaster predicts on its own
    fold = folds[1]
    alone = SmaForecaster(10).predict(bars.iloc[: fold.test_end + 1], fold.test_start_date)
    pd.testing.assert_series_equal(result.forecasts.loc[alone.index], alone)


CLASSIC = {
    "random_walk": RandomWalkForecaster,
    "sma": lambda: SmaForecaster(20),
    "ema": lambda: EmaForecaster(20),
    "kalman": KalmanForecaster,
    "kalman_trend": lambda: KalmanForecaster(trend=True),
    "ols": lambda: OlsForecaster(lags=3),
    "ols_rolling": lambda: OlsForecaster(lags=3, window=60),
}


def assert_runner_has_no_lookahead(bars, factory, folds, cut_pos) -> None:
    cut = bars.index[cut_pos]
    changed = bars.copy()
    changed.loc[changed.index > cut] *= 10.0
    before = walk_forward(bars, factory, folds).forecasts
    after = walk_forward(changed, factory, folds).forecasts
    np.testing.assert_array_equal(after.loc[:cut].to_numpy(), before.loc[:cut].to_numpy())
    later_before, later_after = before.loc[cut:].iloc[1:], after.loc[cut:].iloc[1:]
    assert not np.allclose(later_after.to_numpy(), later_before.to_numpy())


@pytest.mark.parametrize("name", list(CLASSIC))
@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_walk_forward_has_no_lookahead(name, scheme, bars):
    folds = make_folds(bars.index, wf(scheme=scheme, embargo=2))
    # a cut inside the second fold's test period: later folds train on changed bars
    cut_pos = folds[1].test_start + 17
    assert_runner_has_no_lookahead(bars, CLASSIC[name], folds, cut_pos)


class _LeakyFit(Forecaster):
    """Deliberately wrong: ignores its training bars, reads the future in predict."""

    name = "leaky"

    def fit(self, train):
        return self

    def predict(self, bars, start):
        close = bars["close"]
        return (0.5 * close + 0.5 * close.iloc[-1]).loc[start:].rename(self.name)


def test_the_runner_truncation_check_catches_a_leaky_forecaster(bars):
    folds = make_folds(bars.index, wf())
    with pytest.raises(AssertionError):
        assert_runner_has_no_lookahead(bars, _LeakyFit, folds, folds[1].test_start + 17)


@pytest.mark.slow
def test_walk_forward_with_the_lstm_has_no_lookahead(bars):
    pytest.importorskip("models.lstm")
    cfg = load_config(
        "configs/smoke.yaml",
        overrides={"forecasters": {"lstm": {"units": [4], "epochs": 1, "batch_size": 64}}},
    )
    folds = make_folds(bars.index, wf(test_bars=150, folds=2))
    factory = functools.partial(make_forecaster, "lstm", cfg, 7)
    assert_runner_has_no_lookahead(bars, factory, folds, folds[0].test_start + 40)


def test_forecaster_errors_name_the_fold(bars):
    folds = make_folds(bars.index, wf())
    with pytest.raises(DataError, match=r"sma, fold 0 \(train 1999-01-04 .*needs at least 300"):
        walk_forward(bars, lambda: SmaForecaster(300), folds)


def test_folds_from_other_bars_are_refused(bars):
    folds = make_folds(bars.index, wf())
    with pytest.raises(DataError, match="make the folds from bars.index"):
        walk_forward(bars.iloc[5:], RandomWalkForecaster, folds)


# score_forecasts ------------------------------------------------------------------------


def test_score_forecasts_uses_identical_dates_for_every_forecaster(bars):
    folds = make_folds(bars.index, wf())
    forecasts = {
        name: walk_forward(bars, CLASSIC[name], folds).forecasts
        for name in ("random_walk", "sma", "ols")
    }
    forecasts["sma"] = forecasts["sma"].iloc[30:]  # a forecaster that starts later
    scores = score_forecasts(bars, forecasts)
    expected_n = len(forecasts["sma"]) - 1  # the last bar has no next close
    assert {s["n"] for s in scores.values()} == {expected_n}
    assert scores["random_walk"]["theil_u2"] == 1.0
    close = bars["close"]
    dates = forecasts["sma"].index[:-1]
    errors = forecasts["sma"].loc[dates] - close.shift(-1).loc[dates]
    assert scores["sma"]["rmse"] == pytest.approx(float(np.sqrt((errors**2).mean())), rel=1e-12)
    naive_mae = close.loc[: dates[0]].iloc[:-1].diff().abs().mean()
    assert scores["sma"]["mase"] == pytest.approx(scores["sma"]["mae"] / naive_mae, rel=1e-12)


def test_score_forecasts_without_common_dates_is_a_clear_error(bars):
    early = pd.Series(1.0, index=bars.index[100:110])
    late = pd.Series(1.0, index=bars.index[200:210])
    with pytest.raises(DataError, match="share no date"):
        score_forecasts(bars, {"a": early, "b": late})
    with pytest.raises(DataError, match="not bars"):
        score_forecasts(bars, {"a": pd.Series(1.0, index=[pd.Timestamp("1990-01-01")])})
