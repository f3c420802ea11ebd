"""Portfolio strategies over a universe: one data feed per instrument, traded together.

``TopK`` holds the k instruments with the highest expected return (optionally
short the k lowest); ``EqualWeightBuyAndHold`` is its benchmark, the whole
universe bought once in equal parts. ``strategies.portfolio.run_portfolio``
runs either under the execution model of ``strategies.engine`` (next-open
fills, slippage, commission); sizes are set here, per instrument, instead of
by the engine's one-position sizer.
"""

from __future__ import annotations

import math

import backtrader as bt

from strategies.feeds import date_number


def _units(value: float, price: float, fractional: bool) -> float:
    """Units of ``price`` that ``value`` buys: floored unless fractional (1e-9: float noise)."""
    units = value / price
    return units if fractional else math.floor(units + 1e-9)


class TopK(bt.Strategy):
    """Each bar, long the ``k`` instruments with the highest expected return, in equal parts.

    The expected return of instrument ``i`` at bar ``t`` is
    ``forecast_i[t] / close_i[t] - 1`` (each feed's ``forecast`` line, see
    ``strategies.feeds.ForecastData``), the signal of ``ForecastStrategy``.
    Instruments are ranked by it, highest first; ties keep the feeds' order.

    Buy logic:
      - An instrument that enters the top ``k`` (and is not held long) is
        bought: ``percent / k`` percent of the equity at this close, converted
        to units at its close (floored unless ``fractional``). A short in it
        is covered first.
      - With ``short``: an instrument that leaves the bottom ``k`` is covered.

    Sell logic:
      - An instrument held long that leaves the top ``k`` is sold.
      - With ``short``: an instrument that enters the bottom ``k`` is sold
        short for ``percent / k`` percent of equity (a long in it is closed first).

    Order execution:
      - Market orders, all exits first and then the entries, filled at the
        next bar's open. A position that stays in its book is not resized
        (no daily rebalancing: its weight drifts with its price until it
        leaves). Nothing is traded before ``trade_start``, nor on a bar where
        any instrument lacks a forecast (no full cross-section, no ranking).
        An entry refused for lack of cash is sent again on the next bar.

    Args:
        k: instruments in each book (1 <= k; 2k <= instruments with ``short``).
        short: also hold the bottom ``k`` short.
        percent: percent of equity in each book (0 < percent <= 100).
        fractional: trade fractional units.
        trade_start: first date a signal may be acted on (None: the first bar).
    """

    params = (
        ("k", 1),  # instruments per book
        ("short", False),  # short the bottom k as well
        ("percent", 95.0),  # percent of equity per book, split equally over its k names
        ("fractional", False),  # fractional units
        ("trade_start", None),  # first date to act on
    )

    @classmethod
    def warmup_bars(cls, params: dict) -> int:
        """No indicator to warm up: a forecast is read, not computed."""
        return 0

    def __init__(self):
        k, n = self.p.k, len(self.datas)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"top_k k must be a whole number >= 1, got {k!r}")
        books = 2 if self.p.short else 1
        if books * k > n:
            raise ValueError(
                f"top_k k={k}{' with short' if self.p.short else ''} needs at least "
                f"{books * k} instruments, got {n}"
            )
        if not 0 < self.p.percent <= 100:
            raise ValueError(
                f"percent of equity per book must be in (0, 100], got {self.p.percent}"
            )
        self._first = date_number(self.p.trade_start)
        self._dt = self.datas[0].datetime

    def _targets(self) -> list[int] | None:
        """+1 (long book), -1 (short book) or 0 per feed; None without a full cross-section."""
        expected = []
        for data in self.datas:
            forecast = data.forecast[0]
            if forecast != forecast:  # NaN
                return None
            expected.append(forecast / data.close[0] - 1.0)
        ranked = sorted(range(len(expected)), key=lambda i: -expected[i])  # stable: feed order
        targets = [0] * len(expected)
        for i in ranked[: self.p.k]:
            targets[i] = 1
        if self.p.short:
            for i in ranked[-self.p.k :]:
                targets[i] = -1
        return targets

    def next(self):
        if self._dt[0] < self._first:
            return
        targets = self._targets()
        if targets is None:
            return
        entries = []
        for data, target in zip(self.datas, targets, strict=True):
            size = self.getposition(data).size
            held = (size > 0) - (size < 0)
            if held == target:
                continue
            if held:
                self.close(data=data)
            if target:
                entries.append((data, target))
        value = self.broker.getvalue() * self.p.percent / 100.0 / self.p.k
        for data, target in entries:
            units = _units(value, data.close[0], self.p.fractional)
            if units > 0:
                (self.buy if target > 0 else self.sell)(data=data, size=units)


class EqualWeightBuyAndHold(bt.Strategy):
    """Buy every instrument once, in equal parts, and hold to the end: the universe's benchmark.

    Buy logic:
      - On the first bar on or after ``trade_start``, each instrument gets
        ``percent / N`` percent of the equity at that close, in units at its
        close (floored unless ``fractional``). An order refused for lack of
        cash is sent again on the next bar.

    Sell logic:
      - None: positions are marked to the last close at the end.

    Order execution:
      - Market orders filled at the next bar's open.

    Args:
        percent: percent of equity invested in all (0 < percent <= 100).
        fractional: trade fractional units.
        trade_start: first date the buys may be sent (None: the first bar).
    """

    params = (
        ("percent", 95.0),  # percent of equity in the whole universe
        ("fractional", False),  # fractional units
        ("trade_start", None),  # first date to buy
    )

    @classmethod
    def warmup_bars(cls, params: dict) -> int:
        """No indicator to warm up."""
        return 0

    def __init__(self):
        self._first = date_number(self.p.trade_start)
        self._dt = self.datas[0].datetime
        self._sent: dict[int, bt.Order] = {}
        self._value: float | None = None

    def notify_order(self, order):
        if order.status in (order.Margin, order.Rejected, order.Canceled):
            self._sent.pop(id(order.data), None)

    def next(self):
        if self._dt[0] < self._first:
            return
        if self._value is None:  # each part is fixed on the first allowed bar
            self._value = self.broker.getvalue() * self.p.percent / 100.0 / len(self.datas)
        for data in self.datas:
            if id(data) in self._sent or self.getposition(data).size:
                continue
            units = _units(self._value, data.close[0], self.p.fractional)
            if units > 0:
                self._sent[id(data)] = self.buy(data=data, size=units)
