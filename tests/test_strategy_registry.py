"""Strategies as registered components: entry points, ``backtest.strategies``, a user's class.

A strategy comes into a config through the registry only: its registered
name (an entry point of ``gatecast.strategies``) or ``package.module:Class``.
What the pipelines do with it follows from what its class declares
(``strategies.base.Strategy``), never from its name.
"""

from __future__ import annotations

import pickle
import sys
import textwrap

import pytest

from core import registry
from pipelines.common.errors import ConfigError
from pipelines.config import load_config
from pipelines.execution.backtest_plan import Planned, strategy_plan
from pipelines.sources.load import read_csv_bars
from strategies.crossover import SmaCrossover
from strategies.engine import run_backtest, warmup_bars
from tests.conftest import SAMPLE_DIR

FORECAST_COLUMNS = ["open", "high", "low", "close", "volume", "random_walk", "sma", "lstm"]


def _smoke(backtest: dict, **more) -> object:
    return load_config("configs/smoke.yaml", overrides={"backtest": backtest, **more})


def test_the_built_ins_are_entry_points():
    assert set(registry.names(registry.STRATEGIES)) >= {
        "forecast",
        "sma_crossover",
        "ema_crossover",
        "buy_and_hold",
    }
    assert registry.load(registry.STRATEGIES, "sma_crossover") is SmaCrossover


def test_the_shorthands_and_the_mapping_give_the_same_strategies():
    shorthand = load_config("configs/smoke.yaml")
    mapped = _smoke(
        {
            "strategies": {
                "sma_crossover": {"fast": 5, "slow": 20},
                "ema_crossover": {"fast": 5, "slow": 20},
                "buy_and_hold": {},
            }
        }
    )
    assert shorthand.backtest.strategies == mapped.backtest.strategies
    assert list(shorthand.backtest.strategies) == ["sma_crossover", "ema_crossover", "buy_and_hold"]
    dropped = _smoke({"buy_and_hold": False, "strategies": {"ema_crossover": None}})
    assert list(dropped.backtest.strategies) == ["sma_crossover"]


def test_variants_of_one_kind_run_side_by_side_and_keep_their_kind():
    cfg = _smoke({"strategies": {"sma_200": {"kind": "sma_crossover", "fast": 50, "slow": 200}}})
    plan = strategy_plan(cfg, FORECAST_COLUMNS)
    assert plan["sma_200"] == Planned("sma_crossover", {"fast": 50, "slow": 200}, None)
    assert plan["sma_crossover"] == Planned("sma_crossover", {"fast": 5, "slow": 20}, None)
    assert cfg.strategy_kind("sma_200") == "crossover"
    assert cfg.strategy_kind("buy_and_hold") == "benchmark"
    assert cfg.strategy_kind("lstm") == "forecast" and cfg.strategy_kind("lstm_seed1") == "seed"
    # every forecaster's column is traded by backtest.forecast_strategy under its own name
    assert plan["sma"] == Planned(
        "forecast", {"entry_threshold": 0.0, "exit_threshold": 0.0}, "sma"
    )
    assert warmup_bars((p.strategy, p.params) for p in plan.values()) == 200


@pytest.mark.parametrize(
    ("backtest", "message"),
    [
        (
            {"strategies": {"x": {"kind": "sma_crosover"}}},
            r"backtest\.strategies\.x\.kind: unknown kind 'sma_crosover': did you mean "
            r"'sma_crossover'",
        ),
        (
            {"strategies": {"sma_9": {"kind": "sma_crossover", "fast": 9, "slow": 9}}},
            r"backtest\.strategies\.sma_9: fast \(9\) must be shorter than slow",
        ),
        (
            {"strategies": {"buy_and_hold": {"fast": 2}}},
            r"unknown key 'backtest\.strategies\.buy_and_hold\.fast'",
        ),
        ({"sma_crossover": {"fast": 50, "slow": 20}}, r"backtest\.sma_crossover: fast \(50\)"),
        (
            {"strategies": {"buy_and_hold": {"forecaster": "lstm"}}},
            r"backtest\.strategies\.buy_and_hold\.forecaster: buy_and_hold does not trade",
        ),
        (
            {"strategies": {"sma": {"kind": "buy_and_hold"}}},
            r"backtest\.strategies\.sma: also the name of a forecaster",
        ),
        (
            {"strategies": {"x_seed1": {"kind": "buy_and_hold"}}},
            r"backtest\.strategies\.x_seed1: .*not ending in _seed<k>",
        ),
        (
            {"forecast_strategy": "buy_and_hold"},
            r"backtest\.forecast_strategy: buy_and_hold does not trade a forecast",
        ),
    ],
)
def test_bad_sections_are_one_line_naming_the_full_key(backtest, message):
    with pytest.raises(ConfigError, match=message):
        _smoke(backtest)


