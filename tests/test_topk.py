"""Golden trade logs of the top-k portfolio and the equal-weight buy-and-hold on 3 x 20 bars.

Every expected number was worked out by hand from the bars below, the rules in
``strategies.topk``'s docstrings and the execution conventions of
``strategies.engine`` (fills at the next open, 1 % slippage against the order
within the bar's range, commission 0.1 % + 1 per fill, 50 % of equity per book
in whole units), and is written as the arithmetic that produces it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from strategies import ExecutionSettings
from strategies.portfolio import run_portfolio

NAN = np.nan
DATES = pd.bdate_range("2024-01-01", periods=20, name="date")
# Opens equal closes: A 100 then 110 from t10; B 50 then 45 from t14; C 20 throughout.
CLOSES = {
    "A": [100.0] * 10 + [110.0] * 10,
    "B": [50.0] * 14 + [45.0] * 6,
    "C": [20.0] * 20,
}
# Expected return f/c - 1 of each instrument (A, B, C) at each close; the forecast is
# close * (1 + r). 0.25 on t12 for all three: exact in binary, an exact three-way tie.
EXPECTED = (
    [(0.05, 0.0, 0.0)] * 2  # t0, t1: A on top, but before trade_start (t2): ignored
    + [(0.01, 0.02, 0.0)] * 3  # t2..t4: B on top -> buy B at t3
    + [(0.03, 0.02, NAN)]  # t5: C has no forecast: no ranking, no trade
    + [(0.03, 0.01, 0.0)] * 6  # t6..t11: A on top -> sell B, buy A at t7
    + [(0.25, 0.25, 0.25)]  # t12: tie, the first feed (A) wins: keep A
    + [(0.03, 0.01, 0.0)]  # t13
    + [(0.01, 0.0, 0.05)] * 5  # t14..t18: C on top -> sell A, buy C at t15
    + [(0.0, 0.02, 0.01)]  # t19: B on top, but orders sent on the last bar never fill
)
EXECUTION = ExecutionSettings(
    cash=10_000.0, commission=0.001, commission_fixed=1.0, slippage=0.01, percent=50.0
)
MODES = list(itertools.product([True, False], repeat=2))


def d(t: int) -> pd.Timestamp:
    return DATES[t]


def universe() -> tuple[dict[str, pd.DataFrame], dict[str, pd.Series]]:
    bars, forecasts = {}, {}
    for i, (name, closes) in enumerate(CLOSES.items()):
        frame = pd.DataFrame({"open": closes, "close": closes}, index=DATES)
        frame["high"] = frame["close"] + 2
        frame["low"] = frame["close"] - 2
        frame["volume"] = 1000.0
        bars[name] = frame[["open", "high", "low", "close", "volume"]]
        r = np.array([row[i] for row in EXPECTED])
        forecasts[name] = pd.Series(frame["close"].to_numpy() * (1 + r), index=DATES)
    return bars, forecasts


def rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    return list(frame[columns].itertuples(index=False, name=None))


def commission(units: float, price: float) -> float:
    return abs(units) * price * 0.001 + 1.0


def top_k(short: bool = False, runonce: bool = True, preload: bool = True):
    bars, forecasts = universe()
    return run_portfolio(
        bars,
        "top_k",
        {"k": 1, "short": short},
        EXECUTION,
        trade_start=d(2),
        forecasts=forecasts,
        runonce=runonce,
        preload=preload,
    )


# (fill date, instrument, signed units, fill price); buy = open * 1.01, sell = open * 0.99
TOP_K_FILLS = [
    # t2 signal: equity 10000 -> floor(10000 * 0.5 / 50) = 100 B
    (d(3), "B", 100, 50 * 1.01),
    # t6 signal: equity 4943.95 + 100 * 50 = 9943.95 -> floor(9943.95 * 0.5 / 100) = 49 A
    (d(7), "B", -100, 50 * 0.99),  # the exit is sent first
    (d(7), "A", 49, 100 * 1.01),
    # t14 signal: equity 4933.051 + 49 * 110 = 10323.051 -> floor(10323.051 * 0.5 / 20) = 258 C
    (d(15), "A", -49, 110 * 0.99),
    (d(15), "C", 258, 20 * 1.01),
]
# cash: 10000 - 100*50.5 - 6.05 = 4943.95; + 100*49.5 - 5.95 = 9888.0; - 49*101 - 5.949
# = 4933.051; + 49*108.9 - 6.3361 = 10262.8149; - 258*20.2 - 6.2116 = 5045.0033
# final value: 5045.0033 + 258 * 20 = 10205.0033
TOP_K_FINAL = 10205.0033
# round trips: B t3 -> t7 (4 bars), A t7 -> t15 (8 bars), C from t15 still open (marked to 20)
TOP_K_TRADES = [
    # instrument, entry, exit, size, entry price, exit price, pnl, commission, bars, open
    ("B", d(3), d(7), 100, 50.5, 49.5, 100 * (49.5 - 50.5), 6.05 + 5.95, 4, False),
    ("A", d(7), d(15), 49, 101.0, 108.9, 49 * (108.9 - 101), 5.949 + 6.3361, 8, False),
    ("C", d(15), pd.NaT, 258, 20.2, 20.0, 258 * (20 - 20.2), 6.2116, 4, True),
]


def test_top_k_golden_orders_trades_and_final_value():
    result = top_k()
    orders = result.orders
    assert (orders["status"] == "filled").all()
    got = rows(orders, ["date", "instrument", "size", "price"])
    assert got == [(t, n, float(u), pytest.approx(p, abs=1e-9)) for t, n, u, p in TOP_K_FILLS]
    assert orders["commission"].tolist() == pytest.approx(
        [commission(u, p) for _, _, u, p in TOP_K_FILLS], abs=1e-9
    )
    trades = result.trades
    assert trades["instrument"].tolist() == [row[0] for row in TOP_K_TRADES]
    assert trades["entry_date"].tolist() == [row[1] for row in TOP_K_TRADES]
    assert trades["exit_date"].iloc[:2].tolist() == [d(7), d(15)]
    assert pd.isna(trades["exit_date"].iloc[2])
    for column, i in (("size", 3), ("entry_price", 4), ("exit_price", 5), ("pnl", 6)):
        assert trades[column].tolist() == pytest.approx([r[i] for r in TOP_K_TRADES], abs=1e-9)
    assert trades["commission"].tolist() == pytest.approx([r[7] for r in TOP_K_TRADES])
    assert trades["bars"].tolist() == [r[8] for r in TOP_K_TRADES]
    assert trades["open"].tolist() == [r[9] for r in TOP_K_TRADES]
    assert result.equity.iloc[-1] == pytest.approx(TOP_K_FINAL, abs=1e-9)
    assert result.equity.index[0] == d(2) and result.equity.iloc[0] == 10_000.0
    # one instrument held at each close from t3 on; none at t2
    assert result.positions.tolist() == [0.0] + [1.0] * 17
    assert result.holdings.loc[d(19)].tolist() == [0.0, 0.0, 258.0]
    assert result.metrics["trades"] == 3 and result.metrics["orders"] == 5


@pytest.mark.parametrize("short", [False, True])
def test_top_k_same_results_in_every_engine_mode(short):
    reference = top_k(short)
    for runonce, preload in MODES:
        other = top_k(short, runonce=runonce, preload=preload)
        pd.testing.assert_series_equal(other.equity, reference.equity, check_exact=True)
        pd.testing.assert_frame_equal(other.orders, reference.orders, check_exact=True)
        pd.testing.assert_frame_equal(other.trades, reference.trades, check_exact=True)
        pd.testing.assert_frame_equal(other.holdings, reference.holdings, check_exact=True)


def test_top_k_short_books_are_sized_from_the_same_equity():
    orders = top_k(short=True).orders
    # t2 signal, equity 10000: long the top (B) floor(5000 / 50) = 100, short the bottom (C)
    # floor(5000 / 20) = 250, sold at 20 * 0.99
    first = orders.iloc[:2]
    assert rows(first, ["date", "instrument", "size"]) == [
        (d(3), "B", 100.0),
        (d(3), "C", -250.0),
    ]
    assert first["price"].tolist() == pytest.approx([50.5, 19.8])
    # t14: C goes from the short book to the long one: cover, then buy (two orders, same fill)
    c_at_15 = orders[(orders["date"] == d(15)) & (orders["instrument"] == "C")]
    assert c_at_15["side"].tolist() == ["buy", "buy"] and c_at_15["size"].iloc[0] == 250.0


# Equal-weight buy-and-hold: t2 signal, equity 10000, 50 % / 3 = 1666.67 per instrument:
# A floor(16.67) = 16 @ 101, B floor(33.33) = 33 @ 50.5, C floor(83.33) = 83 @ 20.2, at t3.
EQUAL_FILLS = [(d(3), "A", 16, 101.0), (d(3), "B", 33, 50.5), (d(3), "C", 83, 20.2)]
EQUAL_CASH = 10_000 - sum(u * p + commission(u, p) for _, _, u, p in EQUAL_FILLS)
EQUAL_FINAL = EQUAL_CASH + 16 * 110 + 33 * 45 + 83 * 20  # marked to the last closes


@pytest.mark.parametrize(("runonce", "preload"), MODES)
def test_equal_weight_buy_and_hold_golden(runonce, preload):
    bars, _ = universe()
    result = run_portfolio(
        bars, "equal_weight", {}, EXECUTION, trade_start=d(2), runonce=runonce, preload=preload
    )
    got = rows(result.orders, ["date", "instrument", "size"])
    assert got == [(t, n, float(u)) for t, n, u, _ in EQUAL_FILLS]
    assert result.orders["price"].tolist() == pytest.approx([p for *_, p in EQUAL_FILLS])
    assert result.equity.iloc[-1] == pytest.approx(EQUAL_FINAL, abs=1e-9)
    assert result.trades["open"].all() and len(result.trades) == 3


def test_portfolio_bad_inputs_are_named():
    bars, forecasts = universe()
    with pytest.raises(ValueError, match="needs at least 2 instruments"):
        run_portfolio({"A": bars["A"]}, "top_k", {"k": 1, "short": True}, forecasts=forecasts)
    shifted = {**bars, "C": bars["C"].iloc[1:]}
    with pytest.raises(ValueError, match="bars of C are not on the dates of A"):
        run_portfolio(shifted, "top_k", {"k": 1}, forecasts=forecasts)
    with pytest.raises(ValueError, match=r"none for \['B'\]"):
        run_portfolio(bars, "top_k", {"k": 1}, forecasts={n: forecasts[n] for n in "AC"})
    with pytest.raises(ValueError, match="unknown portfolio strategy 'best'"):
        run_portfolio(bars, "best")


# The backtest stage's portfolio units --------------------------------------------------------


def test_backtest_stage_writes_the_top_k_portfolios(tmp_path):
    import json

    from pipelines.config import load_config
    from pipelines.execution.portfolio_unit import run_portfolios
    from pipelines.stages.backtest import run_backtests, write_backtests
    from tests.test_backtest_stage import write_forecasts

    names = ("GSPC", "GOOG", "ORCL")
    write_forecasts(tmp_path / "smoke", instruments=names)
    cfg = load_config(
        "configs/smoke.yaml",
        {
            "output_directory": str(tmp_path),
            "data": {"instruments": list(names)},
            "backtest": {"top_k": {"k": 1}},
        },
    )
    results = run_backtests(cfg, progress=False)
    portfolios = run_portfolios(cfg, results)
    # every forecaster but the random walk and the seeds, and the universe's buy-and-hold
    expected = ["equal_weight", *(f"top_k_{n}" for n in ("sma", "ema", "kalman", "ols", "lstm"))]
    assert list(portfolios) == expected
    summary = json.loads(write_backtests(cfg, results, portfolios).read_text())
    entry = summary["portfolio"]
    assert entry["instruments"] == list(names) and list(entry["strategies"]) == expected
    out = cfg.run_directory / "backtests"
    orders = pd.read_parquet(out / entry["strategies"]["top_k_lstm"]["files"]["orders"])
    assert set(orders["instrument"]) <= set(names) and len(orders) > 0
    unit, result = portfolios["top_k_lstm"]
    # the portfolio trades from the first common out-of-sample date on, one name at a time
    assert result.equity.index[0] == max(r.oos_start for r in results)
    assert result.holdings.ne(0).sum(axis=1).max() == 1
    assert run_portfolios(load_config("configs/smoke.yaml"), results) == {}  # top_k off


def test_config_top_k_needs_enough_instruments():
    from pipelines.common.errors import ConfigError
    from pipelines.config import load_config

    with pytest.raises(ConfigError, match="needs at least 4 instruments, data.instruments has 2"):
        load_config("configs/smoke.yaml", {"backtest": {"top_k": {"k": 2, "short": True}}})
