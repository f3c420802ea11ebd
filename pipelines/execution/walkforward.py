"""Walk-forward evaluation: folds, forecaster construction, refit-per-fold forecasting.

The out-of-sample span is cut into consecutive test periods of
``walkforward.test_bars`` bars (the retrain frequency), laid back from the
last bar, so the last fold always ends on the last bar; the earliest test
period starts no sooner than ``walkforward.train_bars + walkforward.embargo``
bars into the data and, when ``walkforward.folds`` is null, may be shorter than
the others so that the whole span after the first training segment is used.
With ``walkforward.folds: N`` only the last N full test periods are kept.

Each fold trains on the bars before its test period, less ``embargo`` bars
right before the test start: from the first bar (``expanding``) or the last
``train_bars`` bars (``rolling``). A fresh forecaster is fit on exactly that
segment and then forecasts every bar of the test period from the bars up to
it; the training segment (and the embargo bars) serve as the warm-up history.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from models.base import BuildContext, Forecaster
from models.metrics import forecast_metrics
from pipelines.common.errors import ConfigError, DataError
from pipelines.config import Config
from pipelines.config.sections import WalkForwardConfig

log = logging.getLogger(__name__)


# Folds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    """One walk-forward split; positions are 0-based and inclusive, as are the dates.

    Args:
        number: 0-based fold number, oldest first.
        train_start, train_end: positions of the first and last training bar.
        test_start, test_end: positions of the first and last out-of-sample bar.
        train_start_date, train_end_date, test_start_date, test_end_date: the
            dates at those positions.
    """

    number: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int
    train_start_date: pd.Timestamp
    train_end_date: pd.Timestamp
    test_start_date: pd.Timestamp
    test_end_date: pd.Timestamp

    @property
    def train_bars(self) -> int:
        return self.train_end - self.train_start + 1

    @property
    def test_bars(self) -> int:
        return self.test_end - self.test_start + 1

    @property
    def train_slice(self) -> slice:
        return slice(self.train_start, self.train_end + 1)

    @property
    def test_slice(self) -> slice:
        return slice(self.test_start, self.test_end + 1)

    def rebased(self, offset: int) -> Fold:
        """The same fold with positions counted from position ``offset`` (dates unchanged).

        A unit of work gets only the bars from its fold's training start to its
        test end; ``fold.rebased(fold.train_start)`` addresses that slice.
        """
        if not 0 <= offset <= self.train_start:
            raise ValueError(
                f"fold {self.number}: offset {offset} must lie in 0..{self.train_start} "
                "(the bars given must start at or before the training start)"
            )
        return dataclasses.replace(
            self,
            train_start=self.train_start - offset,
            train_end=self.train_end - offset,
            test_start=self.test_start - offset,
            test_end=self.test_end - offset,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe description (for summaries and tracking)."""
        return {
            "number": self.number,
            "train_start": self.train_start_date.isoformat(),
            "train_end": self.train_end_date.isoformat(),
            "test_start": self.test_start_date.isoformat(),
            "test_end": self.test_end_date.isoformat(),
            "train_bars": self.train_bars,
            "test_bars": self.test_bars,
        }


def _span(index: pd.DatetimeIndex) -> str:
    return f"{index[0].date()} to {index[-1].date()}" if len(index) else "no bars"


