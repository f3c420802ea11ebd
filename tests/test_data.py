"""The data layer: CSV layouts, price policy, validation errors, FRED/yfinance caching, stage."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import responses
from responses import matchers

from pipelines.common.errors import DataError
from pipelines.config import load_config
from pipelines.sources import load as data
from pipelines.sources.load import (
    fred_series,
    load_instrument,
    load_risk_free,
    load_universe,
    min_bars_required,
    read_csv_bars,
    safe_child,
    validate_bars,
)
from pipelines.stages import data as data_stage

FIXTURES = Path(__file__).parent / "fixtures"
FRED_URL = "https://fred.stlouisfed.org/graph/fredgraph.csv"

# Ten business days; day numbers above 12 make MM/DD and DD/MM distinguishable.
DATES = pd.bdate_range("2020-01-02", periods=10)
# (open, high, low, close, adj close, volume); Adj Close / Close varies by row.
ROWS = [
    (100.0 + i, 102.5 + i, 99.0 + i, 101.0 + i, round((101.0 + i) * (0.5 + 0.01 * i), 4), 1000 + i)
    for i in range(10)
]
YAHOO_HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"


def csv_text(header: str, rows: list[tuple], dates: list[str] | None = None) -> str:
    dates = dates if dates is not None else [d.strftime("%Y-%m-%d") for d in DATES]
    body = [",".join([d, *map(str, r)]) for d, r in zip(dates, rows, strict=True)]
    return "\n".join([header, *body]) + "\n"


def write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def expected_bars(adjusted: bool) -> pd.DataFrame:
    """Reference: the bars the ROWS should become, built without the loader."""
    raw = np.array([r[:4] for r in ROWS])
    if adjusted:
        raw = raw * (np.array([r[4] for r in ROWS]) / raw[:, 3])[:, None]
    df = pd.DataFrame(raw, columns=["open", "high", "low", "close"], index=DATES.rename("date"))
    df["volume"] = [float(r[5]) for r in ROWS]
    df.index.freq = None
    return df


def yahoo(tmp_path: Path, rows=ROWS, dates=None, name: str = "bars.csv") -> Path:
    return write(tmp_path, csv_text(YAHOO_HEADER, rows, dates), name)


def with_row(i: int, **changes: float) -> list[tuple]:
    """ROWS with row ``i`` (0-based, file line i + 2) changed."""
    keys = ["open", "high", "low", "close", "adj", "volume"]
    rows = [list(r) for r in ROWS]
    for key, value in changes.items():
        rows[i][keys.index(key)] = value
    return [tuple(r) for r in rows]


# Layouts ------------------------------------------------------------------------


def test_yahoo_adjusted_scales_every_price_by_adj_close_over_close(tmp_path):
    bars = read_csv_bars(yahoo(tmp_path))
    pd.testing.assert_frame_equal(bars, expected_bars(adjusted=True), check_freq=False)
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert (bars.dtypes == "float64").all()
    assert bars.index.name == "date" and bars.index.is_monotonic_increasing
    validate_bars(bars, "adjusted")  # adjusted bars still satisfy low <= open, close <= high


def test_raw_policy_keeps_the_file_prices(tmp_path):
    bars = read_csv_bars(yahoo(tmp_path), price="raw")
    pd.testing.assert_frame_equal(bars, expected_bars(adjusted=False), check_freq=False)


def test_stooq_layout_without_adj_close_uses_raw_prices_and_says_so(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gatecast.data")
    rows = [r[:4] + r[5:] for r in ROWS]
    path = write(tmp_path, csv_text("Date,Open,High,Low,Close,Volume", rows))
    bars = read_csv_bars(path)
    pd.testing.assert_frame_equal(bars, expected_bars(adjusted=False), check_freq=False)
    notes = [r.getMessage() for r in caplog.records if "Adj Close" in r.getMessage()]
    assert notes == [f"{path}: no Adj Close column, so the raw prices are used"]


@pytest.mark.parametrize(
    "header",
    [
        "date,open,high,low,close,adj_close,volume",
        "DATE,OPEN,HIGH,LOW,CLOSE,ADJCLOSE,VOLUME",
        "Date, Open, High, Low, Close, Adj. Close, Volume",
        "date,open,high,low,close,adjusted_close,vol",
    ],
)
def test_headers_are_case_insensitive_with_adj_close_spellings(tmp_path, header):
    bars = read_csv_bars(write(tmp_path, csv_text(header, ROWS)))
    pd.testing.assert_frame_equal(bars, expected_bars(adjusted=True), check_freq=False)


def test_date_as_an_unnamed_first_column_like_a_written_index(tmp_path):
    path = write(tmp_path, csv_text(",Open,High,Low,Close,Adj Close,Volume", ROWS))
    pd.testing.assert_frame_equal(read_csv_bars(path), expected_bars(True), check_freq=False)


def test_columns_in_any_order_and_extra_columns_are_ignored(tmp_path):
    lines = ["Volume,Close,Ticker,Low,High,Open,Date,Adj Close"]
    for d, (o, h, lo, c, a, v) in zip(DATES, ROWS, strict=True):
        lines.append(f"{v},{c},ABC,{lo},{h},{o},{d:%Y-%m-%d},{a}")
    path = write(tmp_path, "\n".join(lines) + "\n")
    pd.testing.assert_frame_equal(read_csv_bars(path), expected_bars(True), check_freq=False)


@pytest.mark.parametrize(
    ("fmt", "configured"),
    [
        ("%m/%d/%Y", None),
        ("%d/%m/%Y", None),
        ("%d.%m.%Y", None),
        ("%Y%m%d", None),
        ("%d-%b-%Y", None),
        ("%m/%d/%Y", "%m/%d/%Y"),
    ],
)
def test_common_date_formats_are_detected_or_configured(tmp_path, fmt, configured):
    dates = [d.strftime(fmt) for d in DATES]
    path = write(tmp_path, csv_text(YAHOO_HEADER, ROWS, dates))
    bars = read_csv_bars(path, date_format=configured)
    pd.testing.assert_frame_equal(bars, expected_bars(True), check_freq=False)


def test_ambiguous_day_and_month_raise_and_asks_for_date_format(tmp_path):
    dates = ["01/02/2020", "01/03/2020", "01/06/2020"]
    path = write(tmp_path, csv_text(YAHOO_HEADER, ROWS[:3], dates))
    with pytest.raises(DataError) as err:
        read_csv_bars(path)
    assert str(err.value) == (
        f"{path}: column 'Date': dates are ambiguous: '01/02/2020' (line 2) reads as 2020-01-02 "
        "with '%m/%d/%Y' or as 2020-02-01 with '%d/%m/%Y'; set data.date_format to the format "
        "the file uses, e.g. date_format: '%d/%m/%Y'"
    )
    bars = read_csv_bars(path, date_format="%d/%m/%Y")
    assert list(bars.index.strftime("%Y-%m-%d")) == ["2020-02-01", "2020-03-01", "2020-06-01"]


def test_intraday_bars_with_utc_offsets_keep_the_wall_clock_time(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gatecast.data")
    stamps = pd.date_range("2020-03-06 15:30", periods=10, freq="5min")
    dates = [t.strftime("%Y-%m-%d %H:%M:%S") + "-05:00" for t in stamps]
    path = write(tmp_path, csv_text("Datetime,Open,High,Low,Close,Adj Close,Volume", ROWS, dates))
    bars = read_csv_bars(path, price="raw")
    assert list(bars.index) == list(stamps)
    assert bars.index.tz is None
    assert any("time-zone offsets dropped" in r.getMessage() for r in caplog.records)
    info = data_stage.describe(bars, data.LoadInfo(source="x"))
    assert info["interval"] == "5min" and info["bars"] == 10


def test_utc_offsets_on_some_rows_only(tmp_path):
    stamps = pd.date_range("2020-03-06 15:30", periods=10, freq="5min")
    dates = [t.strftime("%Y-%m-%d %H:%M:%S") for t in stamps]
    dates[4] += "+01:00"
    path = write(tmp_path, csv_text("Datetime,Open,High,Low,Close,Adj Close,Volume", ROWS, dates))
    assert list(read_csv_bars(path).index) == list(stamps)


def test_timestamp_header_and_epoch_seconds(tmp_path):
    stamps = pd.date_range("2021-06-01 09:00", periods=10, freq="h")
    epochs = [str(int(t.timestamp())) for t in stamps]
    path = write(tmp_path, csv_text("timestamp,open,high,low,close,adj close,volume", ROWS, epochs))
    assert list(read_csv_bars(path).index) == list(stamps)


def test_stooq_ascii_export_with_separate_date_and_time(tmp_path):
    lines = ["<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>"]
    for d, (o, h, lo, c, _, v) in zip(DATES, ROWS, strict=True):
        lines.append(f"ABC.US,D,{d:%Y%m%d},000000,{o},{h},{lo},{c},{v},0")
    bars = read_csv_bars(write(tmp_path, "\n".join(lines) + "\n"))
    pd.testing.assert_frame_equal(bars, expected_bars(adjusted=False), check_freq=False)


def test_stooq_polish_header_semicolons_and_decimal_commas(tmp_path):
    lines = ["Data;Otwarcie;Najwyższy;Najniższy;Zamknięcie;Wolumen"]
    for d, (o, h, lo, c, _, v) in zip(DATES, ROWS, strict=True):
        prices = ";".join(f"{x:.2f}".replace(".", ",") for x in (o, h, lo, c))
        lines.append(f"{d:%Y-%m-%d};{prices};{v}")
    path = tmp_path / "pl.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bars = read_csv_bars(path)
    pd.testing.assert_frame_equal(bars, expected_bars(adjusted=False), check_freq=False)


def test_missing_volume_becomes_zero_with_a_warning(tmp_path, caplog):
    rows = [r[:4] for r in ROWS]
    path = write(tmp_path, csv_text("Date,Open,High,Low,Close", rows))
    bars = read_csv_bars(path)
    assert (bars["volume"] == 0.0).all()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{path}: no Volume column; volume set to 0 for every bar"
    ]


def test_blank_lines_do_not_shift_line_numbers(tmp_path):
    text = csv_text(YAHOO_HEADER, with_row(3, close=500.0))
    lines = text.splitlines()
    path = write(tmp_path, "\n".join(lines[:2] + [""] + lines[2:]) + "\n")
    with pytest.raises(DataError, match=r": line 6 \(2020-01-07\): column 'Close'"):
        read_csv_bars(path)


# Validation errors ---------------------------------------------------------------


def test_unparseable_date_names_line_and_column(tmp_path):
    dates = [d.strftime("%Y-%m-%d") for d in DATES]
    dates[2] = "2020-13-45"
    path = yahoo(tmp_path, dates=dates)
    with pytest.raises(DataError) as err:
        read_csv_bars(path)
    assert str(err.value) == (
        f"{path}: line 4: unparseable date '2020-13-45' in column 'Date'; the other dates read "
        "as '%Y-%m-%d'; fix that row or set data.date_format"
    )


def test_dates_of_no_known_format_ask_for_date_format(tmp_path):
    path = yahoo(tmp_path, dates=[f"day {i}" for i in range(10)])
    with pytest.raises(DataError) as err:
        read_csv_bars(path)
    assert str(err.value) == (
        f"{path}: line 2: unparseable date 'day 0' in column 'Date' (10 rows in all); set "
        "data.date_format to the file's strftime format, e.g. date_format: '%d/%m/%Y'"
    )


def test_dates_not_matching_the_configured_format(tmp_path):
    path = yahoo(tmp_path)
    with pytest.raises(DataError) as err:
        read_csv_bars(path, date_format="%d/%m/%Y")
    assert str(err.value) == (
        f"{path}: line 2: unparseable date '2020-01-02' in column 'Date' (10 rows in all); it "
        "does not match data.date_format '%d/%m/%Y'"
    )


def test_duplicate_timestamps(tmp_path):
    dates = [d.strftime("%Y-%m-%d") for d in DATES]
    dates[2] = dates[1]
    path = yahoo(tmp_path, dates=dates)
    with pytest.raises(DataError) as err:
        read_csv_bars(path)
    assert str(err.value) == (
        f"{path}: lines 3 and 4: duplicate timestamp 2020-01-03 (1 duplicate(s) in all); "
        "keep one row per bar"
    )


@pytest.mark.parametrize("column", ["open", "high", "low", "close", "adj"])
def test_non_positive_prices(tmp_path, column):
    path = yahoo(tmp_path, rows=with_row(3, **{column: 0.0}))
    header = {"adj": "Adj Close"}.get(column, column.capitalize())
    with pytest.raises(DataError) as err:
        read_csv_bars(path)
    assert str(err.value) == (
        f"{path}: line 5 (2020-01-07): column {header!r} has non-positive price 0.0; "
        "prices must be > 0"
    )


def test_negative_price_counts_every_bad_row(tmp_path):
    rows = with_row(7, close=-1.0)
    rows[8] = (*rows[8][:3], -2.0, *rows[8][4:])
    path = yahoo(tmp_path, rows=rows)
    with pytest.raises(DataError) as err:
        read_csv_bars(path)
    assert str(err.value) == (
        f"{path}: line 9 (2020-01-13): column 'Close' has non-positive price -1.0 (2 rows have "
        "this problem); prices must be > 0"
    )


def test_negative_volume(tmp_path):
    path = yahoo(tmp_path, rows=with_row(0, volume=-5))
    with pytest.raises(DataError) as err:
        read_csv_bars(path)
    assert str(err.value) == (
        f"{path}: line 2 (2020-01-02): column 'Volume' is negative (-5.0); volume must be >= 0"
    )


def test_high_below_low(tmp_path):
    path = yahoo(tmp_path, rows=with_row(4, high=95.0))
    with pytest.raises(DataError) as err:
        read_csv_bars(path)
    assert str(err.value) == (
        f"{path}: line 6 (2020-01-08): column 'High' (95.0) is below column 'Low' (103.0)"
    )


@pytest.mark.parametrize(("column", "value"), [("close", 120.0), ("open", 98.0)])
def test_close_or_open_outside_low_high(tmp_path, column, value):
    path = yahoo(tmp_path, rows=with_row(1, **{column: value}))
    with pytest.raises(DataError) as err:
        read_csv_bars(path)
    assert str(err.value) == (
        f"{path}: line 3 (2020-01-03): column {column.capitalize()!r} ({value!r}) is outside "
        "[Low, High] = [100.0, 103.5]"
    )


def test_rounding_tolerance_on_the_range(tmp_path):
    high = ROWS[1][1]
    ok = yahoo(tmp_path, rows=with_row(1, close=high * (1 + 5e-7)), name="ok.csv")
    assert len(read_csv_bars(ok)) == 10
    bad = yahoo(tmp_path, rows=with_row(1, close=high * (1 + 2e-6)), name="bad.csv")
    with pytest.raises(DataError, match="is outside"):
        read_csv_bars(bad)


def test_missing_required_columns(tmp_path):
    path = write(tmp_path, "Date,Open,Close,Volume\n2020-01-02,1,1,1\n")
    with pytest.raises(DataError) as err:
        read_csv_bars(path)
    assert str(err.value) == (
        f"{path}: missing required column(s) 'High', 'Low'; found ['Date', 'Open', 'Close', "
        "'Volume']. Expected a header like Date,Open,High,Low,Close[,Adj Close][,Volume] "
        "(any letter case)"
    )


def test_missing_date_column(tmp_path):
    path = write(tmp_path, "Day,Open,High,Low,Close\n2020-01-02,1,1,1,1\n")
    with pytest.raises(DataError, match=r"missing required column\(s\) 'Date'; found \['Day'"):
        read_csv_bars(path)


def test_value_that_is_not_a_number(tmp_path):
    rows = with_row(2)
    rows[2] = (rows[2][0], rows[2][1], rows[2][2], "abc", *rows[2][4:])
    path = yahoo(tmp_path, rows=rows)
    with pytest.raises(DataError) as err:
        read_csv_bars(path)
    assert str(err.value) == f"{path}: line 4 (2020-01-06): column 'Close': 'abc' is not a number"


def test_empty_file_and_header_only_file(tmp_path):
    empty = write(tmp_path, "", "empty.csv")
    with pytest.raises(DataError) as err:
        read_csv_bars(empty)
    assert str(err.value) == (
        f"{empty}: empty file (no header, no rows); expected a header like "
        "Date,Open,High,Low,Close[,Adj Close][,Volume]"
    )
    header_only = write(tmp_path, YAHOO_HEADER + "\n", "header.csv")
    with pytest.raises(DataError) as err:
        read_csv_bars(header_only)
    assert str(err.value) == f"{header_only}: empty file: a header but no data rows"


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        read_csv_bars(tmp_path / "nope.csv")
    assert str(err.value) == f"{tmp_path / 'nope.csv'}: file not found"


# Null rows and unsorted rows ----------------------------------------------------

NULL = ("null",) * 6


def test_null_rows_are_dropped_with_a_warning_naming_the_dates(tmp_path, caplog):
    rows = list(ROWS)
    rows[2] = NULL
    rows[5] = NULL
    path = yahoo(tmp_path, rows=rows)
    bars = read_csv_bars(path, null_rows="drop")
    expected = expected_bars(True).drop(DATES[[2, 5]])
    pd.testing.assert_frame_equal(bars, expected, check_freq=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{path}: dropped 2 row(s) with null values (data.null_rows: drop): 2020-01-06, 2020-01-09"
    ]


def test_null_rows_raise_under_the_error_policy(tmp_path):
    rows = list(ROWS)
    rows[2] = NULL
    path = yahoo(tmp_path, rows=rows)
    with pytest.raises(DataError) as err:
        read_csv_bars(path, null_rows="error")
    assert str(err.value) == (
        f"{path}: line 4 (2020-01-06): null or missing value in column 'Open' (1 such row(s): "
        "2020-01-06); remove them or set data.null_rows: drop"
    )


def test_a_single_empty_field_counts_as_a_null_row(tmp_path):
    text = csv_text(YAHOO_HEADER, ROWS).replace(",1003\n", ",\n")  # volume of row 3 empty
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=r"line 5 \(2020-01-07\): null or missing value in col"):
        read_csv_bars(path, null_rows="error")
    assert len(read_csv_bars(path)) == 9


def _swapped_dates() -> list[str]:
    dates = [d.strftime("%Y-%m-%d") for d in DATES]
    dates[2], dates[3] = dates[3], dates[2]
    return dates


def test_unsorted_rows_are_sorted_with_a_warning(tmp_path, caplog):
    rows = list(ROWS)
    rows[2], rows[3] = rows[3], rows[2]
    path = yahoo(tmp_path, rows=rows, dates=_swapped_dates())
    bars = read_csv_bars(path, unsorted_rows="sort")
    pd.testing.assert_frame_equal(bars, expected_bars(True), check_freq=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{path}: 1 row(s) out of date order, first at line 5 (2020-01-06 after 2020-01-07); "
        "sorted by date (data.unsorted_rows: sort)"
    ]


def test_unsorted_rows_raise_under_the_error_policy(tmp_path):
    path = yahoo(tmp_path, dates=_swapped_dates())
    with pytest.raises(DataError) as err:
        read_csv_bars(path, unsorted_rows="error")
    assert str(err.value) == (
        f"{path}: rows are not in date order: line 5 (2020-01-06 after 2020-01-07); sort the "
        "file by date or set data.unsorted_rows: sort"
    )


def test_newest_first_files_are_reversed(tmp_path, caplog):
    dates = [d.strftime("%Y-%m-%d") for d in DATES][::-1]
    path = yahoo(tmp_path, rows=ROWS[::-1], dates=dates)
    pd.testing.assert_frame_equal(read_csv_bars(path), expected_bars(True), check_freq=False)
    assert "9 row(s) out of date order" in caplog.text


# validate_bars ------------------------------------------------------------------


def test_validate_bars_rejects_what_the_contract_forbids():
    good = expected_bars(True)
    validate_bars(good, "good")
    with pytest.raises(DataError, match=r"^x: the index must be tz-naive"):
        validate_bars(good.tz_localize("UTC"), "x")
    nan = good.copy()
    nan.iloc[4, 3] = np.nan
    with pytest.raises(DataError) as err:
        validate_bars(nan, "x")
    assert str(err.value) == "x: missing or infinite prices on 2020-01-08: column 'close' is nan"
    with pytest.raises(DataError) as err:
        validate_bars(good.iloc[[0, 2, 1]], "x")
    assert str(err.value) == (
        "x: dates are not strictly increasing: 2020-01-03 comes after 2020-01-06"
    )
    with pytest.raises(DataError, match="duplicate timestamp 2020-01-02"):
        validate_bars(good.iloc[[0, 0, 1]], "x")
    with pytest.raises(DataError, match=r"missing column\(s\) \['volume'\]"):
        validate_bars(good.drop(columns="volume"), "x")
    low = good.copy()
    low.iloc[2, 2] = low.iloc[2, 1] + 1
    with pytest.raises(DataError, match="x: 2020-01-06: column 'high' .* is below column 'low'"):
        validate_bars(low, "x")


def test_the_bundled_sample_is_valid(sample_dir):
    for path in sorted(sample_dir.glob("*.csv")):
        adjusted = read_csv_bars(path)
        raw = read_csv_bars(path, price="raw")
        validate_bars(adjusted, path.name)
        assert len(adjusted) > 2000
        ratio = adjusted["close"] / raw["close"]
        pd.testing.assert_series_equal(adjusted["open"] / raw["open"], ratio, check_names=False)


# Instruments, configs and paths ---------------------------------------------------


def small_config(tmp_path: Path, **data_keys):
    """configs/smoke.yaml pointed at tmp_path with windows that fit the 10-row files."""
    return load_config(
        "configs/smoke.yaml",
        overrides={
            "output_directory": str(tmp_path / "build"),
            "data": {
                "directory": str(tmp_path),
                "instruments": ["ABC"],
                "start": None,
                "end": None,
                "cache_directory": str(tmp_path / "cache"),
                **data_keys,
            },
        },
    )


def test_min_bars_required_is_the_sum_of_the_windows(tmp_path):
    cfg = small_config(tmp_path)
    cfg = cfg.model_copy(
        update={
            "features": cfg.features.model_copy(update={"window": 7}),
            "walkforward": cfg.walkforward.model_copy(
                update={"train_bars": 60, "embargo": 3, "test_bars": 11}
            ),
        }
    )
    assert min_bars_required(cfg) == 7 + 60 + 3 + 11


def test_too_few_bars_for_the_configured_windows(tmp_path):
    path = yahoo(tmp_path, name="ABC.csv")
    cfg = small_config(tmp_path)
    with pytest.raises(DataError) as err:
        load_instrument(cfg, "ABC")
    assert str(err.value) == (
        f"{path}: 10 bars, but the configured windows need at least 410 (features.window 10 + "
        "walkforward.train_bars 300 + walkforward.embargo 0 + walkforward.test_bars 100); "
        "widen the date range or shorten those windows"
    )
    cfg = small_config(tmp_path, start="2020-01-06", end="2020-01-10")
    with pytest.raises(DataError, match=r": 5 bars between 2020-01-06 and 2020-01-10 \(data"):
        load_instrument(cfg, "ABC")
    cfg = small_config(tmp_path, start="2021-01-01")
    with pytest.raises(DataError) as err:
        load_instrument(cfg, "ABC")
    assert str(err.value) == (
        f"{path}: no bars between 2021-01-01 and the last bar (data.start/end); the data covers "
        "2020-01-02 to 2020-01-15"
    )


def test_unknown_instrument_lists_the_available_files(tmp_path):
    yahoo(tmp_path, name="GOOD.csv")
    yahoo(tmp_path, name="OTHER.csv")
    cfg = small_config(tmp_path, instruments=["NOPE"])
    with pytest.raises(DataError) as err:
        load_instrument(cfg, "NOPE")
    assert str(err.value) == (
        f"instrument 'NOPE': no file NOPE.csv in {tmp_path}; available: GOOD, OTHER. "
        "Check data.instruments and data.directory"
    )


def test_start_end_and_instrument_files_in_another_letter_case(tmp_path, monkeypatch):
    stamps = pd.date_range("2020-01-06 09:00", periods=10, freq="5h")  # 2 on 2020-01-08
    dates = [t.strftime("%Y-%m-%d %H:%M") for t in stamps]
    path = write(tmp_path, csv_text(YAHOO_HEADER, ROWS, dates), "abc.csv")
    cfg = small_config(tmp_path, start="2020-01-06", end="2020-01-07")
    monkeypatch.setattr(data, "min_bars_required", lambda cfg: 1)
    bars = load_instrument(cfg, "ABC")
    assert list(bars.index) == list(stamps[:8])  # data.end is a whole day, up to 20:00
    assert data.load_with_info(cfg, "ABC")[1].source == str(path)
    assert list(load_universe(cfg)) == ["ABC"]


@pytest.mark.parametrize("name", ["../secret", "a/b", "/etc/passwd", "..", ".hidden", "a\\b", ""])
def test_a_name_never_becomes_a_path_outside_the_folder(tmp_path, name):
    with pytest.raises(DataError, match="is not a plain instrument or dataset name"):
        safe_child(tmp_path, name, ".csv")


def test_path_safety_is_checked_again_past_the_config(tmp_path):
    (tmp_path / "inner").mkdir()
    yahoo(tmp_path, name="secret.csv")  # beside the data folder, must stay unreachable
    cfg = small_config(tmp_path / "inner")
    sneaky = cfg.model_copy(
        update={"data": cfg.data.model_copy(update={"instruments": ["../secret"]})}
    )
    with pytest.raises(DataError, match=r"^'\.\./secret' is not a plain instrument"):
        load_instrument(sneaky, "../secret")
    with pytest.raises(DataError, match="is not a plain instrument"):
        fred_series("../../DTB3", cache_dir=tmp_path)


# FRED through pandas-datareader, recorded responses ---------------------------------


def fixture_series(name: str = "DTB3") -> pd.Series:
    """The fixture parsed independently of the loader (reference)."""
    frame = pd.read_csv(FIXTURES / "fred" / f"{name}.csv", index_col=0, na_values=".")
    values = frame.iloc[:, 0].dropna().astype("float64")
    values.index = pd.DatetimeIndex(values.index, name="date")
    return values.rename(name)


def test_fred_download_is_cached_and_reused_offline(tmp_path):
    body = (FIXTURES / "fred" / "DTB3.csv").read_text()
    with responses.RequestsMock() as rsps:
        rsps.get(
            FRED_URL,
            body=body,
            content_type="text/csv",
            match=[matchers.query_param_matcher({"id": "DTB3"})],
        )
        first = fred_series("DTB3", "2011-12-01", "2012-01-31", tmp_path)
        assert len(rsps.calls) == 1
    assert (tmp_path / "fred" / "DTB3.parquet").is_file()
    pd.testing.assert_series_equal(first, fixture_series(), check_freq=False)
    assert pd.Timestamp("2012-01-02") not in first.index  # FRED's "." holiday is dropped

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(FRED_URL, body=requests.ConnectionError("network is down"))
        again = fred_series("DTB3", "2012-01-03", "2012-01-05", tmp_path)
        assert len(rsps.calls) == 0
    assert list(again.index.strftime("%Y-%m-%d")) == ["2012-01-03", "2012-01-04", "2012-01-05"]
    pd.testing.assert_series_equal(again, first.loc["2012-01-03":"2012-01-05"], check_freq=False)


def test_fred_offline_without_a_cache_is_a_clear_error(tmp_path):
    with responses.RequestsMock() as rsps:
        rsps.get(FRED_URL, body=requests.ConnectionError("network is down"))
        with pytest.raises(DataError) as err:
            fred_series("DTB3", cache_dir=tmp_path)
    message = str(err.value)
    assert message.startswith("could not download FRED series 'DTB3' (")
    assert message.endswith(
        f"no cached copy at {tmp_path / 'fred' / 'DTB3.parquet'}. Connect once to fill the "
        "cache, or use data.risk_free.source: constant"
    )
    assert not (tmp_path / "fred" / "DTB3.parquet").exists()


def seed_fred_cache(cache: Path, name: str, values: pd.Series) -> None:
    (cache / "fred").mkdir(parents=True, exist_ok=True)
    frame = values.rename(name).to_frame()
    frame.index = pd.DatetimeIndex(frame.index, name="date")
    frame.to_parquet(cache / "fred" / f"{name}.parquet")


def test_risk_free_constant(tmp_path):
    cfg = small_config(tmp_path, risk_free={"source": "constant", "rate": 0.02})
    rf = load_risk_free(cfg, DATES)
    assert (rf == 0.02).all() and rf.index.equals(DATES)


def test_risk_free_from_fred_is_percent_over_100_carried_forward(tmp_path):
    observed = pd.bdate_range("2019-12-02", "2020-02-28")[::3]  # sparse, like a weekly series
    values = pd.Series(np.arange(len(observed)) * 0.25 + 1.0, index=observed)
    values.iloc[5] = np.nan  # a "." day
    seed_fred_cache(tmp_path / "cache", "DTB3", values)
    cfg = small_config(tmp_path, risk_free={"source": "fred", "series": "DTB3"})
    index = pd.date_range("2020-01-01", "2020-02-10", freq="D")  # weekends included
    rf = load_risk_free(cfg, index)
    # Reference: as-of join on the past (pandas merge_asof, backward direction).
    ref = pd.merge_asof(
        pd.DataFrame({"date": index}),
        values.dropna().rename("v").rename_axis("date").reset_index(),
        on="date",
        direction="backward",
    )
    np.testing.assert_allclose(rf.to_numpy(), ref["v"].to_numpy() / 100.0)
    assert rf.index.equals(index)


def test_risk_free_has_no_look_ahead(tmp_path):
    observed = pd.bdate_range("2019-12-02", "2020-03-31")
    values = pd.Series(np.linspace(1.0, 2.0, len(observed)), index=observed)
    index = pd.bdate_range("2020-01-02", "2020-03-31")
    cfg = small_config(tmp_path, risk_free={"source": "fred", "series": "DTB3"})
    seed_fred_cache(tmp_path / "cache", "DTB3", values)
    before = load_risk_free(cfg, index)
    t = pd.Timestamp("2020-02-14")
    changed = values.copy()
    changed[changed.index > t] = 99.0
    seed_fred_cache(tmp_path / "cache", "DTB3", changed)
    after = load_risk_free(cfg, index)
    pd.testing.assert_series_equal(before[:t], after[:t])
    assert (after[after.index > t] == 0.99).all()


def test_risk_free_before_the_first_observation_is_an_error_not_a_backfill(tmp_path):
    seed_fred_cache(tmp_path / "cache", "DTB3", pd.Series([1.0, 1.1], index=DATES[3:5]))
    cfg = small_config(tmp_path, risk_free={"source": "fred", "series": "DTB3"})
    with pytest.raises(DataError) as err:
        load_risk_free(cfg, DATES)
    assert str(err.value) == (
        "risk-free series 'DTB3' has no observation on or before 2020-01-02; use a later "
        "data.start or data.risk_free.source: constant"
    )


def test_close_only_fred_series_as_bars(tmp_path):
    index = pd.bdate_range("2020-01-01", periods=500)
    seed_fred_cache(tmp_path / "cache", "SP500", pd.Series(np.linspace(3000, 3500, 500), index))
    cfg = small_config(tmp_path, instruments=["SP500"])
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": "fred"})})
    bars = load_instrument(cfg, "SP500")
    assert len(bars) == 500
    for col in ("open", "high", "low"):
        pd.testing.assert_series_equal(bars[col], bars["close"], check_names=False)
    assert (bars["volume"] == 0).all()
    validate_bars(bars, "SP500")


# yfinance (optional extra), with a stand-in module --------------------------------


class FakeTicker:
    calls: list[tuple[str, dict]] = []
    fail = False

    def __init__(self, name: str):
        self.name = name

    def history(self, **kwargs):
        FakeTicker.calls.append((self.name, kwargs))
        if FakeTicker.fail:
            raise requests.ConnectionError("network is down")
        index = pd.bdate_range("2020-01-02", periods=60, tz="America/New_York", name="Date")
        close = np.linspace(100, 130, 60)
        return pd.DataFrame(
            {
                "Open": close - 0.5,
                "High": close + 1,
                "Low": close - 1,
                "Close": close,
                "Adj Close": close * 0.9,
                "Volume": np.full(60, 1e6),
            },
            index=index,
        )


def yfinance_config(tmp_path: Path):
    cfg = small_config(tmp_path, source="yfinance", instruments=["SPY"], end="2020-06-30")
    wf = cfg.walkforward.model_copy(update={"train_bars": 50, "test_bars": 5})
    return cfg.model_copy(
        update={"walkforward": wf, "features": cfg.features.model_copy(update={"window": 5})}
    )


def test_yfinance_download_is_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yfinance", types.SimpleNamespace(Ticker=FakeTicker))
    monkeypatch.setattr(FakeTicker, "calls", [])
    cfg = yfinance_config(tmp_path)
    bars = load_instrument(cfg, "SPY")
    assert len(FakeTicker.calls) == 1
    name, kwargs = FakeTicker.calls[0]
    assert name == "SPY" and kwargs["auto_adjust"] is False
    assert bars.index.tz is None and bars.index[0] == pd.Timestamp("2020-01-02")
    np.testing.assert_allclose(bars["close"], np.linspace(100, 130, 60) * 0.9)
    monkeypatch.setattr(FakeTicker, "fail", True)
    again = load_instrument(cfg, "SPY")
    assert len(FakeTicker.calls) == 1  # served from the Parquet cache
    pd.testing.assert_frame_equal(again, bars)


def test_yfinance_not_installed_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yfinance", None)
    with pytest.raises(DataError) as err:
        load_instrument(yfinance_config(tmp_path), "SPY")
    assert str(err.value) == (
        "data.source: yfinance needs the optional yfinance package: pip install -e '.[online]' "
        "(or use data.source: csv with files in data.directory)"
    )


# The data stage ---------------------------------------------------------------------


def test_data_stage_end_to_end_on_the_smoke_config(tmp_path, capsys):
    rc = data_stage.main(
        ["--config", "configs/smoke.yaml", "--set", f"output_directory={tmp_path}"]
    )
    assert rc == 0
    out_dir = tmp_path / "smoke" / "data"
    cfg = load_config("configs/smoke.yaml")
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [f"{name}.parquet" for name in cfg.data.instruments] + ["summary.json"]
    )  # no temporary files left behind
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["config"] == "smoke"
    assert summary["min_bars_required"] == min_bars_required(cfg)
    assert list(summary["instruments"]) == cfg.data.instruments
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:4] == ["instrument", "bars", "first", "last"]
    for name in cfg.data.instruments:
        bars = pd.read_parquet(out_dir / f"{name}.parquet")
        validate_bars(bars, name)
        pd.testing.assert_frame_equal(bars, load_instrument(cfg, name))
        row = summary["instruments"][name]
        assert row["bars"] == len(bars)
        assert row["first"] == f"{bars.index[0]:%Y-%m-%d}"
        assert row["last"] == f"{bars.index[-1]:%Y-%m-%d}"
        gaps = np.diff(bars.index.values).astype("timedelta64[D]").astype(int)
        assert row["gaps_over_4_days"] == int((gaps > 4).sum())
        line = next(ln for ln in printed.splitlines() if ln.split()[0] == name)
        assert line.split()[1:4] == [str(len(bars)), row["first"], row["last"]]
    assert summary["instruments"]["GOOG"]["price_series"] == "raw (no Adj Close column)"
    assert summary["instruments"]["GSPC"]["price_series"].startswith("adjusted")


def test_help_works_for_the_data_stage(capsys):
    with pytest.raises(SystemExit) as stop:
        data_stage.main(["--help"])
    assert stop.value.code == 0
    assert "--config" in capsys.readouterr().out
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "data", "--help"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m pipelines data")


def test_data_stage_fails_cleanly_and_writes_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = data_stage.main(
        [
            "--config",
            "configs/smoke.yaml",
            "--set",
            f"output_directory={tmp_path / 'out'}",
            "--set",
            f"data.directory={empty}",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert f"error: instrument 'GSPC': no file GSPC.csv in {empty}; available: none" in err
    assert not (tmp_path / "out").exists()


def test_data_stage_with_a_fred_risk_free_rate_records_it(tmp_path, capsys):
    yahoo(tmp_path, name="ABC.csv")
    seed_fred_cache(
        tmp_path / "cache", "DTB3", pd.Series(1.5, pd.bdate_range("2019-12-02", "2020-01-31"))
    )
    cfg = small_config(tmp_path, risk_free={"source": "fred", "series": "DTB3"})
    cfg = cfg.model_copy(
        update={
            "features": cfg.features.model_copy(update={"window": 2}),
            "walkforward": cfg.walkforward.model_copy(update={"train_bars": 50, "test_bars": 1}),
        }
    )
    with pytest.raises(DataError, match="10 bars, but the configured windows need at least 53"):
        data_stage.run(cfg)
    rows = [ROWS[i % 10] for i in range(60)]
    dates = [f"{d:%Y-%m-%d}" for d in pd.bdate_range("2020-01-02", periods=60)]
    yahoo(tmp_path, rows=rows, dates=dates, name="ABC.csv")
    summary = data_stage.run(cfg)
    assert summary["risk_free"] == {
        "source": "fred",
        "series": "DTB3",
        "first": "2019-12-02",
        "last": "2020-01-31",
    }
    assert "ABC" in capsys.readouterr().out


# Bars per year, intervals, long gaps, European files (issue: right numbers on any bars) ----


def _fit_windows(cfg):
    """Windows small enough for the short files of these tests."""
    return cfg.model_copy(
        update={
            "features": cfg.features.model_copy(update={"window": 2}),
            "walkforward": cfg.walkforward.model_copy(update={"train_bars": 50, "test_bars": 1}),
        }
    )


def _hourly_csv(tmp_path: Path, name: str, days: int = 20) -> Path:
    stamps = [
        d + pd.Timedelta(hours=h)
        for d in pd.bdate_range("2018-01-08", periods=days)
        for h in range(24)
    ]
    rows = [(1.2, 1.21, 1.19, 1.2 + 0.001 * (k % 5), 0) for k in range(len(stamps))]
    lines = ["Date,Open,High,Low,Close,Volume"] + [
        f"{t:%Y-%m-%d %H:%M:%S},{o},{h},{lo},{c},{v}"
        for t, (o, h, lo, c, v) in zip(stamps, rows, strict=True)
    ]
    return write(tmp_path, "\n".join(lines) + "\n", name)


def test_summary_states_bars_per_year_of_daily_equity_bars(tmp_path, capsys):
    rows = [ROWS[i % 10] for i in range(60)]
    dates = [f"{d:%Y-%m-%d}" for d in pd.bdate_range("2020-01-02", periods=60)]
    yahoo(tmp_path, rows=rows, dates=dates, name="ABC.csv")
    summary = data_stage.run(_fit_windows(small_config(tmp_path)))
    assert summary["interval"] == "daily"
    assert summary["periods_per_year"] == 252
    assert "bars per year: 252 (daily equity bars)" in capsys.readouterr().out


def test_hourly_bars_are_measured_and_the_summary_says_so(tmp_path, capsys):
    _hourly_csv(tmp_path, "EURUSD.csv")
    cfg = _fit_windows(small_config(tmp_path, instruments=["EURUSD"]))
    summary = data_stage.run(cfg)
    bars = pd.read_parquet(tmp_path / "build" / "smoke" / "data" / "EURUSD.parquet")
    years = (bars.index[-1] - bars.index[0]) / pd.Timedelta(days=365.25)
    assert summary["interval"] == "1h"
    assert summary["periods_per_year"] == pytest.approx((len(bars) - 1) / years)
    assert "(1h bars, measured)" in capsys.readouterr().out
    cfg = _fit_windows(small_config(tmp_path, instruments=["EURUSD"], periods_per_year=6048))
    assert data_stage.run(cfg)["periods_per_year"] == 6048


def test_instruments_of_different_intervals_are_a_config_error_naming_them(tmp_path, capsys):
    _hourly_csv(tmp_path, "EURUSD.csv")
    rows = [ROWS[i % 10] for i in range(60)]
    dates = [f"{d:%Y-%m-%d}" for d in pd.bdate_range("2020-01-02", periods=60)]
    yahoo(tmp_path, rows=rows, dates=dates, name="ABC.csv")
    argv = ["--config", "configs/smoke.yaml", "--set", f"output_directory={tmp_path / 'out'}"]
    argv += ["--set", f"data.directory={tmp_path}", "--set", "data.instruments=[ABC, EURUSD]"]
    argv += ["--set", "data.start=null", "--set", "data.end=null"]
    argv += ["--set", "features.window=2", "--set", "walkforward.train_bars=50"]
    argv += ["--set", "walkforward.test_bars=1"]
    assert data_stage.main(argv) == 2
    assert capsys.readouterr().err == (
        "error: data.instruments: bars of different intervals in one run (ABC daily, EURUSD "
        "1h); put instruments of each interval in a config of their own\n"
    )
    assert not (tmp_path / "out").exists()


def _gapped(tmp_path: Path) -> list[str]:
    days = list(pd.bdate_range("2020-01-02", periods=30)) + list(
        pd.bdate_range("2020-05-04", periods=30)
    )
    rows = [ROWS[i % 10] for i in range(60)]
    yahoo(tmp_path, rows=rows, dates=[f"{d:%Y-%m-%d}" for d in days], name="ABC.csv")
    return [f"{days[29]:%Y-%m-%d}", f"{days[30]:%Y-%m-%d}"]


def test_a_gap_of_months_is_warned_with_its_dates(tmp_path, caplog, capsys):
    first, second = _gapped(tmp_path)
    with caplog.at_level(logging.WARNING, logger="gatecast.data"):
        summary = data_stage.run(_fit_windows(small_config(tmp_path)))
    gap = f"{first} to {second} (82 days)"
    assert summary["instruments"]["ABC"]["long_gaps"] == [gap]
    assert f"1 gap(s) of more than 31 days between bars: {gap}" in caplog.text
    assert f"note: ABC: long gap {gap}" in capsys.readouterr().out


def test_a_gap_of_months_is_refused_under_the_error_policy(tmp_path):
    first, second = _gapped(tmp_path)
    cfg = _fit_windows(small_config(tmp_path, long_gaps="error"))
    with pytest.raises(DataError) as err:
        data_stage.run(cfg)
    assert str(err.value).endswith(
        f"ABC.csv: 1 gap(s) of more than 31 days between bars: {first} to {second} (82 days); "
        "fill the missing bars, narrow data.start/end, or set data.long_gaps: warn (or a larger "
        "data.max_gap_days) to accept them"
    )
    assert not (tmp_path / "build").exists()
    cfg = _fit_windows(small_config(tmp_path, long_gaps="error", max_gap_days=100))
    assert data_stage.run(cfg)["instruments"]["ABC"]["long_gaps"] == []


def test_semicolon_files_are_logged_and_noted_in_the_summary(tmp_path, caplog, capsys):
    lines = ["Date;Open;High;Low;Close;Volume"]
    for k, d in enumerate(pd.bdate_range("2020-01-02", periods=60)):
        o, h, lo, c, _, v = ROWS[k % 10]
        prices = ";".join(f"{x:.2f}".replace(".", ",") for x in (o, h, lo, c))
        lines.append(f"{d:%Y-%m-%d};{prices};{v}")
    write(tmp_path, "\n".join(lines) + "\n", "ABC.csv")
    with caplog.at_level(logging.INFO, logger="gatecast.data"):
        summary = data_stage.run(_fit_windows(small_config(tmp_path)))
    row = summary["instruments"]["ABC"]
    assert (row["separator"], row["decimal"]) == (";", ",")
    note = "';' separators and decimal commas (read as a European export)"
    assert note in row["notes"]
    assert note in caplog.text
    assert f"note: ABC: {note}" in capsys.readouterr().out
