"""The backtest stage's unit: a plain, picklable function of its inputs, cost sweep included."""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest

from pipelines.execution.backtest_unit import BacktestUnit, backtest_strategy, run_unit
from strategies import ExecutionSettings, run_backtest
from tests.test_engine import sample_bars

EXECUTION = ExecutionSettings(commission=0.001, slippage=0.0005)
START = pd.Timestamp("2011-06-01")


@pytest.fixture(scope="module")
def bars():
    return sample_bars("GSPC").loc["2010-01-01":"2012-06-30"]


def _unit(bars: pd.DataFrame, **changes) -> BacktestUnit:
    unit = BacktestUnit(
        instrument="GSPC",
        name="sma_crossover",
        bars=bars,
        strategy="sma_crossover",
        params={"fast": 5, "slow": 20},
        execution=EXECUTION,
        trade_start=START,
        warmup=20,
        risk_free=0.02,
        cost_sweep_bp=(0.0, 10.0, 50.0),
    )
    return dataclasses.replace(unit, **changes)


def _assert_same(a, b) -> None:
    pd.testing.assert_series_equal(a.backtest.equity, b.backtest.equity, check_exact=True)
    pd.testing.assert_frame_equal(a.backtest.trades, b.backtest.trades, check_exact=True)
    pd.testing.assert_frame_equal(a.backtest.orders, b.backtest.orders, check_exact=True)
    assert a.backtest.metrics == b.backtest.metrics
    assert a.sweep_sharpe == b.sweep_sharpe
    pd.testing.assert_frame_equal(a.sweep_returns, b.sweep_returns, check_exact=True)


def test_each_sweep_point_is_a_backtest_with_only_the_commission_changed(bars):
    result = run_unit(_unit(bars))
    assert list(result.sweep_sharpe) == [0.0, 10.0, 50.0]
    assert list(result.sweep_returns.columns) == [0.0, 10.0, 50.0]
    for bp in (0.0, 50.0):
        direct = run_backtest(
            bars,
            "sma_crossover",
            {"fast": 5, "slow": 20},
            dataclasses.replace(EXECUTION, commission=bp / 1e4),
            trade_start=START,
            risk_free=0.02,
        )
        assert result.sweep_sharpe[bp] == direct.metrics["sharpe"]
        np.testing.assert_array_equal(result.sweep_returns[bp], direct.returns)
    # the configured commission (10 bp) is the unit's own backtest, not a second run
    assert result.sweep_sharpe[10.0] == result.backtest.metrics["sharpe"]
    np.testing.assert_array_equal(result.sweep_returns[10.0], result.backtest.returns)
    assert result.sweep_sharpe[0.0] > result.sweep_sharpe[10.0] > result.sweep_sharpe[50.0]
    assert result.chart_png is None and result.backtest.cerebro is None


def test_no_sweep_and_a_chart_on_request(bars):
    result = run_unit(_unit(bars, cost_sweep_bp=(), chart=True))
    assert result.sweep_sharpe == {} and result.sweep_returns.empty
    assert result.chart_png[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.backtest.cerebro is None  # the engine is not kept, only its picture


def test_the_unit_is_the_plain_function_of_its_inputs(bars):
    unit = _unit(bars, cost_sweep_bp=(0.0,))
    direct = backtest_strategy(
        bars,
        "sma_crossover",
        {"fast": 5, "slow": 20},
        EXECUTION,
        trade_start=START,
        warmup=20,
        risk_free=0.02,
        cost_sweep_bp=(0.0,),
    )
    _assert_same(run_unit(unit), direct)


def test_units_and_results_pickle_and_give_the_same_numbers_in_a_worker_process(bars):
    unit = _unit(bars)
    here = run_unit(unit)
    _assert_same(pickle.loads(pickle.dumps(here)), here)
    context = multiprocessing.get_context("spawn")  # what an executor uses: nothing inherited
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        there = pool.submit(run_unit, pickle.loads(pickle.dumps(unit))).result(timeout=300)
    _assert_same(there, here)


def test_bad_inputs_are_the_engines_clear_errors(bars):
    with pytest.raises(ValueError, match="warmup must be a whole number of bars >= 20"):
        run_unit(_unit(bars, warmup=5))
