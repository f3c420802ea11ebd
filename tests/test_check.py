"""``python -m pipelines check``: planted leaks are caught at the right date, the built-ins pass.

The planted components are defined here and handed to the check's functions
directly (``run_check(forecasters=..., strategies=...)``), or named in a config
by ``module:Class``, so nothing is registered.
"""

from __future__ import annotations

import functools
import math

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from core.bars import validate_bars
from models.base import Forecaster
from pipelines.config import load_config
from pipelines.execution.walkforward import make_folds, make_forecaster
from pipelines.lookahead import forecasters as lookahead_forecasters
from pipelines.lookahead import results
from pipelines.lookahead import strategies as lookahead_strategies
from pipelines.sources.load import load_instrument
from pipelines.stages import check
from strategies.engine import run_backtest
from strategies.forecast import ForecastStrategy

SMOKE = "configs/smoke.yaml"


@pytest.fixture(scope="module")
def cfg():
    return load_config(SMOKE)


@pytest.fixture(scope="module")
def bars(cfg) -> pd.DataFrame:
    return load_instrument(cfg, "GSPC")


@pytest.fixture(scope="module")
def folds(cfg, bars):
    return make_folds(bars.index, cfg.walkforward, min_history=10)


# Planted components --------------------------------------------------------------------


class PeekAhead(Forecaster):
    """Deliberately wrong: forecasts the close ``lead`` bars ahead with that close itself."""

    name = "peek"

    def __init__(self, lead: int = 1) -> None:
        self.lead = lead

    def fit(self, train):
        return self

    def predict(self, bars, start):
        ahead = bars["close"].shift(-self.lead).fillna(bars["close"])
        return ahead.loc[start:].rename(self.name)


class Jitter(Forecaster):
    """Deliberately wrong: a predict that is not repeatable."""

    name = "jitter"

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def fit(self, train):
        return self

    def predict(self, bars, start):
        close = bars["close"].loc[start:]
        return (close * (1 + 1e-3 * self.rng.standard_normal(len(close)))).rename(self.name)


class CheatOnClose(ForecastStrategy):
    """Deliberately wrong: fills each order at the close of the bar that decided it."""

    def __init__(self):
        super().__init__()
        self.broker.set_coc(True)


class PeekNextClose(bt.Strategy):
    """Deliberately wrong: buys or sells one unit on every bar by the sign of the next close
    (on the last bar, with no next close, it does nothing)."""

    params = (("trade_start", None),)

    def next(self):
        if self.data.datetime.date(0) < pd.Timestamp(self.p.trade_start).date():
            return
        if len(self.data) >= self.data.buflen():
            return
        (self.buy if self.data.close[1] > self.data.close[0] else self.sell)(size=1)


# Cut dates, noise, comparisons ---------------------------------------------------------


def test_cut_dates_spread_over_each_test_period(folds):
    for fold in folds:
        cuts = results.cut_positions(fold, 3)
        assert cuts[0] == fold.test_start and cuts[-1] == fold.test_end - 1
        assert len(cuts) == 3 and cuts == sorted(cuts)
    assert results.cut_positions(folds[0], 1) == [folds[0].test_start]
    with pytest.raises(ValueError, match="points must be >= 1"):
        results.cut_positions(folds[0], 0)


def test_noise_keeps_the_past_and_the_bars_contract(bars):
    cut = 400
    noisy = results.noise_bars(bars, cut, seed=(7, cut))
    validate_bars(noisy, "noise", exact=True)
    pd.testing.assert_frame_equal(noisy.iloc[: cut + 1], bars.iloc[: cut + 1])
    assert (noisy.iloc[cut + 1 :].to_numpy() != bars.iloc[cut + 1 :].to_numpy()).all()
    pd.testing.assert_frame_equal(noisy, results.noise_bars(bars, cut, seed=(7, cut)))
    # a plausible walk: daily moves of the size of the real ones, from the last real close
    moves = np.diff(np.log(noisy["close"].to_numpy()[cut:]))
    real = np.diff(np.log(bars["close"].to_numpy()[: cut + 1])).std()
    assert 0.5 * real < moves.std() < 2 * real
    pd.testing.assert_frame_equal(results.noise_bars(bars, len(bars) - 1), bars)