def make_folds(index: pd.DatetimeIndex, wf: WalkForwardConfig, min_history: int = 1) -> list[Fold]:
    """Walk-forward folds over ``index`` (see the module docstring for the layout).

    Args:
        index: the instrument's bar dates (strictly increasing).
        wf: the ``walkforward`` config section.
        min_history: the fewest training bars any forecaster to be run needs
            (see ``required_train_bars``); ``walkforward.train_bars`` must be
            at least this.

    Raises:
        ConfigError: ``walkforward.train_bars`` is below ``min_history``.
        DataError: the data is too short for the windows, or
            ``walkforward.folds`` would leave the first training segment
            shorter than ``walkforward.train_bars``.
    """
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(f"walk-forward needs a DatetimeIndex, got {type(index).__name__}")
    if not index.is_monotonic_increasing or not index.is_unique:
        raise DataError("walk-forward needs strictly increasing bar dates (sorted, no repeats)")
    if wf.train_bars < min_history:
        raise ConfigError(
            f"walkforward.train_bars={wf.train_bars} is shorter than the {min_history} training "
            "bars the configured forecasters need; raise walkforward.train_bars or shorten the "
            "forecasters' windows (features.window, forecasters.*.window/span/lags)"
        )
    n = len(index)
    first_test = wf.train_bars + wf.embargo
    oos = n - first_test
    if oos < 1:
        raise DataError(
            f"{n} bars ({_span(index)}) leave no out-of-sample bars: walkforward.train_bars="
            f"{wf.train_bars} + walkforward.embargo={wf.embargo} need at least {first_test + 1} "
            "bars; use more data or shorten those windows"
        )
    available = math.ceil(oos / wf.test_bars)
    if wf.folds is None:
        count = available
    else:
        count = wf.folds
        if count * wf.test_bars > oos:
            short = n - count * wf.test_bars - wf.embargo
            raise DataError(
                f"walkforward.folds={count} x walkforward.test_bars={wf.test_bars} out-of-sample "
                f"bars leave the first training segment {max(short, 0)} bars of {n} "
                f"({_span(index)}), fewer than walkforward.train_bars={wf.train_bars} "
                f"(walkforward.embargo={wf.embargo}); at most {oos // wf.test_bars} full folds "
                "fit: lower walkforward.folds, test_bars or train_bars, or use more data"
            )
    folds = []
    for number in range(count):
        test_end = n - 1 - (count - 1 - number) * wf.test_bars
        test_start = max(test_end - wf.test_bars + 1, first_test)
        train_end = test_start - wf.embargo - 1
        train_start = 0 if wf.scheme == "expanding" else train_end - wf.train_bars + 1
        folds.append(
            Fold(
                number=number,
                train_start=train_start,
                train_end=train_end,
                test_start=test_start,
                test_end=test_end,
                train_start_date=index[train_start],
                train_end_date=index[train_end],
                test_start_date=index[test_start],
                test_end_date=index[test_end],
            )
        )
    return folds


# Forecasters ---------------------------------------------------------------------


def required_train_bars(forecaster: Forecaster) -> int:
    """The fewest training bars ``forecaster.fit`` accepts (at least its ``min_history``)."""
    return max(forecaster.min_history, forecaster.required_train_bars())


def make_forecaster(name: str, cfg: Config, seed: int | None = None) -> Forecaster:
    """A fresh, unfitted forecaster from ``cfg.forecasters.<name>`` (and ``cfg.features``).

    Args:
        name: a name under the config's ``forecasters:``.
        cfg: the experiment config.
        seed: the seed of this fit (default ``cfg.seed``); deterministic
            forecasters ignore it.

    Raises:
        ConfigError: a name the config does not list (with a suggestion).
    """
    specs = cfg.forecasters.enabled()
    if name not in specs:
        close = difflib.get_close_matches(name, list(specs), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"forecaster {name!r} is not configured under forecasters: {hint}"
            f"configured: {', '.join(specs)} (add forecasters.{name} to the config)"
        )
    spec = specs[name]
    context = BuildContext(
        seed=cfg.seed if seed is None else seed, features=cfg.features.model_dump()
    )
    return spec.cls.from_config(spec.arguments(), context)


# Walk-forward --------------------------------------------------------------------


@dataclass
class WalkForwardResult:
    """Out-of-sample forecasts of one forecaster over all folds.

    Args:
        name: the forecaster's name.
        forecasts: next-close forecasts over the whole out-of-sample span,
            indexed by the date each is made, named ``name``.
        folds: the folds, oldest first.
        forecasters: the fitted forecaster of each fold (the last one is the
            model in force at the end of the data).
        fit_seconds, predict_seconds: wall time per fold.
    """

    name: str
    forecasts: pd.Series
    folds: list[Fold]
    forecasters: list[Forecaster]
    fit_seconds: list[float] = field(default_factory=list)
    predict_seconds: list[float] = field(default_factory=list)

    @property
    def last_forecaster(self) -> Forecaster:
        return self.forecasters[-1]

    @property
    def seconds(self) -> float:
        return sum(self.fit_seconds) + sum(self.predict_seconds)


