"""Trade any forecaster's next-close forecast: the same rules for LSTM, SMA, EMA, Kalman, OLS."""

from __future__ import annotations

import math

from strategies.base import Strategy
from strategies.feeds import date_number


class ForecastStrategy(Strategy):
    """Long (and optionally short) on the expected return of a next-close forecast.

    The expected return at bar ``t`` is ``forecast[t] / close[t] - 1``, where
    ``forecast[t]`` is the forecast of the close of ``t + 1`` made at the close
    of ``t`` and carried by the feed's ``forecast`` line (see
    ``strategies.feeds.ForecastData``); ``next()`` only reads lines.

    Buy logic:
      - Flat and the expected return is above ``entry_threshold``: buy.
      - Short (with ``allow_short``) and the expected return is above
        ``-exit_threshold``: buy to cover; if it is also above
        ``entry_threshold``, buy again to go long (two orders, same fill).

    Sell logic:
      - Long and the expected return is below ``exit_threshold``: sell the
        whole position; with ``allow_short``, if it is also below
        ``-entry_threshold``, sell again to go short.
      - Flat, ``allow_short`` and the expected return is below
        ``-entry_threshold``: sell short.

    Order execution:
      - Market orders sized by the engine's sizer, filled at the next bar's
        open. Nothing is traded on a bar before ``trade_start`` or on a bar
        whose forecast is NaN (a held position is kept).

    Args:
        entry_threshold: expected return (fraction, >= 0) needed to open a
            position; set it to the round-trip cost to trade only forecasts
            that pay for themselves.
        exit_threshold: expected return (fraction, <= 0) below which a long
            is closed (above ``-exit_threshold`` a short is covered).
        allow_short: trade the symmetric short side.
        trade_start: first date on which a signal may be acted on (None:
            the first bar).
    """

    trades_forecast = True
    family = "forecast"

    params = (
        ("entry_threshold", 0.0),
        ("exit_threshold", 0.0),
        ("allow_short", False),
        ("trade_start", None),
    )

    @classmethod
    def warmup_bars(cls, params: dict) -> int:
        """No indicator to warm up: nothing before ``trade_start`` changes what it does."""
        return 0

    def __init__(self):
        entry, exit_ = self.p.entry_threshold, self.p.exit_threshold
        if not (isinstance(entry, int | float) and math.isfinite(entry) and entry >= 0):
            raise ValueError(
                f"entry_threshold must be a fraction >= 0 (expected return needed to enter), "
                f"got {entry!r}; e.g. 0.002 for 20 bp"
            )
        if not (isinstance(exit_, int | float) and math.isfinite(exit_) and exit_ <= 0):
            raise ValueError(
                f"exit_threshold must be a fraction <= 0 (expected return below which to exit), "
                f"got {exit_!r}; e.g. -0.001 or 0"
            )
        self._entry = float(entry)
        self._exit = float(exit_)
        self._first = date_number(self.p.trade_start)
        self._forecast = self.data.forecast
        self._close = self.data.close
        self._dt = self.data.datetime

    def next(self):
        if self._dt[0] < self._first:
            return
        forecast = self._forecast[0]
        if forecast != forecast:  # NaN: no forecast, no decision
            return
        expected = forecast / self._close[0] - 1.0
        size = self.position.size
        if size > 0:
            if expected < self._exit:
                self.close()
                if self.p.allow_short and expected < -self._entry:
                    self.sell()
        elif size < 0:
            if expected > -self._exit:
                self.close()
                if expected > self._entry:
                    self.buy()
        elif expected > self._entry:
            self.buy()
        elif self.p.allow_short and expected < -self._entry:
            self.sell()