def test_first_difference_against_math_isclose():
    index = pd.bdate_range("2020-01-01", periods=9, name="date")
    a = [1.0, 0.0, -0.0, np.inf, np.nan, 5e-324, 1e300, 3.0, 4.0]
    b = [1.0 + 2e-16, 0.0, 0.0, np.inf, np.nan, 5e-324, 1e300 * (1 + 1e-13), 3.0, 4.0]
    expected, actual = pd.Series(a, index), pd.Series(b, index)
    assert results.first_difference(expected, actual, 1e-12) is None
    assert results.first_difference(expected, actual, 0.0) == index[0]
    for rtol in (0.0, 1e-12):
        for k in range(len(index)):
            twin = (math.isnan(a[k]) and math.isnan(b[k])) or math.isclose(
                a[k], b[k], rel_tol=rtol, abs_tol=0.0
            )
            moved = results.first_difference(expected.iloc[k:], actual.iloc[k:], rtol)
            assert (moved == index[k]) == (not twin), (rtol, k)
    shifted = actual.copy()
    shifted.iloc[7] = 3.0 * (1 + 1e-9)
    assert results.first_difference(expected, shifted) == index[7]
    assert results.first_difference(expected, actual.drop(index[8])) == index[8]


# Forecasters ---------------------------------------------------------------------------


@pytest.mark.parametrize("lead", [1, 5])
def test_a_forecaster_that_peeks_ahead_leaks_from_the_right_date(bars, folds, lead):
    result = lookahead_forecasters.check_forecaster(
        functools.partial(PeekAhead, lead), bars, folds, points=3, name="peek"
    )
    assert result.result == "LEAK" and len(result.cuts) == 6
    for fold in folds:
        for cut in results.cut_positions(fold, 3):
            # with the bars after T gone, the forecasts of the last `lead` dates up to T move
            first = bars.index[max(cut - lead + 1, fold.test_start)]
            found = {f.check for f in result.findings if f.date == first}
            assert found == {"truncation", "perturbation"}, (lead, bars.index[cut])
    assert result.first.date == folds[0].test_start_date


def test_check_exits_1_naming_the_leaking_forecaster_and_its_first_date(cfg, folds):
    report = check.run_check(
        cfg,
        instruments=["GSPC"],
        forecasters={"peek": PeekAhead, "sma": functools.partial(make_forecaster, "sma", cfg)},
        strategies={},
        points=2,
    )
    assert report.exit_code == 1
    day = folds[0].test_start_date.strftime("%Y-%m-%d")
    (line,) = report.failures()
    assert line.startswith(f"LEAK: forecaster 'peek': first leaking date {day} (GSPC, ")
    rows = report.table().splitlines()
    assert rows[1].split()[:7] == ["peek", "forecaster", "1", "4", "-", "LEAK", day]
    assert rows[2].split()[:6] == ["sma", "forecaster", "1", "4", "-", "ok"]


def test_the_command_exits_1_on_a_forecaster_named_in_the_config(capsys, folds):
    kind = f"{__name__}:PeekAhead"
    argv = ["--config", SMOKE, "--set", f"forecasters.peek={{kind: '{kind}'}}"]
    assert check.main([*argv, "--only", "peek", "--instruments", "GSPC", "--points", "1"]) == 1
    out, err = capsys.readouterr()
    day = folds[0].test_start_date.strftime("%Y-%m-%d")
    assert f"LEAK: forecaster 'peek': first leaking date {day}" in err
    assert "peek forecaster" in out and "peek   strategy" in out  # its forecasts, traded: ok


def test_a_predict_that_is_not_repeatable_is_an_error(bars, folds):
    result = lookahead_forecasters.check_forecaster(Jitter, bars, folds[:1], name="jitter")
    assert result.result == "ERROR" and result.cuts == []
    (finding,) = result.findings
    assert finding.check == "repeat" and "not deterministic" in finding.detail


# Strategies ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def forecast(bars) -> pd.Series:
    """A past-only forecast line that trades often: the 5-bar mean of the closes."""
    return bars["close"].rolling(5).mean()


def test_fills_on_the_signal_bar_are_a_leak_dated_at_the_first_such_order(bars, folds, forecast):
    start = folds[0].test_start_date
    cuts = [c for fold in folds for c in results.cut_positions(fold, 2)]
    result = lookahead_strategies.check_strategy(
        CheatOnClose, {}, bars, cuts, trade_start=start, forecast=forecast, name="cheat"
    )
    orders = run_backtest(bars, CheatOnClose, trade_start=start, forecast=forecast).orders
    first_fill = orders.loc[orders["status"] == "filled", "date"].min()
    assert result.result == "LEAK" and result.fills == (orders["status"] == "filled").sum()
    assert result.first.check == "fill" and result.first.date == first_fill
    honest = lookahead_strategies.check_strategy(
        ForecastStrategy, {}, bars, cuts, trade_start=start, forecast=forecast, name="forecast"
    )
    assert honest.result == "ok" and honest.fills == result.fills and len(honest.cuts) == 4