def test_the_benchmark_must_be_a_configured_strategy():
    with pytest.raises(ConfigError, match=r"report\.benchmark: 'hold' is not a strategy"):
        load_config("configs/smoke.yaml", overrides={"report": {"benchmark": "hold"}})


USER_STRATEGIES = '''
    from strategies.base import Strategy
    from strategies.feeds import date_number
    import backtrader as bt


    class Breakout_crossover(Strategy):
        """A price rule whose name ends like a crossover's: its kind is its family, 'rule'."""

        params = (("lookback", 10), ("trade_start", None))

        @classmethod
        def warmup_bars(cls, params):
            return params.get("lookback", 10)

        def __init__(self):
            self._high = bt.indicators.Highest(self.data.close(-1), period=self.p.lookback)
            self._first = date_number(self.p.trade_start)

        def next(self):
            if self.data.datetime[0] < self._first:
                return
            if not self.position and self.data.close[0] > self._high[0]:
                self.buy()
            elif self.position and self.data.close[0] < self._high[0] * 0.97:
                self.close()


    class Forgetful(Strategy):
        """Does not say how much warm-up it needs."""

        params = (("trade_start", None),)


    class Plain(bt.Strategy):
        """Not a gatecast strategy: declares nothing."""
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rules.py").write_text(textwrap.dedent(USER_STRATEGIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rules"
    sys.modules.pop("my_rules", None)


def test_a_users_strategy_by_module_path_is_planned_and_runs(user_module):
    cfg = _smoke(
        {"strategies": {"breakout": {"kind": f"{user_module}:Breakout_crossover", "lookback": 15}}}
    )
    spec = cfg.backtest.strategies["breakout"]
    assert spec.arguments() == {"lookback": 15}
    # nothing is inferred from the name: its class says it is a rule
    assert cfg.strategy_kind("breakout") == "rule"
    planned = strategy_plan(cfg, FORECAST_COLUMNS)["breakout"]
    bars = read_csv_bars(SAMPLE_DIR / "GSPC.csv").iloc[:400]
    result = run_backtest(
        bars, planned.strategy, planned.params, trade_start=bars.index[200], warmup=15
    )
    assert result.strategy == "Breakout_crossover" and len(result.equity) == 200
    with pytest.raises(ConfigError, match=r"unknown key 'backtest\.strategies\.breakout\.lookbak'"):
        _smoke(
            {
                "strategies": {
                    "breakout": {"kind": f"{user_module}:Breakout_crossover", "lookbak": 1}
                }
            }
        )


def test_a_strategy_that_does_not_declare_its_warmup_or_anything_is_refused(user_module):
    with pytest.raises(
        ConfigError, match=r"backtest\.strategies\.f\.kind: Forgetful must say how many"
    ):
        _smoke({"strategies": {"f": {"kind": f"{user_module}:Forgetful"}}})
    with pytest.raises(
        ConfigError, match=r"backtest\.strategies\.p\.kind: .* is not a strategies\.base\.Strategy"
    ):
        _smoke({"strategies": {"p": {"kind": f"{user_module}:Plain"}}})


def test_a_strategy_that_trades_a_forecast_reads_its_forecasters_column():
    cfg = _smoke(
        {
            "strategies": {
                "lstm_cautious": {"kind": "forecast", "entry_threshold": 0.002},
                "sma_cautious": {"kind": "forecast", "forecaster": "sma", "entry_threshold": 0.002},
            }
        }
    )
    plan = strategy_plan(cfg, FORECAST_COLUMNS)
    # the candidate's column by default (report.candidate), or the one it names
    assert plan["lstm_cautious"].forecast == "lstm"
    assert plan["sma_cautious"].forecast == "sma"
    assert plan["sma_cautious"].params["entry_threshold"] == 0.002
    assert cfg.strategy_kind("sma_cautious") == "forecast"
    # a forecast file without that column: the strategy is not planned on it
    assert "sma_cautious" not in strategy_plan(cfg, ["close", "lstm"])
    with pytest.raises(ConfigError, match=r"forecaster: 'gbm' is not a forecaster of this config"):
        _smoke({"strategies": {"x": {"kind": "forecast", "forecaster": "gbm"}}})


def test_a_config_with_users_components_pickles_for_worker_processes(user_module):
    # the local executor's processes get what the driver validated, user classes included
    cfg = _smoke(
        {"strategies": {"breakout": {"kind": f"{user_module}:Breakout_crossover", "lookback": 15}}}
    )
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.backtest.strategies["breakout"].arguments() == {"lookback": 15}
