"""Classic moving-average crossovers with Backtrader's own indicators, long or long-short."""

from __future__ import annotations

import backtrader as bt
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from strategies.base import Strategy
from strategies.feeds import date_number


class CrossoverConfig(BaseModel):
    """The parameters of a crossover in a config (``backtest.strategies.<name>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fast: StrictInt = Field(ge=1, description="bars in the fast average")
    slow: StrictInt = Field(ge=2, description="bars in the slow average (> fast)")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> CrossoverConfig:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be shorter than slow ({self.slow})")
        return self


class _MovingAverageCrossover(Strategy):
    params = (
        ("fast", 20),  # bars in the fast average
        ("slow", 50),  # bars in the slow average (> fast)
        ("allow_short", False),  # reverse into a short on a downward cross
        ("trade_start", None),  # first date on which a cross may be acted on
    )

    family = "crossover"
    Config = CrossoverConfig

    _average = bt.indicators.SMA
    # Bars of warm-up per bar of the slow period (see warmup_bars).
    _warmup_factor = 1

    @classmethod
    def signal_lines(cls, bars, params, forecast=None):
        """The fast and slow averages of the close (pandas: an EMA seeded on the first
        close rather than Backtrader's simple average, which differs only in the warm-up)."""
        defaults = cls.params._getkwargsdefault()
        close = bars["close"].astype(float)
        lines = {}
        for which in ("fast", "slow"):
            period = int(params.get(which, defaults[which]))
            if cls._average is bt.indicators.EMA:
                lines[f"EMA {period}"] = close.ewm(span=period, adjust=False).mean()
            else:
                lines[f"SMA {period}"] = close.rolling(period).mean()
        return lines

    @classmethod
    def warmup_bars(cls, params: dict) -> int:
        """Bars before ``trade_start`` the averages need (conventions in ``strategies.engine``)."""
        slow = params.get("slow", cls.params._getkwargsdefault()["slow"])
        # A bad period is reported by __init__ with the strategy's own message.
        return cls._warmup_factor * slow if isinstance(slow, int) and slow > 0 else 0

    def __init__(self):
        fast, slow = self.p.fast, self.p.slow
        if not (isinstance(fast, int) and isinstance(slow, int) and 1 <= fast < slow):
            raise ValueError(
                f"{type(self).__name__}: need whole periods 1 <= fast < slow, "
                f"got fast={fast!r}, slow={slow!r}"
            )
        fast_average = self._average(self.data.close, period=fast)
        slow_average = self._average(self.data.close, period=slow)
        self._cross = bt.indicators.CrossOver(fast_average, slow_average)
        self._first = date_number(self.p.trade_start)
        self._dt = self.data.datetime

    def next(self):
        if self._dt[0] < self._first:
            return
        cross, size = self._cross[0], self.position.size
        if cross > 0 and size <= 0:
            if size < 0:
                self.close()
            self.buy()
        elif cross < 0 and size >= 0:
            if size > 0:
                self.close()
            if self.p.allow_short:
                self.sell()


class SmaCrossover(_MovingAverageCrossover):
    """Fast/slow simple-moving-average crossover (Backtrader's MA_CrossOver rules), long or short.

    Buy logic:
      - Flat and the ``fast`` SMA of the close crosses above the ``slow`` SMA
        on this bar (``bt.indicators.CrossOver`` is +1): buy.
      - Short (with ``allow_short``) on that cross: buy to cover, then buy
        again to go long (two orders, same fill).

    Sell logic:
      - Long and the ``fast`` SMA crosses below the ``slow`` SMA (``CrossOver``
        is -1): sell the whole position; with ``allow_short``, sell again to
        go short (two orders, same fill).
      - Flat and ``allow_short`` on that cross: sell short.

    Order execution:
      - Market orders sized by the engine's sizer, filled at the next bar's
        open. Crosses before ``trade_start`` are ignored (the averages still
        warm up on the bars before it), so the strategy starts flat there and
        waits for the next upward cross.

    Warm-up: ``slow`` bars before ``trade_start`` (the slow average's window
    and the previous bar ``CrossOver`` compares with) give the same signals as
    the whole history.

    Args:
        fast: bars in the fast average.
        slow: bars in the slow average (> fast).
        allow_short: go short on a downward cross (set by the engine from
            ``ExecutionSettings.allow_short``).
        trade_start: first date on which a cross may be acted on.
    """

    _average = bt.indicators.SMA


class EmaCrossover(_MovingAverageCrossover):
    """Fast/slow exponential-moving-average crossover, long or long-short.

    The averages are ``bt.indicators.EMA`` (smoothing ``2 / (period + 1)``,
    seeded with the simple average of the first ``period`` closes).

    Buy logic:
      - Flat and the ``fast`` EMA crosses above the ``slow`` EMA on this bar
        (``bt.indicators.CrossOver`` is +1): buy; short (with
        ``allow_short``): buy to cover, then buy again to go long.

    Sell logic:
      - Long and the ``fast`` EMA crosses below the ``slow`` EMA (``CrossOver``
        is -1): sell the whole position; with ``allow_short``, sell again to
        go short. Flat and ``allow_short``: sell short.

    Order execution:
      - Market orders sized by the engine's sizer, filled at the next bar's
        open. Crosses before ``trade_start`` are ignored.

    Warm-up: ``10 * slow`` bars before ``trade_start``, after which the SMA
    seed weighs less than ``exp(-18)`` in either average (see
    ``strategies.engine``).

    Args:
        fast: span of the fast average in bars.
        slow: span of the slow average in bars (> fast).
        allow_short: go short on a downward cross.
        trade_start: first date on which a cross may be acted on.
    """

    params = (("fast", 12), ("slow", 26))

    _average = bt.indicators.EMA
    _warmup_factor = 10