def test_a_strategy_deciding_on_the_next_bar_leaks_at_each_cut(bars, folds):
    start = folds[0].test_start_date
    cuts = [c for fold in folds for c in results.cut_positions(fold, 2)]
    result = lookahead_strategies.check_strategy(
        PeekNextClose, {}, bars, cuts, trade_start=start, name="peeker"
    )
    assert result.result == "LEAK"
    # the first cut (the first test bar) moves up to the second: a backtest needs two bars
    assert result.cuts[0] == bars.index[folds[0].test_start + 1]
    truncated = {f.date for f in result.findings if f.check == "truncation"}
    assert truncated == set(result.cuts)
    assert result.first.date == result.cuts[0]


def test_check_exits_1_naming_the_leaking_strategy(cfg):
    report = check.run_check(
        cfg,
        instruments=["GOOG"],
        only=["sma", "cheat"],
        forecasters={"sma": functools.partial(make_forecaster, "sma", cfg)},
        strategies={"cheat": (CheatOnClose, {}), "sma": ("forecast", {})},
        points=1,
    )
    assert report.exit_code == 1
    (line,) = report.failures()
    assert line.startswith("LEAK: strategy 'cheat': first leaking date ")
    assert "(GOOG, fill: an order decided on " in line


# The built-ins on the sample data ------------------------------------------------------


def test_every_classic_forecaster_and_strategy_passes_on_the_sample(capsys):
    argv = ["--config", SMOKE, "--set", "forecasters.lstm=null", "--points", "2", "--rtol", "0"]
    argv += ["--set", "forecasters.arima={}", "--set", "forecasters.gbm={}"]
    assert check.main(argv) == 0
    out, err = capsys.readouterr()
    *rows, verdict = out.splitlines()
    table = {row.split()[0] + "/" + row.split()[1]: row.split() for row in rows[1:]}
    forecasters = ["random_walk", "sma", "ema", "kalman", "ols", "arima", "gbm"]
    strategies = [*forecasters, "sma_crossover", "ema_crossover", "buy_and_hold"]
    expected = [f"{n}/forecaster" for n in forecasters] + [f"{n}/strategy" for n in strategies]
    assert list(table) == expected
    for key in expected:  # 2 instruments, 2 cut dates on each of 2 folds
        assert table[key][2:4] == ["2", "8"] and table[key][5] == "ok", table[key]
    assert verdict == "no look-ahead found in 17 component(s)"
    assert "LEAK" not in err and "ERROR" not in err


def test_the_lstm_passes_with_a_small_epoch_budget(capsys):
    argv = ["--config", SMOKE, "--only", "lstm", "--instruments", "GSPC", "--points", "2"]
    assert check.main([*argv, "--epochs", "1", "--rtol", "0"]) == 0
    out = capsys.readouterr().out
    assert "lstm forecaster" in out and "lstm   strategy" in out
    assert "no look-ahead found in 2 component(s)" in out


# Config and errors ---------------------------------------------------------------------


def test_epochs_are_set_on_forecasters_that_train_for_epochs():
    assert check.check_config(SMOKE, epochs=1).forecasters["lstm"].params.epochs == 1
    assert check.check_config(SMOKE, epochs=0).forecasters["lstm"].params.epochs == 2
    given = ["forecasters.lstm.epochs=5"]
    assert check.check_config(SMOKE, given, epochs=1).forecasters["lstm"].params.epochs == 5
    dropped = check.check_config(SMOKE, ["forecasters.lstm=null"], epochs=1)
    assert "lstm" not in dropped.forecasters


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--instruments", "GSCP"],
            "error: --instruments: 'GSCP' is not in data.instruments: did you mean 'GSPC'? "
            "configured: GSPC, GOOG",
        ),
        (["--only", "smaa"], "error: --only: 'smaa' names no configured forecaster or strategy: "),
        (["--set", "forecasters.sma.windw=3"], "error: "),
    ],
)
def test_bad_names_are_one_line_config_errors(capsys, argv, message):
    assert check.main(["--config", SMOKE, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_check_is_a_command_of_the_entry_point():
    from pipelines import __main__ as entry

    assert entry.STAGES["check"][0] == "pipelines.stages.check"
