"""The look-ahead check of a forecaster: truncation and perturbation of the bars after each
cut date (see ``pipelines.lookahead``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from core.bars import format_timestamp
from models.base import Forecaster
from pipelines.execution.walkforward import Fold
from pipelines.lookahead.results import (
    FORECASTER,
    POINTS,
    RTOL,
    ComponentCheck,
    Finding,
    cut_positions,
    failure_text,
    first_difference,
    noise_bars,
)

# Forecasters --------------------------------------------------------------------------


def check_forecaster(
    factory: Callable[[], Forecaster],
    bars: pd.DataFrame,
    folds: Sequence[Fold],
    *,
    points: int = POINTS,
    seed: int = 0,
    rtol: float = RTOL,
    name: str | None = None,
    instrument: str = "",
) -> ComponentCheck:
    """Truncation, perturbation and repeat checks of one forecaster over ``folds``.

    Args:
        factory: Returns a fresh, unfitted forecaster (one is fit per fold).
        bars: The instrument's bars (the index the folds were made from).
        folds: Walk-forward folds of ``bars`` (``make_folds``).
        points: Cut dates per fold (``cut_positions``).
        seed: Seeds the noise of the perturbation.
        rtol: Relative tolerance of the comparisons (0: bit-identical).
        name: The component's name (default: the forecaster's ``name``).
        instrument: The instrument's name, for the report.
    """
    check = ComponentCheck(name or "", FORECASTER, instrument)
    pieces = []
    for fold in folds:
        window = bars.iloc[fold.train_start : fold.test_end + 1]
        start = fold.test_start_date
        try:
            forecaster = factory()
            check.name = check.name or forecaster.name
            forecaster.fit(bars.iloc[fold.train_slice])
            reference = forecaster.predict(window, start)
            again = forecaster.predict(window, start)
        except Exception as err:  # noqa: BLE001 -- reported as the component's error
            check.findings.append(
                Finding("run", False, None, f"fold {fold.number}: " + failure_text(err))
            )
            return check
        pieces.append(reference.astype(np.float64))
        moved = first_difference(reference, again, rtol)
        if moved is not None:
            detail = (
                f"two predictions on the same bars differ from {format_timestamp(moved)}: "
                "predict is not deterministic, so look-ahead cannot be checked"
            )
            check.findings.append(Finding("repeat", False, moved, detail))
            continue
        for cut in cut_positions(fold, points):
            check.cuts.append(bars.index[cut])
            local = cut - fold.train_start
            check.findings.extend(
                _forecaster_cut(forecaster, window, start, reference, local, seed, rtol)
            )
    if pieces:
        check.forecasts = pd.concat(pieces).rename(check.name)
    return check


def _forecaster_cut(
    forecaster: Forecaster,
    window: pd.DataFrame,
    start: pd.Timestamp,
    reference: pd.Series,
    cut: int,
    seed: int,
    rtol: float,
) -> list[Finding]:
    """The ``reference`` forecasts dated <= the bar at ``cut`` against those from the
    truncated and the perturbed ``window``."""
    when = window.index[cut]
    shown = format_timestamp(when)
    expected = reference.loc[:when]
    findings = []
    variants = {
        "truncation": (window.iloc[: cut + 1], "removed"),
        "perturbation": (noise_bars(window, cut, (seed, cut)), "replaced by noise"),
    }
    for check, (bars, how) in variants.items():
        try:
            actual = forecaster.predict(bars, start)
        except Exception as err:  # noqa: BLE001 -- a failure without the future is a finding
            leak = check == "truncation"
            detail = f"predict failed with the bars after {shown} {how}: {failure_text(err)}"
            findings.append(Finding(check, leak, when, detail))
            continue
        moved = first_difference(expected, actual, rtol)
        if moved is not None:
            detail = (
                f"the forecast dated {format_timestamp(moved)} changed when the bars after "
                f"{shown} were {how}"
            )
            findings.append(Finding(check, True, moved, detail))
    return findings
