"""A long-or-flat strategy on a forecast's expected return, with a dead band around zero."""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from strategies.base import Strategy
from strategies.feeds import date_number


class MomentumBandConfig(BaseModel):
    """The parameters of ``backtest.strategies.<name>`` for a momentum band."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    band: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="expected return (fraction, e.g. 0.001 for 10 bp) beyond which to act",
    )


class MomentumBand(Strategy):
    """Long while a forecast expects more than ``band``, flat once it expects less than ``-band``.

    The expected return at bar ``t`` is ``forecast[t] / close[t] - 1``, where
    ``forecast[t]`` is the forecast of the close of ``t + 1`` made at the close
    of ``t`` (the feed's ``forecast`` line). Between ``-band`` and ``band`` the
    position is kept, so a forecast hovering near zero does not churn trades.

    Buy logic:
      - Flat and the expected return is above ``band``: buy.

    Sell logic:
      - Long and the expected return is below ``-band``: sell the whole position.

    Order execution:
      - Market orders sized by the engine's sizer, filled at the next bar's
        open. Nothing is traded on a bar before ``trade_start`` or on a bar
        whose forecast is NaN (a held position is kept). Never short.

    Args:
        band: half-width of the dead band, as a fraction (>= 0); 0 trades on
            the sign of the expected return.
        trade_start: first date on which a signal may be acted on (set by
            the engine to the out-of-sample start).
    """

    trades_forecast: ClassVar[bool] = True
    family: ClassVar[str] = "forecast-rule"
    Config: ClassVar[type[BaseModel]] = MomentumBandConfig

    params = (
        ("band", 0.0),  # half-width of the dead band (fraction of the close)
        ("trade_start", None),  # first date on which a signal may be acted on
    )

    @classmethod
    def warmup_bars(cls, params: dict) -> int:
        """No indicator to warm up: the forecast is read, not computed."""
        return 0

    def __init__(self):
        band = self.p.band
        # a config is checked by MomentumBandConfig; this guards a direct run_backtest call
        if not (isinstance(band, int | float) and math.isfinite(band) and band >= 0):
            raise ValueError(f"band must be a finite fraction >= 0, got {band!r}; e.g. 0.001")
        self.expected = self.data.forecast / self.data.close - 1.0
        self._band = float(band)
        self._first = date_number(self.p.trade_start)
        self._dt = self.data.datetime

    def next(self):
        # a NaN expected return fails both comparisons: no decision
        if self._dt[0] < self._first:
            return
        expected = self.expected[0]
        if not self.position and expected > self._band:
            self.buy()
        elif self.position and expected < -self._band:
            self.close()
