"""The synthetic universe generator (benchmarks.synthetic): contract, bootstrap, files, errors.

The statistical tests use a fixed seed, so they pass or fail deterministically;
their tolerances are 4 standard errors measured across independent instruments
(a 6e-5 chance of a false alarm for a fresh seed), and each test also asserts
that its tolerance is tight enough to detect the failure it is about.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from arch.bootstrap import StationaryBootstrap

from benchmarks.synthetic import (
    START_PRICE,
    SyntheticError,
    bar_shapes,
    is_synthetic,
    main,
    read_sources,
    stationary_indices,
    synthetic_name,
    synthetic_universe,
    write_universe,
)
from core.bars import validate_bars
from pipelines.config import load_config
from pipelines.config.sections import DataConfig
from pipelines.sources.load import load_universe, read_csv_bars
from tests.conftest import SAMPLE_DIR

# Returns of the coded source: source shape t has log return (t + 1) * CODE.
CODE = 1e-5


def coded_source(n: int) -> pd.DataFrame:
    """n + 1 daily bars whose shape t (bar t + 1) says t in its return and its volume.

    Bar t + 1: log return ``(t + 1) * CODE``, open halfway along it, high and low
    0.1% beyond; volume ``t``. Decoding a synthetic bar's return gives the source
    bar it was drawn from, and its volume must agree.
    """
    r = np.arange(1, n + 1) * CODE
    close = 100.0 * np.exp(np.concatenate(([0.0], np.cumsum(r))))
    open_ = np.concatenate(([close[0]], close[:-1] * np.exp(r / 2)))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) / 1.001,
            "close": close,
            "volume": np.concatenate(([0.0], np.arange(n, dtype="float64"))),
        },
        index=pd.bdate_range("2010-01-04", periods=n + 1, name="date"),
    )


def log_returns(bars: pd.DataFrame) -> np.ndarray:
    """Close-to-close log returns, the first against the start price."""
    return np.diff(np.log(np.concatenate(([START_PRICE], bars["close"].to_numpy()))))


def decoded(bars: pd.DataFrame) -> np.ndarray:
    """The coded source's shape index of every synthetic bar, read from its return."""
    return np.rint(log_returns(bars) / CODE).astype(np.int64) - 1


@pytest.fixture(scope="module")
def gspc() -> pd.DataFrame:
    return read_csv_bars(SAMPLE_DIR / "GSPC.csv")


@pytest.fixture(scope="module")
def samples() -> dict[str, pd.DataFrame]:
    return read_sources(SAMPLE_DIR)


# The contract and the names ----------------------------------------------------


def test_every_instrument_keeps_the_bars_contract(samples):
    universe = synthetic_universe(samples, 6, 300, seed=3, start="2001-02-05")
    assert len(universe) == 6
    for name, bars in universe.items():
        validate_bars(bars, name, exact=True)
        o, h, lo, c = (bars[k].to_numpy() for k in ("open", "high", "low", "close"))
        assert (h >= np.maximum(o, c)).all() and (np.minimum(o, c) >= lo).all()
        assert (lo > 0).all()
        pd.testing.assert_index_equal(
            bars.index, pd.bdate_range("2001-02-05", periods=300, name="date")
        )


def test_names_mark_the_data_synthetic_and_name_the_source(samples):
    universe = synthetic_universe(samples, 6, 10)
    assert list(universe) == [
        "SYN-GOOG-0000",
        "SYN-GSPC-0001",
        "SYN-ORCL-0002",
        "SYN-YHOO-0003",
        "SYN-GOOG-0004",
        "SYN-GSPC-0005",
    ]
    assert all(is_synthetic(name) for name in universe)
    DataConfig(instruments=list(universe))  # a config accepts them
    assert not any(is_synthetic(n) for n in ("GSPC", "SYN", "SYN-GSPC", "SYNX-GSPC-0001"))
    assert synthetic_name("^GSPC", 10_000, count=10_001) == "SYN-^GSPC-10000"
    assert synthetic_name("^GSPC", 7, count=10_001) == "SYN-^GSPC-00007"
    DataConfig(instruments=["SYN-^GSPC-10000", "SYN-^GSPC-00007"])


