"""A synthetic universe: N daily instruments block-bootstrapped from real bars.

For benchmarks and tests that need more instruments, or longer ones, than the
bundled files hold. :func:`synthetic_universe` turns source bars (e.g. the four
files of ``data/sample``) into ``count`` instruments of ``bars`` daily bars each:

1. Each source bar ``t`` (after the first, which has no previous close) becomes
   its *shape* relative to the previous close ``C[t-1]``: the log return
   ``log(C[t]/C[t-1])``, the opening gap ``log(O[t]/C[t-1])``, ``log(H[t]/C[t])``,
   ``log(L[t]/C[t])`` and the volume.
2. Instrument ``k`` takes source ``k mod len(sources)`` (in the mapping's order)
   and draws ``bars`` shape indices by the stationary bootstrap of Politis and
   Romano (1994): each bar starts a new block at a uniformly drawn source bar
   with probability ``1/block``, else it continues the block with the next
   source bar (wrapping from the last to the first), so blocks are contiguous
   runs of source bars of geometric length with mean ``block``.
   :func:`stationary_indices` draws exactly what
   ``arch.bootstrap.StationaryBootstrap.update_indices`` draws (tests/test_synthetic.py
   checks it bit for bit), for any length rather than only the source's.
3. OHLCV is rebuilt by cumulating the log returns from :data:`START_PRICE`:
   every bar is its source bar scaled by one factor, so inside a block the path
   is the source's path, and the open-to-previous-close gap at a block join is a
   real gap of the source, not a jump made by the join. A final clamp
   ``high = max(high, open, close)``, ``low = min(low, open, close)`` absorbs
   floating-point rounding and the sources' own rounding (:data:`core.bars.PRICE_TOLERANCE`),
   so every bar keeps ``high >= max(open, close) >= min(open, close) >= low > 0``.

What it keeps: each bar's shape, each source bar equally likely at every
position (so the marginal distribution of returns, gaps, ranges and volumes),
and the dependence inside blocks (volatility clustering, at lag 1 a fraction
``1 - 1/block`` of it). What it breaks: dependence across block joins,
long-range trends and regime lengths beyond a few blocks, and any link between
instruments (each is drawn on its own, so cross-sectional correlation is about
zero). Use it to scale and exercise the pipeline, never as evidence that a
model or strategy works on markets.

Each instrument has its own random stream, child ``k`` of
``numpy.random.SeedSequence(seed)``: the same seed gives the same universe bit
for bit, a larger ``count`` keeps the first instruments unchanged, and two
instruments never share a draw. Names mark the data as synthetic and say where
it came from: ``SYN-GSPC-0007`` is instrument 7, drawn from GSPC
(:func:`is_synthetic` tells them apart). Dates are business days (Monday to
Friday) from ``start``, so sources must be daily bars.

From the command line, ``python -m benchmarks.synthetic --count 20 --bars 2500
--out data/synthetic/u20`` writes one ``<NAME>.csv`` per instrument (the layout
``Date,Open,High,Low,Close,Volume`` that :func:`pipelines.sources.load.read_csv_bars`
reads) and a ``README.md`` saying the data is synthetic and how it was made,
then prints the ``data:`` section of a config that uses it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from core.bars import BAR_COLUMNS, INDEX_NAME, BarsError, format_timestamp, validate_bars
from core.periods import bar_interval
from pipelines.cli import run_stage
from pipelines.common.errors import GatecastError
from pipelines.common.outputs import shown
from pipelines.common.paths import is_plain_name
from pipelines.config import REPO_ROOT
from pipelines.sources.csv_bars import read_csv_bars

__all__ = [
    "PREFIX",
    "START_PRICE",
    "SyntheticError",
    "bar_shapes",
    "is_synthetic",
    "main",
    "read_sources",
    "rebuild_bars",
    "source_folder",
    "stationary_indices",
    "synthetic_name",
    "synthetic_universe",
    "write_universe",
]

# First part of every synthetic instrument's name.
PREFIX = "SYN"
# The close before each synthetic instrument's first bar: its shapes are relative.
START_PRICE = 100.0
# Columns of a shape frame (:func:`bar_shapes`), one row per source bar after the first.
SHAPE_COLUMNS = ("log_return", "log_gap", "log_high", "log_low", "volume")
# Instrument names as configs accept them (pipelines/config/__init__.py), at most 64 characters.
_SYNTHETIC_NAME = re.compile(rf"^{PREFIX}-.+-\d{{4,}}$")
# The first line of the README a universe folder gets; marks a folder this module wrote.
README_TITLE = "# Synthetic universe (not market data)"
# Significant digits of prices and volumes in the CSV files: relative error below 1e-11.
CSV_FORMAT = "%.12g"


class SyntheticError(GatecastError, ValueError):
    """Bad arguments or sources for a synthetic universe; the message names which."""


# Names ---------------------------------------------------------------------------


def synthetic_name(source: str, number: int, count: int = 1) -> str:
    """``SYN-<source>-<number>``, the number zero-padded to 4 digits (more if ``count`` needs)."""
    width = max(4, len(str(max(count - 1, 0))))
    name = f"{PREFIX}-{source}-{number:0{width}d}"
    if not is_plain_name(name):
        raise SyntheticError(
            f"source name {source!r} gives instrument name {name!r}, which a config refuses: "
            "name sources with letters, digits and '.', '_', '-', '^', '=' only, short enough "
            "for 64 characters in all"
        )
    return name


def is_synthetic(name: str) -> bool:
    """Whether an instrument name is one this module makes (``SYN-<source>-<number>``)."""
    return bool(_SYNTHETIC_NAME.match(name))


# The bootstrap -------------------------------------------------------------------


def stationary_indices(
    rng: np.random.Generator, items: int, length: int, block: float
) -> np.ndarray:
    """Indices into ``items`` source rows for ``length`` rows of a stationary bootstrap.

    Row 0 and, with probability ``1/block``, every later row start a block at a
    uniform index; the other rows take the previous row's index plus one,
    wrapping from ``items - 1`` to 0. The draws (``rng.integers(items,
    size=length)``, then ``rng.random(length)``) and the rule are those of
    ``arch.bootstrap.StationaryBootstrap.update_indices``, vectorised, so for
    ``length == items`` the result equals arch's for the same generator.

    Args:
        rng: the random stream (consumed).
        items: how many source rows there are (>= 1).
        length: how many indices to draw (>= 1).
        block: mean block length (>= 1); 1 draws every row independently.
    """
    starts = rng.integers(items, size=length, dtype=np.int64)
    uniform = rng.random(length)
    new_block = uniform <= 1.0 / block
    new_block[0] = True
    first = np.flatnonzero(new_block)
    block_of = np.cumsum(new_block) - 1
    offset = np.arange(length, dtype=np.int64) - first[block_of]
    return (starts[first][block_of] + offset) % items


# Shapes and bars ------------------------------------------------------------------


def bar_shapes(bars: pd.DataFrame) -> pd.DataFrame:
    """Each bar after the first relative to the previous close (:data:`SHAPE_COLUMNS`).

    ``log_return = log(C[t]/C[t-1])``, ``log_gap = log(O[t]/C[t-1])``,
    ``log_high = log(H[t]/C[t])``, ``log_low = log(L[t]/C[t])``, ``volume = V[t]``;
    indexed by the source bar's date. ``bars`` must keep the bars contract.
    """
    close = bars["close"].to_numpy(dtype="float64")
    prev = close[:-1]
    now = bars.iloc[1:]
    return pd.DataFrame(
        {
            "log_return": np.log(close[1:] / prev),
            "log_gap": np.log(now["open"].to_numpy(dtype="float64") / prev),
            "log_high": np.log(now["high"].to_numpy(dtype="float64") / close[1:]),
            "log_low": np.log(now["low"].to_numpy(dtype="float64") / close[1:]),
            "volume": now["volume"].to_numpy(dtype="float64"),
        },
        index=now.index,
    )


def rebuild_bars(
    shapes: pd.DataFrame, index: pd.DatetimeIndex, start_price: float = START_PRICE
) -> pd.DataFrame:
    """Bars whose shapes are ``shapes`` row by row, the first relative to ``start_price``.

    Prices are cumulated in log space and exponentiated once; then ``high`` and
    ``low`` are widened to cover ``open`` and ``close`` (rounding, and sources
    within the contract's tolerance), which moves them by at most that tolerance.
    Returns bars in the stored form of :mod:`core.bars` on ``index``.
    """
    log_close = np.log(start_price) + np.cumsum(shapes["log_return"].to_numpy())
    log_prev = np.concatenate(([np.log(start_price)], log_close[:-1]))
    close = np.exp(log_close)
    open_ = np.exp(log_prev + shapes["log_gap"].to_numpy())
    high = np.maximum.reduce([np.exp(log_close + shapes["log_high"].to_numpy()), open_, close])
    low = np.minimum.reduce([np.exp(log_close + shapes["log_low"].to_numpy()), open_, close])
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": shapes["volume"].to_numpy(),
        },
        index=pd.DatetimeIndex(index, name=INDEX_NAME, freq=None),  # as files read back
        dtype="float64",
    )
    return frame[list(BAR_COLUMNS)]


def _source_shapes(sources: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every source checked (contract, daily, two bars at least) and turned into shapes."""
    if not sources:
        raise SyntheticError("no sources: give at least one instrument's bars to draw from")
    shapes = {}
    for name, bars in sources.items():
        label = f"source {name!r}"
        try:
            validate_bars(bars, label)
        except BarsError as err:
            raise SyntheticError(str(err)) from None
        if len(bars) < 2:
            raise SyntheticError(f"{label}: {len(bars)} bar; a source needs at least 2")
        interval = bar_interval(bars.index)
        if interval != "daily":
            raise SyntheticError(
                f"{label}: {interval} bars; synthetic instruments are dated on business days, "
                "so their sources must be daily bars"
            )
        synthetic_name(name, 0)  # refuse a source whose name makes no valid instrument name
        shapes[name] = bar_shapes(bars)
    return shapes


def _check_arguments(count: int, bars: int, block: float, seed: int) -> None:
    for key, value, low in (("count", count, 1), ("bars", bars, 2), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise SyntheticError(f"{key} must be a whole number >= {low}, got {value!r}")
    if isinstance(block, bool) or not isinstance(block, int | float) or not block >= 1:
        raise SyntheticError(f"block (the mean block length) must be a number >= 1, got {block!r}")


def synthetic_universe(
    sources: Mapping[str, pd.DataFrame],
    count: int,
    bars: int,
    *,
    block: float = 20,
    seed: int = 0,
    start: str | pd.Timestamp = "2000-01-03",
) -> dict[str, pd.DataFrame]:
    """``count`` synthetic instruments of ``bars`` daily bars, block-bootstrapped from ``sources``.

    The method, what it keeps and what it breaks are in the module docstring.

    Args:
        sources: source name -> daily bars keeping the bars contract (e.g. from
            :func:`pipelines.sources.load.read_csv_bars`); instrument ``k`` draws from the
            ``k mod len(sources)``-th, in this mapping's order.
        count: how many instruments (>= 1).
        bars: bars per instrument (>= 2); may exceed a source's length.
        block: mean block length of the stationary bootstrap, in bars (>= 1).
        seed: the universe's seed (>= 0); the same seed gives the same universe.
        start: the first bar's date; later bars follow on business days.

    Returns:
        name -> bars in the stored form of :mod:`core.bars`, names
        ``SYN-<source>-<k>`` (:func:`synthetic_name`), in ``k`` order.

    Raises:
        SyntheticError: a bad argument or source, named in one line.
    """
    _check_arguments(count, bars, block, seed)
    shapes = _source_shapes(sources)
    try:
        first = pd.Timestamp(start)
    except (ValueError, TypeError) as err:
        raise SyntheticError(f"start {start!r} is not a date: {err}") from None
    try:
        index = pd.bdate_range(first, periods=bars, name=INDEX_NAME)
    except (ValueError, OverflowError) as err:  # pandas' dates end in 2262
        raise SyntheticError(f"{bars} bars from {start} go past the last date: {err}") from None
    names = list(shapes)
    streams = np.random.SeedSequence(seed).spawn(count)
    universe = {}
    for k, stream in enumerate(streams):
        source = names[k % len(names)]
        rows = shapes[source]
        picks = stationary_indices(np.random.default_rng(stream), len(rows), bars, block)
        universe[synthetic_name(source, k, count)] = rebuild_bars(rows.iloc[picks], index)
    return universe


# Files ---------------------------------------------------------------------------


def source_folder(directory: str | Path) -> Path:
    """``directory``, or the repository's folder of that name when it does not exist here."""
    folder = Path(directory)
    if not folder.is_absolute() and not folder.exists():
        folder = REPO_ROOT / folder
    if not folder.is_dir():
        raise SyntheticError(f"--sources: folder {directory} does not exist")
    return folder


def read_sources(directory: str | Path, names: Sequence[str] = ()) -> dict[str, pd.DataFrame]:
    """Bars of the CSV files in ``directory`` (all, or those ``names``), by file stem, sorted.

    A relative ``directory`` that does not exist here is looked up in the
    repository (``data/sample`` works from any folder). Each file is read by
    :func:`pipelines.sources.load.read_csv_bars` (adjusted prices when it has ``Adj Close``).
    """
    folder = source_folder(directory)
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() == ".csv"}
    if not files:
        raise SyntheticError(f"--sources: no .csv files in {shown(folder)}")
    by_lower = {stem.lower(): stem for stem in files}
    chosen = []
    for name in names:
        if name.lower() not in by_lower:
            raise SyntheticError(
                f"--instruments: unknown source {name!r}; {shown(folder)} has {', '.join(files)}"
            )
        chosen.append(by_lower[name.lower()])
    return {stem: read_csv_bars(files[stem]) for stem in (chosen or files)}


def _prepare_folder(out: Path) -> None:
    """Make ``out``; a folder this module wrote before loses its old CSV files, others refuse.

    Ours: its README.md starts with the synthetic title (``main`` wrote it), or it
    holds nothing but ``SYN-*.csv`` files (``write_universe`` alone wrote it)."""
    if out.exists() and not out.is_dir():
        raise SyntheticError(f"--out: {shown(out)} is a file, not a folder")
    readme = out / "README.md"
    if out.is_dir() and any(out.iterdir()):
        ours = readme.is_file() and readme.read_text(encoding="utf-8").startswith(README_TITLE)
        ours = ours or all(
            p.is_file() and p.name.startswith(f"{PREFIX}-") and p.suffix == ".csv"
            for p in out.iterdir()
        )
        if not ours:
            raise SyntheticError(
                f"--out: {shown(out)} is not empty and holds no synthetic universe (it would "
                f"have a README.md starting with the synthetic title, or only {PREFIX}-*.csv "
                "files); choose a new or empty folder"
            )
        for old in out.glob(f"{PREFIX}-*.csv"):
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_universe(universe: Mapping[str, pd.DataFrame], out: str | Path) -> list[Path]:
    """Write each instrument to ``out/<name>.csv`` (``Date,Open,High,Low,Close,Volume``).

    Values have 12 significant digits (:data:`CSV_FORMAT`). A folder this module
    wrote before is emptied of its old instrument files first, so a config
    never picks up an instrument from an earlier universe; any other non-empty
    folder is refused. The README comes from :func:`main`.
    """
    out = Path(out)
    _prepare_folder(out)
    paths = []
    for name, bars in universe.items():
        path = out / f"{name}.csv"
        frame = bars.rename(columns=str.capitalize)
        frame.to_csv(path, index_label="Date", date_format="%Y-%m-%d", float_format=CSV_FORMAT)
        paths.append(path)
    return paths


def _config_snippet(out: Path, names: Sequence[str]) -> str:
    """The ``data:`` section of a config that uses the universe in ``out``."""
    section = {"data": {"directory": shown(out), "instruments": list(names)}}
    return yaml.safe_dump(section, sort_keys=False, default_flow_style=False).rstrip()


def _readme(
    args: argparse.Namespace,
    sources: Mapping[str, pd.DataFrame],
    universe: Mapping[str, pd.DataFrame],
    out: Path,
) -> str:
    """What the folder holds, that it is synthetic, and how to make it again."""
    source_rows = [
        f"| {name} | {format_timestamp(b.index[0])} | {format_timestamp(b.index[-1])} | {len(b)} |"
        for name, b in sources.items()
    ]
    instrument_rows = [
        f"| {name} | {name.split('-', 1)[1].rsplit('-', 1)[0]} | "
        f"{format_timestamp(b.index[0])} | {format_timestamp(b.index[-1])} | {len(b)} |"
        for name, b in universe.items()
    ]
    selected = f" --instruments {' '.join(sources)}" if args.instruments else ""
    command = (
        f"python -m benchmarks.synthetic --count {args.count} --bars {args.bars} "
        f"--out {shown(out)} --seed {args.seed} --block {args.block:g} --start {args.start} "
        f"--sources {shown(source_folder(args.sources))}{selected}"
    )
    return "\n".join(
        [
            README_TITLE,
            "",
            "Every instrument in this folder is **synthetic**: its bars were made by",
            "`benchmarks.synthetic` from real daily bars by a stationary block bootstrap",
            f"(mean block length {args.block:g} bars), rebuilt from a start price of "
            f"{START_PRICE:g}. Prices,",
            "dates (business days) and names are invented; each bar is a real bar of its",
            "source, rescaled. Use it to scale and test the pipeline, never as evidence",
            "that a model or strategy works on markets.",
            "",
            f"Made by: `{command}`",
            "(the same command gives the same files, bit for bit).",
            "",
            f"Sources, read from `{shown(source_folder(args.sources))}` by",
            "`pipelines.sources.load.read_csv_bars` (adjusted prices where a file has Adj Close):",
            "",
            "| source | first bar | last bar | bars |",
            "|---|---|---|---|",
            *source_rows,
            "",
            f"Instruments ({len(universe)}), each from one source:",
            "",
            "| name | source | first bar | last bar | bars |",
            "|---|---|---|---|---|",
            *instrument_rows,
            "",
            "Use it in a config:",
            "",
            "```yaml",
            _config_snippet(out, list(universe)),
            "```",
            "",
        ]
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.synthetic",
        description="Write a synthetic universe: instruments block-bootstrapped from real bars.",
    )
    parser.add_argument("--count", type=int, required=True, help="how many instruments")
    parser.add_argument("--bars", type=int, required=True, help="bars per instrument")
    parser.add_argument("--out", required=True, help="folder for the CSV files and README.md")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument(
        "--block", type=float, default=20, help="mean block length in bars (default: %(default)s)"
    )
    parser.add_argument(
        "--start", default="2000-01-03", help="first bar's date (default: %(default)s)"
    )
    parser.add_argument(
        "--sources", default="data/sample", help="folder of source CSVs (default: %(default)s)"
    )
    parser.add_argument(
        "--instruments", nargs="+", default=[], metavar="NAME", help="sources to use (default: all)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.synthetic``: write a universe, print its names and config section."""
    args = _parser().parse_args(argv)

    def body() -> int:
        _check_arguments(args.count, args.bars, args.block, args.seed)
        sources = read_sources(args.sources, args.instruments)
        universe = synthetic_universe(
            sources, args.count, args.bars, block=args.block, seed=args.seed, start=args.start
        )
        out = Path(args.out)
        write_universe(universe, out)
        (out / "README.md").write_text(_readme(args, sources, universe, out), encoding="utf-8")
        print("\n".join(universe))
        print(f"\n# {len(universe)} synthetic instruments in {shown(out)}; a config's data:")
        print(_config_snippet(out, list(universe)))
        return 0

    return run_stage(body, "synthetic")


if __name__ == "__main__":
    sys.exit(main())
