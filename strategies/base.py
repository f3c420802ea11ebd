"""What a gatecast strategy declares beside Backtrader's own interface.

A strategy is a ``backtrader.Strategy`` subclass registered under the entry
point group ``gatecast.strategies`` (or named ``package.module:Class`` in a
config). The pipelines never name one: what they do with it follows from what
its class declares here, never from its name.

- ``trades_forecast``: it reads the feed's ``forecast`` line (a forecaster's
  forecast of the next close, made at this bar's close). The backtest stage
  runs it on the forecast column of a forecaster, and the look-ahead check
  proves it cannot read a later forecast.
- ``family``: how the report groups it (``rule``: a trading rule on prices;
  ``crossover``; ``benchmark``; ``forecast``). Only a label: no behaviour
  depends on it.
- ``Config``: a pydantic model of its parameters (the keys under
  ``backtest.strategies.<name>``); None takes Backtrader's ``params`` with
  their defaults.
- ``signal_lines(bars, params, forecast)`` (optional): the lines its decisions
  follow, for the report's trade view (a crossover's two averages; a forecast
  strategy's forecast). The default draws the forecast of a strategy that
  trades one, else nothing.
- ``warmup_bars(params)``: how many bars before the out-of-sample start its
  indicators need to give the same signals as on the whole history. The
  backtest stage feeds every strategy of an instrument the most that any of
  them needs, so this is required: a strategy that does not say is refused
  when the config is read.

The engine owns two parameters: ``trade_start`` (no order before the
out-of-sample start; a strategy must not act on an earlier bar) and
``allow_short`` (from ``backtest.allow_short``, for the strategies that have
it). Orders are market orders filled at the next bar's open.
"""

from __future__ import annotations

from typing import Any, ClassVar

import backtrader as bt
import pandas as pd
from pydantic import BaseModel

#: Parameters the engine sets; a config may not.
ENGINE_PARAMS = ("trade_start", "allow_short")


class Strategy(bt.Strategy):
    """A Backtrader strategy with the declarations the pipelines read (module docstring)."""

    trades_forecast: ClassVar[bool] = False
    family: ClassVar[str] = "rule"
    Config: ClassVar[type[BaseModel] | None] = None

    @classmethod
    def warmup_bars(cls, params: dict[str, Any]) -> int:
        """Bars before ``trade_start`` that ``params`` need (see the module docstring)."""
        raise NotImplementedError(
            f"{cls.__name__} must say how many bars of warm-up it needs: define the "
            "classmethod warmup_bars(params) (0 when it computes nothing from past bars)"
        )

    @classmethod
    def signal_lines(
        cls, bars: pd.DataFrame, params: dict[str, Any], forecast: pd.Series | None = None
    ) -> dict[str, pd.Series]:
        """Label -> a line on ``bars``' dates that the strategy's decisions follow, for
        charts only (the backtest never reads it). The default: the forecast of the next
        close, drawn on the date it forecasts, for a strategy that trades one."""
        if not cls.trades_forecast or forecast is None:
            return {}
        drawn = forecast.reindex(bars.index).shift(1)  # made at t, drawn at t + 1
        return {"forecast": drawn.astype(float)}

    @classmethod
    def parameter_defaults(cls) -> dict[str, Any]:
        """Its Backtrader parameters and their defaults, without the engine's."""
        defaults = cls.params._getkwargsdefault()
        return {k: v for k, v in defaults.items() if k not in ENGINE_PARAMS}