def test_each_bar_is_its_source_bar_rescaled(gspc):
    """Every synthetic bar's shape relative to its previous close is one of the source's."""
    bars = synthetic_universe({"GSPC": gspc}, 1, 400, seed=11)["SYN-GSPC-0000"]
    source = bar_shapes(gspc).to_numpy()
    prev = np.concatenate(([START_PRICE], bars["close"].to_numpy()[:-1]))
    close = bars["close"].to_numpy()
    made = np.column_stack(
        [
            np.log(close / prev),
            np.log(bars["open"].to_numpy() / prev),
            np.log(bars["high"].to_numpy() / close),
            np.log(bars["low"].to_numpy() / close),
            bars["volume"].to_numpy(),
        ]
    )
    for row in made:
        assert np.isclose(source, row, rtol=0, atol=1e-9).all(axis=1).any()


def test_instruments_may_be_longer_than_their_source():
    bars = synthetic_universe({"C": coded_source(50)}, 1, 1_000, block=5)["SYN-C-0000"]
    validate_bars(bars, "long", exact=True)
    assert len(bars) == 1_000 and set(decoded(bars)) == set(range(50))


# Reproducibility ----------------------------------------------------------------


def test_same_seed_same_universe_bit_for_bit(samples):
    one = synthetic_universe(samples, 5, 200, block=7, seed=42)
    two = synthetic_universe(samples, 5, 200, block=7, seed=42)
    assert list(one) == list(two)
    for name in one:
        assert one[name].equals(two[name])
        pd.testing.assert_frame_equal(one[name], two[name], check_exact=True)


def test_more_instruments_keep_the_first_ones(samples):
    small = synthetic_universe(samples, 3, 200, seed=1)
    large = synthetic_universe(samples, 7, 200, seed=1)
    for name, bars in small.items():
        assert large[name].equals(bars)


def test_seeds_and_instruments_get_different_draws():
    source = {"C": coded_source(500)}
    a = synthetic_universe(source, 4, 300, seed=1)
    b = synthetic_universe(source, 4, 300, seed=2)
    draws = [decoded(bars) for bars in (*a.values(), *b.values())]
    for i in range(len(draws)):
        for j in range(i + 1, len(draws)):
            # independent draws from 500 rows coincide at about 1 bar in 500
            assert (draws[i] == draws[j]).mean() < 0.05, (i, j)


# The bootstrap --------------------------------------------------------------------


@pytest.mark.parametrize(("items", "block", "seed"), [(250, 20, 0), (97, 2.5, 7), (40, 1, 3)])
def test_indices_equal_arch_stationary_bootstrap(items, block, seed):
    ours = stationary_indices(np.random.default_rng(seed), items, items, block)
    bootstrap = StationaryBootstrap(block, np.arange(items), seed=np.random.default_rng(seed))
    np.testing.assert_array_equal(ours, bootstrap.update_indices())


def test_blocks_are_contiguous_runs_of_source_bars():
    """A source whose returns encode their position: every bar continues or starts a block.

    Within a block the next bar is the next source bar, wrapping from the last to
    the first; the volume comes from the same source bar as the return. New
    blocks start with probability 1/block, less the 1/n chance that a new start
    lands on the next bar anyway: the count of breaks is binomial, checked within
    4 standard errors.
    """
    n, bars, count, block = 200, 2_000, 20, 8.0
    universe = synthetic_universe({"C": coded_source(n)}, count, bars, block=block, seed=5)
    breaks = wraps = 0
    for frame in universe.values():
        index = decoded(frame)
        assert ((index >= 0) & (index < n)).all()
        np.testing.assert_array_equal(frame["volume"].to_numpy(), index)
        continues = index[1:] == (index[:-1] + 1) % n
        breaks += int((~continues).sum())
        wraps += int((continues & (index[1:] == 0)).sum())
    p = (1 / block) * (1 - 1 / n)
    trials = count * (bars - 1)
    se = np.sqrt(trials * p * (1 - p))
    assert abs(breaks - trials * p) < 4 * se
    assert 4 * se < 0.1 * trials * p  # tight: a mean block of 9 instead of 8 would fail
    assert wraps > 0


