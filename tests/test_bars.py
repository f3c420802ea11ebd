"""The bars contract (core.bars): every rule with an input that breaks it and its message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.bars import (
    BAR_COLUMNS,
    PRICE_TOLERANCE,
    BarsError,
    format_timestamp,
    validate_bars,
)

DATES = pd.bdate_range("2020-01-02", periods=6, name="date")


def good_bars() -> pd.DataFrame:
    """Six valid daily bars in the stored form (float64, index named ``date``)."""
    close = np.array([100.0, 101.0, 99.5, 102.0, 103.0, 101.5])
    bars = pd.DataFrame(
        {
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.array([1e6, 2e6, 0.0, 1.5e6, 1e6, 3e6]),
        },
        index=DATES,
    )
    bars.index.freq = None
    return bars


def with_value(row: int, column: str, value: float) -> pd.DataFrame:
    bars = good_bars()
    bars.iloc[row, bars.columns.get_loc(column)] = value
    return bars


def message(bars: object, **options) -> str:
    with pytest.raises(BarsError) as err:
        validate_bars(bars, "x", **options)
    return str(err.value)


def test_valid_bars_pass_unchanged():
    bars = good_bars()
    before = bars.copy()
    assert validate_bars(bars, "x", exact=True) is None
    pd.testing.assert_frame_equal(bars, before)
    assert bars.index.freq is None and list(bars.columns) == list(BAR_COLUMNS)


def test_the_error_is_a_value_error():
    assert issubclass(BarsError, ValueError)


# The frame ----------------------------------------------------------------------------


def test_not_a_frame():
    assert message([1.0, 2.0]) == "x: expected a DataFrame of bars, got list"


def test_no_rows():
    assert message(good_bars().iloc[:0]) == "x: no bars"


def test_index_must_be_dates():
    assert message(good_bars().reset_index(drop=True)) == (
        "x: the index must be dates (a DatetimeIndex), got RangeIndex; "
        "use bars.set_index(pd.to_datetime(bars['date']))"
    )


def test_index_must_be_tz_naive():
    assert message(good_bars().tz_localize("UTC")) == (
        "x: the index must be tz-naive, got time zone UTC; use bars.tz_localize(None)"
    )


def test_needed_columns_must_be_there():
    assert message(good_bars().drop(columns="volume")) == (
        "x: missing column(s) ['volume']; bars need ['open', 'high', 'low', 'close', 'volume']"
    )
    assert message(good_bars()[["close"]], columns=("open", "close")) == (
        "x: missing column(s) ['open']; bars need ['open', 'close']"
    )
    validate_bars(good_bars()[["close"]], "x", columns=("close",))  # a caller that needs less


def test_bar_columns_must_hold_numbers():
    bars = good_bars()
    bars["close"] = bars["close"].astype(str)
    assert message(bars) == "x: column 'close' must be numbers, got dtype object"
    assert message(good_bars().astype({"volume": bool})) == (
        "x: column 'volume' must be numbers, got dtype bool"
    )


def test_exact_form_index_name():
    assert message(good_bars().rename_axis(None), exact=True) == (
        "x: the index must be named 'date', got None"
    )
    validate_bars(good_bars().rename_axis(None), "x")  # only the stored form needs the name


def test_exact_form_columns():
    reordered = good_bars()[["close", "open", "high", "low", "volume"]]
    assert message(reordered, exact=True) == (
        "x: columns must be exactly ['open', 'high', 'low', 'close', 'volume'], got "
        "['close', 'open', 'high', 'low', 'volume']"
    )
    extra = good_bars().assign(forecast=1.0)
    assert "got ['open', 'high', 'low', 'close', 'volume', 'forecast']" in message(
        extra, exact=True
    )
    validate_bars(reordered, "x")
    validate_bars(extra, "x")


def test_exact_form_dtypes():
    ints = good_bars().astype({"volume": "int64"})
    assert message(ints, exact=True) == "x: column 'volume' must be float64, got int64"
    validate_bars(ints, "x")  # integers are numbers


# The index ----------------------------------------------------------------------------


def test_duplicate_timestamps():
    bars = good_bars().iloc[[0, 1, 1, 2, 2, 3]]
    assert message(bars) == (
        "x: duplicate timestamp 2020-01-03 (2 in all); bar dates must be strictly increasing, "
        "keep one row per bar"
    )


def test_dates_out_of_order():
    assert message(good_bars().iloc[[0, 2, 1, 3]]) == (
        "x: dates are not strictly increasing: 2020-01-03 comes after 2020-01-06"
    )
    assert "2020-01-08 comes after 2020-01-09" in message(good_bars().iloc[::-1])


def test_intraday_timestamps_are_named_with_their_time():
    bars = good_bars()
    bars.index = pd.date_range("2020-03-06 15:30", periods=6, freq="5min", name="date")
    assert message(bars.iloc[[0, 2, 1]]) == (
        "x: dates are not strictly increasing: 2020-03-06 15:35:00 comes after 2020-03-06 15:40:00"
    )
    assert format_timestamp(pd.Timestamp("2020-03-06")) == "2020-03-06"


# The values ---------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["open", "high", "low", "close"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_missing_or_infinite_prices(column, value):
    assert message(with_value(3, column, value)) == (
        f"x: missing or infinite prices on 2020-01-07: column {column!r} is {value!r}"
    )


def test_missing_volume():
    assert message(with_value(1, "volume", np.nan)) == (
        "x: missing or infinite volume on 2020-01-03: column 'volume' is nan"
    )


@pytest.mark.parametrize("column", ["open", "high", "low", "close"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_non_positive_prices(column, value):
    assert message(with_value(4, column, value)) == (
        f"x: 2020-01-08: column {column!r} has non-positive price {value!r}; prices must be > 0"
    )


def test_a_source_adjusted_close_is_checked_like_a_price():
    bars = good_bars().assign(adj_close=[1.0, 1.0, -2.0, 1.0, 1.0, 1.0])
    assert message(bars) == (
        "x: 2020-01-06: column 'adj_close' has non-positive price -2.0; prices must be > 0"
    )


def test_negative_volume():
    assert message(with_value(0, "volume", -5.0)) == (
        "x: 2020-01-02: column 'volume' is negative (-5.0); volume must be >= 0"
    )


def test_high_below_low():
    assert message(with_value(2, "high", 98.0)) == (
        "x: 2020-01-06: column 'high' (98.0) is below column 'low' (98.5)"
    )


@pytest.mark.parametrize(("column", "value"), [("close", 103.0), ("open", 97.0)])
def test_open_or_close_outside_the_range(column, value):
    assert message(with_value(1, column, value)) == (
        f"x: 2020-01-03: column {column!r} ({value!r}) is outside [low, high] = [100.0, 102.0]"
    )


def test_the_range_allows_rounding():
    high = good_bars()["high"].iloc[1]
    validate_bars(with_value(1, "close", high * (1 + PRICE_TOLERANCE / 2)), "x")
    assert "is outside" in message(with_value(1, "close", high * (1 + 2 * PRICE_TOLERANCE)))


def test_range_rules_need_high_and_low():
    closes = good_bars()[["open", "close"]].assign(open=500.0)
    validate_bars(closes, "x", columns=("close",))


def test_several_bad_rows_are_counted():
    bars = good_bars()
    bars.loc[bars.index[[1, 4]], "volume"] = -1.0
    assert message(bars) == (
        "x: 2020-01-03: column 'volume' is negative (-1.0) (2 rows have this problem); "
        "volume must be >= 0"
    )


# File lines and headers ---------------------------------------------------------------


def test_file_lines_and_headers_name_the_cell():
    bars = with_value(2, "close", 150.0)
    lines = np.arange(len(bars)) + 2
    names = {"close": "Close", "low": "Low", "high": "High"}
    assert message(bars, lines=lines, names=names) == (
        "x: line 4 (2020-01-06): column 'Close' (150.0) is outside [Low, High] = [98.5, 100.5]"
    )


def test_the_first_bad_row_is_the_first_in_the_file():
    bars = good_bars()
    bars.loc[bars.index[[1, 4]], "close"] = -1.0
    lines = np.array([2, 7, 3, 4, 5, 6])  # sorted by date, row 2020-01-08 came first in the file
    assert message(bars, lines=lines) == (
        "x: line 5 (2020-01-08): column 'close' has non-positive price -1.0 (2 rows have this "
        "problem); prices must be > 0"
    )


# One contract, every caller -----------------------------------------------------------


@pytest.mark.parametrize(
    "broken",
    [
        with_value(2, "high", 98.0),
        with_value(3, "close", np.nan),
        with_value(1, "low", -1.0),
        good_bars().iloc[[0, 2, 1, 3]],
    ],
    ids=["high-below-low", "nan-close", "negative-low", "unsorted"],
)
def test_feed_features_and_baselines_apply_the_same_rules(broken):
    from models.baselines import RandomWalkForecaster
    from models.features import check_bars
    from strategies.feeds import validate_bars as feed_check

    expected = message(broken).removeprefix("x: ")
    for check, source in [
        (feed_check, "bars"),
        (check_bars, "bars"),
        (lambda b: RandomWalkForecaster().fit(b), "random_walk"),
    ]:
        with pytest.raises(ValueError) as err:
            check(broken)
        assert str(err.value) == f"{source}: {expected}"