def walk_forward(
    bars: pd.DataFrame,
    factory: Callable[[], Forecaster],
    folds: Sequence[Fold],
    progress: Callable[[Fold, Forecaster], None] | None = None,
    name: str | None = None,
) -> WalkForwardResult:
    """Refit a fresh forecaster per fold and concatenate the out-of-sample forecasts.

    For each fold: ``factory()`` builds a new forecaster, ``fit`` sees the
    fold's training bars only, and ``predict`` gets the bars from the training
    start to the test end with ``start`` = the test start (the forecaster
    must use only the bars up to each forecast date; tests/test_walkforward.py
    checks this for the runner as a whole).

    Args:
        bars: the instrument's bars (the index the folds were made from).
        factory: returns a fresh, unfitted forecaster.
        folds: from ``make_folds(bars.index, ...)``.
        progress: called with each fold and its fitted forecaster when done.
        name: the forecasts' name (default: the forecaster's class ``name``); a
            config's name for it, where several of one kind run side by side.

    Raises:
        DataError: a forecaster rejected a fold's data (message names the fold).
    """
    if not folds:
        raise DataError("walk_forward: no folds to run")
    pieces: list[pd.Series] = []
    fitted: list[Forecaster] = []
    fit_seconds: list[float] = []
    predict_seconds: list[float] = []
    label = name
    for fold in folds:
        if fold.test_end >= len(bars) or bars.index[fold.test_start] != fold.test_start_date:
            raise DataError(
                f"fold {fold.number} ({fold.test_start_date.date()} .. "
                f"{fold.test_end_date.date()}) does not match these bars; make the folds "
                "from bars.index"
            )
        forecaster = factory()
        label = name or forecaster.name
        where = (
            f"{label}, fold {fold.number} (train {fold.train_start_date.date()} .. "
            f"{fold.train_end_date.date()}, test {fold.test_start_date.date()} .. "
            f"{fold.test_end_date.date()})"
        )
        try:
            t0 = time.perf_counter()
            forecaster.fit(bars.iloc[fold.train_slice])
            t1 = time.perf_counter()
            forecast = forecaster.predict(
                bars.iloc[fold.train_start : fold.test_end + 1], fold.test_start_date
            )
            t2 = time.perf_counter()
        except ValueError as err:
            raise DataError(f"{where}: {err}") from err
        expected = bars.index[fold.test_slice]
        if not forecast.index.equals(expected):
            raise RuntimeError(
                f"{where}: predict returned {len(forecast)} dates, expected the "
                f"{len(expected)} test dates (models.base.Forecaster.predict contract)"
            )
        pieces.append(forecast.astype("float64"))
        fitted.append(forecaster)
        fit_seconds.append(t1 - t0)
        predict_seconds.append(t2 - t1)
        log.debug("%s: fit %.2f s, predict %.2f s", where, t1 - t0, t2 - t1)
        if progress is not None:
            progress(fold, forecaster)
    forecasts = pd.concat(pieces).rename(label)
    return WalkForwardResult(
        name=str(label),
        forecasts=forecasts,
        folds=list(folds),
        forecasters=fitted,
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
    )


# Metrics on common dates -----------------------------------------------------------


def score_forecasts(
    bars: pd.DataFrame, forecasts: Mapping[str, pd.Series]
) -> dict[str, dict[str, float]]:
    """``forecast_metrics`` for several forecasters on identical dates.

    The dates scored are those where every forecast is present and the next
    close is known (so the last bar is never scored). The random walk is
    ``close[t]``; MASE is scaled by the naive forecast's MAE on the closes
    before the first scored date (the history available when forecasting
    started).

    Args:
        bars: the instrument's bars.
        forecasts: forecaster name -> forecast Series indexed by forecast date.

    Raises:
        DataError: a forecast has dates that are not bars, or no date is common to all.
    """
    if not forecasts:
        raise DataError("score_forecasts: no forecasts given")
    close = bars["close"].astype("float64")
    actual = close.shift(-1)
    common = close.index[actual.notna().to_numpy()]
    for name, series in forecasts.items():
        unknown = series.index.difference(close.index)
        if len(unknown):
            raise DataError(
                f"forecast {name!r} has {len(unknown)} dates that are not bars "
                f"(first {unknown[0]}); forecasts must be indexed by bar dates"
            )
        common = common.intersection(series.index[series.notna().to_numpy()])
    if len(common) == 0:
        raise DataError(
            f"forecasts {', '.join(forecasts)} share no date with a known next close; "
            "run them over the same folds"
        )
    train_close = close.loc[: common[0]].iloc[:-1]
    random_walk = close.loc[common]
    return {
        name: forecast_metrics(
            actual.loc[common],
            series.loc[common],
            random_walk,
            train_close=train_close if len(train_close) >= 2 else None,
        )
        for name, series in forecasts.items()
    }