def _moments(universe: dict[str, pd.DataFrame]) -> np.ndarray:
    """Per instrument: mean of log returns and of squared log returns."""
    r = np.array([log_returns(bars) for bars in universe.values()])
    return np.column_stack([r.mean(axis=1), (r**2).mean(axis=1)])


def test_bootstrap_keeps_mean_and_std_of_source_returns(gspc):
    """Each synthetic bar is a uniformly drawn source bar, so E[r] and E[r^2] equal the source's.

    The stationary bootstrap (with its wrap) makes every position's source index
    uniform, so the expected mean and mean square of an instrument's log returns
    are exactly the source's; the instruments are independent, so the spread of
    their moments estimates the standard error of the average over 200 of them.
    The std follows from the two moments.
    """
    r = bar_shapes(gspc)["log_return"].to_numpy()
    universe = synthetic_universe({"GSPC": gspc}, 200, 2_500, block=20, seed=9)
    moments = _moments(universe)
    average = moments.mean(axis=0)
    se = moments.std(axis=0, ddof=1) / np.sqrt(len(moments))
    target = np.array([r.mean(), (r**2).mean()])
    assert (np.abs(average - target) < 4 * se).all(), (average, target, se)
    assert 4 * se[0] < 0.5 * abs(target[0]) and 4 * se[1] < 0.1 * target[1]
    std = np.sqrt(average[1] - average[0] ** 2)
    assert std == pytest.approx(r.std(), rel=0.03)


def _lag1_autocovariance(x: np.ndarray, mean: float) -> float:
    return float(np.mean((x[1:] - mean) * (x[:-1] - mean)))


@pytest.mark.parametrize("block", [20, 1])
def test_blocks_keep_volatility_clustering_at_lag_one(gspc, block):
    """Lag-1 autocovariance of squared returns: (1 - 1/block) times the source's.

    A pair of neighbouring synthetic bars is a pair of neighbouring source bars
    (the circular pair at the wrap included) with probability 1 - 1/block, and
    otherwise two independent uniform draws, whose product of deviations from
    the source mean has expectation 0. So, measured around the source's mean
    square, the expected autocovariance is exactly (1 - 1/block) times the
    source's circular one: about 95% of the source's clustering with blocks of
    20, none with block 1 (an i.i.d. bootstrap).
    """
    x = bar_shapes(gspc)["log_return"].to_numpy() ** 2
    mu = x.mean()
    source = float(np.mean((x - mu) * (np.roll(x, -1) - mu)))
    assert source > 0.15 * x.var()  # GSPC's squared returns do cluster
    universe = synthetic_universe({"GSPC": gspc}, 200, 2_500, block=block, seed=4)
    made = np.array([_lag1_autocovariance(log_returns(b) ** 2, mu) for b in universe.values()])
    se = made.std(ddof=1) / np.sqrt(len(made))
    expected = (1 - 1 / block) * source
    assert abs(made.mean() - expected) < 4 * se, (made.mean(), expected, se)
    assert 4 * se < 0.3 * source  # tight enough to tell block 20 from block 1


# Files and the command line ------------------------------------------------------------


def _snippet(out: str) -> dict:
    return yaml.safe_load(out[out.index("data:") :])


def test_cli_writes_files_that_read_back_to_the_same_bars(tmp_path, capsys, samples):
    out = tmp_path / "universe"
    argv = ["--count", "3", "--bars", "520", "--out", str(out), "--seed", "5", "--block", "10"]
    assert main([*argv, "--sources", str(SAMPLE_DIR)]) == 0
    printed = capsys.readouterr().out
    expected = synthetic_universe(samples, 3, 520, block=10, seed=5)
    names = list(expected)
    assert printed.split("\n")[:3] == names
    assert _snippet(printed) == {"data": {"directory": str(out), "instruments": names}}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", *(f"{n}.csv" for n in names)]
    )
    header = (out / f"{names[0]}.csv").read_text().split("\n", 1)[0]
    assert header == "Date,Open,High,Low,Close,Volume"
    for name, bars in expected.items():
        back = read_csv_bars(out / f"{name}.csv")
        pd.testing.assert_frame_equal(back, bars, check_exact=False, rtol=1e-11, atol=0)
    readme = (out / "README.md").read_text()
    assert readme.startswith("# Synthetic universe (not market data)")
    assert "**synthetic**" in readme and "--seed 5 --block 10" in readme
    assert all(f"| {source} |" in readme for source in samples)

    # a config uses the folder as it is (the smoke windows need 510 bars)
    overrides = {"data": {"directory": str(out), "instruments": names, "start": None, "end": None}}
    loaded = load_universe(load_config("configs/smoke.yaml", overrides=overrides))
    for name, bars in expected.items():
        pd.testing.assert_frame_equal(loaded[name], bars, check_exact=False, rtol=1e-11, atol=0)


