"""The buy-and-hold benchmark, under the same execution model as every strategy."""

from __future__ import annotations

from strategies.base import Strategy
from strategies.feeds import date_number


class BuyAndHold(Strategy):
    """Buy once at the first allowed bar and hold to the end.

    Buy logic:
      - No order has been sent yet and the bar is on or after
        ``trade_start``: buy (sized by the engine's sizer, like every
        strategy). If the order is rejected for lack of cash (a large gap
        up at the open), the next bar tries again.

    Sell logic:
      - None: the position is held to the last bar (the metrics mark it to
        the last close).

    Order execution:
      - Market order filled at the next bar's open.

    Args:
        trade_start: first date on which the buy may be sent (None: the first bar).
    """

    family = "benchmark"
    params = (("trade_start", None),)

    @classmethod
    def warmup_bars(cls, params: dict) -> int:
        """No indicator to warm up: nothing before ``trade_start`` changes what it does."""
        return 0

    def __init__(self):
        self._first = date_number(self.p.trade_start)
        self._dt = self.data.datetime
        self._order = None

    def notify_order(self, order):
        if order.status in (order.Margin, order.Rejected, order.Canceled):
            self._order = None

    def next(self):
        if self._order is None and not self.position and self._dt[0] >= self._first:
            self._order = self.buy()
