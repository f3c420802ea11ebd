"""The broker's side of a backtest: commission, position sizing, and the recorder of each run.

``PercentCommission`` and ``PercentOfEquitySizer`` are the execution model of
``strategies.engine`` (conventions in its docstring); ``Recorder`` is the
analyzer that writes down equity and position at every bar, the order log and
the round trips, which the engine turns into a ``BacktestResult``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import backtrader as bt
import numpy as np
import pandas as pd

from strategies.feeds import date_numbers

TRADE_COLUMNS = (
    "entry_date",
    "exit_date",
    "size",
    "entry_price",
    "exit_price",
    "pnl",
    "commission",
    "pnl_net",
    "bars",
    "open",
)
ORDER_COLUMNS = ("date", "status", "side", "size", "price", "value", "commission")


class PercentCommission(bt.CommInfoBase):
    """Stock-like commission: a fraction of the traded value plus a fixed amount per fill.

    Args:
        commission: fraction of ``|units| * price``.
        fixed: cash per fill.
    """

    params = (
        ("commission", 0.0),
        ("fixed", 0.0),
        ("stocklike", True),
        ("commtype", bt.CommInfoBase.COMM_PERC),
        ("percabs", True),
    )

    def _getcommission(self, size, price, pseudoexec):
        if not size:
            return 0.0
        return abs(size) * price * self.p.commission + self.p.fixed


class PercentOfEquitySizer(bt.Sizer):
    """Units for a new position: ``percent`` of equity at the signal bar's close.

    See the module docstring for the exact rule and the cash cap on longs.

    Args:
        percent: percent of equity per position.
        fractional: allow fractional units.
        commission, fixed, slippage: the execution costs, for the cash cap.
    """

    params = (
        ("percent", 95.0),
        ("fractional", False),
        ("commission", 0.0),
        ("fixed", 0.0),
        ("slippage", 0.0),
    )

    def _getsizing(self, comminfo, cash, data, isbuy):
        price = data.close[0]
        held = self.strategy.getposition(data).size
        units = self.broker.getvalue() * self.p.percent / 100.0 / price
        if isbuy:
            # Cash after the open position (if any) is closed at this close, net of its costs.
            available = cash + held * price
            if held:
                available -= abs(held) * price * (1 + self.p.slippage) * self.p.commission
                available -= self.p.fixed
            per_unit = price * (1 + self.p.slippage) * (1 + self.p.commission)
            units = min(units, max(available - self.p.fixed, 0.0) / per_unit)
        if self.p.fractional:
            return units
        return math.floor(units + 1e-9)


class Recorder(bt.Analyzer):
    """Per-bar equity and position, the order log and the round trips of one run.

    ``strategies.portfolio.PortfolioRecorder`` is the same over many feeds: it sets
    ``by_feed``, so each order and trade also names its feed's instrument, and records
    every feed's units at each bar.

    Args:
        dates: the bars' index; Backtrader's float dates are mapped back to it
            exactly rather than through ``num2date``.
    """

    params = (("dates", None),)
    by_feed = False

    def start(self):
        self._dates = dict(zip(date_numbers(self.p.dates).tolist(), self.p.dates, strict=True))
        self.values = []
        self.units = []
        self.orders = []
        self.closed = []
        self.opened = {}

    def _feed(self, data) -> tuple:
        """The instrument column of a row: the feed's name when ``by_feed``, else none."""
        return (data._name,) if self.by_feed else ()

    def _units(self):
        return self.strategy.position.size

    def next(self):
        self.values.append(self.strategy.broker.getvalue())
        self.units.append(self._units())

    def notify_order(self, order):
        side = "buy" if order.isbuy() else "sell"
        if order.status == order.Completed:
            size, price = order.executed.size, order.executed.price
            self.orders.append(
                (self._dates[order.executed.dt], "filled", side, size, price,
                 abs(size) * price, order.executed.comm, *self._feed(order.data))
            )  # fmt: skip
        elif order.status in (order.Margin, order.Rejected, order.Canceled, order.Expired):
            self.orders.append(
                (self._dates[self.strategy.datetime[0]], order.getstatusname().lower(), side,
                 order.created.size, np.nan, np.nan, 0.0, *self._feed(order.data))
            )  # fmt: skip

    def notify_trade(self, trade):
        if trade.justopened:
            first = trade.history[0].event
            self.opened[trade.ref] = (
                self._dates[trade.dtopen],
                first.size,
                first.price,
                trade.commission,
                trade.data,
            )
        if trade.isclosed:
            entry_date, size, entry_price, _, data = self.opened.pop(trade.ref)
            self.closed.append(
                (entry_date, self._dates[trade.dtclose], size, entry_price,
                 trade.history[-1].event.price, trade.pnl, trade.commission, trade.pnlcomm,
                 trade.barlen, False, *self._feed(data))
            )  # fmt: skip

    def _columns(self, columns: tuple[str, ...]) -> list[str]:
        return [*columns, "instrument"] if self.by_feed else list(columns)

    def trade_log(
        self, dates: pd.DatetimeIndex, last_close: float | Mapping[str, float]
    ) -> pd.DataFrame:
        """Closed round trips, then those still open marked to the last close (each
        instrument's, when ``by_feed``) without exit costs."""
        rows = list(self.closed)
        for entry_date, size, entry_price, commission, data in self.opened.values():
            close = last_close[data._name] if self.by_feed else last_close
            pnl = size * (close - entry_price)
            bars = len(dates) - 1 - dates.get_loc(entry_date)
            rows.append(
                (entry_date, pd.NaT, size, entry_price, close, pnl, commission,
                 pnl - commission, bars, True, *self._feed(data))
            )  # fmt: skip
        trades = pd.DataFrame(rows, columns=self._columns(TRADE_COLUMNS))
        return trades.astype({"size": float, "pnl": float, "commission": float, "bars": int})

    def order_log(self) -> pd.DataFrame:
        """The filled and refused orders, columns ``ORDER_COLUMNS`` (plus ``instrument``
        when ``by_feed``)."""
        orders = pd.DataFrame(self.orders, columns=self._columns(ORDER_COLUMNS))
        return orders.astype({"size": float, "price": float, "value": float, "commission": float})