def test_cli_rewrites_its_own_folder_and_refuses_others(tmp_path, capsys):
    out = tmp_path / "u"
    common = ["--bars", "20", "--out", str(out), "--sources", str(SAMPLE_DIR)]
    assert main(["--count", "4", *common]) == 0
    assert main(["--count", "2", "--instruments", "gspc", *common]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "SYN-GSPC-0000.csv",
        "SYN-GSPC-0001.csv",
    ]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "AAPL.csv").write_text("Date,Close\n")
    capsys.readouterr()
    assert main(["--count", "1", "--bars", "5", "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert "is not empty and holds no synthetic universe" in err and err.count("\n") == 1
    assert sorted(p.name for p in other.iterdir()) == ["AAPL.csv"]


def test_write_universe_rewrites_a_folder_it_wrote_without_a_readme(tmp_path):
    out = tmp_path / "u"
    sources = read_sources(SAMPLE_DIR)
    write_universe(synthetic_universe(sources, 3, 20, seed=0), out)
    second = synthetic_universe(sources, 1, 20, seed=1)
    write_universe(second, out)  # no README (main writes it): the SYN-*.csv files say it is ours
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.csv" for name in second]
    (out / "notes.txt").write_text("mine")  # anything else makes it someone else's folder
    with pytest.raises(SyntheticError, match="is not empty and holds no synthetic universe"):
        write_universe(second, out)
    assert sorted(p.name for p in out.iterdir()) == ["SYN-GOOG-0000.csv", "notes.txt"]


# Bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "count must be a whole number >= 1, got 0"),
        ({"count": 2.0}, "count must be a whole number >= 1, got 2.0"),
        ({"bars": 1}, "bars must be a whole number >= 2, got 1"),
        ({"seed": -1}, "seed must be a whole number >= 0, got -1"),
        ({"block": 0.5}, "block (the mean block length) must be a number >= 1, got 0.5"),
        ({"start": "someday"}, "start 'someday' is not a date"),
        ({"start": "2262-04-01"}, "10 bars from 2262-04-01 go past the last date"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs, message):
    args = {"count": 2, "bars": 10, **kwargs}
    count, bars = args.pop("count"), args.pop("bars")
    with pytest.raises(SyntheticError) as info:
        synthetic_universe({"C": coded_source(20)}, count, bars, **args)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_sources_raise_one_line_errors():
    hourly = coded_source(30)
    hourly.index = pd.date_range("2020-01-02 09:00", periods=31, freq="h", name="date")
    broken = coded_source(30)
    broken.iloc[3, broken.columns.get_loc("low")] = -1.0
    cases = [
        ({}, "no sources"),
        ({"ONE": coded_source(20).iloc[:1]}, "source 'ONE': 1 bar; a source needs at least 2"),
        ({"H": hourly}, "source 'H': 1h bars"),
        ({"B": broken}, "source 'B': 2010-01-07: column 'low' has non-positive price"),
        ({"a/b": coded_source(20)}, "source name 'a/b' gives instrument name 'SYN-a/b-0000'"),
    ]
    for sources, message in cases:
        with pytest.raises(SyntheticError) as info:
            synthetic_universe(sources, 1, 5)
        assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--instruments", "GSPC", "NOPE"], "--instruments: unknown source 'NOPE'; "),
        (["--sources", "no/such/folder"], "--sources: folder no/such/folder does not exist"),
        (["--count", "0"], "count must be a whole number >= 1, got 0"),
        (["--bars", "1"], "bars must be a whole number >= 2, got 1"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, message):
    base = ["--count", "2", "--bars", "10", "--out", str(tmp_path / "u")]
    assert main([*base, *argv]) == 2  # the last --count or --bars given counts
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "u").exists()
